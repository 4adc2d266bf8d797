"""SIGKILL ``hive serve`` mid-distillation: after the restart the round resumes from its checkpoint, and
``hive round list`` shows it running, interrupted or finished, never stuck."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from distill.launch import LOG_HEADER
from hive.cli.app import app
from hive.config import HiveSettings
from hive.cores.release_history import read_history
from hive.rounds.cancel import kill_leftovers
from streams import topics
from streams.codec import encode
from streams.config import KafkaSettings
from streams.kafka import create_topics, make_producer

N_LEARNINGS = 300
STEPS = 80
CHECKPOINT_EVERY = 20
# Generous: the first DeepSpeed start on a machine compiles its shm extension, minutes under load.
DEADLINE_S = 700.0
# Every state `hive round list` may show; "interrupted" only while no hive runs the round.
SHOWN = {"open", "distilling", "interrupted", "released", "rejected", "failed", "cancelled"}


def round_list(env: dict[str, str]) -> list[dict[str, Any]]:
    result = CliRunner().invoke(app, ["round", "list", "--json"], env=env)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    for row in rows:
        assert row["display_state"] in SHOWN, row
    return rows


def wait_for(condition: Callable[[], bool], started: float, what: str, serve: Any) -> None:
    while not condition():
        assert time.monotonic() - started < DEADLINE_S, f"timed out waiting for {what}:\n{serve.log_tail()}"
        time.sleep(0.2)


def test_a_round_killed_with_the_hive_resumes_after_the_restart(
    fresh_broker: str, tmp_path: Path, hive_serve: Callable[..., Any], add_learnings: Callable[[int], list]
) -> None:
    started = time.monotonic()
    kafka = KafkaSettings(bootstrap=fresh_broker)
    create_topics(kafka)
    producer = make_producer(kafka)
    try:
        for item in add_learnings(N_LEARNINGS):
            producer.send(topics.LEARNINGS, key=item.agent_id.encode(), value=encode(item))
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=5)
    home = tmp_path / "hive"
    env = {
        "HIVE_SCHEDULE__MIN_NEW": str(N_LEARNINGS),
        "HIVE_DISTILL__STEPS": str(STEPS),
        "HIVE_DISTILL__BATCH_SIZE": "16",
        "HIVE_DISTILL__CHECKPOINT_EVERY": str(CHECKPOINT_EVERY),
        "HIVE_DISTILL__TIMEOUT_S": "300",
        "HIVE_GATE__EVAL_TASKS": "20",
    }
    serve = hive_serve(fresh_broker, home, env, args=("--round-check-s", "0.5"))
    cli_env = {"HIVE_HOME": str(home), "HIVE_KAFKA_BOOTSTRAP": fresh_broker}
    round_dir = home / "rounds" / "r0001"
    committed = round_dir / "out" / "ckpt" / "committed"

    def past_a_checkpoint() -> bool:
        # Killed after a committed checkpoint and some steps beyond it, so the resume has work to skip.
        assert serve.alive, f"hive serve exited by itself:\n{serve.log_tail()}"
        if not committed.is_file():
            return False
        progress = json.loads((round_dir / "progress.json").read_text())
        return progress["step"] >= CHECKPOINT_EVERY + 10

    try:
        resume_after_kill(serve, cli_env, round_dir, started, past_a_checkpoint)
    finally:
        # A failed run must not leave the killed hive's ranks behind (the fixture kills hive serve only).
        kill_leftovers(round_dir / "manifest.json")


def resume_after_kill(
    serve: Any, cli_env: dict[str, str], round_dir: Path, started: float, past_a_checkpoint: Callable[[], bool]
) -> None:
    serve.start()
    wait_for(past_a_checkpoint, started, "the round to pass its first checkpoint", serve)
    assert [row["display_state"] for row in round_list(cli_env)] == ["distilling"]
    serve.kill()

    [row] = round_list(cli_env)
    assert (row["state"], row["display_state"], row["runner_pid"]) == ("distilling", "interrupted", None)

    serve.start()

    def finished() -> bool:
        assert serve.alive, f"hive serve exited by itself:\n{serve.log_tail()}"
        return round_list(cli_env)[0]["display_state"] in ("released", "rejected", "failed")

    wait_for(finished, started, "the resumed round to end", serve)
    [row] = round_list(cli_env)
    assert row["state"] == "released", row["error"] or row["gate_reasons"]
    assert row["resumes"] == 1
    assert row["distill"]["steps"] == STEPS
    assert row["candidate_version"] == 1
    log = (round_dir / "distill.log").read_text()
    assert log.count(LOG_HEADER) == 2, "one launch before the kill, one after the restart"
    resumed_at = int(log.split("distill: resumed from ")[1].split(" at step ")[1].split()[0])
    assert resumed_at >= CHECKPOINT_EVERY and resumed_at % CHECKPOINT_EVERY == 0
    # The new hive released core v0 at its first start, once; the resumed round released v1.
    history = read_history(HiveSettings(home=round_dir.parent.parent))
    assert [(h["action"], h["version"], h["targets"]) for h in history] == [("promote", 0, None), ("round", 1, None)]
    assert all(h["offset"] is not None for h in history)  # both went out
    # No rank of the killed hive's launcher is left: the restart killed them before resuming.
    assert kill_leftovers(round_dir / "manifest.json") == []
    assert serve.terminate() == 0
