"""Cores on S3-compatible storage: the hive uploads a released core, an agent fetches it by Range and verifies it.

Against a real ``moto_server`` process on a free loopback port, stopped by its pid.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from agents.core_fetch import CoreVerificationError, FetchOptions, S3Source, fetch_core, s3_client
from agents.core_manifest import MANIFEST_FILE, build_manifest
from agents.model import WEIGHTS_FILE, file_sha256
from hive.config import CoreTransportSettings, HiveSettings
from hive.cores.files import core_dir
from hive.cores.transport import release_uri, upload_core
from streams.events import CoreRelease

from factories import make_core_dir

BUCKET = "hive-cores"


def released_on_s3(tmp_path: Path, endpoint: str) -> tuple[HiveSettings, CoreRelease]:
    s3_client(endpoint).create_bucket(Bucket=BUCKET)
    settings = HiveSettings(
        home=tmp_path / "hive",
        cores=CoreTransportSettings(base_url=f"s3://{BUCKET}/fleet-a", s3_endpoint_url=endpoint),
    )
    directory = make_core_dir(core_dir(settings, 1))
    manifest = build_manifest(directory, 1)
    upload_core(settings, manifest, directory)
    release = CoreRelease(
        version=1,
        model_uri=release_uri(settings, 1, directory),
        sha256=file_sha256(directory / WEIGHTS_FILE),
        manifest_sha256=manifest.sha256(),
    )
    return settings, release


def test_an_agent_fetches_a_core_the_hive_uploaded(s3_endpoint: str, tmp_path: Path) -> None:
    settings, release = released_on_s3(tmp_path, s3_endpoint)
    assert release.model_uri == f"s3://{BUCKET}/fleet-a/v1/"
    keys = {o["Key"] for o in s3_client(s3_endpoint).list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert f"fleet-a/v1/{MANIFEST_FILE}" in keys and f"fleet-a/v1/{WEIGHTS_FILE}" in keys

    fetched = fetch_core(release, tmp_path / "agent" / "cores", FetchOptions(s3_endpoint_url=s3_endpoint))

    for path in core_dir(settings, 1).iterdir():
        assert (fetched / path.name).read_bytes() == path.read_bytes()


def test_s3_answers_a_range_so_a_cut_download_resumes(s3_endpoint: str, tmp_path: Path) -> None:
    settings, release = released_on_s3(tmp_path, s3_endpoint)
    weights = (core_dir(settings, 1) / WEIGHTS_FILE).read_bytes()
    source = S3Source(release.model_uri, FetchOptions(s3_endpoint_url=s3_endpoint))
    with source.open(WEIGHTS_FILE, 500) as opened:
        assert opened.resumed and opened.total == len(weights) and opened.stream.read() == weights[500:]


def test_an_object_replaced_in_the_bucket_is_refused(s3_endpoint: str, tmp_path: Path) -> None:
    _, release = released_on_s3(tmp_path, s3_endpoint)
    client = s3_client(s3_endpoint)
    client.put_object(Bucket=BUCKET, Key=f"fleet-a/v1/{WEIGHTS_FILE}", Body=b"not the released weights")

    with pytest.raises(CoreVerificationError, match=f"{WEIGHTS_FILE} is 24 bytes"):
        fetch_core(release, tmp_path / "agent" / "cores", FetchOptions(s3_endpoint_url=s3_endpoint))
    assert not (tmp_path / "agent" / "cores" / "v1").exists()


def test_a_second_upload_of_the_same_core_sends_only_the_manifest(s3_endpoint: str, tmp_path: Path) -> None:
    settings, _ = released_on_s3(tmp_path, s3_endpoint)
    client = s3_client(s3_endpoint)
    before = client.head_object(Bucket=BUCKET, Key=f"fleet-a/v1/{WEIGHTS_FILE}")["LastModified"]
    time.sleep(1.1)  # S3 times have a resolution of a second
    directory = core_dir(settings, 1)
    upload_core(settings, build_manifest(directory, 1), directory)
    assert client.head_object(Bucket=BUCKET, Key=f"fleet-a/v1/{WEIGHTS_FILE}")["LastModified"] == before
