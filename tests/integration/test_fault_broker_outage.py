"""Broker outage: agents keep working on their spools, a fresh broker comes back, every learning is stored once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import TopicPartition
from pydantic import SecretStr

from agents.model import build_core, save_core
from agents.spool import SPOOL_FILE, SpoolSnapshot, snapshot
from hive.config import HiveSettings
from hive.ingest.ingestor import Ingestor
from hive.store.parquet import ParquetLearningStore
from streams import topics
from streams.broker import EmbeddedBroker, free_port
from streams.codec import decode, encode
from streams.config import KafkaSettings
from streams.events import CoreRelease, Heartbeat
from streams.kafka import create_topics, make_consumer, make_producer, send_and_wait

from factories import ReleaseSigner

# agent-a's key is given to the hive inline; agent-b's is a file in the test's key directory (agent_keys).
AGENT_A, AGENT_B = "agent-a", "agent-b"
KEY = "utf8:outage-test-key-of-agent-a"
# agent-b's spool is small, so that the outage fills it: it must wait (backpressure), never drop.
SMALL_SPOOL = 40
# Long enough for the agents' sends to time out (3 s) and their reconnects to fail (3 s) at least once.
MIN_OUTAGE_S = 8.0


def _until(condition: Callable[[], bool], timeout_s: float, what: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what()}"
        time.sleep(0.2)


class Fleet:
    """Two `hive agent run` processes, each stopped by its pid whatever happens."""

    def __init__(self, root: Path, bootstrap: str, agent_b_key: dict[str, str], hive_public_key: str) -> None:
        self.root = root
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        for agent_id in (AGENT_A, AGENT_B):
            env = dict(os.environ)
            env.update(
                HIVE_KAFKA_BOOTSTRAP=bootstrap,
                OMP_NUM_THREADS="1",
                HIVE_AGENT_HEARTBEAT_S="0.5",
                HIVE_AGENT_SEND_TIMEOUT_S="3",
                HIVE_AGENT_RETRY_BACKOFF_MAX_S="1",
                HIVE_AGENT_DRAIN_TIMEOUT_S="20",
                HIVE_AGENT_HIVE_PUBLIC_KEY=hive_public_key,
            )
            if agent_id == AGENT_A:
                env["HIVE_AGENT_SIGNING_KEY"] = KEY
            else:
                env["HIVE_AGENT_SPOOL_MAX"] = str(SMALL_SPOOL)
                env.update(agent_b_key)
            cmd = [sys.executable, "-m", "hive", "agent", "run", "--id", agent_id, "--skill", "capital"]
            cmd += ["--learn-steps", "100000", "--batch-size", "4", "--publish-per-step", "4", "--eval-tasks", "2"]
            cmd += ["--home", str(root / "agents")]
            with (root / f"{agent_id}.log").open("wb") as log:
                self.procs[agent_id] = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)

    def spool(self, agent_id: str) -> SpoolSnapshot:
        path = self.root / "agents" / agent_id / SPOOL_FILE
        return snapshot(path) if path.exists() else SpoolSnapshot(0, 0, [])

    def logs(self) -> str:
        return "\n".join(f"--- {a}:\n{(self.root / f'{a}.log').read_text()[-3000:]}" for a in self.procs)

    def signal(self, sig: signal.Signals) -> None:
        for proc in self.procs.values():
            os.kill(proc.pid, sig)

    def frozen(self) -> bool:
        """True once every thread of every agent is stopped: SIGSTOP is delivered asynchronously."""
        for proc in self.procs.values():
            for stat in Path(f"/proc/{proc.pid}/task").glob("*/stat"):
                try:
                    text = stat.read_text()
                except FileNotFoundError:
                    continue  # the thread ended meanwhile
                # The state follows the command name, which is in parentheses: "pid (comm) T ...".
                if text.rpartition(")")[2].split()[0] != "T":
                    return False
        return True

    def alive(self) -> bool:
        return all(proc.poll() is None for proc in self.procs.values())

    def kill(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)  # works on a stopped process too
                proc.wait(timeout=10)


class Ingest:
    """An Ingestor on its own thread, into the shared store."""

    def __init__(self, settings: HiveSettings, store: ParquetLearningStore) -> None:
        self.ingestor = Ingestor(settings, store)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.ingestor.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=20)
        assert not self.thread.is_alive()


def _last_heartbeats(kafka: KafkaSettings) -> dict[str, Heartbeat]:
    """Each agent's newest heartbeat on ``hive.fleet``, once both have said they are stopping."""
    consumer = make_consumer(kafka, None, None)
    tp = TopicPartition(topics.FLEET, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    latest: dict[str, Heartbeat] = {}
    deadline = time.monotonic() + 15
    try:
        while not all(a in latest and latest[a].state == "stopping" for a in (AGENT_A, AGENT_B)):
            assert time.monotonic() < deadline, f"no final heartbeats; have {latest}"
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    beat = decode(record.value, Heartbeat, kafka.max_message_bytes)
                    latest[beat.agent_id] = beat
    finally:
        consumer.close(autocommit=False)
    return latest


@pytest.fixture
def cleanup() -> Iterator[list[Callable[[], None]]]:
    steps: list[Callable[[], None]] = []
    yield steps
    for step in reversed(steps):
        step()


@pytest.mark.timeout(120)
def test_agents_spool_through_a_broker_outage_and_every_learning_is_stored_once(
    tmp_path: Path, cleanup: list[Callable[[], None]], agent_keys: Any
) -> None:
    port = free_port()
    first = EmbeddedBroker(port=port, log_path=tmp_path / "broker-1.log")
    kafka = KafkaSettings(bootstrap=first.start())
    cleanup.append(first.stop)
    create_topics(kafka)
    producer = make_producer(kafka)
    v0 = tmp_path / "cores" / "v0"
    hive_key = ReleaseSigner()
    v0_sha = save_core(build_core(seed=0), v0)
    release = hive_key.sign(CoreRelease(version=0, model_uri=v0.resolve().as_uri(), sha256=v0_sha))
    send_and_wait(producer, topics.CORE, b"core", encode(release))
    producer.close()

    ingest = agent_keys.ingest(agent_keys={AGENT_A: SecretStr(KEY)})
    hive = HiveSettings(home=tmp_path / "hive", kafka=kafka, ingest=ingest)
    store = ParquetLearningStore(tmp_path / "hive" / "store")
    cleanup.append(store.close)
    ingest1 = Ingest(hive, store)
    cleanup.append(ingest1.close)
    fleet = Fleet(tmp_path, kafka.bootstrap, agent_keys.agent_env(AGENT_B), hive_key.public_key)
    cleanup.append(fleet.kill)

    def created() -> int:
        return sum(fleet.spool(a).appended for a in fleet.procs)

    def progress() -> str:
        spools = {a: fleet.spool(a) for a in fleet.procs}
        sizes = {a: (s.appended, len(s.ids)) for a, s in spools.items()}
        return f"stored {store.count()}, spools (created, waiting) {sizes}\n{fleet.logs()}"

    # 1. Both agents publish through the first broker, and the hive stores what they send.
    _until(lambda: all(store.count(agent_id=a) >= 8 for a in fleet.procs), 75, lambda: f"first learnings; {progress()}")

    # 2. The embedded broker forgets everything it holds when it stops, so the hive must first have
    # every learning the broker acked. Freezing the agents (SIGSTOP) makes "acked" stand still; then
    # every learning an agent created is either in the store or still in its spool.
    fleet.signal(signal.SIGSTOP)
    cleanup.append(lambda: fleet.signal(signal.SIGCONT) if fleet.alive() else None)
    _until(fleet.frozen, 10, lambda: "the agents to stop")

    def caught_up() -> bool:
        waiting = {i for a in fleet.procs for i in fleet.spool(a).ids}
        return len(waiting | {str(lr.id) for lr in store.read()}) == created()

    _until(caught_up, 30, lambda: f"the hive to store every acked learning; {progress()}")
    ingest1.close()
    first.stop()  # while the agents may have sends in flight: they see the broker die when they wake
    fleet.signal(signal.SIGCONT)

    # 3. The outage: both keep working; their spools grow, and agent-b's fills up and waits.
    before = {a: fleet.spool(a) for a in fleet.procs}
    outage = time.monotonic()
    _until(
        lambda: (
            len(fleet.spool(AGENT_A).ids) >= len(before[AGENT_A].ids) + 20
            and len(fleet.spool(AGENT_B).ids) >= SMALL_SPOOL
        ),
        40,
        lambda: f"the spools to grow during the outage; {progress()}",
    )
    time.sleep(max(0.0, outage + MIN_OUTAGE_S - time.monotonic()))
    assert fleet.alive(), fleet.logs()
    assert fleet.spool(AGENT_A).appended > before[AGENT_A].appended
    assert len(fleet.spool(AGENT_B).ids) == SMALL_SPOOL  # the bound holds
    for agent_id in fleet.procs:
        log = (tmp_path / f"{agent_id}.log").read_text()
        assert "cannot publish" in log, f"{agent_id} did not report the outage:\n{log[-3000:]}"
    assert "is full" in (tmp_path / f"{AGENT_B}.log").read_text()

    # 4. A fresh broker on the same port: it has nothing, so the topics are made again.
    second = EmbeddedBroker(port=port, log_path=tmp_path / "broker-2.log")
    second.start()
    cleanup.append(second.stop)
    create_topics(kafka)
    ingest2 = Ingest(hive, store)
    cleanup.append(ingest2.close)
    at_restart = created()
    _until(lambda: store.count() >= at_restart, 45, lambda: f"the spools to replay ({at_restart}); {progress()}")

    # 5. Stop the agents: each drains its spool and exits cleanly.
    fleet.signal(signal.SIGTERM)
    _until(lambda: not any(p.poll() is None for p in fleet.procs.values()), 30, lambda: f"agents to exit; {progress()}")
    for agent_id, proc in fleet.procs.items():
        assert proc.returncode == 0, f"{agent_id} exited with {proc.returncode}\n{fleet.logs()}"
    final = {a: fleet.spool(a) for a in fleet.procs}
    assert all(not s.ids for s in final.values()), progress()
    total = sum(s.appended for s in final.values())
    _until(lambda: store.count() == total, 30, lambda: f"{total} stored; {progress()}")
    ingest2.close()

    assert store.count() == store.unique_ids() == total
    for agent_id, spooled in final.items():
        assert store.count(agent_id=agent_id) == spooled.appended
    # agent-a's signatures verified under the hive's key, before and after the outage.
    assert ingest1.ingestor.totals.dead_lettered == ingest2.ingestor.totals.dead_lettered == 0

    # The counters reached the hive in the agents' last heartbeats, over the fresh broker.
    beats = _last_heartbeats(kafka)
    for agent_id, spooled in final.items():
        counters = beats[agent_id].counters
        assert beats[agent_id].state == "stopping"
        assert counters["send_errors"] > 0 and counters["spool_size"] == 0
        assert counters["spooled"] == counters["published"] == spooled.appended
    assert beats[AGENT_B].counters["spool_full_waits"] > 0
    assert beats[AGENT_A].counters["spool_full_waits"] == 0
