"""``hive bench fuzz``: a real ``hive serve`` fed hostile traffic, on a home a crash left behind; every message is
accounted for, then a round."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kafka.errors import KafkaError

from distill.manifest import read_learnings
from hive.bench.fuzz_checks import FuzzError, account, check_leftovers, leave_crash_leftovers
from hive.bench.hostile import Message
from hive.bench.poison import PoisonPlan, build_traffic, poisoned_adapters
from hive.config import HiveSettings, IngestSettings
from hive.fleet import read_fleet
from hive.store.parquet import NoStoreError, open_read_only
from streams import topics
from streams.broker import BrokerError, EmbeddedBroker
from streams.config import KafkaSettings
from streams.kafka import make_producer

Say = Callable[[str], None]
AGENTS = ("agent-1", "agent-2", "agent-3")
# A short round: the point is that it releases over exactly the good learnings, not what it learns.
ROUND_ENV = {
    "HIVE_DISTILL__STEPS": "20",
    "HIVE_DISTILL__NPROC": "1",
    "HIVE_DISTILL__BATCH_SIZE": "16",
    "HIVE_DISTILL__CHECKPOINT_EVERY": "0",
    "HIVE_GATE__EVAL_TASKS": "10",
}


# Every trigger on, none able to fire: each round check reads the fuzzed heartbeats and learning times, as a
# scheduled hive does, while the round itself runs once, through `hive round run`, after the traffic.
SCHEDULE_ARGS = (
    "--min-new",
    "1000000000",
    "--every",
    "100000h",
    "--min-per-agent",
    "1000000000",
    "--max-staleness",
    "100000h",
    "--round-check-s",
    "1",
)


REVOKED = "revoked-1"


def _write_keys(directory: Path) -> dict[str, bytes]:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    keys = {}
    for agent in (*AGENTS, REVOKED):
        key = secrets.token_bytes(32)
        path = directory / f"{agent}.key"
        path.write_text(key.hex() + "\n")
        path.chmod(0o600)
        keys[agent] = key
    return keys


class _Serve:
    """``hive serve`` (``SCHEDULE_ARGS``) as a child in its own session, stopped by its pid."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hive", "serve", *SCHEDULE_ARGS],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            start_new_session=True,
        )

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise FuzzError(f"hive serve exited with code {self.proc.returncode}:\n{self.tail()}")

    def tail(self, limit: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-limit:]

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def _wait(condition: Callable[[], bool], serve: _Serve, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        serve.check()
        if time.monotonic() > deadline:
            raise FuzzError(f"{what} within {timeout_s:g} s:\n{serve.tail()}")
        time.sleep(0.2)


def _produce(bootstrap: str, messages: list[Message]) -> dict[int, tuple[int, int]]:
    """Sends every message; returns, per index of a ``hive.learnings`` message, its (partition, offset)."""
    producer = make_producer(KafkaSettings(bootstrap=bootstrap))
    try:
        futures = [producer.send(m.topic, key=m.key, value=m.value) for m in messages]
        producer.flush(timeout=60)
        placed = {}
        for index, (message, future) in enumerate(zip(messages, futures, strict=True)):
            meta = future.get(timeout=30)
            if message.topic == topics.LEARNINGS:
                placed[index] = (meta.partition, meta.offset)
        return placed
    finally:
        producer.close()


def _ingested(store_dir: Path, placed: dict[int, tuple[int, int]]) -> Callable[[], bool]:
    """True once the store's committed offsets are past every sent learning record."""
    ends: dict[int, int] = {}
    for partition, offset in placed.values():
        ends[partition] = max(ends.get(partition, -1), offset + 1)

    def done() -> bool:
        try:
            store = open_read_only(store_dir)
        except NoStoreError:
            return False  # hive serve has not created it yet
        with store:
            offsets = store.offsets()
        return all(offsets.get((topics.LEARNINGS, p), 0) >= end for p, end in ends.items())

    return done


def _hive(env: dict[str, str], *args: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hive", *args], env=env, capture_output=True, text=True, timeout=timeout_s, check=False
    )


def run_fuzz(plan: PoisonPlan, workdir: Path, say: Say, timeout_s: float = 600.0) -> dict[str, Any]:
    """Starts a broker and ``hive serve`` in ``workdir`` (cleared first, then given ``leave_crash_leftovers``),
    sends the plan's traffic, accounts for every message, runs a round, checks the leftovers, and returns the
    report. Raises FuzzError on any failure."""
    started = time.monotonic()
    if workdir.exists():
        shutil.rmtree(workdir)  # this run's directory only: nothing of an earlier run may be resumed
    home = workdir / "home"
    home.mkdir(parents=True)
    leftovers = leave_crash_leftovers(home)
    keys = _write_keys(workdir / "keys")
    claim_checks = poisoned_adapters(workdir / "adapters", workdir / "outside")
    revoked = (REVOKED, keys.pop(REVOKED))
    messages = build_traffic(plan, keys, claim_checks, revoked)
    try:
        broker = EmbeddedBroker(log_path=workdir / "tansu.log")
        broker.start()
    except BrokerError as err:
        raise FuzzError(str(err)) from err
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIVE_")}
    env |= {
        "HIVE_HOME": str(home),
        "HIVE_KAFKA_BOOTSTRAP": broker.bootstrap,
        "HIVE_INGEST__AGENT_KEY_DIR": str(workdir / "keys"),
        "HIVE_INGEST__REVOKED_AGENTS": json.dumps([REVOKED]),
        "HIVE_ADAPTERS__ROOTS": json.dumps([str((workdir / "adapters").resolve())]),
        "PYTHONUNBUFFERED": "1",
        **ROUND_ENV,
    }
    serve = _Serve(env, workdir / "serve.log")
    try:
        _wait(lambda: "ingest joined group" in serve.tail(100_000), serve, 120, "ingest did not join its group")
        say(f"hive serve is up (pid {serve.proc.pid}); sending {len(messages)} messages")
        sent_at = time.monotonic()
        try:
            placed = _produce(broker.bootstrap, messages)
        except KafkaError as err:
            raise FuzzError(f"could not send the traffic: {err!r}") from err
        _wait(_ingested(home / "store", placed), serve, timeout_s, "the hive did not ingest every message")
        ingest_s = time.monotonic() - sent_at
        report = account(messages, placed, home / "store")
        say(
            f"accounted for every message in {ingest_s:.1f} s: {report['stored']} stored, "
            f"{report['dead_lettered']} dead-lettered"
        )
        # What `hive fleet` reads, from the start of hive.fleet with the hive's rules: every heartbeat, poison too.
        settings = HiveSettings(
            home=home,
            kafka=KafkaSettings(bootstrap=broker.bootstrap),
            ingest=IngestSettings(agent_key_dir=workdir / "keys", revoked_agents=[REVOKED]),
        )
        fleet = read_fleet(settings, timeout_s=60)
        serve.check()
        say("running a round over what was stored")
        round_run = _hive(env, "round", "run", "--json", timeout_s=timeout_s)
        if round_run.returncode != 0:
            raise FuzzError(f"hive round run failed ({round_run.returncode}): {round_run.stderr[-3000:]}")
        rounds = json.loads(round_run.stdout)
        serve.check()
        last = rounds[-1]
        good = {m.learning_id for m in messages if m.expect == "stored"}
        in_round = _round_ids(home / "rounds" / last["id"] / "learnings.jsonl")
        missing = good - in_round
        if last["state"] != "released" or missing:
            raise FuzzError(
                f"round {last['id']} ended {last['state']} ({last.get('error')}); "
                f"{len(missing)} good learnings missing from it"
            )
        found = check_leftovers(settings, leftovers, last["id"])
        serve.check()
    finally:
        code = serve.stop()
        broker.stop()
    if code != 0:
        raise FuzzError(f"hive serve exited with code {code} after SIGTERM:\n{serve.tail()}")
    kinds = Counter(m.kind for m in messages)
    return {
        "plan": {"good": plan.good, "poison": plan.poison, "seed": plan.seed},
        "messages": len(messages),
        "learning_records": len(placed),
        "heartbeat_records": len(messages) - len(placed),
        "kinds": dict(sorted(kinds.items())),
        **report,
        # Every step above checked that hive serve was up; any exit would have ended the run with FuzzError.
        "crashes": 0,
        "serve_exit_code": code,
        "round": {k: last.get(k) for k in ("id", "state", "learnings", "candidate_version", "distill", "error")},
        "good_learnings_in_round": len(good & in_round),
        "fleet": {
            "agents": sorted(fleet.latest),
            "heartbeats_not_counted": dict(sorted(fleet.rejected_by_reason.items())),
        },
        "leftovers": found,
        "ingest_s": round(ingest_s, 2),
        "wall_s": round(time.monotonic() - started, 2),
    }


def _round_ids(path: Path) -> set[str]:
    return {str(learning.id) for learning in read_learnings(path)}


def summary_line(report: dict[str, Any]) -> str:
    reasons = ", ".join(f"{k} {v}" for k, v in report["dead_letters_by_reason"].items())
    return (
        f"{report['messages']} messages: {report['stored']} stored, {report['dead_lettered']} dead-lettered "
        f"({reasons}); crashes {report['crashes']}; round {report['round']['id']} {report['round']['state']} "
        f"with all {report['good_learnings_in_round']} good learnings"
    )
