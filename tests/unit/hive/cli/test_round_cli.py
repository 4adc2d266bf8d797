"""``hive round list|show|run --dry-run|cancel`` as a user runs them: exit codes, tables and JSON."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from hive.cli.app import app
from hive.rounds.book import RoundBook, RoundRecord
from hive.rounds.cancel import CANCEL_FILE
from hive.store.parquet import ParquetLearningStore

from factories import make_learning

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
            make_learning(agent, skill) for agent, skill in [("a1", "add"), ("a1", "add"), ("a2", "mul"), ("a2", "mul")]
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


def failed(round_id: str, after_seq: int, upto_seq: int) -> RoundRecord:
    return RoundRecord(
        id=round_id,
        state="failed",
        base_version=1,
        after_seq=after_seq,
        upto_seq=upto_seq,
        learnings=upto_seq - after_seq,
        per_agent={"a2": upto_seq - after_seq},
        skills=["add", "mul"],
        error="distill job exited with 1",
    )


def test_failed_rounds_in_a_row_block_the_schedule_until_one_is_skipped(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    book = RoundBook(home / "rounds")
    for round_id in ("r0002", "r0003", "r0004"):
        book.save(failed(round_id, 2, 4))
    plan = json.loads(
        runner.invoke(app, ["round", "run", "--dry-run", "--json", "--min-new", "1"], env=env(home)).stdout
    )
    reason = plan["schedule"]["reason"]
    assert plan["schedule"]["due"] is False
    assert reason.startswith("blocked: rounds r0002, r0003, r0004 failed over the learnings after seq 2")
    assert "`hive round skip r0004`" in reason
    listed = runner.invoke(app, ["round", "list"], env=env(home))
    assert listed.exit_code == 0 and "the schedule is blocked" in listed.stderr
    assert "distill job exited with 1" in listed.stdout

    would = runner.invoke(app, ["round", "skip", "r0004", "--dry-run", "--json"], env=env(home))
    assert would.exit_code == 0, would.output
    payload = json.loads(would.stdout)
    assert (payload["round"]["state"], payload["dry_run"], payload["covered_seq_after"]) == ("skipped", True, 4)
    assert book.get("r0004").state == "failed"  # a dry run changes nothing

    done = runner.invoke(app, ["round", "skip", "r0004"], env=env(home))
    assert done.exit_code == 0, done.output
    assert "skipped r0004: its learnings seq 3..4 will not be distilled" in done.stdout
    assert [(r.id, r.state) for r in book.all()][-1] == ("r0004", "skipped")
    assert book.covered_seq() == 4
    plan = json.loads(
        runner.invoke(app, ["round", "run", "--dry-run", "--json", "--min-new", "1"], env=env(home)).stdout
    )
    assert (plan["after_seq"], plan["new_learnings"], plan["schedule"]["reason"]) == (4, 0, "no new learnings")
    assert "blocked" not in runner.invoke(app, ["round", "list"], env=env(home)).stderr


def test_skip_refuses_a_round_that_is_not_failed(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    released = runner.invoke(app, ["round", "skip", "r0001"], env=env(home))
    assert released.exit_code == 2 and "round r0001 is released; only a failed round can be skipped" in released.output
    unfinished = runner.invoke(app, ["round", "skip", "r0002", "--json"], env=env(home))
    assert unfinished.exit_code == 2 and "cancel an unfinished one first" in unfinished.output
    missing = runner.invoke(app, ["round", "skip", "r0042"], env=env(home))
    assert missing.exit_code == 2 and "no round 'r0042'" in missing.output
    assert RoundBook(home / "rounds").get("r0001").state == "released"


def test_a_torn_round_file_is_listed_as_a_failed_round_with_its_reason(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    for round_id, content in [
        ("r0003", b'{"id": "r00'),
        ("r0004", b'{"state": 5}'),
        ("r0005", b"[]"),
        ("r0006", b"{}"),
    ]:
        (home / "rounds" / round_id).mkdir()
        (home / "rounds" / round_id / "round.json").write_bytes(content)
    result = runner.invoke(app, ["round", "list", "--json"], env=env(home))
    assert result.exit_code == 0, result.output
    rows = {row["id"]: row for row in json.loads(result.stdout)}
    for round_id in ("r0003", "r0004", "r0005", "r0006"):
        assert rows[round_id]["state"] == "failed"
        assert rows[round_id]["error"].startswith("unreadable round.json: "), rows[round_id]["error"]
    assert "Invalid JSON" in rows["r0003"]["error"] or "EOF" in rows["r0003"]["error"]
    shown = runner.invoke(app, ["round", "show", "r0004"], env=env(home))
    assert shown.exit_code == 0 and "unreadable round.json" in shown.stdout
    table = runner.invoke(app, ["round", "list"], env=env(home))
    assert table.exit_code == 0 and "unreadable round.json" in table.stdout
    # A new round gets an id of its own.
    book = RoundBook(home / "rounds")
    book.save(RoundRecord(**{**book.get("r0002").__dict__, "state": "rejected"}))
    plan = json.loads(
        runner.invoke(app, ["round", "run", "--dry-run", "--json", "--min-new", "1"], env=env(home)).stdout
    )
    assert plan["round_id"] == "r0007"


def test_show_says_what_the_screen_left_out(tmp_path: Path) -> None:
    home = tmp_path / "hive"
    screen = {
        "enabled": True,
        "agents": {"a1": {"add": {"screened": True}}, "a5": {"add": {"screened": True, "excluded": True}}},
        "excluded": [{"agent": "a5", "skill": "add", "learnings": 40, "agreement": 0.12, "floor": 0.61}],
    }
    RoundBook(home / "rounds").save(
        RoundRecord(
            id="r0001",
            state="released",
            base_version=0,
            after_seq=0,
            upto_seq=80,
            learnings=80,
            per_agent={"a1": 40, "a5": 40},
            skills=["add"],
            distill={"steps": 40, "screen": screen},
        )
    )
    shown = runner.invoke(app, ["round", "show", "r0001"], env=env(home))
    assert shown.exit_code == 0, shown.output
    assert "screen: left out a5's 40 learnings of add (the base agrees with 0.12 of them, below 0.61)" in shown.stdout
    assert "distill: steps 40\n" in shown.stdout  # the screen's figures get their own line
    as_json = json.loads(runner.invoke(app, ["round", "show", "r0001", "--json"], env=env(home)).stdout)
    assert as_json["distill"]["screen"]["excluded"][0]["agent"] == "a5"
