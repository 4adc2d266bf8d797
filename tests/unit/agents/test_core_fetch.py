"""Fetching a core from elsewhere: the manifest signed into the release decides what is accepted, byte for byte.

A stub source stands in for the server here (what it sends, and where it breaks off, is the test's choice);
tests/unit/hive/cores/test_core_server.py fetches from the real core server over loopback.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from agents.core_fetch import (
    CoreUnreachable,
    CoreVerificationError,
    FetchOptions,
    Opened,
    _fetch_remote,
    fetch_core,
)
from agents.core_manifest import MANIFEST_FILE, ManifestError, build_manifest, parse_manifest
from agents.model import WEIGHTS_FILE, file_sha256
from streams.events import CoreRelease

from factories import make_core_dir


class StubSource:
    """Serves a directory's files from any offset; ``cut_after`` breaks each file's stream after that many bytes
    (once per file), as a dropped connection would. Records every (name, start) asked for."""

    def __init__(
        self,
        directory: Path,
        manifest: bytes,
        cut_after: int | None = None,
        honours_range: bool = True,
        declares_size: bool = True,
    ):
        self.directory = directory
        self.declares_size = declares_size
        self.raw = manifest
        self.cut_after = cut_after
        self.honours_range = honours_range
        self.asked: list[tuple[str, int]] = []
        self.cut: set[str] = set()

    @contextmanager
    def open(self, name: str, start: int) -> Iterator[Opened]:
        if name == MANIFEST_FILE:
            yield Opened(io.BytesIO(self.raw), False, len(self.raw))
            return
        self.asked.append((name, start))
        data = (self.directory / name).read_bytes()
        offset = start if self.honours_range else 0
        body = data[offset:]
        total = len(data) if self.declares_size else None
        if self.cut_after is not None and name not in self.cut:
            self.cut.add(name)
            yield Opened(Breaking(body[: self.cut_after]), self.honours_range, total)
            return
        yield Opened(io.BytesIO(body), self.honours_range, total)


class Breaking(io.BytesIO):
    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        if not chunk:
            raise ConnectionResetError("connection reset by peer")
        return chunk


def released(directory: Path, version: int = 1, uri: str = "https://hive.example/cores/v1/") -> CoreRelease:
    manifest = build_manifest(directory, version)
    return CoreRelease(
        version=version,
        model_uri=uri,
        sha256=file_sha256(directory / WEIGHTS_FILE),
        manifest_sha256=manifest.sha256(),
    )


@pytest.fixture
def core(tmp_path: Path) -> Path:
    return make_core_dir(tmp_path / "served")


def test_every_file_is_fetched_and_verified(core: Path, tmp_path: Path) -> None:
    release = released(core)
    source = StubSource(core, build_manifest(core, 1).to_bytes())

    _fetch_remote(source, release, tmp_path / "cache" / "v1", FetchOptions())

    assert sorted(p.name for p in (tmp_path / "cache" / "v1").iterdir()) == sorted(p.name for p in core.iterdir())
    for path in core.iterdir():
        assert (tmp_path / "cache" / "v1" / path.name).read_bytes() == path.read_bytes()
    assert not list((tmp_path / "cache").glob(".*partial"))  # the partial directory became v1


def test_a_download_cut_off_resumes_where_it_stopped(core: Path, tmp_path: Path) -> None:
    release = released(core)
    source = StubSource(core, build_manifest(core, 1).to_bytes(), cut_after=1000)
    target = tmp_path / "cache" / "v1"

    with pytest.raises(CoreUnreachable, match="broke off"):
        _fetch_remote(source, release, target, FetchOptions())
    assert not target.exists()
    _fetch_remote(source, release, target, FetchOptions())

    weights_asks = [start for name, start in source.asked if name == WEIGHTS_FILE]
    assert weights_asks == [0, 1000]  # the second attempt asked only for what was missing
    assert file_sha256(target / WEIGHTS_FILE) == release.sha256


def test_a_server_that_ignores_range_sends_the_file_again_from_its_start(core: Path, tmp_path: Path) -> None:
    release = released(core)
    source = StubSource(core, build_manifest(core, 1).to_bytes(), cut_after=1000, honours_range=False)
    target = tmp_path / "cache" / "v1"
    with pytest.raises(CoreUnreachable):
        _fetch_remote(source, release, target, FetchOptions())

    _fetch_remote(source, release, target, FetchOptions())

    assert file_sha256(target / WEIGHTS_FILE) == release.sha256


def test_a_tampered_config_is_refused_though_the_weights_match(core: Path, tmp_path: Path) -> None:
    """config.json is not covered by the release's sha256; the signed manifest covers it."""
    release = released(core)
    manifest = build_manifest(core, 1).to_bytes()
    config = core / "config.json"
    config.write_text(config.read_text().replace("silu", "gelu"))  # same length: only the hash tells

    with pytest.raises(CoreVerificationError, match=r"config\.json sha256"):
        _fetch_remote(StubSource(core, manifest), release, tmp_path / "cache" / "v1", FetchOptions())
    assert not (tmp_path / "cache" / "v1").exists()
    assert not list((tmp_path / "cache").rglob("config.json"))  # the bad file is not kept for a resume


def test_a_manifest_other_than_the_signed_one_is_refused(core: Path, tmp_path: Path) -> None:
    release = released(core)
    forged = json.loads(build_manifest(core, 1).to_bytes())
    forged["files"] = [f for f in forged["files"] if f["name"] != "config.json"]  # drop a file from the list

    with pytest.raises(CoreVerificationError, match="does not match the signed manifest_sha256"):
        _fetch_remote(StubSource(core, json.dumps(forged).encode()), release, tmp_path / "v1", FetchOptions())


def test_a_network_release_without_a_manifest_hash_is_refused(core: Path, tmp_path: Path) -> None:
    release = released(core).model_copy(update={"manifest_sha256": None})
    with pytest.raises(CoreVerificationError, match="must carry manifest_sha256"):
        _fetch_remote(StubSource(core, b"{}"), release, tmp_path / "v1", FetchOptions())


def test_a_core_over_the_size_cap_is_refused_before_any_download(core: Path, tmp_path: Path) -> None:
    release = released(core)
    source = StubSource(core, build_manifest(core, 1).to_bytes())
    with pytest.raises(CoreVerificationError, match="over this agent's cap"):
        _fetch_remote(source, release, tmp_path / "v1", FetchOptions(max_bytes=1000))
    assert source.asked == []


def test_a_file_longer_than_its_manifest_entry_is_read_only_up_to_that_size(core: Path, tmp_path: Path) -> None:
    """A server that streams on without end cannot fill the agent's disk: reading stops at the manifest's size."""
    release = released(core)
    manifest = build_manifest(core, 1).to_bytes()
    original = (core / "config.json").read_bytes()
    with (core / "config.json").open("ab") as fh:
        fh.write(b" " * 10_000_000)

    source = StubSource(core, manifest, declares_size=False)
    _fetch_remote(source, release, tmp_path / "cache" / "v1", FetchOptions())

    assert (tmp_path / "cache" / "v1" / "config.json").read_bytes() == original


def test_a_file_the_source_says_is_another_size_is_refused_not_retried(core: Path, tmp_path: Path) -> None:
    release = released(core)
    manifest = build_manifest(core, 1).to_bytes()
    with (core / "config.json").open("ab") as fh:
        fh.write(b" ")
    with pytest.raises(CoreVerificationError, match=r"config\.json is \d+ bytes, the manifest \d+"):
        _fetch_remote(StubSource(core, manifest), release, tmp_path / "cache" / "v1", FetchOptions())


def test_an_unknown_scheme_is_refused(core: Path, tmp_path: Path) -> None:
    release = released(core, uri="ftp://hive.example/v1/")
    with pytest.raises(ValueError, match="unsupported model URI scheme 'ftp'"):
        fetch_core(release, tmp_path / "cache")


def test_a_server_that_is_not_there_is_unreachable_not_refused(core: Path, tmp_path: Path) -> None:
    release = released(core, uri="http://127.0.0.1:9/cores/v1/")  # the discard port: nothing listens
    with pytest.raises(CoreUnreachable):
        fetch_core(release, tmp_path / "cache", FetchOptions(timeout_s=2))


def test_a_local_core_is_checked_against_its_manifest_too(core: Path, tmp_path: Path) -> None:
    release = released(core, uri=core.resolve().as_uri())
    assert (fetch_core(release, tmp_path / "cache") / "config.json").is_file()

    (core / "tokenizer_extra.json").write_text("{}")  # a file the signed manifest does not list
    with pytest.raises(CoreVerificationError, match="differ from the signed manifest"):
        fetch_core(release, tmp_path / "cache2")


@pytest.mark.parametrize(
    ("document", "why"),
    [
        (b"\xff", "not JSON"),
        (b"[]", "format-1"),
        (b'{"format":1,"version":-1,"files":[]}', "version"),
        (b'{"format":1,"version":1,"files":[]}', "1 to 64"),
        (b'{"format":1,"version":1,"files":[{"name":"../x","size":1,"sha256":"' + b"0" * 64 + b'"}]}', "name"),
        (b'{"format":1,"version":1,"files":[{"name":".hidden","size":1,"sha256":"' + b"0" * 64 + b'"}]}', "name"),
        (b'{"format":1,"version":1,"files":[{"name":"a","size":true,"sha256":"' + b"0" * 64 + b'"}]}', "size"),
        (b'{"format":1,"version":1,"files":[{"name":"a","size":1,"sha256":"ABC"}]}', "sha256"),
        (b'{"format":1,"version":1,"files":[{"name":"a","size":1,"sha256":"' + b"0" * 64 + b'","x":1}]}', "exactly"),
        (
            b'{"format":1,"version":1,"files":[{"name":"a","size":1,"sha256":"'
            + b"0" * 64
            + b'"},{"name":"a","size":2,"sha256":"'
            + b"1" * 64
            + b'"}]}',
            "twice",
        ),
        (b" " * (1 << 20) + b"{}", "over the limit"),
    ],
)
def test_a_malformed_manifest_is_refused_with_its_reason(document: bytes, why: str) -> None:
    with pytest.raises(ManifestError, match=why):
        parse_manifest(document)


def test_the_canonical_form_round_trips_and_its_hash_is_stable(core: Path) -> None:
    manifest = build_manifest(core, 3)
    raw = manifest.to_bytes()
    assert parse_manifest(raw).to_bytes() == raw
    assert manifest.sha256() == hashlib.sha256(raw).hexdigest()
    assert {f.name for f in manifest.files} >= {WEIGHTS_FILE, "config.json"}
    assert MANIFEST_FILE not in {f.name for f in manifest.files}


def test_a_full_disk_is_a_reason_to_try_again_not_to_refuse(
    core: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import agents.core_fetch

    release = released(core, uri=core.resolve().as_uri())

    def full(path: object, *args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(agents.core_fetch.shutil, "copy2", full)
    with pytest.raises(CoreUnreachable, match="No space left"):
        fetch_core(release, tmp_path / "cache")
    monkeypatch.undo()
    assert (fetch_core(release, tmp_path / "cache") / WEIGHTS_FILE).is_file()
