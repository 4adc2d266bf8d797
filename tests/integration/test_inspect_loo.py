"""A real round (DeepSpeed on the CPU, MLflow on SQLite), then ``hive inspect round --leave-one-out`` on it."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agents.skills import BUILTIN_SKILLS
from agents.tokenizer import ByteTokenizer
from hive.cli.inspect import app
from hive.config import DistillSettings, GateSettings, HiveSettings
from hive.cores.files import build_core_v0
from hive.cores.registry import CoreRegistry
from hive.rounds.book import RoundBook
from hive.rounds.open import open_round
from hive.rounds.run import run_round
from hive.store.parquet import ParquetLearningStore
from streams.events import Learning, TeacherSignal

from factories import make_learning

AGENTS = {"agent-add": "add", "agent-cap": "capital"}
PER_AGENT = 40
LOO_STEPS = 10


def _teacher(answer: str) -> TeacherSignal:
    """A confident specialist: 0.9 on the right next token, the rest on three others."""
    ids, lps = [], []
    for target in ByteTokenizer().answer_ids(answer):
        ids.append([target, *((target + j) % 256 for j in (1, 2, 3))])
        lps.append([math.log(0.9), *[math.log(0.03)] * 3])
    return TeacherSignal(k=4, token_ids=ids, logprobs=lps)


def _learnings() -> list[Learning]:
    rng, items = random.Random(0), []
    for agent, skill in AGENTS.items():
        for _ in range(PER_AGENT):
            prompt, answer = BUILTIN_SKILLS[skill].sample(rng)  # type: ignore[attr-defined]
            items.append(make_learning(agent, skill, prompt=prompt, completion=answer, teacher=_teacher(answer)))
    return items


def test_inspect_round_with_leave_one_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = HiveSettings(
        home=tmp_path / "hive",
        # One rank and few steps: what is tested is the bookkeeping around real runs, not how well they learn.
        distill=DistillSettings(nproc=1, steps=30, batch_size=16, warmup_steps=1, replay_size=0, timeout_s=300),
        # Any outcome of the gate is fine here; leave-one-out needs the round evaluated, released or rejected.
        gate=GateSettings(eval_tasks=10, max_regression=1.0),
    )
    registry = CoreRegistry.from_settings(settings)
    v0 = build_core_v0(settings)
    registry.log_core(v0.directory, 0, v0.sha256)
    book = RoundBook(settings.rounds_dir)
    with ParquetLearningStore(settings.store_dir) as store:
        store.append(_learnings(), {})
        registry.experiment_id()  # the round's run keeps its artifacts under the hive home
        record = open_round(settings, store, book, v0, registry.experiment)
    record = run_round(settings, book, registry, record)
    assert record.state in ("released", "rejected"), record.error

    metrics = json.loads((book.path(record.id) / "out" / "metrics.json").read_text())
    assert sorted(metrics["per_agent"]) == sorted(AGENTS)

    monkeypatch.setenv("HIVE_HOME", str(settings.home))
    result = runner_invoke(record.id)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["per_agent_metrics"] is True
    for agent, skill in AGENTS.items():
        row = report["agents"][agent]
        assert row["learnings"] == PER_AGENT and row["weight"] == pytest.approx(0.5)
        assert row["skills"] == {skill: PER_AGENT}
        assert row["kd_after"] < row["kd_before"], row
    loo = report["leave_one_out"]
    assert loo["steps"] == LOO_STEPS
    assert {agent: run["source"] for agent, run in loo["runs"].items()} == dict.fromkeys(AGENTS, "distilled")
    assert (loo["reference"]["agent"], loo["reference"]["source"]) == ("_all", "distilled")
    assert sorted(loo["attribution"]) == sorted(AGENTS)
    for agent in AGENTS:
        values = loo["attribution"][agent]
        assert sorted(values) == sorted(record.skills)
        loo_eval = loo["runs"][agent]["eval"]
        # Fewer steps than the round: the baseline is one more run of all the learnings at those steps.
        reference = loo["reference"]["eval"]
        for skill, value in values.items():
            assert value == pytest.approx(reference[skill] - loo_eval[skill])
        manifest = json.loads((book.path(record.id) / "loo" / agent / "manifest.json").read_text())
        assert manifest["mlflow"] is None and manifest["distill"]["steps"] == LOO_STEPS
        kept = (book.path(record.id) / "loo" / agent / "learnings.jsonl").read_text().splitlines()
        assert len(kept) == PER_AGENT and all(json.loads(line)["agent_id"] != agent for line in kept)

    again = runner_invoke(record.id)
    assert again.exit_code == 0, again.output
    cached = json.loads(again.stdout)["leave_one_out"]
    assert {agent: run["source"] for agent, run in cached["runs"].items()} == dict.fromkeys(AGENTS, "cached")
    assert cached["attribution"] == loo["attribution"]
    assert cached["reference"]["source"] == "cached"
    assert "cached" in again.stderr


def runner_invoke(round_id: str):
    return CliRunner().invoke(app, ["round", round_id, "--leave-one-out", "--steps", str(LOO_STEPS), "--json"])
