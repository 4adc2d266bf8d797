"""Fixtures of the agents' unit tests: one small pretrained-style core (tests/tiny_hf.py) and its codec."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.codec import HFCodec, load_codec

from tiny_hf import make_hf_core


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_hf_core(tmp_path_factory.mktemp("hf") / "core")


@pytest.fixture(scope="module")
def hf(hf_dir: Path) -> HFCodec:
    codec = load_codec(hf_dir)
    assert isinstance(codec, HFCodec)
    return codec
