"""The core server over loopback: agents fetch released cores by HTTP(S), resume by Range, and refuse bad bytes;
nothing but a released core's listed files is reachable."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.error import HTTPError
from urllib.request import Request, urlopen

import pytest
from tls import TestCA

from agents.core_fetch import CoreUnreachable, CoreVerificationError, FetchOptions, fetch_core
from agents.core_manifest import build_manifest
from agents.model import WEIGHTS_FILE, file_sha256
from hive.config import CoreTransportSettings, HiveSettings
from hive.cores.files import core_dir
from hive.cores.server import CoreServer
from hive.cores.transport import record_manifest
from streams.events import CoreRelease

from factories import make_core_dir


def release_of(settings: HiveSettings, version: int, base: str) -> CoreRelease:
    directory = core_dir(settings, version)
    return CoreRelease(
        version=version,
        model_uri=f"{base}/cores/v{version}/",
        sha256=file_sha256(directory / WEIGHTS_FILE),
        manifest_sha256=build_manifest(directory, version).sha256(),
    )


def released_hive(home: Path, **cores: object) -> HiveSettings:
    settings = HiveSettings(home=home, cores=CoreTransportSettings(**cores))  # type: ignore[arg-type]
    make_core_dir(core_dir(settings, 1))
    record_manifest(settings, build_manifest(core_dir(settings, 1), 1))
    make_core_dir(core_dir(settings, 2), seed=2)  # on disk, never released
    settings.mlflow_db.write_bytes(b"secret state")
    return settings


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[HiveSettings, str]]:
    settings = released_hive(tmp_path / "hive")
    server = CoreServer(settings, "127.0.0.1:0")
    server.start()
    try:
        yield settings, server.url
    finally:
        server.stop()


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    try:
        with urlopen(Request(url, headers=headers or {}), timeout=10) as response:
            return response.status, response.read(), dict(response.headers)
    except HTTPError as err:
        return err.code, err.read(), dict(err.headers)


def test_an_agent_fetches_a_released_core_over_http(served: tuple[HiveSettings, str], tmp_path: Path) -> None:
    settings, url = served
    fetched = fetch_core(release_of(settings, 1, url), tmp_path / "agent" / "cores")
    for path in core_dir(settings, 1).iterdir():
        assert (fetched / path.name).read_bytes() == path.read_bytes()


def test_the_manifest_is_served_byte_for_byte_and_files_by_range(served: tuple[HiveSettings, str]) -> None:
    settings, url = served
    status, body, _ = get(f"{url}/cores/v1/manifest.json")
    assert status == 200 and body == (settings.manifests_dir / "v1.json").read_bytes()

    weights = (core_dir(settings, 1) / WEIGHTS_FILE).read_bytes()
    status, body, headers = get(f"{url}/cores/v1/{WEIGHTS_FILE}", {"Range": "bytes=100-"})
    assert status == 206 and body == weights[100:]
    assert headers["content-range"] == f"bytes 100-{len(weights) - 1}/{len(weights)}"


@pytest.mark.parametrize(
    "path",
    [
        "/cores/v2/manifest.json",  # on disk but never released
        f"/cores/v2/{WEIGHTS_FILE}",
        "/cores/v1/..%2F..%2Fmlflow.db",
        "/cores/v1/%2E%2E/%2E%2E/mlflow.db",
        "/cores/v1/../../mlflow.db",
        "/cores/v-1/manifest.json",
        "/cores/v1/release.pem",
        "/mlflow.db",
    ],
)
def test_nothing_but_a_released_cores_listed_files_is_served(served: tuple[HiveSettings, str], path: str) -> None:
    _, url = served
    status, body, _ = get(url + path)
    assert status in (404, 422)
    assert b"secret state" not in body


def test_a_file_changed_on_the_hive_after_release_is_refused_by_the_agent(
    served: tuple[HiveSettings, str], tmp_path: Path
) -> None:
    settings, url = served
    release = release_of(settings, 1, url)
    config = core_dir(settings, 1) / "config.json"
    config.write_text(config.read_text().replace("silu", "gelu"))

    with pytest.raises(CoreVerificationError, match=r"config\.json sha256"):
        fetch_core(release, tmp_path / "agent" / "cores")


def test_a_server_that_stops_is_unreachable_and_the_next_attempt_completes(tmp_path: Path) -> None:
    settings = released_hive(tmp_path / "hive")
    server = CoreServer(settings, "127.0.0.1:0")
    url, port = server.url, server.port
    release = release_of(settings, 1, url)
    server.sock.close()  # bound, never served: connections are refused
    with pytest.raises(CoreUnreachable):
        fetch_core(release, tmp_path / "agent" / "cores", FetchOptions(timeout_s=2))

    again = CoreServer(settings, f"127.0.0.1:{port}")
    again.start()
    try:
        assert (fetch_core(release, tmp_path / "agent" / "cores") / WEIGHTS_FILE).is_file()
    finally:
        again.stop()


def test_over_https_an_agent_trusts_only_the_ca_it_was_given(tmp_path: Path) -> None:
    served_as = TestCA(tmp_path).self_signed  # a self-signed certificate: its own CA
    cert, key = served_as.cert, served_as.key
    settings = released_hive(tmp_path / "hive", tls_cert_file=cert, tls_key_file=key)
    server = CoreServer(settings, "127.0.0.1:0")
    server.start()
    try:
        assert server.url.startswith("https://")
        release = release_of(settings, 1, server.url)
        with pytest.raises(CoreUnreachable, match="CERTIFICATE_VERIFY_FAILED"):
            fetch_core(release, tmp_path / "agent" / "cores", FetchOptions(timeout_s=5))
        fetched = fetch_core(release, tmp_path / "agent" / "cores", FetchOptions(ca_file=cert))
        assert file_sha256(fetched / WEIGHTS_FILE) == release.sha256
    finally:
        server.stop()
