"""Compaction merges small segments with no row lost or doubled, also when the process is killed midway."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hive.store.compactor import Compactor
from hive.store.parquet import SEGMENTS_DIR, ParquetLearningStore, plan_compaction

from factories import make_learning

AGENTS = ("a1", "a2", "a3")


def filled(directory: Path, batches: int, per_batch: int) -> list[str]:
    """A store with one segment per batch, as ingest leaves it; returns the ids in seq order."""
    ids = []
    with ParquetLearningStore(directory) as store:
        for b in range(batches):
            batch = [make_learning(AGENTS[(b + i) % 3], "add", b * per_batch + i) for i in range(per_batch)]
            store.append(batch, {("hive.learnings", 0): (b + 1) * per_batch})
            ids += [str(x.id) for x in batch]
    return ids


def check_whole(directory: Path, ids: list[str]) -> ParquetLearningStore:
    """Opens the store for writing (which tidies what a kill left) and checks every row is there once."""
    store = ParquetLearningStore(directory)
    rows = store.read_with_seq()
    assert [str(x.id) for _, x in rows] == ids
    assert [seq for seq, _ in rows] == list(range(1, len(ids) + 1))
    assert store.count() == store.unique_ids() == len(ids)
    assert store.per_agent_counts() == {a: ids_of(rows, a) for a in AGENTS}
    on_disk = {p.name for p in (directory / SEGMENTS_DIR).iterdir()}
    assert on_disk == store._catalog.segment_names()  # no file the catalog does not name, none missing
    return store


def ids_of(rows: list, agent: str) -> int:
    return sum(1 for _, x in rows if x.agent_id == agent)


def test_the_plan_merges_runs_of_small_neighbours_only() -> None:
    segs = [("s1", 1, 10, 10), ("s2", 11, 20, 10), ("big", 21, 120, 100), ("s3", 121, 125, 5), ("s4", 126, 130, 5)]
    assert [[s[0] for s in run] for run in plan_compaction(segs, 30)] == [["s1", "s2"], ["s3", "s4"]]
    assert plan_compaction(segs[:1], 30) == []


def test_compaction_keeps_every_row_once_and_in_order(tmp_path: Path) -> None:
    ids = filled(tmp_path, batches=40, per_batch=5)
    with ParquetLearningStore(tmp_path) as store:
        before = {a: [str(x.id) for x in store.read(agent_id=a)] for a in AGENTS}
        assert store.compact(target_rows=50) == 40
        assert len(store._catalog.segments()) == 4
        assert {a: [str(x.id) for x in store.read(agent_id=a)] for a in AGENTS} == before
        assert [str(x.id) for x in store.read(after_seq=47, upto_seq=53)] == ids[47:53]
        # Appends go on after it.
        extra = make_learning("a1", "add", 999)
        store.append([extra], {})
        assert store.max_seq() == 201
    check_whole(tmp_path, [*ids, str(extra.id)]).close()


def test_old_files_outlive_the_switch_for_readers_then_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hive.store.parquet as parquet

    filled(tmp_path, batches=4, per_batch=5)
    with ParquetLearningStore(tmp_path) as store:
        store.compact(target_rows=50)
        assert len(list((tmp_path / SEGMENTS_DIR).iterdir())) == 5  # the 4 retired files wait out the grace
        monkeypatch.setattr(parquet, "RETIRE_GRACE_S", 0.0)
        store.compact(target_rows=50)
        assert len(list((tmp_path / SEGMENTS_DIR).iterdir())) == 1


def test_a_failing_pass_is_logged_and_the_next_one_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    filled(tmp_path, batches=3, per_batch=2)
    with ParquetLearningStore(tmp_path) as store:
        compactor = Compactor(store, every_s=3600)
        real = store.compact
        monkeypatch.setattr(store, "compact", lambda: (_ for _ in ()).throw(OSError(28, "No space left on device")))
        compactor.run_once()
        monkeypatch.setattr(store, "compact", real)
        compactor.run_once()
        assert (compactor.failures, compactor.retired) == (1, 3)


KILLED_COMPACTION = """
import sys
from hive.store.parquet import ParquetLearningStore
store = ParquetLearningStore(sys.argv[1])
print("compacting", flush=True)
store.compact(target_rows=int(sys.argv[2]))
print("done", flush=True)
"""


def test_a_compaction_killed_at_any_moment_loses_and_doubles_nothing(tmp_path: Path) -> None:
    ids = filled(tmp_path, batches=200, per_batch=4)
    rng = random.Random(7)
    kills = 0
    for attempt in range(6):
        proc = subprocess.Popen(
            [sys.executable, "-c", KILLED_COMPACTION, str(tmp_path), str(8 + 4 * attempt)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "compacting"
        time.sleep(rng.uniform(0.05, 0.6))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait(30)
        check_whole(tmp_path, ids).close()
    assert kills >= 3  # most passes were cut short, not finished
    with ParquetLearningStore(tmp_path) as store:
        store.compact(target_rows=10_000)
    check_whole(tmp_path, ids).close()
