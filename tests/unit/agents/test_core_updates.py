"""A released core is fetched, verified and loaded with its own tokenizer, or refused when it does not fit."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.codec import BYTE_CODEC, copy_tokenizer
from agents.core_fetch import CoreVerificationError
from agents.core_updates import load_release
from agents.model import build_core, save_core
from streams.events import CoreRelease

from tiny_hf import make_hf_core


def release(directory: Path, sha256: str, version: int = 1) -> CoreRelease:
    return CoreRelease(version=version, model_uri=directory.resolve().as_uri(), sha256=sha256)


def test_a_tiny_core_loads_with_the_byte_codec(tmp_path: Path) -> None:
    sha = save_core(build_core(seed=0), tmp_path / "released")

    core, codec = load_release(release(tmp_path / "released", sha), tmp_path / "cache")

    assert codec is BYTE_CODEC and core.config.vocab_size == BYTE_CODEC.vocab_size


def test_a_pretrained_core_loads_with_its_own_tokenizer(tmp_path: Path) -> None:
    from agents.model import file_sha256

    source = make_hf_core(tmp_path / "released")

    core, codec = load_release(release(source, file_sha256(source / "model.safetensors")), tmp_path / "cache")

    assert codec.fingerprint.startswith("hf-sha256-") and codec.vocab_size <= core.config.vocab_size
    assert (tmp_path / "cache" / "v1" / "tokenizer.json").is_file()


def test_a_core_whose_tokenizer_does_not_fit_its_model_is_refused(tmp_path: Path) -> None:
    """Tiny weights (260 tokens) released with a pretrained tokenizer's files: decoding would be garbage."""
    sha = save_core(build_core(seed=0), tmp_path / "released")
    copy_tokenizer(make_hf_core(tmp_path / "pretrained"), tmp_path / "released")

    with pytest.raises(ValueError, match="does not belong to this model"):
        load_release(release(tmp_path / "released", sha), tmp_path / "cache")


def test_a_core_that_fails_its_sha256_is_refused_and_not_kept(tmp_path: Path) -> None:
    save_core(build_core(seed=0), tmp_path / "released")

    with pytest.raises(CoreVerificationError):
        load_release(release(tmp_path / "released", "0" * 64), tmp_path / "cache")
    assert not (tmp_path / "cache" / "v1").exists()
