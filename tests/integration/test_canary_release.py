"""Acceptance: a canary reaches only its agent and `hive fleet` shows the skew; promotion reaches every
agent; rollback brings every agent back. Real broker, real agents, the real CLI."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from agents.config import AgentSettings
from agents.model import CoreSize, build_core, save_core
from agents.runtime import AgentRuntime
from hive.cli.app import app
from hive.config import HiveSettings
from hive.cores.files import core_dir
from hive.cores.registry import CoreRegistry
from hive.cores.release import release_core
from hive.cores.release_history import read_history
from streams.config import KafkaSettings
from streams.kafka import DEFAULT_PARTITIONS, create_topics, make_producer

AGENTS = ("agent-1", "agent-2", "agent-3")
runner = CliRunner()


def _until(condition: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def test_canary_then_promotion_then_rollback(fresh_broker: str, tmp_path: Path, agent_keys: Any) -> None:
    home = tmp_path / "hive"
    kafka = KafkaSettings(bootstrap=fresh_broker)
    settings = HiveSettings(home=home, kafka=kafka, ingest=agent_keys.ingest())
    # `hive fleet` counts only heartbeats signed with the agents' keys.
    env = {"HIVE_HOME": str(home), "HIVE_KAFKA_BOOTSTRAP": fresh_broker, **agent_keys.env}
    create_topics(kafka, DEFAULT_PARTITIONS)
    registry = CoreRegistry.from_settings(settings)
    for version in (0, 1):
        directory = core_dir(settings, version)
        registry.log_core(directory, version, save_core(build_core(CoreSize(), seed=version), directory))
    producer = make_producer(kafka)
    try:
        release_core(settings, registry, producer, 0)
    finally:
        producer.close()

    def cli(*args: str) -> dict[str, Any]:
        result = runner.invoke(app, [*args, "--json"], env=env)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    def fleet_shows(versions: dict[str, int]) -> dict[str, Any] | None:
        report = cli("fleet", "--timeout", "20")
        running = {a["agent_id"]: a["core_version"] for a in report["agents"]}
        return report if running == versions else None

    runtimes = {
        agent_id: AgentRuntime(
            AgentSettings(
                agent_id=agent_id,
                skill="add",
                eval_skills=["add"],
                eval_tasks=3,
                home=tmp_path / "agents",
                learn_steps=0,  # serve only: the test is about which core each agent runs
                heartbeat_s=0.3,
                drain_timeout_s=1.0,
                signing_key_file=agent_keys.agent_env(agent_id)["HIVE_AGENT_SIGNING_KEY_FILE"],
                hive_public_key_file=settings.release_public_key_path,
            ),
            kafka,
        )
        for agent_id in AGENTS
    }
    stop = threading.Event()
    threads = [threading.Thread(target=r.run, args=(stop,), daemon=True) for r in runtimes.values()]
    for thread in threads:
        thread.start()
    try:
        _until(lambda: fleet_shows(dict.fromkeys(AGENTS, 0)), 60, "every agent to run v0")

        plan = cli("core", "release", "1", "--canary", "agent-1")
        assert (plan["action"], plan["targets"], plan["champion_after"]) == ("canary", ["agent-1"], 0)
        report = _until(
            lambda: fleet_shows({"agent-1": 1, "agent-2": 0, "agent-3": 0}), 60, "the canary agent to run v1"
        )
        assert report["champion"] == 0
        assert {a["agent_id"]: a["skew"] for a in report["agents"]} == {"agent-1": 1, "agent-2": 0, "agent-3": 0}
        assert report["versions"] == {"0": 2, "1": 1}
        assert report["max_skew"] == 1
        assert all(a["lag"] == 0 and a["active"] for a in report["agents"])
        table = runner.invoke(app, ["fleet"], env=env)
        assert table.exit_code == 0, table.output
        assert "agent-3" in table.stdout and "+1" in table.stdout
        assert "champion v0; active agents per core: v0: 2, v1: 1; max skew 1" in table.stdout
        cores = {row["core_version"]: row for row in cli("core", "list")}
        assert (cores[0]["aliases"], cores[1]["aliases"]) == (["champion"], ["canary"])
        assert cores[1]["released_to"] == ["agent-1"]

        plan = cli("core", "release", "1")
        assert (plan["action"], plan["targets"], plan["champion_after"], plan["previous_after"]) == (
            "promote",
            None,
            1,
            0,
        )
        report = _until(lambda: fleet_shows(dict.fromkeys(AGENTS, 1)), 60, "every agent to run v1")
        assert report["champion"] == 1
        assert [a["skew"] for a in report["agents"]] == [0, 0, 0]
        assert (report["versions"], report["max_skew"]) == ({"1": 3}, 0)
        # The canary agent already ran v1 (same sha256): the promotion did not make it load v1 again.
        assert {a: r.counters["core_swaps"] for a, r in runtimes.items()} == dict.fromkeys(AGENTS, 1)

        plan = cli("core", "rollback")
        assert (plan["action"], plan["version"], plan["champion_after"], plan["previous_after"]) == (
            "rollback",
            0,
            0,
            None,
        )
        report = _until(lambda: fleet_shows(dict.fromkeys(AGENTS, 0)), 60, "every agent to roll back to v0")
        assert report["champion"] == 0
        assert (report["versions"], report["max_skew"]) == ({"0": 3}, 0)
        assert {a: r.counters["core_swaps"] for a, r in runtimes.items()} == dict.fromkeys(AGENTS, 2)
        assert {a: r.counters["cores_refused"] for a, r in runtimes.items()} == dict.fromkeys(AGENTS, 0)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    assert [(e["action"], e["version"], e["targets"]) for e in read_history(settings)] == [
        ("promote", 0, None),
        ("canary", 1, ["agent-1"]),
        ("promote", 1, None),
        ("rollback", 0, None),
    ]
