"""The agent process: work tasks, learn on the job, publish learnings and heartbeats, swap cores."""

from __future__ import annotations

import json
import logging
import random
import threading
import time

import torch

from agents.adapter_upload import UploadError
from agents.config import AgentSettings
from agents.evaluation import evaluate_skills
from agents.learner import Specialist, work_batch
from agents.sdk import HeartbeatState, HiveAgent
from agents.skills import load_skill, load_skills
from streams import topics
from streams.config import KafkaSettings
from streams.events import ClaimCheck

log = logging.getLogger(__name__)


class AgentRuntime:
    """One agent deployed to one skill, built on the SDK's ``HiveAgent``.

    It learns for ``learn_steps`` steps, publishing a sample of what it learned each step, then
    serves. Whenever the core released for it changes (an upgrade, a canary or a rollback) it fetches,
    verifies and swaps to it, evaluates the new core and reports it, then rebases: a fresh adapter on the
    new core (which already holds what the fleet learned, its own learnings included) and ``relearn_steps``
    more steps on the job, on ``later_skills`` when it meets new material. Learnings go through the agent's
    spool, so a broker outage slows nothing until the spool is full.
    """

    def __init__(self, settings: AgentSettings, kafka: KafkaSettings) -> None:
        self.settings = settings
        self.kafka = kafka
        self.skill = load_skill(settings.skill)
        # Every later skill loads now: a bad name is a settings error at start, not a crash rounds later.
        load_skills(settings.later_skills)
        self.eval_skills = load_skills(settings.eval_skills or [settings.skill, *settings.later_skills])
        # Core swaps so far: which skill the agent works and how long it learns on its core.
        self.swaps = 0
        self.rng = random.Random(f"{settings.seed}:{settings.agent_id}")
        self.work = {"tasks": 0, "correct": 0, "learn_steps": 0, "adapter_upload_failures": 0}
        self.evaluation: dict[str, float] = {}
        self.state: HeartbeatState = "starting"
        self.agent = HiveAgent(settings, kafka, skill=self.skill.name)  # type: ignore[attr-defined]
        self.home = self.agent.home
        self._stop = threading.Event()
        self._last_heartbeat = 0.0

    @property
    def counters(self) -> dict[str, int]:
        """The work done, plus the SDK's publishing and core counters: what every heartbeat carries."""
        return {**self.work, **self.agent.counters()}

    @property
    def specialist(self) -> Specialist | None:
        return self.agent.specialist

    @property
    def adapter(self) -> ClaimCheck | None:
        return self.agent.adapter

    def run(self, stop: threading.Event, first_core_timeout_s: float = 120.0) -> None:
        torch.set_num_threads(self.settings.threads)
        self._stop = stop
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
            # Drain first, so that the last heartbeat's counters say what was published; then close
            # without a second drain wait (what is left stays in the spool for the next start).
            drained = False
            try:
                drained = self.agent.flush(self.settings.drain_timeout_s)
                self._heartbeat(force=True)
            finally:
                counters = self.counters
                left = self.agent.close(drain_timeout_s=1.0 if drained else 0.0)
                # One line an operator (or a test) can read what this run did from, unsent learnings included.
                counters["spool_size"] = left
                log.info("%s stopped; counters %s", self.settings.agent_id, json.dumps(counters, sort_keys=True))

    def _await_first_core(self, stop: threading.Event, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.agent.poll_core() is None:
            if stop.is_set():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"no usable core release on {topics.CORE} within {timeout_s:.0f} s")
            self._heartbeat()
            time.sleep(0.2)
        self.state = "learning" if self.settings.steps_on_core(0) > 0 else "serving"

    def _maybe_swap(self) -> None:
        release = self.agent.poll_core()
        if release is None:
            return
        self.state = "serving"
        self.swaps += 1
        assert self.specialist is not None
        # What the new core knows by itself: the report of the round, before the agent learns on it.
        self.evaluation = evaluate_skills(
            self.specialist.model, self.eval_skills, self.settings.eval_tasks, codec=self.specialist.codec
        )
        log.info("%s swapped to core v%d: %s", self.settings.agent_id, release.version, self.evaluation)
        self._heartbeat(force=True)
        if self.settings.steps_on_core(self.swaps) > 0:
            self._rebase()

    def _rebase(self) -> None:
        """Learns on the job again, on the new core, and on the next skill when the agent meets new material."""
        skill = self.settings.skill_on_core(self.swaps)
        if skill != self.settings.skill_on_core(self.swaps - 1):
            self.skill = load_skill(skill)
            self.agent.skill = self.skill.name  # type: ignore[attr-defined]
            log.info("%s now works %s", self.settings.agent_id, self.agent.skill)
        self.state = "learning"

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
        self.work["tasks"] += len(worked.tasks)
        self.work["correct"] += worked.correct
        self.work["learn_steps"] += 1
        learnings = worked.learnings
        finished = specialist.steps >= self.settings.steps_on_core(self.swaps)
        if finished:
            # The last batch carries the finished specialist's claim check, so the hive can load what this
            # agent learned (`hive inspect probe --agent`, teacher signals recomputed from the adapter).
            try:
                adapter: ClaimCheck | None = self.agent.save_specialist()
            except UploadError as err:
                # The learnings still carry their teacher signals; only the claim check is missing.
                adapter = None
                self.work["adapter_upload_failures"] += 1
                log.error("%s could not upload its specialist: %s", self.settings.agent_id, err)
            learnings = [learning.model_copy(update={"adapter": adapter}) for learning in learnings]
        # Durable in the spool when this returns; it blocks only when the spool is full (backpressure).
        self.agent.publish(learnings, self._stop)
        if finished:
            self._finish_learning()

    def _finish_learning(self) -> None:
        """Records what the specialist (saved with the last batch) can do, and reports it."""
        specialist = self.specialist
        assert specialist is not None
        self.evaluation = evaluate_skills(
            specialist.model, self.eval_skills, self.settings.eval_tasks, codec=specialist.codec
        )
        self.state = "serving"
        log.info("%s learned %d steps: %s", self.settings.agent_id, specialist.steps, self.evaluation)
        # The report that learning is done should count every learning as published, when the broker allows.
        if not self.agent.flush(self.settings.send_timeout_s):
            log.warning("%s: %d learnings still wait for the broker", self.settings.agent_id, len(self.agent.spool))
        self._heartbeat(force=True)

    def _heartbeat(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_heartbeat < self.settings.heartbeat_s:
            return
        self._last_heartbeat = now
        self.agent.heartbeat(self.state, self.work, self.evaluation)
