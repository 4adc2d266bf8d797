"""``hive round list|show|run --dry-run|cancel`` as a user runs them: exit codes, tables and JSON."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from typer.testing import CliRunner

from hive.cli.app import app
from hive.parquet_store import ParquetLearningStore
from hive.round_control import CANCEL_FILE
from hive.rounds import RoundBook, RoundRecord
from streams.events import Feedback, Learning

runner = CliRunner()


def env(home: Path, **extra: str) -> dict[str, str]:
    # Wide enough that rich does not fold the tables the assertions read.
    return {"HIVE_HOME": str(home), "HIVE_KAFKA_BOOTSTRAP": "", "COLUMNS": "200", **extra}


def make_home(tmp_path: Path) -> Path:
    home = tmp_path / "hive"
    book = RoundBook(home / "rounds")
    book.save(
        RoundRecord(
            id="r0001",
            state="released",
            base_version=0,
            after_seq=0,
            upto_seq=2,
            learnings=2,
            per_agent={"a1": 2},
            skills=["add"],
            candidate_version=1,
            eval={"add": 0.75},
            champion_eval={"add": 0.25},
            distill={"steps": 40, "final_loss": 0.5},
            trigger="fired: min_new",
        )
    )
    book.save(
        RoundRecord(
            id="r0002",
            state="distilling",
            base_version=1,
            after_seq=2,
            upto_seq=3,
            learnings=1,
            per_agent={"a2": 1},
            skills=["add", "mul"],
        )
    )
    with ParquetLearningStore(home / "store") as store:
        learnings = [
            Learning(
                id=uuid.uuid4(),
                agent_id=agent,
                skill=skill,
                core_version=0,
                prompt="p",
                completion="c",
                feedback=Feedback(reward=1.0),
            )
            for agent, skill in [("a1", "add"), ("a1", "add"), ("a2", "mul"), ("a2", "mul")]
        ]
        store.append(learnings, {})
    return home


def test_list_and_show_report_states_including_interrupted(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    result = runner.invoke(app, ["round", "list", "--json"], env=env(home))
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["id"], r["display_state"]) for r in rows] == [("r0001", "released"), ("r0002", "interrupted")]
    table = runner.invoke(app, ["round", "list"], env=env(home))
    assert table.exit_code == 0 and "interrupted" in table.stdout and "v0 -> v1" in table.stdout
    shown = runner.invoke(app, ["round", "show", "r0001"], env=env(home))
    assert shown.exit_code == 0, shown.output
    assert "+0.500" in shown.stdout  # the gate's per-skill delta, 0.25 -> 0.75
    shown_json = json.loads(runner.invoke(app, ["round", "show", "r0001", "--json"], env=env(home)).stdout)
    assert shown_json["eval"] == {"add": 0.75} and shown_json["trigger"] == "fired: min_new"
    missing = runner.invoke(app, ["round", "show", "r0042"], env=env(home))
    assert missing.exit_code == 2 and "no round 'r0042'" in missing.output


def test_dry_run_explains_and_writes_nothing(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    book = RoundBook(home / "rounds")
    book.save(RoundRecord(**{**book.all()[1].__dict__, "state": "rejected"}))  # nothing left to resume
    before = sorted(p.name for p in (home / "rounds").iterdir())
    result = runner.invoke(app, ["round", "run", "--dry-run", "--json", "--min-new", "2"], env=env(home))
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert (plan["action"], plan["round_id"], plan["after_seq"], plan["new_learnings"]) == ("open", "r0003", 3, 1)
    assert plan["per_skill"] == {"mul": 1}
    assert plan["skills_evaluated"] == ["add", "mul"]  # add: a released core was taught it
    assert plan["schedule"]["due"] is False and plan["schedule"]["triggers"][0]["detail"] == "1 new learnings < 2"
    human = runner.invoke(app, ["round", "run", "--dry-run", "--every", "10m"], env=env(home))
    assert human.exit_code == 0 and "would open" in human.stdout and "every:" in human.stdout
    assert sorted(p.name for p in (home / "rounds").iterdir()) == before
    bad = runner.invoke(app, ["round", "run", "--dry-run", "--every", "soon"], env=env(home))
    assert bad.exit_code == 2 and "not a duration" in bad.output


def test_run_needs_a_broker(tmp_path: Path) -> None:
    result = runner.invoke(app, ["round", "run"], env=env(make_home(tmp_path)))
    assert result.exit_code == 2 and "HIVE_KAFKA_BOOTSTRAP" in result.output


def test_cancel_ends_an_interrupted_round_and_refuses_a_finished_one(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    result = runner.invoke(app, ["round", "cancel", "r0002", "--json"], env=env(home))
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)
    assert row["state"] == "cancelled" and "while interrupted" in row["error"]
    assert (home / "rounds" / "r0002" / CANCEL_FILE).is_file()
    again = runner.invoke(app, ["round", "cancel", "r0002"], env=env(home))
    assert again.exit_code == 2 and "already cancelled" in again.output
    finished = runner.invoke(app, ["round", "cancel", "r0001"], env=env(home))
    assert finished.exit_code == 2 and "already released" in finished.output


def test_reading_a_missing_hive_exits_1_and_creates_nothing(tmp_path: Path) -> None:
    home = tmp_path / "typo"
    result = runner.invoke(app, ["round", "list", "--json"], env=env(home))
    assert result.exit_code == 1 and "no hive at HIVE_HOME" in result.output
    assert not home.exists()
