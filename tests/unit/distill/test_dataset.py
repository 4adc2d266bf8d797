"""The round's dataset: loading learnings, per-agent balance, and teacher/label alignment in the collate."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch

from agents.model import make_batch
from agents.tokenizer import ByteTokenizer
from distill.dataset import BalancedSampler, Example, collate, load_examples
from distill.manifest import LearningsError
from streams.events import Learning, TeacherSignal

from factories import make_learning

TOK = ByteTokenizer()


def _signal(answer: str, k: int, base: int = 0) -> TeacherSignal:
    """A fake teacher whose top-1 at each position is the true next token, so alignment is checkable."""
    targets = TOK.answer_ids(answer)
    ids = [[t] + [(t + base + j) % 256 for j in range(1, k)] for t in targets]
    lps = [[-0.1 - 0.5 * j for j in range(k)] for _ in targets]
    return TeacherSignal(k=k, token_ids=ids, logprobs=lps)


def _learning(
    agent: str, prompt: str, answer: str, k: int | None = 4, reward: float = 1.0, correction: str | None = None
) -> Learning:
    """A learning whose teacher (``k`` ids a position; none when ``k`` is None) follows ``answer``."""
    teacher = _signal(answer, k) if k else None
    return make_learning(
        agent, "fake", prompt=prompt, completion=answer, reward=reward, correction=correction, teacher=teacher
    )


def _write(path: Path, learnings: list[Learning]) -> Path:
    path.write_text("".join(item.model_dump_json() + "\n" for item in learnings))
    return path


def test_load_keeps_signals_and_skips_what_teaches_nothing(tmp_path: Path) -> None:
    learnings = [
        _learning("a", "p1", "x1"),
        _learning("a", "p2", "wrong", k=None, reward=0.0, correction="right"),
        _learning("b", "p3", "meh", k=None, reward=0.4),  # no teacher, nothing verified
        _learning("b", "p" * 70, "long"),  # longer than the core's positions
        _learning("c", "p4", "ok").model_copy(update={"teacher": _signal("ok!", 4)}),  # positions do not line up
    ]
    examples, report = load_examples(_write(tmp_path / "l.jsonl", learnings), TOK)
    assert [(e.prompt, e.answer, e.verified, e.teacher_ids is not None) for e in examples] == [
        ("p1", "x1", True, True),
        ("p2", "right", True, False),
        ("p4", "ok", True, False),  # verified, so it stays for cross-entropy without the bad signal
    ]
    assert report.kept == 3
    assert report.skipped == Counter({"no_signal": 1, "too_long": 1, "teacher_misaligned": 1})


def test_replay_keeps_learnings_without_a_signal(tmp_path: Path) -> None:
    path = _write(tmp_path / "replay.jsonl", [_learning("b", "p3", "meh", k=None, reward=0.4)])
    examples, report = load_examples(path, TOK, require_signal=False)
    assert [(e.prompt, e.answer, e.verified) for e in examples] == [("p3", "meh", False)]
    assert not report.skipped


def test_a_malformed_line_is_an_error_with_its_number(tmp_path: Path) -> None:
    path = tmp_path / "l.jsonl"
    path.write_text(_learning("a", "p", "x").model_dump_json() + "\n\n{not json}\n")
    with pytest.raises(LearningsError, match=r"l\.jsonl:3"):
        load_examples(path, TOK)


def test_balanced_sampler_gives_each_agent_an_equal_share() -> None:
    agents = ["chatty"] * 1000 + ["quiet"] * 100 + ["mid"] * 300
    sampler = BalancedSampler(agents, seed=3)
    draws = [i for step in range(200) for i in sampler.batch(step, 64)]
    shares = Counter(agents[i] for i in draws)
    for agent in ("chatty", "quiet", "mid"):
        assert shares[agent] / len(draws) == pytest.approx(1 / 3, abs=0.02)
    # Within the quiet agent every learning gets drawn: balance does not mean a fixed subset.
    quiet_seen = {i for i in draws if agents[i] == "quiet"}
    assert len(quiet_seen) == 100


def test_balanced_sampler_is_seeded_and_ranks_differ() -> None:
    agents = [f"agent-{i % 3}" for i in range(90)]
    rank0, again, rank1 = BalancedSampler(agents, 7, 0), BalancedSampler(agents, 7, 0), BalancedSampler(agents, 7, 1)
    assert rank0.batch(5, 32) == again.batch(5, 32)
    assert rank0.batch(5, 32) != rank1.batch(5, 32)
    assert rank0.batch(5, 32) != rank0.batch(6, 32)
    assert BalancedSampler(list(reversed(agents)), 7, 0).agents == rank0.agents


def test_collate_aligns_teacher_positions_with_labels() -> None:
    examples = [
        Example("cap zorvia", "belmar", "a", "capital", *_rows("belmar", 4), verified=False),
        Example("add 7 5", "12", "b", "add", None, None, verified=True),
        Example("morse ab", ".- -...", "c", "morse", *_rows(".- -...", 2), verified=True),
    ]
    tb = collate(examples, TOK)
    reference = make_batch([e.prompt for e in examples], [e.answer for e in examples], TOK)
    assert torch.equal(tb.batch.input_ids, reference.input_ids)
    assert torch.equal(tb.batch.labels, reference.labels)
    assert torch.equal(tb.positions, reference.labels[:, 1:] != -100)
    assert torch.equal(tb.targets, reference.labels[:, 1:][tb.positions])
    lengths = [len(TOK.answer_ids(e.answer)) for e in examples]
    assert tb.targets.numel() == sum(lengths)
    assert tb.teacher_ids.shape == (sum(lengths), 4)
    # The fake teacher's top-1 is the label itself, so alignment shows wherever a teacher exists.
    assert torch.equal(tb.teacher_ids[tb.has_teacher, 0], tb.targets[tb.has_teacher])
    row_of_position = torch.repeat_interleave(torch.arange(3), torch.tensor(lengths))
    assert torch.equal(tb.has_teacher, row_of_position != 1)
    assert torch.equal(tb.verified, row_of_position != 0)
    # The k=2 row is padded to k=4 with -inf log-probabilities (no mass); the row without a teacher is all -inf.
    assert torch.isinf(tb.teacher_logprobs[row_of_position == 2, 2:]).all()
    assert torch.isinf(tb.teacher_logprobs[row_of_position == 1]).all()
    assert torch.isfinite(tb.teacher_logprobs[row_of_position == 0]).all()
    assert tb.tokens == int(reference.attention_mask.sum())


def test_collate_matches_answer_logits_order() -> None:
    """Indexing (B, T-1, V) logits with ``positions`` gives one row per target, in target order."""
    examples = [
        Example("p", "abc", "a", "s", *_rows("abc", 3)),
        Example("longer prompt", "d", "b", "s", *_rows("d", 3)),
    ]
    tb = collate(examples, TOK)
    batch, width = tb.batch.input_ids.shape
    fake_logits = torch.zeros(batch, width - 1, 260)
    # Put a one-hot of the next input token at every position: the "perfect" model.
    fake_logits.scatter_(-1, tb.batch.input_ids[:, 1:, None], 1.0)
    picked = fake_logits[tb.positions].argmax(-1)
    assert torch.equal(picked, tb.targets)


def test_collate_refuses_a_misaligned_teacher() -> None:
    ids, lps = _rows("abc", 2)
    with pytest.raises(ValueError, match="positions"):
        collate([Example("p", "abcd", "a", "s", ids, lps)], TOK)


def _rows(answer: str, k: int) -> tuple[list[list[int]], list[list[float]]]:
    signal = _signal(answer, k, base=17)
    return signal.token_ids, signal.logprobs


def test_a_round_file_of_an_older_hive_with_zoneless_times_still_loads(tmp_path: Path) -> None:
    # Hives before issue #9 accepted zone-less times; a round they left unfinished must resume after an upgrade.
    line = _learning("b", "p3", "meh", k=None, reward=0.4).model_dump_json()
    line = line.replace('"created_at":"', '"created_at":"2026-11-01T10:00:00",   "old":"', 1)
    path = tmp_path / "replay.jsonl"
    path.write_text(line + "\n")
    examples, _ = load_examples(path, TOK, require_signal=False)
    assert [e.prompt for e in examples] == ["p3"]


def test_a_learning_with_unicode_line_separators_in_its_text_is_one_line(tmp_path: Path) -> None:
    # Found by `hive bench fuzz`: a stored prompt holding U+2028 or U+0085 cut its round file's line in two.
    odd = _learning("b", "p\u2028q\u0085r", "meh", k=None, reward=0.4)
    path = _write(tmp_path / "replay.jsonl", [odd])
    examples, _ = load_examples(path, TOK, require_signal=False)
    assert [e.prompt for e in examples] == ["p\u2028q\u0085r"]
