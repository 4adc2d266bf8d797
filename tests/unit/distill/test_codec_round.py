"""A round on a core with its own tokenizer: examples, collate and attribution count in the base core's codec."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from agents.codec import BYTE_CODEC, HFCodec, load_codec
from agents.model import load_core, topk_signal
from distill.attribution import per_agent_metrics
from distill.data import load_data
from distill.dataset import build_examples, collate
from distill.manifest import Manifest
from distill.teachers import AdapterTeachers
from streams.events import TeacherSignal

from factories import make_learning
from tiny_hf import make_hf_core

K = 4


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_hf_core(tmp_path_factory.mktemp("hf") / "base")


def _learnings(base: Path) -> list:
    codec, model = load_codec(base), load_core(base)
    [(ids, lps)] = topk_signal(model, ["cap zorvia"], ["belmar"], K, codec)
    with_signal = make_learning("a", "cap", prompt="cap zorvia", completion="belmar", reward=1.0).model_copy(
        update={"teacher": TeacherSignal(k=K, token_ids=ids, logprobs=lps, tokenizer=codec.fingerprint)}
    )
    corrected = make_learning("b", "add", prompt="add 12 30", completion="41", reward=0.0, correction="42")
    return [with_signal, corrected]


def test_load_data_takes_the_codec_of_the_base_core(tmp_path: Path, base: Path) -> None:
    learnings = _learnings(base)
    path = tmp_path / "learnings.jsonl"
    path.write_text("".join(item.model_dump_json() + "\n" for item in learnings))
    manifest = Manifest.model_validate(
        {"round_id": "r1", "base_core": base, "out_dir": tmp_path / "out", "learnings": path, "skills": ["cap"]}
    )
    data = load_data(manifest, rank=0)
    assert isinstance(data.codec, HFCodec) and data.codec.fingerprint == load_codec(base).fingerprint
    assert [(e.answer, e.teacher_ids is not None, e.verified) for e in data.examples] == [
        ("belmar", True, True),
        ("42", False, True),
    ]
    tb = collate(data.examples, data.codec)
    assert tb.targets.tolist() == data.codec.answer_ids("belmar") + data.codec.answer_ids("42")
    assert tb.has_teacher.tolist() == [True] * len(data.codec.answer_ids("belmar")) + [False] * len(
        data.codec.answer_ids("42")
    )


def test_a_signal_counted_in_byte_ids_does_not_line_up_with_the_base_cores_answer(base: Path) -> None:
    codec = load_codec(base)
    byte_ids = [[t + j for j in range(K)] for t in BYTE_CODEC.answer_ids("belmar")]
    assert len(byte_ids) != len(codec.answer_ids("belmar"))
    signal = TeacherSignal(
        k=K, token_ids=byte_ids, logprobs=[[-1.0 - j for j in range(K)]] * len(byte_ids), tokenizer=codec.fingerprint
    )
    learning = make_learning("a", "cap", prompt="cap zorvia", completion="belmar", reward=0.5).model_copy(
        update={"teacher": signal}
    )
    examples, report = build_examples([learning], codec)
    assert examples == [] and report.skipped["teacher_misaligned"] == 1


@pytest.mark.parametrize("named", [None, "byte-260", "hf-sha256-" + "0" * 64])
def test_a_signal_of_another_tokenizer_is_never_mixed_in(base: Path, named: str | None) -> None:
    """Ids that line up by length but were made with another tokenizer (or none named: the byte one) are dropped;
    the learning stays when its answer is verified."""
    codec = load_codec(base)
    [good] = [item for item in _learnings(base) if item.teacher is not None]
    assert good.teacher is not None
    other = good.model_copy(update={"teacher": good.teacher.model_copy(update={"tokenizer": named})})
    unverified = other.model_copy(update={"feedback": other.feedback.model_copy(update={"reward": 0.5})})

    examples, report = build_examples([other, unverified], codec)

    assert [(e.answer, e.teacher_ids) for e in examples] == [("belmar", None)]
    assert report.skipped["teacher_other_tokenizer"] == 2
    assert [(d.reason, "another tokenizer" in d.detail) for d in report.dropped] == [("teacher_other_tokenizer", True)]


def test_teachers_on_another_tokenizer_are_refused(base: Path) -> None:
    teachers = AdapterTeachers(K, base, [])
    assert teachers.codec.fingerprint == load_codec(base).fingerprint
    with pytest.raises(ValueError, match="byte-260"):
        build_examples(_learnings(base), BYTE_CODEC, teachers=teachers)


def test_attribution_scores_in_the_base_cores_codec(base: Path) -> None:
    codec = load_codec(base)
    examples, _ = build_examples(_learnings(base), codec)
    model = load_core(base)
    torch.manual_seed(0)
    figures = per_agent_metrics(examples, model, model, temperature=1.0, codec=codec)
    assert figures["a"]["kd_positions"] == len(codec.answer_ids("belmar"))
    assert figures["a"]["kd_before"] == figures["a"]["kd_after"]
    assert figures["b"]["ce_positions"] == len(codec.answer_ids("42"))
