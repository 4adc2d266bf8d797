"""A real ``hive serve`` meets a torn round.json and learnings of a skill it cannot load, as an older or a
crashed hive would leave them: it stays up, the torn round reads as failed with its reason, the learnings are
quarantined, and the next round still releases."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from hive.cli.app import app
from hive.parquet_store import ParquetLearningStore
from hive.round_control import kill_leftovers
from streams.config import KafkaSettings
from streams.events import Feedback, Learning
from streams.kafka import create_topics

N_GOOD = 40
# Generous: the first DeepSpeed start on a machine compiles its shm extension, minutes under load.
DEADLINE_S = 600.0


def unknown_skill(n: int) -> Learning:
    return Learning(
        id=uuid.uuid4(),
        agent_id="agent-old",
        skill="acme.skills:haiku",  # no HIVE_SKILLS names it
        core_version=0,
        prompt=f"haiku {n}",
        completion="…",
        feedback=Feedback(reward=1.0),
    )


def cli_json(env: dict[str, str], *args: str) -> Any:
    result = CliRunner().invoke(app, [*args, "--json"], env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_serve_survives_a_torn_round_file_and_quarantines_an_unknown_skill(
    fresh_broker: str, tmp_path: Path, hive_serve: Callable[..., Any], add_learnings: Callable[[int], list]
) -> None:
    create_topics(KafkaSettings(bootstrap=fresh_broker))
    home = tmp_path / "hive"
    good = add_learnings(N_GOOD)
    poison = [unknown_skill(0), unknown_skill(1)]
    with ParquetLearningStore(home / "store") as store:
        # Straight into the store, as a hive that did not check skills at its door stored them.
        store.append(good[:10] + poison[:1] + good[10:30] + poison[1:] + good[30:], {})
    torn = home / "rounds" / "r0001"
    torn.mkdir(parents=True)
    (torn / "round.json").write_text('{"id": "r0001", "state": "distil')  # cut short by a crash
    env = {
        "HIVE_SCHEDULE__MIN_NEW": "1",
        "HIVE_DISTILL__NPROC": "1",
        "HIVE_DISTILL__STEPS": "10",
        "HIVE_DISTILL__BATCH_SIZE": "8",
        "HIVE_DISTILL__CHECKPOINT_EVERY": "0",
        "HIVE_DISTILL__TIMEOUT_S": "300",
        "HIVE_GATE__EVAL_TASKS": "10",
    }
    serve = hive_serve(fresh_broker, home, env, args=("--round-check-s", "0.5", "--round-retry-s", "1"))
    cli_env = {"HIVE_HOME": str(home), "HIVE_KAFKA_BOOTSTRAP": fresh_broker}
    started = time.monotonic()
    serve.start()
    try:
        while True:
            assert serve.alive, f"hive serve exited:\n{serve.log_tail()}"
            assert time.monotonic() - started < DEADLINE_S, f"no round ended:\n{serve.log_tail()}"
            rows = {row["id"]: row for row in cli_json(cli_env, "round", "list")}
            if rows.get("r0002", {}).get("state") in ("released", "rejected", "failed"):
                break
            time.sleep(0.5)
    finally:
        kill_leftovers(home / "rounds" / "r0002" / "manifest.json")

    # The torn round: failed, with why, its bytes kept aside; it covers nothing, and its id is not reused.
    assert rows["r0001"]["state"] == "failed"
    assert rows["r0001"]["error"].startswith("unreadable round.json: ")
    assert (torn / "round.json.torn").read_text() == '{"id": "r0001", "state": "distil'
    # The next round ran over every good learning, without the two of the unknown skill.
    second = rows["r0002"]
    assert second["state"] == "released", second["error"] or second["gate_reasons"]
    assert (second["after_seq"], second["upto_seq"], second["learnings"]) == (0, N_GOOD + 2, N_GOOD)
    assert (second["quarantined"], second["skills"]) == (2, ["add"])
    held = cli_json(cli_env, "learnings", "ls", "--quarantined")
    assert sorted(q["id"] for q in held) == sorted(str(x.id) for x in poison)
    assert {(q["reason"], q["round_id"]) for q in held} == {("unknown_skill", "r0002")}
    assert serve.alive, serve.log_tail()
    assert serve.terminate() == 0
