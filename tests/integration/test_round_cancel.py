"""``hive round cancel`` stops a round that ``hive round run`` is distilling: its ranks die, it ends
``cancelled``, and its learnings wait for the next round."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from typer.testing import CliRunner

from hive.cli.app import app
from hive.rounds.cancel import kill_leftovers
from hive.rounds.lock import lock_holder
from hive.store.parquet import ParquetLearningStore
from streams.config import KafkaSettings
from streams.events import Learning
from streams.kafka import create_topics

DEADLINE_S = 600.0


def test_cancel_stops_a_running_round(
    fresh_broker: str, tmp_path: Path, add_learnings: Callable[[int], list[Learning]]
) -> None:
    create_topics(KafkaSettings(bootstrap=fresh_broker))
    home = tmp_path / "hive"
    with ParquetLearningStore(home / "store") as store:
        store.append(add_learnings(200), {})
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIVE_")} | {
        "HIVE_HOME": str(home),
        "HIVE_KAFKA_BOOTSTRAP": fresh_broker,
        # Long enough that the cancel lands mid-distillation.
        "HIVE_DISTILL__STEPS": "2000",
        "HIVE_DISTILL__BATCH_SIZE": "16",
        "HIVE_DISTILL__TIMEOUT_S": "600",
    }
    manifest = home / "rounds" / "r0001" / "manifest.json"
    log = tmp_path / "round-run.log"
    with log.open("wb") as out:
        runner = subprocess.Popen(
            [sys.executable, "-m", "hive", "round", "run", "--json"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=out,
            start_new_session=True,
        )
    try:
        started = time.monotonic()
        progress = home / "rounds" / "r0001" / "progress.json"
        while not progress.is_file():
            assert runner.poll() is None, log.read_text()
            assert time.monotonic() - started < DEADLINE_S, f"the round never made progress:\n{log.read_text()}"
            time.sleep(0.2)
        assert lock_holder(home) == {"pid": runner.pid, "round": "r0001"}

        result = CliRunner().invoke(app, ["round", "cancel", "r0001", "--json", "--wait", "120"], env=env)
        assert result.exit_code == 0, result.output
        row = json.loads(result.stdout)
        assert (row["state"], row["display_state"]) == ("cancelled", "cancelled")
        assert row["error"] == "cancelled by `hive round cancel`"
        assert json.loads(progress.read_text())["step"] < 2000

        stdout, _ = runner.communicate(timeout=60)
        assert runner.returncode == 0, log.read_text()
        [ran] = json.loads(stdout)
        assert ran["state"] == "cancelled" and ran["candidate_version"] is None
        # Its ranks are gone, the lock is free, and its learnings are still new for the next round.
        assert kill_leftovers(manifest) == []
        assert lock_holder(home) is None
        plan = CliRunner().invoke(app, ["round", "run", "--dry-run", "--json"], env=env)
        assert plan.exit_code == 0, plan.output
        assert (json.loads(plan.stdout)["action"], json.loads(plan.stdout)["new_learnings"]) == ("open", 200)
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, 9)
            runner.wait()
        kill_leftovers(manifest)
