"""``hive inspect round`` on hand-written rounds: contributions, old rounds, refusals and cached leave-one-out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from distill.manifest import write_learnings
from hive.cli.inspect import app
from hive.config import HiveSettings
from hive.inspect.common import InspectInputError
from hive.inspect.round import leave_one_out, load_round, round_contributions, write_loo_round
from hive.rounds.book import RoundBook, RoundRecord
from hive.rounds.open import write_manifest
from streams.events import Learning

from factories import make_learning

runner = CliRunner()
PER_AGENT = {
    "agent-a": {"learnings": 3, "weight": 0.5, "kd_before": 2.0, "kd_after": 0.5, "ce_before": None, "ce_after": None},
    "agent-b": {"learnings": 2, "weight": 0.5, "kd_before": None, "kd_after": None, "ce_before": 3.0, "ce_after": 1.0},
}


ADAPTERS = {"roots": ["/srv/agents"], "max_bytes": 4096}


def _round(book: RoundBook, round_id: str, learnings: list[Learning], state: str = "released", **extra) -> RoundRecord:
    per_agent: dict[str, int] = {}
    for x in learnings:
        per_agent[x.agent_id] = per_agent.get(x.agent_id, 0) + 1
    record = RoundRecord(
        id=round_id,
        state=state,  # type: ignore[arg-type]
        base_version=0,
        after_seq=0,
        upto_seq=len(learnings),
        learnings=len(learnings),
        per_agent=per_agent,
        skills=["add", "capital"],
        candidate_version=1 if state == "released" else None,
        eval={"add": 0.6, "capital": 0.9} if state in ("released", "rejected") else {},
        champion_eval={"add": 0.1, "capital": 0.8} if state in ("released", "rejected") else {},
        distill={"steps": 40},
        **extra,
    )
    directory = book.path(round_id)
    directory.mkdir(parents=True)
    write_learnings(directory / "learnings.jsonl", learnings)
    write_manifest(
        directory,
        round_id,
        directory / "base",
        None,
        ["add", "capital"],
        {"steps": 40, "warmup_steps": 20, "nproc": 1},
        eval_={"tasks": 10, "seed": 10_000},
        mlflow={"tracking_uri": "sqlite:///x.db", "experiment": "hive-rounds", "run_name": round_id},
        lineage={"after_seq": 0, "upto_seq": len(learnings)},
        adapters=ADAPTERS,
    )
    book.save(record)
    return record


@pytest.fixture
def book(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RoundBook:
    monkeypatch.setenv("HIVE_HOME", str(tmp_path / "hive"))
    book = RoundBook(HiveSettings().rounds_dir)
    # Each a wrong answer with its correction, as a round trains on them.
    a = [make_learning("agent-a", "add", i, reward=0.0, correction=str(i)) for i in range(3)]
    two = a + [make_learning("agent-b", "capital", i, reward=0.0, correction=str(i)) for i in range(2)]
    _round(book, "r0001", two)
    (book.path("r0001") / "out").mkdir()
    (book.path("r0001") / "out" / "metrics.json").write_text(json.dumps({"steps": 40, "per_agent": PER_AGENT}))
    # Made before per-agent metrics: no metrics.json.
    _round(book, "r0002", [make_learning("agent-a", "add", 9, reward=0.0, correction="9")])
    _round(book, "r0003", two, state="open")
    return book


def test_contributions_join_the_record_the_metrics_and_the_learnings(book: RoundBook) -> None:
    report = round_contributions(book, load_round(book, "r0001"))
    assert report["per_agent_metrics"] is True
    assert report["eval"]["add"] == {"champion": 0.1, "candidate": 0.6, "delta": pytest.approx(0.5)}
    a, b = report["agents"]["agent-a"], report["agents"]["agent-b"]
    assert (a["learnings"], a["examples"], a["weight"], a["kd_before"], a["kd_after"]) == (3, 3, 0.5, 2.0, 0.5)
    assert a["skills"] == {"add": 3} and a["deltas"] == {"add": pytest.approx(0.5)}
    assert (b["kd_before"], b["ce_before"], b["ce_after"]) == (None, 3.0, 1.0)
    assert b["skills"] == {"capital": 2} and b["deltas"] == {"capital": pytest.approx(0.1)}
    assert report["leave_one_out"] is None


def test_a_round_made_before_per_agent_metrics_shows_n_a(book: RoundBook) -> None:
    result = runner.invoke(app, ["round", "r0002", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["per_agent_metrics"] is False
    assert report["agents"]["agent-a"]["kd_before"] is None and report["agents"]["agent-a"]["learnings"] == 1
    table = runner.invoke(app, ["round", "r0002"])
    assert table.exit_code == 0 and "n/a" in table.stdout and "agent-a" in table.stdout


def test_the_table_names_each_agent_and_its_losses(book: RoundBook) -> None:
    result = runner.invoke(app, ["round", "r0001"])
    assert result.exit_code == 0, result.output
    assert "agent-a" in result.stdout and "2.000" in result.stdout and "ce 3.000" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["r0099"], "unknown round 'r0099'"),
        (["../r0001"], "unknown round"),
        (["r0003", "--leave-one-out"], "r0003 is open"),
        (["r0001", "--steps", "5"], "--steps applies only with --leave-one-out"),
    ],
)
def test_bad_input_exits_2(book: RoundBook, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["round", *args, "--json"])
    assert result.exit_code == 2
    assert message in result.stderr and result.stdout == ""


def test_no_hive_exits_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HIVE_HOME", str(tmp_path / "nothing"))
    result = runner.invoke(app, ["round", "r0001"])
    assert result.exit_code == 1 and "no rounds under" in result.stderr
    assert not (tmp_path / "nothing").exists()  # inspecting writes nothing


def test_loo_round_drops_the_agent_and_stays_out_of_mlflow(book: RoundBook) -> None:
    record = load_round(book, "r0001")
    manifest = json.loads(write_loo_round(book, record, "agent-a", steps=5).read_text())  # type: ignore[union-attr]
    assert manifest["mlflow"] is None and manifest["lineage"] is None
    assert manifest["adapters"] == ADAPTERS  # the same claim checks followed as in the round
    assert manifest["distill"]["steps"] == 5 and manifest["distill"]["warmup_steps"] == 5
    kept = [json.loads(line)["agent_id"] for line in Path(manifest["learnings"]).read_text().splitlines()]
    assert kept == ["agent-b", "agent-b"]
    assert Path(manifest["out_dir"]) == book.path("r0001") / "loo" / "agent-a" / "out"


def test_finished_loo_runs_are_reused_and_a_lone_agent_falls_back_to_the_base(book: RoundBook) -> None:
    record = load_round(book, "r0001")
    for agent, evals in (("agent-a", {"add": 0.2, "capital": 0.9}), ("agent-b", {"add": 0.6, "capital": 0.5})):
        out = book.path("r0001") / "loo" / agent / "out"
        out.mkdir(parents=True)
        (out / "metrics.json").write_text(json.dumps({"steps": 40, "eval": evals}))
    seen: list[tuple[str, str]] = []
    result = leave_one_out(book, record, on_agent=lambda agent, source: seen.append((agent, source)))
    assert seen == [("agent-a", "cached"), ("agent-b", "cached")]
    assert result["steps"] == 40
    assert result["attribution"]["agent-a"] == {"add": pytest.approx(0.4), "capital": pytest.approx(0.0)}
    assert result["attribution"]["agent-b"] == {"add": pytest.approx(0.0), "capital": pytest.approx(0.4)}

    assert result["reference"]["source"] == "round"  # at the round's own steps, the round is the baseline

    # Without its only agent the round has nothing to distill: the core stays the base, the champion's eval.
    lone = leave_one_out(book, load_round(book, "r0002"))
    assert lone["runs"]["agent-a"]["source"] == "base"
    assert lone["attribution"]["agent-a"] == {"add": pytest.approx(0.5), "capital": pytest.approx(0.1)}


def test_loo_at_other_steps_compares_with_all_learnings_at_those_steps(book: RoundBook) -> None:
    # A shorter run knows less of every skill; measured against the full round that would look like
    # every agent's contribution. The baseline is all the round's learnings at the same steps.
    record = load_round(book, "r0001")
    runs = {"_all": {"add": 0.5, "capital": 0.6}, "agent-a": {"add": 0.1, "capital": 0.6}}
    runs["agent-b"] = {"add": 0.5, "capital": 0.2}
    for name, evals in runs.items():
        out = book.path("r0001") / "loo" / name / "out"
        out.mkdir(parents=True)
        (out / "metrics.json").write_text(json.dumps({"steps": 7, "eval": evals}))
    result = leave_one_out(book, record, steps=7)
    assert result["reference"] == {"agent": "_all", "source": "cached", "steps": 7, "eval": runs["_all"]}
    assert result["attribution"]["agent-a"] == {"add": pytest.approx(0.4), "capital": pytest.approx(0.0)}
    assert result["attribution"]["agent-b"] == {"add": pytest.approx(0.0), "capital": pytest.approx(0.4)}


def test_loo_refuses_a_round_without_eval(book: RoundBook) -> None:
    with pytest.raises(InspectInputError, match="leave-one-out needs"):
        leave_one_out(book, load_round(book, "r0003"))
