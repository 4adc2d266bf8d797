"""``hive bench soak``: many agents, several rounds, agents joining and leaving, against a real ``hive serve``.

The agents are SDK agents (``agents.sdk.HiveAgent``) in this process that publish precomputed learnings (verified
answers of built-in skills' ``train`` prompts, signed with their own keys): no model per agent, so fifty fit on a
laptop. Each phase, every agent present publishes ``per_agent`` learnings; the hive's schedule opens a round once
they are in, and the next phase waits for that round to end. A tenth of the fleet joins in phase 2, and a tenth
leaves (drains its spool and closes) in phase 3. What it measures:

- ``sent`` (learnings the broker acked to the agents), ``stored``, ``duplicates`` (stored rows whose id repeats)
  and ``lost`` (sent but not stored);
- ``rounds_released`` and every round's state;
- ``ingest_lag_s``: for every stored learning, the time from its ``created_at`` to when a reader polling the
  store every 0.25 s first saw it (``p50``, ``p99``, ``max``, ``count``), overall and ``per_phase``;
- ``round_overhead``: per round, its wall time minus the distill job's training time (its step loop), as a share
  of the wall time (``per_round``, ``mean``); ``hive_overhead``: the same with the distill job's whole time
  (launcher, ranks, loading, training, saving, evaluation) in place of its step loop: the hive's own part;
- ``rss_mb``: the RSS of ``hive serve``, sampled every 2 s.
"""

from __future__ import annotations

import json
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agents.config import AgentSettings
from agents.sdk import HiveAgent
from agents.skills import BUILTIN_SKILLS
from agents.skills.splits import sample_task
from hive.bench.machine import machine_info
from hive.config import GateSettings, HiveSettings
from hive.demo import KEYS_DIR, make_agent_keys
from hive.rounds.book import RoundBook
from hive.store.parquet import NoStoreError, open_read_only
from streams.broker import EmbeddedBroker
from streams.config import KafkaSettings
from streams.events import Feedback, Learning
from streams.signing import KEY_SUFFIX

Say = Callable[[str], None]
# Skills of the built-in set whose train prompts a learning may carry; each agent works one, in turn.
SKILLS = ("add", "next", "swap", "capital")


class SoakError(RuntimeError):
    """The soak could not go on: hive serve died, or a phase did not finish in time (with the log's tail)."""


@dataclass(frozen=True)
class SoakPlan:
    agents: int = 50
    rounds: int = 5
    per_agent: int = 40
    distill_steps: int = 30
    # The hive's own gate (100 tasks per skill): at 20, one task more wrong is 0.05, and the gate (limit 0.02)
    # rejected a round for it in a soak that had nothing wrong.
    eval_tasks: int = GateSettings().eval_tasks
    seed: int = 0
    # Per phase: the learnings in, and the round over them ended.
    phase_timeout_s: float = 900.0

    def __post_init__(self) -> None:
        if self.agents < 2 or self.rounds < 3 or self.per_agent < 1:
            raise ValueError("a soak needs at least 2 agents, 3 rounds (join, leave) and 1 learning per agent")

    @property
    def churn(self) -> int:
        """How many agents join in phase 2, and how many leave in phase 3."""
        return max(1, self.agents // 10)


def _learnings(agent_id: str, skill: str, n: int, rng: random.Random, core_version: int) -> list[Learning]:
    spec = BUILTIN_SKILLS[skill]
    out = []
    for _ in range(n):
        prompt, answer = sample_task(spec, rng, "train")
        out.append(
            Learning(
                id=uuid.uuid4(),
                agent_id=agent_id,
                skill=skill,
                core_version=core_version,
                prompt=prompt,
                completion=answer,
                feedback=Feedback(reward=1.0),
            )
        )
    return out


class _Fleet:
    """The SDK agents of the soak, each with its key in the hive's key directory."""

    def __init__(self, kafka: KafkaSettings, home: Path, key_root: Path, seed: int, hive_key: Path) -> None:
        # Keys go in key_root/keys, the directory the hive reads them from (hive.demo.make_agent_keys).
        self.kafka, self.home, self.key_root, self.hive_key = kafka, home, key_root, hive_key
        self.rng = random.Random(seed)
        self.present: dict[str, HiveAgent] = {}
        self.skill: dict[str, str] = {}
        self.published_by_left = 0

    def join(self, agent_id: str) -> None:
        key_dir = make_agent_keys(self.key_root, [agent_id])
        settings = AgentSettings(
            agent_id=agent_id,
            skill=SKILLS[len(self.skill) % len(SKILLS)],
            home=self.home,
            signing_key_file=key_dir / f"{agent_id}{KEY_SUFFIX}",
            hive_public_key_file=self.hive_key,
            send_timeout_s=10.0,
        )
        self.skill[agent_id] = settings.skill
        self.present[agent_id] = HiveAgent(settings, self.kafka)

    def publish(self, per_agent: int, core_version: int) -> None:
        for agent_id, agent in self.present.items():
            agent.publish(_learnings(agent_id, self.skill[agent_id], per_agent, self.rng, core_version))

    def leave(self, agent_id: str) -> None:
        agent = self.present.pop(agent_id)
        agent.flush(60.0)
        self.published_by_left += agent.counters()["published"]
        agent.close()

    def flush(self, timeout_s: float) -> bool:
        return all(agent.flush(timeout_s) for agent in self.present.values())

    def published(self) -> int:
        return self.published_by_left + sum(a.counters()["published"] for a in self.present.values())

    def close(self) -> None:
        for agent_id in list(self.present):
            self.leave(agent_id)


class _Sampler:
    """Polls the store for new learnings (their lag) and hive serve's RSS, on one thread."""

    def __init__(self, store_dir: Path, pid: int) -> None:
        self.store_dir, self.pid = store_dir, pid
        # (created_at, lag in seconds) of every learning seen.
        self.lags: list[tuple[datetime, float]] = []
        self.rss_mb: list[float] = []
        self._seen = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-sampler", daemon=True)
        self._last_rss = 0.0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self._poll_store()

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            self._poll_store()
            if time.monotonic() - self._last_rss >= 2.0:
                self._last_rss = time.monotonic()
                rss = _rss_mb(self.pid)
                if rss is not None:
                    self.rss_mb.append(rss)

    def _poll_store(self) -> None:
        try:
            store = open_read_only(self.store_dir)
        except NoStoreError:
            return
        with store:
            rows = store.read_with_seq(after_seq=self._seen)
        now = datetime.now(UTC)
        for seq, learning in rows:
            self.lags.append((learning.created_at, (now - learning.created_at).total_seconds()))
            self._seen = max(self._seen, seq)


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError):
        return None
    return None


def _lag_figures(lags: list[float]) -> dict[str, float | None]:
    return {
        "p50": _percentile(lags, 0.50),
        "p99": _percentile(lags, 0.99),
        "max": round(max(lags), 3) if lags else None,
        "count": len(lags),
    }


def _lags_per_phase(lags: list[tuple[datetime, float]], starts: list[datetime]) -> dict[str, dict[str, float | None]]:
    """The lag figures of the learnings each phase published: by ``created_at``, the last phase begun before it."""
    buckets: dict[int, list[float]] = {n: [] for n in range(1, len(starts) + 1)}
    for created_at, lag in lags:
        phase = sum(1 for start in starts if start <= created_at)
        if phase:
            buckets[phase].append(lag)
    return {str(n): _lag_figures(values) for n, values in buckets.items()}


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def run_soak(plan: SoakPlan, workdir: Path, say: Say) -> dict[str, Any]:
    """Runs the soak under ``workdir`` (its hive's HIVE_HOME is ``workdir/hive``); returns the report."""
    started = time.monotonic()
    home, key_dir = workdir / "hive", workdir / KEYS_DIR
    key_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    home.mkdir(parents=True, exist_ok=True)
    broker = EmbeddedBroker(log_path=workdir / "broker.log")
    bootstrap = broker.start()
    kafka = KafkaSettings(bootstrap=bootstrap)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIVE_")} | {
        "HIVE_HOME": str(home),
        "HIVE_KAFKA_BOOTSTRAP": bootstrap,
        "HIVE_INGEST__AGENT_KEY_DIR": str(key_dir),
        # A round once every agent present has sent its share: the smallest phase opens one.
        "HIVE_SCHEDULE__MIN_NEW": str((plan.agents - plan.churn) * plan.per_agent),
        "HIVE_DISTILL__STEPS": str(plan.distill_steps),
        "HIVE_GATE__EVAL_TASKS": str(plan.eval_tasks),
        "PYTHONUNBUFFERED": "1",
    }
    log = (workdir / "serve.log").open("ab")
    serve = subprocess.Popen(
        [sys.executable, "-m", "hive", "serve", "--round-check-s", "1"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    settings = HiveSettings(home=home)
    book = RoundBook(settings.rounds_dir)
    fleet = _Fleet(kafka, workdir / "agents", workdir, plan.seed, settings.release_public_key_path)
    sampler = _Sampler(settings.store_dir, serve.pid)
    sampler.start()
    phases: list[dict[str, Any]] = []
    phase_starts: list[datetime] = []
    try:
        for n in range(plan.agents - plan.churn):
            fleet.join(f"soak-{n:03d}")
        for phase in range(1, plan.rounds + 1):
            if phase == 2:
                for n in range(plan.agents - plan.churn, plan.agents):
                    fleet.join(f"soak-{n:03d}")
            if phase == 3:
                for agent_id in sorted(fleet.present)[: plan.churn]:
                    fleet.leave(agent_id)
            say(f"phase {phase}/{plan.rounds}: {len(fleet.present)} agents publish {plan.per_agent} learnings each")
            t0 = time.monotonic()
            phase_starts.append(datetime.now(UTC))
            ended_before = sum(1 for r in book.all() if r.ended_at is not None)
            fleet.publish(plan.per_agent, core_version=0)
            if not fleet.flush(plan.phase_timeout_s):
                raise SoakError(f"phase {phase}: the agents' spools did not drain in {plan.phase_timeout_s:g} s")

            def ended(before: int = ended_before) -> bool:
                return sum(1 for r in book.all() if r.ended_at is not None) > before

            _wait(
                ended,
                serve,
                workdir / "serve.log",
                plan.phase_timeout_s,
                f"phase {phase}'s round to end",
            )
            phases.append({"phase": phase, "agents": len(fleet.present), "wall_s": round(time.monotonic() - t0, 1)})
        sent = fleet.published()
    finally:
        fleet.close()
        sampler.stop()
        if serve.poll() is None:
            os.kill(serve.pid, signal.SIGTERM)
            try:
                serve.wait(120)
            except subprocess.TimeoutExpired:
                os.kill(serve.pid, signal.SIGKILL)
                serve.wait(30)
        log.close()
        broker.stop()
    with open_read_only(settings.store_dir) as store:
        stored, unique = store.count(), store.unique_ids()
    rounds = book.all()
    overheads, hive_parts = [], []
    for record in rounds:
        metrics_path = settings.rounds_dir / record.id / "out" / "metrics.json"
        if record.wall_s > 0 and metrics_path.is_file():
            train_s = float(json.loads(metrics_path.read_text()).get("train_s") or 0.0)
            overheads.append(round((record.wall_s - train_s) / record.wall_s, 3))
            if record.distill.get("job_s") is not None:
                hive_parts.append(round((record.wall_s - float(record.distill["job_s"])) / record.wall_s, 3))
    return {
        "plan": asdict(plan),
        "machine": machine_info(),
        "sent": sent,
        "stored": stored,
        "duplicates": stored - unique,
        "lost": sent - unique,
        "rounds_released": sum(1 for r in rounds if r.state == "released"),
        "rounds": [{"id": r.id, "state": r.state, "learnings": r.learnings, "wall_s": r.wall_s} for r in rounds],
        "phases": phases,
        "ingest_lag_s": _lag_figures([lag for _, lag in sampler.lags])
        | {"per_phase": _lags_per_phase(sampler.lags, phase_starts)},
        "round_overhead": {
            "per_round": overheads,
            "mean": round(statistics.fmean(overheads), 3) if overheads else None,
        },
        # The hive's own part of each round: its wall time minus the distill job's (launch to exit), as a share.
        "hive_overhead": {
            "per_round": hive_parts,
            "mean": round(statistics.fmean(hive_parts), 3) if hive_parts else None,
        },
        "rss_mb": sampler.rss_mb,
        "serve_exit_code": serve.returncode,
        "wall_s": round(time.monotonic() - started, 1),
    }


def _wait(
    condition: Callable[[], bool], serve: subprocess.Popen[bytes], log: Path, timeout_s: float, what: str
) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if serve.poll() is not None:
            raise SoakError(
                f"hive serve exited with code {serve.returncode}:\n{log.read_text(errors='replace')[-3000:]}"
            )
        if time.monotonic() > deadline:
            raise SoakError(f"{what} within {timeout_s:g} s:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.5)
