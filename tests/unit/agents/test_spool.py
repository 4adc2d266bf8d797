"""The spool: oldest first, durable across reopen, bounded with backpressure, and a re-send reuses the bytes."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pytest

from agents.spool import Spool, SpoolFull, SpoolLocked, snapshot


def records(n: int, start: int = 0) -> list[tuple[str, bytes, bytes]]:
    return [(str(uuid.UUID(int=start + i)), b"agent-a", f'{{"n": {start + i}}}'.encode()) for i in range(n)]


def test_peek_gives_oldest_first_and_ack_removes_only_what_it_names(tmp_path: Path) -> None:
    with Spool(tmp_path / "spool.sqlite") as spool:
        batch = records(5)
        assert spool.append(batch[:2]) == 2
        assert spool.append(batch[2:]) == 3
        first = spool.peek(3)
        assert [(e.id, e.key, e.value) for e in first] == batch[:3]
        assert spool.ack([first[0].seq, first[2].seq]) == 2
        assert [e.id for e in spool.peek(10)] == [batch[1][0], batch[3][0], batch[4][0]]
        assert [e.id for e in spool.peek(10, after_seq=first[1].seq)] == [batch[3][0], batch[4][0]]
        assert (len(spool), spool.appended, spool.acked) == (3, 5, 2)
        assert spool.ack([first[0].seq]) == 0  # acking twice removes nothing more


def test_entries_and_totals_survive_a_reopen_and_seq_keeps_growing(tmp_path: Path) -> None:
    path = tmp_path / "agent" / "spool.sqlite"
    batch = records(4)
    with Spool(path) as spool:
        spool.append(batch)
        entries = spool.peek(10)
        spool.ack([entries[-1].seq])  # the newest goes: a reused seq would now sort before the others
    with Spool(path) as spool:
        again = spool.peek(10)
        assert [(e.seq, e.id, e.value) for e in again] == [(e.seq, e.id, e.value) for e in entries[:3]]
        assert (len(spool), spool.appended, spool.acked) == (3, 4, 1)
        spool.append(records(1, start=100))
        newest = spool.peek(10)[-1]
        assert newest.id == str(uuid.UUID(int=100)) and newest.seq > entries[-1].seq


def test_the_same_id_is_held_once_and_a_resend_reads_the_same_bytes(tmp_path: Path) -> None:
    with Spool(tmp_path / "spool.sqlite") as spool:
        [record] = records(1)
        assert spool.append([record]) == 1
        assert spool.append([(record[0], record[1], b"re-encoded")]) == 0
        first, second = spool.peek(1), spool.peek(1)
        assert first == second
        assert (first[0].id, first[0].value) == (record[0], record[2])
        assert spool.appended == 1


def test_the_bound_refuses_a_whole_append_and_room_returns_with_acks(tmp_path: Path) -> None:
    with Spool(tmp_path / "spool.sqlite", max_entries=3) as spool:
        spool.append(records(2))
        with pytest.raises(SpoolFull):
            spool.append(records(2, start=10))
        assert len(spool) == 2  # all or nothing
        spool.append(records(1, start=20))
        assert spool.room() == 0
        assert not spool.wait_for_room(1, timeout_s=0.1)

        oldest = spool.peek(1)[0]
        acker = threading.Timer(0.2, spool.ack, args=([oldest.seq],))
        acker.start()
        assert spool.wait_for_room(1, timeout_s=5)
        acker.join()
        assert spool.room() == 1
        # Shutting down with a full spool: past the bound, rather than dropped.
        assert spool.append(records(3, start=30), past_bound=True) == 3
        assert len(spool) == 5


def test_one_process_per_spool_and_a_snapshot_reads_it_while_open(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite"
    with Spool(path) as spool:
        spool.append(records(3))
        spool.ack([spool.peek(1)[0].seq])
        with pytest.raises(SpoolLocked):
            Spool(path)
        seen = snapshot(path)
        assert (seen.appended, seen.acked) == (3, 1)
        assert seen.ids == [r[0] for r in records(3)[1:]]
    Spool(path).close()  # the lock goes with the owner
