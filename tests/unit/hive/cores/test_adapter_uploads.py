"""Agents on other hosts upload their specialist to the hive's server; only signed, fresh, well-formed uploads of a
specialist's own files are stored, and the claim check names the hive's copy under its adapter roots."""

from __future__ import annotations

import hashlib
import http.client
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.error import HTTPError
from urllib.parse import urlsplit
from urllib.request import Request, urlopen

import pytest
from pydantic import SecretStr

from agents.adapter_upload import AGENT_HEADER, SIGNATURE_HEADER, TIME_HEADER, UploadError, upload_specialist
from agents.claim_check import resolve_adapter
from agents.model import WEIGHTS_FILE, file_sha256
from hive.config import HiveSettings, IngestSettings
from hive.cores.files import core_dir
from hive.cores.server import CoreServer
from streams.signing import request_signature

from factories import make_core_dir

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


@pytest.fixture
def hive(tmp_path: Path) -> Iterator[tuple[HiveSettings, str]]:
    settings = HiveSettings(
        home=tmp_path / "hive",
        ingest=IngestSettings(
            agent_keys={"agent-1": SecretStr(KEY.hex()), "gone": SecretStr(KEY.hex())}, revoked_agents=["gone"]
        ),
    )
    make_core_dir(core_dir(settings, 0))  # sets the default size cap: four times its weights
    server = CoreServer(settings, "127.0.0.1:0")
    server.start()
    try:
        yield settings, server.url
    finally:
        server.stop()


@pytest.fixture
def specialist(tmp_path: Path) -> tuple[Path, str]:
    directory = make_core_dir(tmp_path / "agent" / "specialist", seed=5)
    return directory, file_sha256(directory / WEIGHTS_FILE)


def test_an_uploaded_specialist_is_stored_and_its_claim_check_is_followed(
    hive: tuple[HiveSettings, str], specialist: tuple[Path, str]
) -> None:
    settings, url = hive
    directory, sha = specialist

    uri = upload_specialist(directory, sha, url, "agent-1", KEY)

    stored = resolve_adapter(uri, settings.adapter_roots)
    assert stored == (settings.uploads_dir / "agent-1" / sha).resolve()
    assert (stored / WEIGHTS_FILE).read_bytes() == (directory / WEIGHTS_FILE).read_bytes()
    assert upload_specialist(directory, sha, url, "agent-1", KEY) == uri  # the same bytes again: the same answer


@pytest.mark.parametrize(
    ("agent", "key", "match"),
    [
        ("agent-1", OTHER_KEY, "401.*signature does not match"),
        ("stranger", KEY, "401.*has no key"),
        ("gone", KEY, "403.*revoked"),
    ],
)
def test_an_upload_from_a_sender_without_the_right_key_is_refused(
    hive: tuple[HiveSettings, str], specialist: tuple[Path, str], agent: str, key: bytes, match: str
) -> None:
    settings, url = hive
    directory, sha = specialist
    with pytest.raises(UploadError, match=match):
        upload_specialist(directory, sha, url, agent, key)
    assert not settings.uploads_dir.exists() or not any(settings.uploads_dir.rglob("*.safetensors"))


def put(url: str, path: str, body: bytes, agent: str = "agent-1", when: str | None = None, key: bytes = KEY) -> int:
    when = when or datetime.now(UTC).isoformat()
    headers = {
        AGENT_HEADER: agent,
        TIME_HEADER: when,
        SIGNATURE_HEADER: request_signature(key, "PUT", path, hashlib.sha256(body).hexdigest(), when),
    }
    try:
        with urlopen(Request(url + path, data=body, headers=headers, method="PUT"), timeout=10) as response:
            return response.status
    except HTTPError as err:
        return err.code


def test_a_stale_or_zoneless_time_is_refused(hive: tuple[HiveSettings, str], specialist: tuple[Path, str]) -> None:
    _, url = hive
    directory, sha = specialist
    body = (directory / WEIGHTS_FILE).read_bytes()
    path = f"/adapters/agent-1/{sha}/{WEIGHTS_FILE}"
    assert put(url, path, body, when=(datetime.now(UTC) - timedelta(hours=1)).isoformat()) == 401
    assert put(url, path, body, when=datetime.now(UTC).replace(tzinfo=None).isoformat()) == 401
    assert put(url, path, body) == 200


def test_weights_whose_sha256_is_not_the_paths_are_refused(
    hive: tuple[HiveSettings, str], specialist: tuple[Path, str]
) -> None:
    settings, url = hive
    directory, _ = specialist
    wrong = "0" * 64
    assert put(url, f"/adapters/agent-1/{wrong}/{WEIGHTS_FILE}", (directory / WEIGHTS_FILE).read_bytes()) == 400
    assert not (settings.uploads_dir / "agent-1" / wrong / WEIGHTS_FILE).exists()


@pytest.mark.parametrize(
    "name", ["adapter_model.bin", "config.json", "..%2F..%2Frelease-key%2Frelease.pem", ".hidden", "model.pt"]
)
def test_only_a_specialists_own_files_are_taken(hive: tuple[HiveSettings, str], name: str) -> None:
    settings, url = hive
    assert put(url, f"/adapters/agent-1/{'a' * 64}/{name}", b"payload") == 404
    assert not (settings.home / "release-key").exists()


def test_a_header_naming_another_agent_is_refused(hive: tuple[HiveSettings, str], specialist: tuple[Path, str]) -> None:
    _, url = hive
    directory, sha = specialist
    assert (
        put(url, f"/adapters/agent-1/{sha}/{WEIGHTS_FILE}", (directory / WEIGHTS_FILE).read_bytes(), agent="x") == 401
    )


def declared_put(url: str, path: str, length: int) -> int:
    """A signed PUT that announces ``length`` bytes and sends none: the answer must come from the headers alone.
    (Sending the body too races the server's early 413 against the upload, and the client may see a reset.)"""
    split = urlsplit(url)
    when = datetime.now(UTC).isoformat()
    conn = http.client.HTTPConnection(split.hostname, split.port, timeout=10)
    try:
        conn.putrequest("PUT", path)
        for name, value in {
            AGENT_HEADER: "agent-1",
            TIME_HEADER: when,
            SIGNATURE_HEADER: request_signature(KEY, "PUT", path, "0" * 64, when),
            "Content-Length": str(length),
        }.items():
            conn.putheader(name, value)
        conn.endheaders()
        return conn.getresponse().status
    finally:
        conn.close()


def test_an_upload_over_the_cap_is_refused_unread(hive: tuple[HiveSettings, str]) -> None:
    settings, url = hive
    cap = 4 * (core_dir(settings, 0) / WEIGHTS_FILE).stat().st_size
    assert declared_put(url, f"/adapters/agent-1/{'a' * 64}/{WEIGHTS_FILE}", cap + 1) == 413
    assert declared_put(url, f"/adapters/agent-1/{'b' * 64}/adapter_config.json", 70_000) == 413
