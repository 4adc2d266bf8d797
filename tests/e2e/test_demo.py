"""``hive demo`` as a user runs it, on a small fleet: every agent ends on the new core, knowing more."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

DEMO_TIMEOUT_S = 900  # two rounds; about 330 s on an idle 2-core machine


def _run_demo(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["HIVE_HOME"] = str(home)
    env.pop("HIVE_KAFKA_BOOTSTRAP", None)  # the demo must start its own embedded broker
    proc = subprocess.Popen(
        [sys.executable, "-m", "hive", "demo", "--json", *args],
        env=env,
        cwd=home.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=DEMO_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        # The demo's agents, broker and DeepSpeed ranks share its session: stop them all by group id.
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"hive demo ran past {DEMO_TIMEOUT_S} s:\n{err[-3000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_small_demo_spreads_every_skill_to_every_agent_and_learns_between_rounds(tmp_path: Path) -> None:
    home = tmp_path / ".hive"
    args = ("--skills", "capital,add,morse", "--learn-steps", "120", "--relearn-steps", "120", "--distill-steps", "300")
    result = _run_demo(home, *args)
    assert result.returncode == 0, result.stderr[-3000:]

    report = json.loads(result.stdout)
    assert report == json.loads((home / "demo" / "report.json").read_text())
    assert report["core_version"] == 2
    assert report["model"] == "tiny"
    skills = {"capital", "add", "morse", "next"}  # agent-1 meets `next` after round 1
    assert report["skills"] == ["capital", "add", "morse", "next"]
    assert [a["id"] for a in report["agents"]] == ["agent-1", "agent-2", "agent-3"]
    for agent in report["agents"]:
        assert agent["core_version"] == report["core_version"], agent
        assert set(agent["before"]) == set(agent["after"]) == skills

    # Two rounds, each over what the agents learned on the core before it: 120 steps of 8 learnings each.
    rounds = report["rounds"]
    assert [(r["id"], r["core_version"]) for r in rounds] == [("r0001", 1), ("r0002", 2)]
    for entry in rounds:
        assert entry["learnings"] == 3 * 120 * 8
        assert entry["per_agent"] == {"agent-1": 960, "agent-2": 960, "agent-3": 960}
        assert all(set(entry["accuracy"][a]) == skills for a in ("agent-1", "agent-2", "agent-3")), entry
    assert report["round"] == {k: v for k, v in rounds[-1].items() if k != "accuracy"}
    # Learning between rounds: what agent-1 learned on core v1 reached the others through round 2 only.
    later = report["summary"]["later_skill"]
    assert later["skill"] == "next" and later["agent"] == "agent-1"
    assert later["others_after_round"][0] <= 0.05, later
    assert later["others_after_round"][1] - later["others_after_round"][0] >= 0.3, later
    second = (home / "rounds" / "r0002" / "learnings.jsonl").read_text()
    assert '"skill":"next"' in second.replace(" ", "") and '"skill":"next"' not in (
        (home / "rounds" / "r0001" / "learnings.jsonl").read_text().replace(" ", "")
    )
    # Every learning was signed with the agent's own key, made by the demo and readable by its owner only: the
    # hive requires signatures, so an unsigned one would be dead-lettered and missing from the round.
    keys = sorted((home / "keys").iterdir())
    assert [k.name for k in keys] == ["agent-1.key", "agent-2.key", "agent-3.key"]
    assert all(k.stat().st_mode & 0o777 == 0o600 for k in keys) and len({k.read_text() for k in keys}) == 3

    summary = report["summary"]
    # An agent knows nothing of the skills it was not deployed to until the round spreads them.
    assert summary["cross_skill_before"] <= 0.05
    assert summary["cross_skill_after"] - summary["cross_skill_before"] >= 0.3, summary

    # Every process the demo started is gone: the broker's and agents' logs say they stopped.
    assert (home / "rounds" / "r0001" / "out" / "core" / "model.safetensors").is_file()
    assert (home / "mlflow.db").is_file()
    assert not (tmp_path / "mlruns").exists()
