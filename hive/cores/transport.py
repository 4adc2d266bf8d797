"""Where a release tells agents to fetch its core: this host's directory, the hive's core server, or S3.

Every release records the core's manifest (``agents.core_manifest``) under ``HIVE_HOME/cores/manifests`` and
signs its sha256, whichever transport carries the files; the core server serves only cores with a recorded
manifest, that is, released ones.
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlsplit

from agents.core_fetch import s3_client
from agents.core_manifest import MANIFEST_FILE, CoreManifest, ManifestError, parse_manifest
from hive.config import HiveSettings
from streams.durable import write_bytes

log = logging.getLogger(__name__)


def manifest_path(settings: HiveSettings, version: int) -> Path:
    return settings.manifests_dir / f"v{version}.json"


def record_manifest(settings: HiveSettings, manifest: CoreManifest) -> None:
    """Writes ``cores/manifests/v<N>.json`` whole (temp file, fsync, rename) before the release goes out."""
    path = manifest_path(settings, manifest.version)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(path, manifest.to_bytes())


def recorded_manifest(settings: HiveSettings, version: int) -> tuple[bytes, CoreManifest] | None:
    """The recorded manifest's bytes, exactly as released, and what they say; None for a core never released with
    one. A damaged record raises ManifestError here, rather than become a core agents refuse one by one."""
    try:
        raw = manifest_path(settings, version).read_bytes()
    except FileNotFoundError:
        return None
    return raw, parse_manifest(raw)


def release_uri(settings: HiveSettings, version: int, directory: Path) -> str:
    """The ``model_uri`` of a release of core ``version``, by ``HIVE_CORES__BASE_URL``."""
    base = settings.cores.base_url
    if base is None:
        return directory.resolve().as_uri()
    if base.lower().startswith("s3://"):
        return f"{base}/v{version}/"
    return f"{base}/cores/v{version}/"


def upload_core(settings: HiveSettings, manifest: CoreManifest, directory: Path) -> None:
    """Uploads the core's files, then its manifest, to ``<base_url>/v<N>/`` when the base URL is on S3.

    The manifest goes last, so that a reader never finds one whose files are not all there yet. A file already
    there with the manifest's sha256 in its metadata (an earlier release of the same core) is not sent again.
    """
    base = settings.cores.base_url
    if base is None or not base.lower().startswith("s3://"):
        return
    from botocore.exceptions import BotoCoreError, ClientError

    parts = urlsplit(release_uri(settings, manifest.version, directory))
    bucket, prefix = parts.netloc, parts.path.lstrip("/")
    client = s3_client(settings.cores.s3_endpoint_url)
    try:
        for entry in manifest.files:
            key = prefix + entry.name
            if _stored_sha256(client, bucket, key) == entry.sha256:
                continue
            client.upload_file(
                str(directory / entry.name), bucket, key, ExtraArgs={"Metadata": {"sha256": entry.sha256}}
            )
        client.put_object(Bucket=bucket, Key=prefix + MANIFEST_FILE, Body=manifest.to_bytes())
    except (BotoCoreError, ClientError, OSError) as err:
        raise ManifestError(f"core v{manifest.version} could not be uploaded to s3://{bucket}/{prefix}: {err}") from err
    log.info("uploaded core v%d to s3://%s/%s (%d bytes)", manifest.version, bucket, prefix, manifest.total_bytes)


def _stored_sha256(client: object, bucket: str, key: str) -> str | None:
    from botocore.exceptions import ClientError

    try:
        head = client.head_object(Bucket=bucket, Key=key)  # type: ignore[attr-defined]
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise
    return head.get("Metadata", {}).get("sha256")
