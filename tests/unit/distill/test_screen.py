"""The round's screen: an agent contradicting what the base core knows is left out before training."""

from __future__ import annotations

import json
import random
from types import SimpleNamespace

import pytest
import torch

from agents.codec import BYTE_CODEC
from agents.skills import BUILTIN_SKILLS
from distill.data import Data, screened
from distill.dataset import BalancedSampler, Example, LoadReport
from distill.manifest import DistillParams
from distill.screen import REASON, screen_examples, target_agreement

SEED = 4242
ADD = BUILTIN_SKILLS["add"]
SEPARATOR = BYTE_CODEC.prompt_ids("")[-1]  # the id that ends every prompt


def _sum(prompt: str) -> str:
    _, a, b = prompt.split()
    return str(int(a) + int(b))


class Oracle(torch.nn.Module):
    """A stand-in base core that knows ``add`` perfectly and nothing else: fed any row, it predicts the true sum's
    tokens at the answer's positions, and token 0 everywhere else (so it knows no other skill)."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        rows, width = input_ids.shape
        logits = torch.zeros(rows, width, BYTE_CODEC.vocab_size)
        logits[:, :, 0] = 1.0
        for row in range(rows):
            ids = input_ids[row].tolist()
            prompt = bytes(i for i in ids[: ids.index(SEPARATOR)] if i < 256).decode() if SEPARATOR in ids else ""
            if not prompt.startswith("add "):
                continue
            prompt_ids = BYTE_CODEC.prompt_ids(prompt)
            for j, token in enumerate(BYTE_CODEC.answer_ids(_sum(prompt))):
                at = len(prompt_ids) + j - 1
                if at < width:
                    logits[row, at, token] = 10.0
        return SimpleNamespace(logits=logits)


def _adds(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    return [ADD.sample(rng) for _ in range(n)]


def _honest(agent: str, n: int = 40, seed: int = 1) -> list[Example]:
    return [
        Example(p, a, agent, "add", verified=True, learning_id=f"{agent}-{i}")
        for i, (p, a) in enumerate(_adds(n, seed))
    ]


def _wrong(answer: str) -> str:
    return str(int(answer) + 1)


def _poisoner(agent: str = "agent-5", n: int = 40, wrong_share: float = 1.0) -> list[Example]:
    out = []
    for i, (p, a) in enumerate(_adds(n, 2)):
        answer = _wrong(a) if i < wrong_share * n else a
        out.append(Example(p, answer, agent, "add", verified=True, learning_id=f"{agent}-{i}"))
    return out


def _confident_signal(answer: str) -> tuple[list[list[int]], list[list[float]]]:
    """A top-2 teacher signal sure of ``answer``'s tokens."""
    ids = BYTE_CODEC.answer_ids(answer)
    return [[t, 1 if t != 1 else 2] for t in ids], [[-0.01, -5.0] for _ in ids]


def _params(**given: object) -> DistillParams:
    return DistillParams(**({"screen_tasks": 32} | given))  # type: ignore[arg-type]


def test_the_base_agrees_with_true_answers_and_not_with_wrong_ones() -> None:
    oracle = Oracle()
    honest = target_agreement(oracle, _honest("a"), BYTE_CODEC)
    assert honest.ce_positions > 0 and honest.ce == honest.ce_positions and honest.share() == 1.0
    assert honest.kd_positions == 0  # no teacher signal: CE only
    wrong = target_agreement(oracle, _poisoner(), BYTE_CODEC)
    # A wrong sum still shares tokens with the true one (the end token, often a digit), never all of them.
    assert wrong.share() is not None and wrong.share() < 0.7


def test_a_poisoner_on_a_known_skill_is_left_out_and_its_learnings_named() -> None:
    examples = _honest("agent-1") + _honest("agent-2", seed=3) + _poisoner()
    result = screen_examples(Oracle(), examples, [ADD], BYTE_CODEC, _params(), SEED)
    assert {e.agent_id for e in result.kept} == {"agent-1", "agent-2"}
    assert len(result.kept) == 80
    assert sorted(d.id for d in result.dropped) == sorted(f"agent-5-{i}" for i in range(40))
    assert {d.reason for d in result.dropped} == {REASON}
    assert "agent agent-5's learnings of add" in result.dropped[0].detail
    report = result.report
    assert report["skills"]["add"]["known"] is True and report["skills"]["add"]["agreement"] == pytest.approx(1.0)
    assert report["agents"]["agent-1"]["add"]["agreement"] == pytest.approx(1.0)
    assert report["agents"]["agent-5"]["add"]["excluded"] is True
    [excluded] = report["excluded"]
    assert excluded["agent"] == "agent-5" and excluded["learnings"] == 40
    assert excluded["agreement"] < excluded["floor"] == pytest.approx(1.0 - 0.3)


def test_confident_wrong_teacher_signals_are_caught_even_with_a_true_answer() -> None:
    pairs = [(p, a) for p, a in _adds(60, 5) if len(_wrong(a)) == len(a)]
    poisoned = [
        Example(p, a, "agent-5", "add", *_confident_signal(_wrong(a)), verified=False, learning_id=f"p{i}")
        for i, (p, a) in enumerate(pairs)
    ]
    assert len(poisoned) >= 20
    result = screen_examples(Oracle(), _honest("agent-1") + poisoned, [ADD], BYTE_CODEC, _params(), SEED)
    assert {e.agent_id for e in result.kept} == {"agent-1"}
    assert result.report["excluded"][0]["agent"] == "agent-5"


def test_wrong_verified_answers_behind_agreeable_teacher_signals_are_caught() -> None:
    # The signal points where the base would go; the claimed-correct answer, trained by CE, is wrong.
    pairs = [(p, a) for p, a in _adds(60, 6) if len(_wrong(a)) == len(a)]
    poisoned = [
        Example(p, _wrong(a), "agent-5", "add", *_confident_signal(a), verified=True, learning_id=f"p{i}")
        for i, (p, a) in enumerate(pairs)
    ]
    result = screen_examples(Oracle(), _honest("agent-1") + poisoned, [ADD], BYTE_CODEC, _params(), SEED)
    assert {e.agent_id for e in result.kept} == {"agent-1"}


def test_a_corrected_answer_whose_signal_disagrees_is_not_held_against_an_honest_agent() -> None:
    # An honest agent's specialist got it wrong, feedback corrected it: the verified answer is true and the teacher
    # signal (its own, weaker) points elsewhere. CE agrees with the base; KD does not, on those examples only.
    pairs = _adds(40, 8)
    honest = []
    for i, (p, a) in enumerate(pairs):
        signal = _confident_signal(_wrong(a)) if i < 4 and len(_wrong(a)) == len(a) else _confident_signal(a)
        honest.append(Example(p, a, "agent-2", "add", *signal, verified=True, learning_id=f"h{i}"))
    result = screen_examples(Oracle(), honest, [ADD], BYTE_CODEC, _params(), SEED)
    figures = result.report["agents"]["agent-2"]["add"]
    assert not result.dropped and figures["agreement_ce"] == 1.0 and 0.8 < figures["agreement_kd"] < 1.0


def test_a_skill_the_base_does_not_know_is_not_screened() -> None:
    capital = BUILTIN_SKILLS["capital"]
    rng = random.Random(0)
    wrong = [Example(*capital.sample(rng)[:1], "nowhere", "agent-5", "capital", verified=True) for _ in range(20)]
    result = screen_examples(Oracle(), _honest("agent-1") + wrong, [ADD, capital], BYTE_CODEC, _params(), SEED)
    assert len(result.kept) == 60 and not result.dropped
    assert result.report["skills"]["capital"]["known"] is False
    assert result.report["agents"]["agent-5"]["capital"]["screened"] is False


def test_a_skill_without_evaluation_tasks_is_not_screened() -> None:
    result = screen_examples(Oracle(), _poisoner(), [], BYTE_CODEC, _params(), SEED)
    assert len(result.kept) == 40 and not result.dropped
    assert "no evaluation tasks" in result.report["skills"]["add"]["reason"]


def test_a_skill_with_no_validation_tasks_is_not_screened() -> None:
    class Coin:
        name = "add"  # the learnings' skill, but a task space too small to hold tasks out

        def sample(self, rng: random.Random) -> tuple[str, str]:
            return "flip", rng.choice(["h", "t"])

    result = screen_examples(Oracle(), _poisoner(), [Coin()], BYTE_CODEC, _params(), SEED)
    assert len(result.kept) == 40 and "no validation tasks" in result.report["skills"]["add"]["reason"]


def test_screen_tasks_zero_turns_the_screen_off() -> None:
    examples = _poisoner()
    result = screen_examples(Oracle(), examples, [ADD], BYTE_CODEC, _params(screen_tasks=0), SEED)
    assert result.kept == examples and result.report == {"enabled": False}


def test_a_poisoner_within_the_margin_passes_the_screen() -> None:
    # A tenth of wrong answers costs at most a tenth of agreement, inside the 0.3 margin: the gate is the defence.
    result = screen_examples(Oracle(), _poisoner(wrong_share=0.1), [ADD], BYTE_CODEC, _params(), SEED)
    assert len(result.kept) == 40 and not result.report["excluded"]


def test_the_sample_is_capped_and_drawn_by_the_seed() -> None:
    examples = _honest("agent-1", n=100) + _poisoner(n=100, wrong_share=0.5)
    params = _params(screen_sample=16)
    first = screen_examples(Oracle(), examples, [ADD], BYTE_CODEC, params, SEED).report
    again = screen_examples(Oracle(), examples, [ADD], BYTE_CODEC, params, SEED).report
    other = screen_examples(Oracle(), examples, [ADD], BYTE_CODEC, params, SEED + 1).report
    assert first == again
    assert first["agents"]["agent-5"]["add"]["scored"] == 16
    assert first["agents"]["agent-5"]["add"]["agreement"] != other["agents"]["agent-5"]["add"]["agreement"]


def _data(examples: list[Example]) -> Data:
    report = LoadReport(kept=len(examples))
    return Data(examples, report, BalancedSampler([e.agent_id for e in examples]), [], None, {}, "")


def test_screened_data_trains_on_the_kept_examples_and_lists_the_rest(tmp_path) -> None:
    examples = _honest("agent-1") + _poisoner()
    result = screen_examples(Oracle(), examples, [ADD], BYTE_CODEC, _params(), SEED)
    data = screened(_data(examples), result, seed=0, rank=0, out_dir=tmp_path)
    assert [e.agent_id for e in data.examples] == ["agent-1"] * 40
    assert set(data.sampler.batch(0, 32)) <= set(range(40))
    assert data.report.kept == 40 and data.report.skipped[REASON] == 40
    assert data.screen["excluded"][0]["agent"] == "agent-5"
    lines = [json.loads(line) for line in (tmp_path / "unusable.jsonl").read_text().splitlines()]
    assert len(lines) == 40 and {line["reason"] for line in lines} == {REASON}


def test_a_round_left_with_nothing_fails_clearly(tmp_path) -> None:
    examples = _poisoner()
    result = screen_examples(Oracle(), examples, [ADD], BYTE_CODEC, _params(), SEED)
    with pytest.raises(ValueError, match="left out every learning"):
        screened(_data(examples), result, seed=0, rank=1, out_dir=tmp_path)
    assert not (tmp_path / "unusable.jsonl").exists()  # only rank 0 writes it
