"""The agent process: work tasks, learn on the job, publish learnings and heartbeats, swap cores."""

from __future__ import annotations

import logging
import random
import threading
import time

import torch

from agents.config import AgentSettings
from agents.core_updates import CoreVerificationError, CoreWatcher, fetch_core
from agents.evaluation import evaluate_skills
from agents.learner import Specialist, work_batch
from agents.model import load_core, save_core
from agents.skills import load_skill, load_skills
from streams import topics
from streams.codec import encode
from streams.config import KafkaSettings
from streams.events import ClaimCheck, Heartbeat
from streams.kafka import make_producer, send_and_wait

log = logging.getLogger(__name__)


class AgentRuntime:
    """One agent deployed to one skill.

    It learns for ``learn_steps`` steps, publishing a sample of what it learned each step, then
    serves. Whenever a newer core is released it fetches, verifies and swaps to it.
    """

    def __init__(self, settings: AgentSettings, kafka: KafkaSettings) -> None:
        self.settings = settings
        self.kafka = kafka
        self.skill = load_skill(settings.skill)
        self.eval_skills = load_skills(settings.eval_skills or [settings.skill])
        self.home = settings.home / settings.agent_id
        self.home.mkdir(parents=True, exist_ok=True)
        self.rng = random.Random(f"{settings.seed}:{settings.agent_id}")
        self.counters = {
            "tasks": 0,
            "correct": 0,
            "learn_steps": 0,
            "published": 0,
            "core_swaps": 0,
            "cores_refused": 0,
        }
        self.evaluation: dict[str, float] = {}
        self.adapter: ClaimCheck | None = None
        self.refused: set[int] = set()
        self.state = "starting"
        self.specialist: Specialist | None = None
        self.watcher = CoreWatcher(kafka)
        self.producer = make_producer(kafka)
        self._last_heartbeat = 0.0

    def run(self, stop: threading.Event, first_core_timeout_s: float = 120.0) -> None:
        torch.set_num_threads(self.settings.threads)
        self.watcher.start()
        try:
            self._await_first_core(stop, first_core_timeout_s)
            while not stop.is_set():
                self._maybe_swap()
                if self.state == "learning":
                    self._work_and_learn()
                else:
                    stop.wait(0.2)
                self._heartbeat()
        finally:
            self.state = "stopping"
            self._heartbeat(force=True)
            self.producer.flush(timeout=10)
            self.producer.close(timeout=10)
            self.watcher.stop()

    def _await_first_core(self, stop: threading.Event, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.watcher.latest() is None:
            if stop.is_set():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"no core release on {topics.CORE} within {timeout_s:.0f} s")
            self._heartbeat()
            time.sleep(0.2)
        release = self.watcher.latest()
        assert release is not None
        core = load_core(fetch_core(release, self.home / "cores"))
        self.specialist = Specialist(core, release.version, self.settings.lr, self.settings.topk)
        self.state = "learning" if self.settings.learn_steps > 0 else "serving"
        log.info("%s runs core v%d", self.settings.agent_id, release.version)

    def _maybe_swap(self) -> None:
        release = self.watcher.latest()
        assert self.specialist is not None
        if release is None or release.version <= self.specialist.core_version or release.version in self.refused:
            return
        try:
            core = load_core(fetch_core(release, self.home / "cores"))
        except (CoreVerificationError, OSError, ValueError) as err:
            # Keep serving the core we trust; the release stays refused until a newer one comes.
            self.refused.add(release.version)
            self.counters["cores_refused"] += 1
            log.error("%s refused core v%d: %s", self.settings.agent_id, release.version, err)
            return
        self.specialist.swap_core(core, release.version)
        self.counters["core_swaps"] += 1
        self.state = "serving"
        self.evaluation = evaluate_skills(self.specialist.model, self.eval_skills, self.settings.eval_tasks)
        log.info("%s swapped to core v%d: %s", self.settings.agent_id, release.version, self.evaluation)
        self._heartbeat(force=True)

    def _work_and_learn(self) -> None:
        specialist = self.specialist
        assert specialist is not None
        worked = work_batch(
            specialist,
            self.skill,
            self.settings.agent_id,
            self.rng,
            self.settings.batch_size,
            self.settings.publish_per_step,
            self.adapter,
        )
        self.counters["tasks"] += len(worked.tasks)
        self.counters["correct"] += worked.correct
        self.counters["learn_steps"] += 1
        futures = [
            self.producer.send(topics.LEARNINGS, key=self.settings.agent_id.encode(), value=encode(learning))
            for learning in worked.learnings
        ]
        for future in futures:
            future.get(timeout=30)  # raises if the broker did not ack: a learning is never silently lost
            self.counters["published"] += 1
        if specialist.steps >= self.settings.learn_steps:
            self._finish_learning()

    def _finish_learning(self) -> None:
        """Saves the specialist (the claim check the hive can use) and records what it can do."""
        specialist = self.specialist
        assert specialist is not None
        directory = self.home / "specialist"
        sha = save_core(specialist.model, directory)
        self.adapter = ClaimCheck(uri=directory.resolve().as_uri(), sha256=sha)
        self.evaluation = evaluate_skills(specialist.model, self.eval_skills, self.settings.eval_tasks)
        self.state = "serving"
        log.info("%s learned %d steps: %s", self.settings.agent_id, specialist.steps, self.evaluation)
        self._heartbeat(force=True)

    def _heartbeat(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_heartbeat < self.settings.heartbeat_s:
            return
        self._last_heartbeat = now
        beat = Heartbeat(
            agent_id=self.settings.agent_id,
            skill=self.skill.name,  # type: ignore[attr-defined]
            core_version=self.specialist.core_version if self.specialist else 0,
            counters=dict(self.counters),
            state=self.state,  # type: ignore[arg-type]
            evaluation=self.evaluation,
        )
        send_and_wait(self.producer, topics.FLEET, self.settings.agent_id.encode(), encode(beat))
