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

from agents.skills import SkillLoadError, load_skills
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
PRETRAINED_RELEARN_STEPS = 30
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
    # Rounds, each followed by every agent rebasing on the new core and learning ``relearn_steps`` more steps
    # (none after the last round). From round 2 on, agent-1 meets new material: ``later_skill``.
    rounds: int = 2
    relearn_steps: int = 150
    later_skill: str | None = "next"
    batch_size: int = 32
    publish_per_step: int = 8
    distill_steps: int = 600
    eval_tasks: int = 100
    # Per round, with its phase of learning before it: the demo gives up after rounds * timeout_s.
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
            relearn_steps=PRETRAINED_RELEARN_STEPS,
            batch_size=8,
            publish_per_step=8,
            distill_steps=PRETRAINED_DISTILL_STEPS,
            eval_tasks=50,
            timeout_s=1800.0,
            model=model,
            distill=dict(PRETRAINED_DISTILL),
        )

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError(f"the demo runs at least one round, not {self.rounds}")
        if self.later_skill is not None and self.later_skill in self.skills:
            raise ValueError(f"the later skill {self.later_skill!r} must be new: no agent may start on it")

    @property
    def agent_ids(self) -> list[str]:
        return [f"agent-{i + 1}" for i in range(len(self.skills))]

    @property
    def all_skills(self) -> list[str]:
        """The agents' skills, then the new material: what every agent evaluates itself on."""
        later = [self.later_skill] if self.later_skill is not None and self.rounds > 1 else []
        return [*self.skills, *later]

    def skill_names(self) -> list[str]:
        """The skills' own names, which key every evaluation; the specs may be ``module:attr``."""
        return [skill.name for skill in load_skills(self.all_skills)]  # type: ignore[attr-defined]

    def steps_before_round(self, number: int) -> int:
        """On-the-job steps each agent takes before round ``number`` (from 1)."""
        return self.learn_steps if number == 1 else self.relearn_steps

    def steps_through_round(self, number: int) -> int:
        """On-the-job steps each agent takes before the rounds up to ``number`` (0: none)."""
        return sum(self.steps_before_round(n) for n in range(1, number + 1))

    def learnings_before_round(self, number: int) -> int:
        return len(self.skills) * self.steps_before_round(number) * self.publish_per_step

    @property
    def expected_learnings(self) -> int:
        """Learnings of the first round."""
        return self.learnings_before_round(1)


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


def make_agent_keys(home: Path, agent_ids: list[str], keep: bool = False) -> Path:
    """A fresh random key per agent, each in ``HIVE_HOME/keys/<agent id>.key`` (mode 0600, the directory 0700):
    the hive reads them as its key directory, and each agent signs with its own. Returns the directory.

    ``keep`` leaves a key that exists as it is (``hive up`` started again: an agent's spool was signed with it).
    """
    directory = home / KEYS_DIR
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    for agent_id in agent_ids:
        path = directory / f"{agent_id}{KEY_SUFFIX}"
        if keep and path.exists():
            continue
        # write_text's temp file is made by mkstemp, so the key is never readable by others, not even briefly.
        write_text(path, secrets.token_bytes(32).hex() + "\n")
    return directory


class Reporter:
    """What the demo tells the person watching; a no-op base, so the e2e test can stay quiet."""

    def phase(self, message: str) -> None: ...
    def learning(self, done: int, total: int, stored: int) -> None: ...
    def distilling(self, step: int, total: int, loss: float) -> None: ...
    def close(self) -> None: ...


def _agent_command(plan: DemoPlan, agent_id: str, skill: str) -> list[str]:
    # Learning stops after the last round's swap: the agents then only serve.
    relearn = plan.relearn_steps if plan.rounds > 1 else 0
    later = [plan.later_skill] if agent_id == plan.agent_ids[0] and plan.later_skill is not None else []
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
        ",".join(plan.all_skills),
        "--learn-steps",
        str(plan.learn_steps),
        "--relearn-steps",
        str(relearn),
        "--later-skills",
        ",".join(later),
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


def build_report(
    plan: DemoPlan, view: FleetView, rounds: list[dict[str, Any]], first_seen: dict[tuple[str, int], dict[str, float]]
) -> dict[str, Any]:
    """Per agent: accuracy on every skill before the first round (core v0 plus its own learning) and after the last
    round (the last core, as the agent found it); and per round, every agent's accuracy on the round's core.

    ``first_seen`` is the first evaluation each agent reported on each core: the one it made when it swapped to
    that core, before it learned on it again.
    """
    names = plan.skill_names()
    final = rounds[-1]["core_version"]
    agents: list[dict[str, Any]] = []
    for agent_id, skill in zip(plan.agent_ids, names, strict=False):
        agents.append(
            {
                "id": agent_id,
                "skill": skill,
                "core_version": view.latest[agent_id].core_version,
                "before": view.evaluations.get((agent_id, 0), {}),
                "after": first_seen.get((agent_id, final), {}),
            }
        )
    for entry in rounds:
        entry["accuracy"] = {a: first_seen.get((a, entry["core_version"]), {}) for a in plan.agent_ids}
    first_skills = names[: len(plan.skills)]

    def scores(when: str, own: bool) -> list[float]:
        return [a[when].get(s, 0.0) for a in agents for s in first_skills if (s == a["skill"]) == own]

    summary: dict[str, Any] = {
        "cross_skill_before": _mean(scores("before", own=False)),
        "cross_skill_after": _mean(scores("after", own=False)),
        "cross_skill_gain": _mean(scores("after", own=False)) - _mean(scores("before", own=False)),
        "own_skill_before": _mean(scores("before", own=True)),
        "own_skill_after": _mean(scores("after", own=True)),
    }
    if len(names) > len(plan.skills):
        # The new material: agent-1 met it after round 1; what the other agents can do with it after each round.
        later, others = names[-1], plan.agent_ids[1:]
        summary["later_skill"] = {
            "skill": later,
            "agent": plan.agent_ids[0],
            "others_after_round": [_mean([r["accuracy"][a].get(later, 0.0) for a in others]) for r in rounds],
        }
    last = rounds[-1]
    return {
        "core_version": final,
        "skills": names,
        "agents": agents,
        "round": {k: v for k, v in last.items() if k != "accuracy"},
        "rounds": rounds,
        "summary": summary,
    }


class FleetWatch:
    """What the demo sees of its fleet: when the agents finished a phase of learning, when they swapped, and the
    first evaluation each agent reported on each core.

    On a swap an agent evaluates the new core before it learns on it again, and reports it; the demo looks twice a
    second, while learning takes minutes, so the first evaluation it sees on a core is the core's own.
    """

    def __init__(self, hive: Hive, fleet: AgentFleet, log_dir: Path, deadline: float) -> None:
        self.hive, self.fleet, self.log_dir, self.deadline = hive, fleet, log_dir, deadline
        self.first_seen: dict[tuple[str, int], dict[str, float]] = {}

    def look(self) -> FleetView:
        view = self.hive.fleet.snapshot()
        for key, evaluation in view.evaluations.items():
            self.first_seen.setdefault(key, evaluation)
        return view

    def learning(self, plan: DemoPlan, number: int, core: int, reporter: Reporter) -> None:
        """Waits until every agent finished learning on ``core`` before round ``number`` and the hive stored it all."""
        steps = plan.steps_before_round(number)
        prior = plan.steps_through_round(number - 1)  # an agent's learn_steps counter runs over every core
        expected = len(plan.skills) * plan.steps_through_round(number) * plan.publish_per_step
        total = len(plan.skills) * steps

        def learned() -> bool:
            view = self.look()
            return self.hive.store.count() >= expected and all(
                (beat := view.latest.get(a)) is not None
                and beat.core_version == core
                and beat.state == "serving"
                and (a, core) in self.first_seen
                for a in plan.agent_ids
            )

        def tick() -> None:
            self.fleet.check_alive(self.log_dir)
            view = self.look()
            done = sum(min(max(b.counters.get("learn_steps", 0) - prior, 0), steps) for b in view.latest.values())
            reporter.learning(done, total, self.hive.store.count())

        _wait(learned, self.deadline, f"the agents to learn on core v{core}", tick)
        reporter.learning(total, total, self.hive.store.count())

    def swapping(self, plan: DemoPlan, core: int) -> None:
        def swapped() -> bool:
            self.look()
            return all((a, core) in self.first_seen for a in plan.agent_ids)

        _wait(swapped, self.deadline, f"every agent to run core v{core}", lambda: self.fleet.check_alive(self.log_dir))


def run_demo(settings: HiveSettings, plan: DemoPlan, reporter: Reporter, reset: bool = False) -> dict[str, Any]:
    """Runs ``plan.rounds`` rounds of the loop; returns the report, also written to ``HIVE_HOME/demo/report.json``."""
    started = time.monotonic()
    deadline = started + plan.timeout_s * plan.rounds
    try:
        plan.skill_names()
    except SkillLoadError as err:
        raise DemoError(f"a skill of the plan does not load: {err}") from err
    prepare_home(settings.home, reset)
    demo_dir = settings.home / "demo"
    broker: EmbeddedBroker | None = None
    fleet: AgentFleet | None = None
    hive: Hive | None = None
    try:
        if not settings.kafka.bootstrap:
            reporter.phase("starting the embedded broker")
            broker = EmbeddedBroker(log_path=demo_dir / "broker.log", storage=settings.kafka.embedded_storage)
            settings = settings.model_copy(
                update={"kafka": settings.kafka.model_copy(update={"bootstrap": broker.start()})}
            )
        key_dir = make_agent_keys(settings.home, plan.agent_ids)
        settings = settings.model_copy(
            update={
                # The demo's agents sign with keys made for this run; the hive holds them as its key directory.
                "ingest": settings.ingest.model_copy(update={"agent_keys": {}, "agent_key_dir": key_dir}),
                "schedule": settings.schedule.model_copy(update={"min_new": plan.expected_learnings}),
                "skills": [*settings.skills, *(s for s in plan.all_skills if ":" in s)],
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
        watch = FleetWatch(hive, fleet, demo_dir, deadline)
        rounds: list[dict[str, Any]] = []
        base = 0
        for number in range(1, plan.rounds + 1):
            steps = plan.steps_before_round(number)
            reporter.phase(f"phase {number}: the agents learn on the job on core v{base} ({steps} steps each)")
            watch.learning(plan, number, base, reporter)
            reporter.phase(f"round {number} of {plan.rounds}: {hive.new_learnings()} new learnings; distilling")
            record = hive.open_and_run_now(on_progress=reporter.distilling)
            if record.state != "released" or record.candidate_version is None:
                reasons = "; ".join(record.gate_reasons) or record.error
                raise DemoError(f"round {record.id} was {record.state}: {reasons}")
            base = record.candidate_version
            reporter.phase(f"core v{base} passed the gate and is champion; waiting for every agent to swap")
            watch.swapping(plan, base)
            rounds.append(
                {
                    "id": record.id,
                    "core_version": base,
                    "learnings": record.learnings,
                    "per_agent": record.per_agent,
                    "wall_s": round(record.wall_s, 1),
                    "distill": record.distill,
                    "eval": record.eval,
                    "champion_eval": record.champion_eval,
                }
            )
        report = build_report(plan, watch.look(), rounds, watch.first_seen)
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
