"""``hive demo``: the whole loop on one machine, from an empty hive to a fleet sharing one core."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.skills import load_skills
from hive.config import HiveSettings
from hive.fleet import FleetView
from hive.service import Hive
from streams.broker import EmbeddedBroker
from streams.durable import write_text
from streams.signing import KEY_SUFFIX

MARKER = ".demo-state"
# Measured on SmolLM2-135M (docs/benchmarks.md): with 80 learning and 120 distill steps the demo took 16.5 min and
# lifted cross-skill accuracy 0.00 -> 0.92; three quarters of both bring it within 15 min.
PRETRAINED_LEARN_STEPS = 60
PRETRAINED_DISTILL_STEPS = 90
# The round on a pretrained model tunes LoRA on the core and merges it (DistillParams.tuning "auto"): measured on the
# same learnings, 2.6 times faster than full fine-tuning (which wants lr 2e-4), 0.91 against 0.98 on average.
PRETRAINED_DISTILL: dict[str, Any] = {"batch_size": 16, "lr": 2e-3, "warmup_steps": 5, "replay_size": 0}
KEYS_DIR = "keys"


class DemoError(RuntimeError):
    """The demo could not finish; the message says which step and why."""


@dataclass(frozen=True)
class DemoPlan:
    """The fleet the demo deploys: one agent per skill, how long each learns on the job, and the round.

    ``model`` is core v0 (``HIVE_MODEL__PATH``: ``tiny``, ``smollm2-135m`` or a directory). ``distill`` sets the
    round's settings where the model needs other values than the hive's defaults; ``for_model`` gives the plan each
    kind of model runs by default.
    """

    skills: list[str] = field(default_factory=lambda: ["capital", "morse", "add"])
    learn_steps: int = 300
    batch_size: int = 32
    publish_per_step: int = 8
    distill_steps: int = 600
    eval_tasks: int = 100
    timeout_s: float = 900.0
    model: str = "tiny"
    distill: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def for_model(cls, model: str) -> DemoPlan:
        """The tiny core's plan, or the plan of a pretrained model (SmolLM2-135M's figures in docs/benchmarks.md).

        A pretrained model already answers capital-city questions, adds digits and may know Morse code, so its
        agents learn made-up skills it cannot know (``codes``, ``zorbish``) besides the made-up capitals. It
        learns with LoRA in far fewer steps than the tiny core from scratch, but each step costs ~100 times more.
        """
        if model == "tiny":
            return cls()
        return cls(
            skills=["capital", "codes", "zorbish"],
            learn_steps=PRETRAINED_LEARN_STEPS,
            batch_size=8,
            publish_per_step=8,
            distill_steps=PRETRAINED_DISTILL_STEPS,
            eval_tasks=50,
            timeout_s=1800.0,
            model=model,
            distill=dict(PRETRAINED_DISTILL),
        )

    @property
    def agent_ids(self) -> list[str]:
        return [f"agent-{i + 1}" for i in range(len(self.skills))]

    def skill_names(self) -> list[str]:
        """The skills' own names, which key every evaluation; the specs may be ``module:attr``."""
        return [skill.name for skill in load_skills(self.skills)]  # type: ignore[attr-defined]

    @property
    def expected_learnings(self) -> int:
        return len(self.skills) * self.learn_steps * self.publish_per_step


def prepare_home(home: Path, reset: bool) -> None:
    """Starts the demo on an empty hive; it replaces only state that an earlier demo made."""
    marker = home / "demo" / MARKER
    if home.exists() and any(home.iterdir()):
        if not (marker.exists() or reset):
            raise DemoError(
                f"{home} already holds a hive that the demo did not make; "
                "set HIVE_HOME to another directory, or pass --reset to delete it"
            )
        shutil.rmtree(home)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("made by `hive demo`; the next demo replaces this directory\n")


def make_agent_keys(home: Path, agent_ids: list[str]) -> Path:
    """A fresh random key per agent, each in ``HIVE_HOME/keys/<agent id>.key`` (mode 0600, the directory 0700):
    the hive reads them as its key directory, and each agent signs with its own. Returns the directory."""
    directory = home / KEYS_DIR
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    for agent_id in agent_ids:
        # write_text's temp file is made by mkstemp, so the key is never readable by others, not even briefly.
        write_text(directory / f"{agent_id}{KEY_SUFFIX}", secrets.token_bytes(32).hex() + "\n")
    return directory


class Reporter:
    """What the demo tells the person watching; a no-op base, so the e2e test can stay quiet."""

    def phase(self, message: str) -> None: ...
    def learning(self, done: int, total: int, stored: int) -> None: ...
    def distilling(self, step: int, total: int, loss: float) -> None: ...
    def close(self) -> None: ...


def _agent_command(plan: DemoPlan, agent_id: str, skill: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "hive",
        "agent",
        "run",
        "--id",
        agent_id,
        "--skill",
        skill,
        "--eval-skills",
        ",".join(plan.skills),
        "--learn-steps",
        str(plan.learn_steps),
        "--batch-size",
        str(plan.batch_size),
        "--publish-per-step",
        str(plan.publish_per_step),
        "--eval-tasks",
        str(plan.eval_tasks),
    ]


class AgentFleet:
    """The demo's agent processes; each one is stopped by its pid, whatever happens."""

    def __init__(self, settings: HiveSettings, plan: DemoPlan, log_dir: Path, key_dir: Path) -> None:
        self.procs: dict[str, subprocess.Popen] = {}
        self._logs = []
        # Each agent gets its own key file below, and pins this hive's release key; keys from the caller's
        # environment would clash with them.
        clashing = ("HIVE_AGENT_SIGNING_KEY", "HIVE_AGENT_SIGNING_KEY_FILE", "HIVE_AGENT_HIVE_PUBLIC_KEY")
        env = {k: v for k, v in os.environ.items() if k not in clashing}
        env["HIVE_KAFKA_BOOTSTRAP"] = settings.kafka.bootstrap
        env["HIVE_AGENT_HOME"] = str((settings.home / "agents").resolve())
        env["HIVE_AGENT_HIVE_PUBLIC_KEY_FILE"] = str(settings.release_public_key_path.resolve())
        # Three agents share two cores: one thread each keeps them from fighting.
        env["OMP_NUM_THREADS"] = "1"
        for agent_id, skill in zip(plan.agent_ids, plan.skills, strict=True):
            log = (log_dir / f"{agent_id}.log").open("w")
            self._logs.append(log)
            key = {"HIVE_AGENT_SIGNING_KEY_FILE": str((key_dir / f"{agent_id}{KEY_SUFFIX}").resolve())}
            self.procs[agent_id] = subprocess.Popen(
                _agent_command(plan, agent_id, skill), env=env | key, stdout=log, stderr=subprocess.STDOUT
            )

    def check_alive(self, log_dir: Path) -> None:
        for agent_id, proc in self.procs.items():
            if proc.poll() is not None:
                tail = (log_dir / f"{agent_id}.log").read_text()[-2000:]
                raise DemoError(f"{agent_id} exited with code {proc.returncode}:\n{tail}")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in self._logs:
            log.close()


def _wait(condition: Callable[[], bool], deadline: float, what: str, tick: Callable[[], None]) -> None:
    while not condition():
        if time.monotonic() > deadline:
            raise DemoError(f"timed out waiting for {what}")
        tick()
        time.sleep(0.5)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def build_report(plan: DemoPlan, view: FleetView, core_version: int, round_info: dict[str, Any]) -> dict[str, Any]:
    """Per agent: accuracy on every skill before the round (core v0 plus its own learning) and after it."""
    names = plan.skill_names()
    agents: list[dict[str, Any]] = []
    for agent_id, skill in zip(plan.agent_ids, names, strict=True):
        agents.append(
            {
                "id": agent_id,
                "skill": skill,
                "core_version": view.latest[agent_id].core_version,
                "before": view.evaluations.get((agent_id, 0), {}),
                "after": view.evaluations.get((agent_id, core_version), {}),
            }
        )

    def scores(when: str, own: bool) -> list[float]:
        return [a[when].get(s, 0.0) for a in agents for s in names if (s == a["skill"]) == own]

    return {
        "core_version": core_version,
        "skills": names,
        "agents": agents,
        "round": round_info,
        "summary": {
            "cross_skill_before": _mean(scores("before", own=False)),
            "cross_skill_after": _mean(scores("after", own=False)),
            "cross_skill_gain": _mean(scores("after", own=False)) - _mean(scores("before", own=False)),
            "own_skill_before": _mean(scores("before", own=True)),
            "own_skill_after": _mean(scores("after", own=True)),
        },
    }


def run_demo(settings: HiveSettings, plan: DemoPlan, reporter: Reporter, reset: bool = False) -> dict[str, Any]:
    """Runs the loop once and returns the report, also written to ``HIVE_HOME/demo/report.json``."""
    started = time.monotonic()
    deadline = started + plan.timeout_s
    prepare_home(settings.home, reset)
    demo_dir = settings.home / "demo"
    broker: EmbeddedBroker | None = None
    fleet: AgentFleet | None = None
    hive: Hive | None = None
    try:
        if not settings.kafka.bootstrap:
            reporter.phase("starting the embedded broker")
            broker = EmbeddedBroker(log_path=demo_dir / "broker.log")
            settings = settings.model_copy(
                update={"kafka": settings.kafka.model_copy(update={"bootstrap": broker.start()})}
            )
        key_dir = make_agent_keys(settings.home, plan.agent_ids)
        settings = settings.model_copy(
            update={
                # The demo's agents sign with keys made for this run; the hive holds them as its key directory.
                "ingest": settings.ingest.model_copy(update={"agent_keys": {}, "agent_key_dir": key_dir}),
                "schedule": settings.schedule.model_copy(update={"min_new": plan.expected_learnings}),
                "skills": [*settings.skills, *(s for s in plan.skills if ":" in s)],
                "distill": settings.distill.model_copy(update={"steps": plan.distill_steps, **plan.distill}),
                "model": settings.model.model_copy(update={"path": plan.model}),
                "gate": settings.gate.model_copy(update={"eval_tasks": plan.eval_tasks}),
            }
        )
        reporter.phase(f"broker at {settings.kafka.bootstrap}; building core v0 and registering it in MLflow")
        hive = Hive(settings)
        hive.start()
        hive.release(hive.champion())
        reporter.phase(
            f"starting {len(plan.skills)} agents: "
            + ", ".join(f"{a} ({s})" for a, s in zip(plan.agent_ids, plan.skills, strict=True))
        )
        fleet = AgentFleet(settings, plan, demo_dir, key_dir)
        total_steps = len(plan.skills) * plan.learn_steps
        live_hive, live_fleet = hive, fleet

        def learned() -> bool:
            view = live_hive.fleet.snapshot()
            return all((a, 0) in view.evaluations for a in plan.agent_ids) and live_hive.due()

        def tick_learning() -> None:
            live_fleet.check_alive(demo_dir)
            view = live_hive.fleet.snapshot()
            done = sum(min(b.counters.get("learn_steps", 0), plan.learn_steps) for b in view.latest.values())
            reporter.learning(done, total_steps, live_hive.store.count())

        _wait(learned, deadline, "the agents to learn on the job and the round threshold", tick_learning)
        reporter.learning(total_steps, total_steps, hive.store.count())
        reporter.phase(f"threshold reached: {hive.new_learnings()} learnings stored; distilling with DeepSpeed")
        record = hive.open_and_run_now(on_progress=reporter.distilling)
        if record.state != "released" or record.candidate_version is None:
            raise DemoError(f"round {record.id} was {record.state}: {'; '.join(record.gate_reasons) or record.error}")
        version = record.candidate_version
        reporter.phase(f"core v{version} passed the gate and is champion; waiting for every agent to swap")

        def swapped() -> bool:
            view = live_hive.fleet.snapshot()
            return all((a, version) in view.evaluations for a in plan.agent_ids)

        _wait(swapped, deadline, f"every agent to run core v{version}", lambda: live_fleet.check_alive(demo_dir))
        round_info = {
            "id": record.id,
            "learnings": record.learnings,
            "per_agent": record.per_agent,
            "wall_s": round(record.wall_s, 1),
            "distill": record.distill,
            "eval": record.eval,
            "champion_eval": record.champion_eval,
        }
        report = build_report(plan, hive.fleet.snapshot(), version, round_info)
        report["model"] = plan.model
        report["wall_s"] = round(time.monotonic() - started, 1)
        (demo_dir / "report.json").write_text(json.dumps(report, indent=2))
        return report
    finally:
        if fleet is not None:
            fleet.stop()
        if hive is not None:
            hive.stop()
        if broker is not None:
            broker.stop()
        reporter.close()
