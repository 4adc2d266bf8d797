"""Teacher signals from an adapter claim check: verified weights are scored, a sha256 mismatch is never trained on."""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path

import pytest

from agents.claim_check import adapter_path
from agents.model import CoreSize, build_core, load_core, save_core, topk_signal
from agents.tokenizer import ByteTokenizer
from distill.dataset import build_examples
from distill.teachers import AdapterTeachers
from streams.events import ClaimCheck, Feedback, Learning, TeacherSignal

TOK = ByteTokenizer()
K = 5


@pytest.fixture(scope="module")
def specialist(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    directory = tmp_path_factory.mktemp("specialist") / "specialist"
    sha = save_core(build_core(CoreSize(width=32, layers=1), seed=3), directory)
    return directory, sha


def _learning(prompt: str, answer: str, adapter: ClaimCheck | None, correction: bool = True, **over) -> Learning:
    feedback = Feedback(reward=0.0, correction=answer) if correction else Feedback(reward=1.0)
    fields: dict = {
        "id": uuid.uuid4(),
        "agent_id": "agent-a",
        "skill": "capital",
        "core_version": 0,
        "prompt": prompt,
        "completion": "zzz" if correction else answer,
        "feedback": feedback,
        "adapter": adapter,
    }
    return Learning(**(fields | over))


def test_a_verified_adapter_gives_a_signal_over_the_learned_answer(specialist: tuple[Path, str]) -> None:
    directory, sha = specialist
    check = ClaimCheck(uri=directory.as_uri(), sha256=sha)
    learnings = [_learning("cap zorvia", "belmar", check), _learning("rev abc", "cba", check, correction=False)]
    filled, reasons = AdapterTeachers(K).fill(learnings)
    assert not reasons
    assert [lr.id for lr in filled] == [lr.id for lr in learnings]
    first, second = filled
    assert first.teacher is not None and second.teacher is not None
    # One row per answer byte plus EOS, k ids each, following the correction or the completion as the text does.
    assert len(first.teacher.token_ids) == len(b"belmar") + 1
    assert len(second.teacher.token_ids) == len(b"cba") + 1
    assert all(len(row) == K for row in first.teacher.token_ids)
    assert (first.teacher.over, second.teacher.over) == ("correction", "completion")
    assert first.learned_answer() == "belmar"
    # The rows are the specialist's own top-k.
    ((ids, lps),) = topk_signal(load_core(directory), ["cap zorvia"], ["belmar"], K)
    assert first.teacher.token_ids == ids
    assert [lp for row in first.teacher.logprobs for lp in row] == pytest.approx([lp for row in lps for lp in row])

    examples, report = build_examples(learnings, teachers=AdapterTeachers(K))
    assert report.kept == 2 and not report.skipped
    assert all(e.teacher_ids is not None and len(e.teacher_ids) == len(TOK.answer_ids(e.answer)) for e in examples)


def test_a_sha_mismatch_drops_the_learning_with_its_reason(specialist: tuple[Path, str]) -> None:
    directory, sha = specialist
    wrong = ClaimCheck(uri=directory.as_uri(), sha256=("0" if sha[0] != "0" else "1") + sha[1:])
    good = ClaimCheck(uri=directory.as_uri(), sha256=sha)
    learnings = [_learning("cap zorvia", "belmar", wrong), _learning("cap abc", "def", good)]
    # The mismatched learning carries a verified correction, yet it must not even get cross-entropy.
    examples, report = build_examples(learnings, teachers=AdapterTeachers(K))
    assert [e.prompt for e in examples] == ["cap abc"]
    assert report.skipped == Counter({"adapter_sha_mismatch": 1})


def test_an_unusable_claim_check_drops_only_the_signal(tmp_path: Path, specialist: tuple[Path, str]) -> None:
    _, sha = specialist
    learnings = [
        _learning("cap a", "b", ClaimCheck(uri="s3://bucket/specialist", sha256=sha)),
        _learning("cap c", "d", ClaimCheck(uri=(tmp_path / "gone").as_uri(), sha256=sha)),
    ]
    examples, report = build_examples(learnings, teachers=AdapterTeachers(K))
    # Both corrections are verified, so they stay for cross-entropy without a teacher.
    assert [(e.prompt, e.teacher_ids) for e in examples] == [("cap a", None), ("cap c", None)]
    assert report.skipped == Counter({"adapter_unsupported_uri": 1, "adapter_missing": 1})


def test_a_shipped_signal_is_kept_and_each_uri_is_loaded_once(specialist: tuple[Path, str]) -> None:
    directory, sha = specialist
    check = ClaimCheck(uri=directory.as_uri(), sha256=sha)
    shipped = TeacherSignal(k=1, over="correction", token_ids=[[98], [2]], logprobs=[[-0.1], [-0.2]])
    learnings = [
        _learning("cap x", "b", check, teacher=shipped),
        *(_learning(f"cap {i}", "ok", check) for i in range(3)),
    ]
    teachers = AdapterTeachers(K)
    filled, _ = teachers.fill(learnings)
    assert filled[0].teacher == shipped
    assert all(lr.teacher is not None and lr.teacher.k == K for lr in filled[1:])
    assert teachers.loaded == [directory.as_uri()]


def test_adapter_path_takes_only_local_files() -> None:
    assert adapter_path("file:///tmp/a%20b") == Path("/tmp/a b")
    assert adapter_path("file://localhost/tmp/x") == Path("/tmp/x")
    assert adapter_path("file://otherhost/tmp/x") is None
    assert adapter_path("https://example.com/x") is None
