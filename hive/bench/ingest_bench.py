"""``hive bench ingest``: end-to-end ingest (produce, decode, store, commit) against raw kafka-python."""

from __future__ import annotations

import contextlib
import cProfile
import io
import pstats
import random
import statistics
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kafka.errors import KafkaError

from agents.tokenizer import VOCAB_SIZE
from hive.bench.ingest_arms import BenchError, run_hive_arm, run_raw_arm
from hive.bench.machine import load_1m, machine_info, package_version
from hive.bench.synthetic import (
    AGENTS,
    Payload,
    agent_key,
    learning_id,
    payload,
    random_signal,
    synthetic_learning,
)
from streams import topics
from streams.broker import BrokerError, EmbeddedBroker
from streams.config import KafkaSettings
from streams.events import Learning
from streams.kafka import DEFAULT_PARTITIONS, create_topics

Say = Callable[[str], None]
WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet")
CREATED_AT = datetime(2026, 11, 22, tzinfo=UTC)
# A built-in: the hive dead-letters a skill it does not know (unknown_skill).
SKILL = "add"


@dataclass(frozen=True)
class IngestBenchPlan:
    """How many learnings both arms move, their teacher signals' shape, and the topics' partition count."""

    count: int = 5000
    k: int = 16
    positions: int = 16
    partitions: int = DEFAULT_PARTITIONS[topics.LEARNINGS]
    seed: int = 0
    # Group joins and the whole timed part of one arm; a healthy run needs a small fraction of it.
    timeout_s: float = 300.0
    # Raw, hive, raw, hive, ...: each pair is one repeat, and the ratio is the median over repeats.
    repeats: int = 5

    def __post_init__(self) -> None:
        if self.count < 1 or self.positions < 1 or self.partitions < 1 or self.repeats < 1:
            raise ValueError("--count, --repeats, positions and partitions must be positive")
        if not 1 <= self.k <= VOCAB_SIZE:
            raise ValueError(f"k must be between 1 and {VOCAB_SIZE}")


def build_learnings(plan: IngestBenchPlan) -> list[Learning]:
    """``plan.count`` valid learnings with unique ids, each with a top-k signal of ``plan.positions`` positions,
    signed with their agent's key (``agent_key``)."""
    rng = random.Random(plan.seed)
    learnings = []
    for n in range(plan.count):
        words = rng.sample(WORDS, 3)
        agent_id = f"agent-{n % AGENTS + 1}"
        learning = synthetic_learning(
            learning_id(rng),
            agent_id,
            SKILL,
            f"reverse the words: {' '.join(words)}",
            " ".join(reversed(words)),
            # Fixed, not "now": the same plan gives the same bytes, run after run.
            created_at=CREATED_AT + timedelta(seconds=n),
            teacher=random_signal(rng, plan.k, plan.positions),
            key=agent_key(agent_id),
        )
        learnings.append(learning)
    return learnings


def build_payloads(plan: IngestBenchPlan) -> list[Payload]:
    """The learnings encoded once with the codec, keyed by agent id: both arms send exactly these bytes."""
    return [payload(learning) for learning in build_learnings(plan)]


@contextlib.contextmanager
def broker(bootstrap: str, say: Say) -> Iterator[str]:
    """The broker ``bootstrap`` names, or an embedded one for the run when it is empty; yields host:port."""
    if bootstrap:
        yield bootstrap
        return
    try:
        embedded = EmbeddedBroker()
        embedded.start()
    except BrokerError as err:
        raise BenchError(str(err)) from err
    say(f"started the embedded broker on {embedded.bootstrap} (pid {embedded.pid})")
    try:
        yield embedded.bootstrap
    finally:
        embedded.stop()


def run_ingest_bench(
    plan: IngestBenchPlan, bootstrap: str, say: Say, profile_path: Path | None = None
) -> dict[str, Any]:
    """Runs the raw arm and the hive arm alternately, ``plan.repeats`` times each (raw, hive, raw, hive, ...), each
    run on a fresh topic and group of its own; returns the report.

    ``bootstrap`` empty starts the embedded broker for the run. A repeat's ratio is the hive's learnings/s over raw
    kafka-python's records/s for the same bytes, measured back to back, so that a change in the machine's load
    touches both arms; ``ratio`` is the median over repeats, with its spread. ``hive`` and ``raw`` are the arms of
    the repeat at the median (the lower one, for an even count). With ``profile_path``, the hive arm's ingest
    thread runs under cProfile (which slows it) and its top entries by cumulative time are written there.
    """
    profiler = cProfile.Profile() if profile_path is not None else None
    payloads = build_payloads(plan)
    size = sum(len(value) for _, value in payloads)
    say(f"{plan.count} learnings, k={plan.k} over {plan.positions} positions: {size / plan.count:,.0f} B each")
    load_before = load_1m()
    repeats: list[dict[str, Any]] = []
    with broker(bootstrap, say) as servers:
        kafka = KafkaSettings(bootstrap=servers)
        for number in range(1, plan.repeats + 1):
            raw, hive = _one_repeat(plan, kafka, payloads, profiler)
            ratio = hive["learnings_per_s"] / raw["records_per_s"]
            repeats.append({"raw": raw, "hive": hive, "ratio": round(ratio, 3)})
            say(
                f"repeat {number}/{plan.repeats}: raw {raw['records_per_s']:,.0f} records/s, "
                f"hive {hive['learnings_per_s']:,.0f} learnings/s, ratio {ratio:.2f}"
            )
    machine = machine_info() | {
        "kafka_python": package_version("kafka-python"),
        "pyarrow": package_version("pyarrow"),
        "crc32c": package_version("crc32c"),
    }
    if profiler is not None and profile_path is not None:
        write_profile(profiler, profile_path)
        say(f"profile of the hive arm's ingest thread: {profile_path}")
    ratios = sorted(r["ratio"] for r in repeats)
    median_repeat = sorted(repeats, key=lambda r: r["ratio"])[(len(repeats) - 1) // 2]
    return {
        "hive": median_repeat["hive"] | {"profiled": profiler is not None},
        "raw": median_repeat["raw"],
        "ratio": round(statistics.median(ratios), 3),
        "ratio_min": ratios[0],
        "ratio_max": ratios[-1],
        "repeats": [
            {
                "raw_records_per_s": r["raw"]["records_per_s"],
                "hive_learnings_per_s": r["hive"]["learnings_per_s"],
                "ratio": r["ratio"],
            }
            for r in repeats
        ],
        "count": plan.count,
        "payload_bytes": size,
        "k": plan.k,
        "positions": plan.positions,
        "partitions": plan.partitions,
        "broker": bootstrap or "embedded (Tansu)",
        "load_1m_before": load_before,
        "load_1m_after": load_1m(),
        "machine": machine,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _one_repeat(
    plan: IngestBenchPlan, kafka: KafkaSettings, payloads: list[Payload], profiler: cProfile.Profile | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The raw arm, then the hive arm, each on its own fresh topic and group."""
    run = uuid.uuid4().hex[:12]
    names = {arm: f"bench.ingest.{run}.{arm}" for arm in ("raw", "hive")}
    try:
        create_topics(kafka, {name: plan.partitions for name in names.values()}, configs={})
    except KafkaError as err:
        raise BenchError(f"cannot create the bench topics on {kafka.bootstrap}: {err!r}") from err
    raw = run_raw_arm(kafka, names["raw"], f"bench-ingest-{run}-raw", payloads, plan.timeout_s)
    with tempfile.TemporaryDirectory(prefix="hive-bench-ingest-") as tmp:
        hive = run_hive_arm(
            kafka, names["hive"], f"bench-ingest-{run}-hive", payloads, plan.timeout_s, Path(tmp), profiler
        )
    return raw, hive


def write_profile(profiler: cProfile.Profile, path: Path, top: int = 25) -> None:
    """The ``top`` entries by cumulative time, as pstats prints them."""
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).strip_dirs().sort_stats("cumulative").print_stats(top)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.getvalue())


def summary_line(report: dict[str, Any]) -> str:
    hive, raw = report["hive"], report["raw"]
    return (
        f"ingest: hive {hive['learnings_per_s']:,.0f} learnings/s ({hive['wall_s']:.2f} s), "
        f"raw kafka-python {raw['records_per_s']:,.0f} records/s ({raw['wall_s']:.2f} s), "
        f"ratio {report['ratio']:.2f} (median of {len(report['repeats'])}, {report['ratio_min']:.2f} to "
        f"{report['ratio_max']:.2f}), {report['count']} x {report['payload_bytes'] / report['count']:,.0f} B"
    )
