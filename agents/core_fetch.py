"""Fetches a released core into the agent's own home and verifies every file against the signed release.

Three transports, chosen by the release's ``model_uri``:

- ``file://`` (or a bare path): the hive's directory on this host, copied.
- ``http://`` and ``https://``: the hive's core server (``hive core serve``, or ``hive serve`` with
  ``HIVE_CORES__LISTEN``), which serves ``manifest.json`` and each file, with Range requests.
- ``s3://bucket/prefix/``: S3-compatible object storage the hive uploaded the core to.

Over the network the release must carry ``manifest_sha256``: the manifest is checked against it, the weights
against the release's ``sha256``, and each file against the manifest, so a server or bucket that an attacker
controls can only make the fetch fail. A download that breaks off is kept (``.v<N>-<manifest>.partial``) and
resumed from where it stopped, by a Range request, on the next attempt. A manifest over ``max_bytes`` is
refused before anything is downloaded, and no file is read past the size its manifest gives.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import ssl
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol
from urllib.error import HTTPError, URLError
from urllib.parse import quote, urlsplit
from urllib.request import Request, urlopen

from agents.core_manifest import (
    CHUNK_BYTES,
    MANIFEST_FILE,
    MAX_MANIFEST_BYTES,
    CoreManifest,
    ManifestError,
    ManifestFile,
    build_manifest,
    file_digest,
    parse_manifest,
)
from agents.model import WEIGHTS_FILE
from streams.durable import building_dir, publish_dir
from streams.events import CoreRelease

log = logging.getLogger(__name__)

# A whole SmolLM2-135M core in float32 is about 0.55 GB; 16 GiB leaves room for cores up to a few billion
# parameters in bf16 while still stopping a server that announces a terabyte.
DEFAULT_MAX_CORE_BYTES = 16 << 30
REMOTE_SCHEMES = ("http", "https", "s3")


class CoreVerificationError(RuntimeError):
    """A fetched core that does not match its signed release: the release is refused, not tried again."""


class CoreUnreachable(RuntimeError):
    """The core could not be fetched now (no route, a server error, a download cut off): try again later.
    What was downloaded is kept, and the next attempt resumes it."""


@dataclass(frozen=True)
class FetchOptions:
    """How an agent fetches cores (``AgentSettings.fetch_options``)."""

    # CA bundle that verifies an https:// core server; None: the system's.
    ca_file: Path | None = None
    max_bytes: int = DEFAULT_MAX_CORE_BYTES
    # An S3-compatible endpoint (MinIO, moto); None: AWS, or AWS_ENDPOINT_URL.
    s3_endpoint_url: str | None = None
    # Seconds a connection or a read may stall before the attempt counts as cut off.
    timeout_s: float = 30.0


@dataclass(frozen=True)
class Opened:
    """A file's bytes as a source sends them: ``resumed`` is False when it ignored the offset and sends the file
    from its first byte; ``total`` is the whole file's size as the source declares it, when it does."""

    stream: BinaryIO
    resumed: bool
    total: int | None


class RangeSource(Protocol):
    """A remote core: each of its files' bytes from an offset, ``manifest.json`` among them."""

    def open(self, name: str, start: int) -> AbstractContextManager[Opened]:
        """A context manager over the file's bytes from ``start`` (``Opened``)."""
        ...


def fetch_core(release: CoreRelease, cache_dir: Path, options: FetchOptions | None = None) -> Path:
    """The released core in ``cache_dir/v{version}``, every file verified; raises CoreVerificationError for a
    core that does not match the release, CoreUnreachable for one that cannot be fetched now, ValueError for a
    URI this agent cannot follow."""
    options = options or FetchOptions()
    scheme = urlsplit(release.model_uri).scheme.lower()
    target = cache_dir / f"v{release.version}"
    if scheme not in ("", "file", "http", "https", "s3"):
        raise ValueError(f"core v{release.version}: unsupported model URI scheme {scheme!r}")
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        if scheme in ("", "file"):
            _fetch_local(release, target)
        elif scheme == "s3":
            _fetch_remote(S3Source(release.model_uri, options), release, target, options)
        else:
            _fetch_remote(HttpSource(release.model_uri, options), release, target, options)
    except OSError as err:
        # A full disk, an I/O error, a source directory not mounted yet: nothing says the release is bad, so
        # the agent tries again later rather than refusing it for good.
        raise CoreUnreachable(f"core v{release.version} from {release.model_uri}: {err}") from err
    return target


def _fetch_local(release: CoreRelease, target: Path) -> None:
    source = Path(urlsplit(release.model_uri).path)
    building = building_dir(target)
    try:
        for path in sorted(source.iterdir()):
            if path.is_file():
                shutil.copy2(path, building / path.name)
        _verify_local(release, building)
        publish_dir(building, target)
    finally:
        if building.exists():
            shutil.rmtree(building)


def _verify_local(release: CoreRelease, directory: Path) -> None:
    weights = directory / WEIGHTS_FILE
    actual = file_digest(weights) if weights.is_file() else "missing"
    if actual != release.sha256:
        raise CoreVerificationError(
            f"core v{release.version} from {release.model_uri}: {WEIGHTS_FILE} sha256 {actual} != released "
            f"{release.sha256}"
        )
    if release.manifest_sha256 is None:
        return  # a release from before manifests: on one host the weights' hash is what it signed
    try:
        manifest = build_manifest(directory, release.version)
    except ManifestError as err:
        raise CoreVerificationError(f"core v{release.version} from {release.model_uri}: {err}") from err
    if manifest.sha256() != release.manifest_sha256:
        raise CoreVerificationError(
            f"core v{release.version} from {release.model_uri}: its files ({_names(manifest)}) differ from the "
            f"signed manifest {release.manifest_sha256}"
        )


def _fetch_remote(source: RangeSource, release: CoreRelease, target: Path, options: FetchOptions) -> None:
    where = f"core v{release.version} from {release.model_uri}"
    if release.manifest_sha256 is None:
        raise CoreVerificationError(f"{where}: a release fetched over the network must carry manifest_sha256")
    raw = _manifest_bytes(source, where)
    if hashlib.sha256(raw).hexdigest() != release.manifest_sha256:
        raise CoreVerificationError(f"{where}: {MANIFEST_FILE} does not match the signed manifest_sha256")
    try:
        manifest = parse_manifest(raw)
    except ManifestError as err:
        raise CoreVerificationError(f"{where}: {err}") from err
    weights = manifest.file(WEIGHTS_FILE)
    if manifest.version != release.version or weights is None or weights.sha256 != release.sha256:
        raise CoreVerificationError(f"{where}: the manifest is not the one of this release's version and weights")
    if manifest.total_bytes > options.max_bytes:
        raise CoreVerificationError(
            f"{where}: {manifest.total_bytes} bytes, over this agent's cap of {options.max_bytes} "
            "(HIVE_AGENT_MAX_CORE_BYTES)"
        )
    # Named by the manifest, so that a resumed download never mixes the bytes of two different cores.
    partial = target.with_name(f".{target.name}-{release.manifest_sha256[:16]}.partial")
    partial.mkdir(parents=True, exist_ok=True)
    for stale in partial.iterdir():
        if manifest.file(stale.name) is None:
            stale.unlink()
    for entry in manifest.files:
        _download(source, entry, partial / entry.name, where)
    publish_dir(partial, target)
    log.info("fetched %s: %d files, %d bytes", where, len(manifest.files), manifest.total_bytes)


def _manifest_bytes(source: RangeSource, where: str) -> bytes:
    with source.open(MANIFEST_FILE, 0) as opened:
        raw = _read(opened.stream, MAX_MANIFEST_BYTES + 1, where)
    if len(raw) > MAX_MANIFEST_BYTES:
        raise CoreVerificationError(f"{where}: {MANIFEST_FILE} is over {MAX_MANIFEST_BYTES} bytes")
    return raw


def _download(source: RangeSource, entry: ManifestFile, path: Path, where: str) -> None:
    """Completes ``path`` from ``source``, resuming what an earlier attempt left, then checks its sha256."""
    have = path.stat().st_size if path.exists() else 0
    if have > entry.size:
        path.unlink()
        have = 0
    if have < entry.size or entry.size == 0:
        with source.open(entry.name, have) as opened, path.open("r+b" if path.exists() else "wb") as out:
            if opened.total is not None and opened.total != entry.size:
                # Not a download cut off: the source holds another file than the one the release signed.
                raise CoreVerificationError(f"{where}: {entry.name} is {opened.total} bytes, the manifest {entry.size}")
            stream = opened.stream
            if not opened.resumed:
                have = 0
            out.seek(have)
            out.truncate()
            while have < entry.size:
                chunk = _read(stream, min(CHUNK_BYTES, entry.size - have), where)
                if not chunk:
                    raise CoreUnreachable(f"{where}: {entry.name} ended at {have} of {entry.size} bytes")
                out.write(chunk)
                have += len(chunk)
            out.flush()
            os.fsync(out.fileno())
    actual = file_digest(path)
    if actual != entry.sha256:
        path.unlink()
        raise CoreVerificationError(f"{where}: {entry.name} sha256 {actual} != manifest {entry.sha256}")


def _read(stream: BinaryIO, size: int, where: str) -> bytes:
    try:
        return stream.read(size)
    except (OSError, ValueError) as err:
        # A connection reset or a read timeout midway: what was written so far is kept for the next attempt.
        raise CoreUnreachable(f"{where}: the download broke off: {err}") from err


class HttpSource:
    """A core served over HTTP(S) at ``base_url`` (``…/cores/v<N>/``)."""

    def __init__(self, base_url: str, options: FetchOptions) -> None:
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.timeout_s = options.timeout_s
        self.context: ssl.SSLContext | None = None
        if urlsplit(base_url).scheme.lower() == "https":
            cafile = str(options.ca_file) if options.ca_file is not None else None
            self.context = ssl.create_default_context(cafile=cafile)

    @contextmanager
    def open(self, name: str, start: int) -> Iterator[Opened]:
        url = self.base_url + quote(name)
        headers = {"Range": f"bytes={start}-"} if start else {}
        try:
            response: Any = urlopen(Request(url, headers=headers), timeout=self.timeout_s, context=self.context)
        except HTTPError as err:
            raise CoreUnreachable(f"{url}: HTTP {err.code} {err.reason}") from err
        except (URLError, OSError, ValueError) as err:
            raise CoreUnreachable(f"{url}: {err}") from err
        with response:
            resumed = response.status == 206
            if resumed:
                yield Opened(response, True, _range_total(response.headers.get("Content-Range"), start, url))
            else:
                length = response.headers.get("Content-Length")
                yield Opened(response, False, int(length) if length is not None and length.isdigit() else None)


class S3Source:
    """A core on S3-compatible storage at ``s3://bucket/prefix/``."""

    def __init__(self, uri: str, options: FetchOptions) -> None:
        parts = urlsplit(uri)
        if not parts.netloc or parts.query or parts.fragment:
            raise ValueError(f"{uri}: an S3 core URI is s3://bucket/prefix/")
        self.uri = uri
        self.bucket = parts.netloc
        prefix = parts.path.lstrip("/")
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        self.client = s3_client(options.s3_endpoint_url, options.timeout_s)

    @contextmanager
    def open(self, name: str, start: int) -> Iterator[Opened]:
        from botocore.exceptions import BotoCoreError, ClientError

        key = self.prefix + name
        extra = {"Range": f"bytes={start}-"} if start else {}
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key, **extra)
        except (BotoCoreError, ClientError) as err:
            raise CoreUnreachable(f"s3://{self.bucket}/{key}: {err}") from err
        body = response["Body"]
        try:
            if "ContentRange" in response:
                yield Opened(body, True, _range_total(response["ContentRange"], start, f"s3://{self.bucket}/{key}"))
            else:
                yield Opened(body, False, int(response["ContentLength"]))
        finally:
            body.close()


def _range_total(content_range: str | None, start: int, where: str) -> int | None:
    """The total size in a ``Content-Range: bytes START-END/TOTAL`` answer to a range from ``start``."""
    match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", (content_range or "").strip())
    if match is None or int(match.group(1)) != start:
        raise CoreUnreachable(f"{where}: answered a range from {start} with Content-Range {content_range!r}")
    return None if match.group(2) == "*" else int(match.group(2))


def s3_client(endpoint_url: str | None, timeout_s: float = 30.0) -> Any:
    """A boto3 S3 client for ``endpoint_url`` (None: AWS, or ``AWS_ENDPOINT_URL``), with credentials from the
    usual AWS variables and files. boto3 is imported here: an agent that fetches over HTTP does not need it."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError as err:
        raise ValueError("s3:// cores need boto3: pip install 'hive-mind[s3]'") from err
    config = Config(connect_timeout=timeout_s, read_timeout=timeout_s, retries={"max_attempts": 2})
    return boto3.client("s3", endpoint_url=endpoint_url, config=config)


def _names(manifest: CoreManifest) -> str:
    return ", ".join(f.name for f in manifest.files)
