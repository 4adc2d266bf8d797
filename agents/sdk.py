"""The agent SDK: generate with the hive's core, record feedback, learn, publish, and follow new cores."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal

from agents.adapter_upload import UploadError, upload_specialist
from agents.config import AgentSettings
from agents.core_fetch import CoreUnreachable, CoreVerificationError
from agents.core_updates import CoreWatcher, load_release
from agents.learner import Specialist, make_learning, verified_answer
from agents.producer import agent_producer
from agents.publisher import Publisher
from agents.release_trust import ReleaseTrust
from agents.spool import SPOOL_FILE, Spool
from streams.codec import encode
from streams.config import KafkaSettings
from streams.events import ClaimCheck, CoreRelease, Heartbeat, Learning
from streams.signing import signed

log = logging.getLogger(__name__)

# How long an agent waits before it tries again to fetch a core it could not reach: doubling up to the maximum.
FETCH_BACKOFF_MIN_S = 1.0
FETCH_BACKOFF_MAX_S = 60.0

HeartbeatState = Literal["starting", "learning", "serving", "stopping"]


class NoCoreError(RuntimeError):
    """The agent has no core yet: call ``wait_for_core`` first."""


class HiveAgent:
    """One agent of the hive, for a team that brings its own agent framework.

    The agent runs the hive's core plus what it learns on the job. Use it like this::

        agent = HiveAgent(AgentSettings(agent_id="support-7", skill="capital"), KafkaSettings())
        agent.wait_for_core()
        [answer] = agent.generate(["France"])
        learning = agent.record_feedback("France", answer, reward=0.0, correction="Paris")
        agent.publish(agent.learn([learning]))
        agent.poll_core()        # swaps to the core released for it, if that changed
        agent.close()

    Nothing published is lost: a learning is on disk (the spool, under the agent's home) before
    ``publish`` returns, and leaves it only once the broker has acked it. ``AgentRuntime`` (the
    ``hive agent run`` process) is built on this class. Not thread-safe: call it from one thread.

    Only releases signed with a hive key the agent pins (``hive_public_key`` or ``hive_public_key_file``),
    and numbered above every release it admitted before, are ever run; the others are refused and counted in
    ``counters()`` and heartbeats (``agents.release_trust``).
    """

    def __init__(self, settings: AgentSettings, kafka: KafkaSettings, skill: str | None = None) -> None:
        """Opens the spool, then starts sending it and following ``hive.core``; nothing here waits on the broker.

        ``skill`` is the skill name written into learnings (default ``settings.skill``). Raises
        ``SpoolLocked`` when another process runs an agent with the same id and home, ``ValueError``
        for an unusable signing key (malformed, or shorter than 16 bytes), and ``OSError`` for an unreadable
        key file, and ``ValueError`` for a ``release-sequence`` file in the agent's home that holds no number.
        Without a key the agent runs, but a hive that requires signatures (the default) refuses
        its learnings and heartbeats; a warning says so.
        """
        if not kafka.bootstrap:
            raise ValueError("KafkaSettings.bootstrap is empty: the agent needs a broker (HIVE_KAFKA_BOOTSTRAP)")
        signing_key = settings.signing_key_bytes()  # a bad key fails here, before the spool is taken
        if signing_key is None:
            log.warning(
                "%s has no signing key (HIVE_AGENT_SIGNING_KEY or HIVE_AGENT_SIGNING_KEY_FILE): a hive that "
                "requires signatures, the default, dead-letters its learnings as `unsigned`",
                settings.agent_id,
            )
        self._signing_key = signing_key
        self.settings = settings
        self.kafka = kafka
        self.agent_id = settings.agent_id
        self.skill = skill or settings.skill
        self.home = settings.home / settings.agent_id
        self.home.mkdir(parents=True, exist_ok=True)
        self.specialist: Specialist | None = None
        self.release: CoreRelease | None = None
        self.adapter: ClaimCheck | None = None
        # (version, sha256) of releases that failed to verify or load: not tried again.
        self.refused: set[tuple[int, str]] = set()
        self._core_counts = {"core_swaps": 0, "cores_refused": 0, "core_fetch_retries": 0}
        # A core that could not be fetched (its server or bucket unreachable) is tried again from here, resuming.
        self._fetch_retry_at = 0.0
        self._fetch_backoff_s = FETCH_BACKOFF_MIN_S
        self._callbacks: list[Callable[[CoreRelease], None]] = []
        trust = ReleaseTrust(settings.pinned_keys(), self.home)  # a corrupt sequence file fails before the spool
        self.spool = Spool(self.home / SPOOL_FILE, settings.spool_max)
        self.publisher = Publisher(
            self.spool,
            lambda: agent_producer(kafka, settings.send_timeout_s),
            settings.agent_id,
            max_message_bytes=kafka.max_message_bytes,
            signing_key=signing_key,
            send_timeout_s=settings.send_timeout_s,
            retry_backoff_max_s=settings.retry_backoff_max_s,
        )
        self.watcher = CoreWatcher(kafka, settings.agent_id, trust)
        self._closed = False
        self.publisher.start()
        self.watcher.start()
        if len(self.spool):
            log.info(
                "%s: %d learnings from an earlier run wait in the spool; sending them first",
                self.agent_id,
                len(self.spool),
            )

    # --- cores ------------------------------------------------------------------------------------

    @property
    def core_version(self) -> int | None:
        return self.specialist.core_version if self.specialist is not None else None

    def current_core(self) -> CoreRelease | None:
        """The release the agent runs, or None before its first core."""
        return self.release

    def on_new_core(self, callback: Callable[[CoreRelease], None]) -> None:
        """Calls ``callback(release)`` after every core the agent loads, the first one included."""
        self._callbacks.append(callback)

    def poll_core(self) -> CoreRelease | None:
        """Loads the core released for this agent if it differs from the one running; returns it, or None.

        The release for this agent is the newest one on ``hive.core`` that names no agents (the fleet)
        or names this one (a canary). The agent swaps whenever it differs from the running one in
        version or sha256, downgrades included: a rollback is a lower version released later. The
        core's files are verified first (``agents.core_fetch``). A core that fails to verify or load is refused
        (and counted in ``cores_refused``, once per version and sha256): the agent keeps the core it trusts. A
        core that cannot be fetched now (its server down, a download cut off) is tried again later, with
        backoff, resuming the download (counted in ``core_fetch_retries``). A swap
        resets what the agent learned on the job, since the new core already holds what the fleet learned.
        """
        offered = self.watcher.latest()
        if offered is None or (offered.version, offered.sha256) in self.refused:
            return None
        running = self.release
        if running is not None and (running.version, running.sha256) == (offered.version, offered.sha256):
            return None
        if time.monotonic() < self._fetch_retry_at:
            return None
        try:
            core, codec = load_release(offered, self.home / "cores", self.settings.fetch_options())
        except CoreUnreachable as err:
            self._core_counts["core_fetch_retries"] += 1
            self._fetch_retry_at = time.monotonic() + self._fetch_backoff_s
            log.warning(
                "%s cannot fetch core v%d now (again in %.0f s): %s",
                self.agent_id,
                offered.version,
                self._fetch_backoff_s,
                err,
            )
            self._fetch_backoff_s = min(self._fetch_backoff_s * 2, FETCH_BACKOFF_MAX_S)
            return None
        except (CoreVerificationError, OSError, ValueError) as err:
            self.refused.add((offered.version, offered.sha256))
            self._core_counts["cores_refused"] += 1
            log.error("%s refused core v%d: %s", self.agent_id, offered.version, err)
            return None
        if self.specialist is None:
            self.specialist = Specialist(
                core,
                offered.version,
                self.settings.lr,
                self.settings.topk,
                codec,
                tuning=self.settings.tuning,
                lora=self.settings.lora_spec(),
            )
        else:
            self.specialist.swap_core(core, offered.version, codec)
            self.adapter = None  # the adapter belonged to the old core
            self._core_counts["core_swaps"] += 1
        self.release = offered
        self._fetch_backoff_s = FETCH_BACKOFF_MIN_S
        log.info("%s runs core v%d", self.agent_id, offered.version)
        for callback in self._callbacks:
            callback(offered)
        return offered

    def wait_for_core(self, timeout_s: float = 120.0, stop: threading.Event | None = None) -> CoreRelease | None:
        """Blocks until the agent runs a core; returns it (None if ``stop`` was set first).

        Raises ``TimeoutError`` when no usable core was released within ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while self.release is None:
            if stop is not None and stop.is_set():
                return None
            if self.poll_core() is not None:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"no usable core release within {timeout_s:.0f} s")
            time.sleep(0.2)
        return self.release

    # --- working and learning ----------------------------------------------------------------------

    def generate(self, prompts: list[str]) -> list[str]:
        """Greedy answers from the agent's model (the core plus what it learned on the job)."""
        return self._specialist().answer(prompts)

    def record_feedback(
        self, prompt: str, completion: str, reward: float | None = None, correction: str | None = None
    ) -> Learning:
        """A new learning from what the job said about a completion: a reward in [0, 1], a correction, or both.

        Its id is made here, once; publishing it again later reuses it, so the hive stores it once.
        Raises ``pydantic.ValidationError`` for feedback with neither, or a reward outside [0, 1].
        """
        return make_learning(
            self.agent_id,
            self.skill,
            self.core_version or 0,
            prompt,
            completion,
            reward=reward,
            correction=correction,
            adapter=self.adapter,
        )

    def learn(self, learnings: Sequence[Learning]) -> list[Learning]:
        """One on-the-job step on the learnings' verified answers; returns them with teacher signals.

        A verified answer is a completion with the full reward, or a correction. The returned
        learnings keep their ids and carry the specialist's top-k log-probabilities along that
        answer: what the hive distills. Learnings with nothing verified are returned unchanged.
        """
        specialist = self._specialist()
        targets = [(lr.prompt, answer[0]) for lr in learnings if (answer := verified_answer(lr)) is not None]
        if targets:
            specialist.learn([p for p, _ in targets], [a for _, a in targets])
        return specialist.with_signals(learnings)

    def save_specialist(self, directory: Path | None = None) -> ClaimCheck:
        """Saves what the agent learned; later learnings carry it as a claim check.

        With LoRA (the default on a pretrained core) that is the adapter as PEFT saves it, and the claim check's
        sha256 is that of ``adapter_model.safetensors``; with full tuning (the tiny core) the whole model's
        ``model.safetensors``.

        With ``adapter_upload_url`` set (an agent that does not share the hive's disk), the files are then
        uploaded to the hive (``agents.adapter_upload``), and the claim check names the hive's copy. Raises
        UploadError when the upload fails: the agent then carries no claim check until a later save uploads.
        """
        directory = directory or self.home / "specialist"
        sha = self._specialist().save(directory)
        uri = directory.resolve().as_uri()
        upload_url = self.settings.adapter_upload_url
        if upload_url is not None:
            self.adapter = None
            if self._signing_key is None:
                raise UploadError("uploading a specialist needs the agent's signing key (HIVE_AGENT_SIGNING_KEY)")
            uri = upload_specialist(
                directory,
                sha,
                upload_url,
                self.agent_id,
                self._signing_key,
                self.settings.core_ca_file,
                self.settings.core_fetch_timeout_s,
            )
        self.adapter = ClaimCheck(uri=uri, sha256=sha)
        return self.adapter

    # --- publishing --------------------------------------------------------------------------------

    def publish(self, learnings: Sequence[Learning], stop: threading.Event | None = None) -> None:
        """Spools the learnings (signed when the agent has a key); they are durable when this returns.

        Sending happens in the background. When the spool is full this blocks until the broker
        acks (backpressure); see ``Publisher.publish`` for ``stop``.
        """
        self.publisher.publish(learnings, stop)

    def heartbeat(
        self, state: HeartbeatState, counters: dict[str, int] | None = None, evaluation: dict[str, float] | None = None
    ) -> None:
        """Tells the hive the agent is alive, which core it runs, and its counters. Best effort: never blocks.

        Signed with the agent's key, as learnings are: the hive counts a heartbeat only once it verifies.
        """
        beat = Heartbeat(
            agent_id=self.agent_id,
            skill=self.skill,
            core_version=self.core_version or 0,
            counters={**(counters or {}), **self.counters()},
            state=state,
            evaluation=evaluation or {},
        )
        if self._signing_key is not None:
            beat = signed(beat, self._signing_key)
        self.publisher.beat(encode(beat))

    def counters(self) -> dict[str, int]:
        """Publishing counts (``spooled``, ``published``, ``send_errors``, ``spool_full_waits``, ...), core ones, and
        releases refused by reason (``releases_unsigned``, ``releases_bad_signature``, ``releases_replayed``, ...)."""
        return {**self.publisher.counters(), **self._core_counts, **self.watcher.counts()}

    def flush(self, timeout_s: float) -> bool:
        """Waits until every published learning is acked; False when ``timeout_s`` passed first."""
        return self.publisher.flush(timeout_s)

    def close(self, drain_timeout_s: float | None = None) -> int:
        """Sends what it can within ``drain_timeout_s`` (default: the settings'), then stops.

        Returns how many learnings stay in the spool; they are sent on the agent's next start.
        """
        if self._closed:
            return len(self.spool)
        self._closed = True
        timeout = self.settings.drain_timeout_s if drain_timeout_s is None else drain_timeout_s
        try:
            left = self.publisher.close(timeout)
        finally:
            self.watcher.stop()
            self.spool.close()
        return left

    def _specialist(self) -> Specialist:
        if self.specialist is None:
            raise NoCoreError(f"{self.agent_id} has no core yet: call wait_for_core() first")
        return self.specialist

    def __enter__(self) -> HiveAgent:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
