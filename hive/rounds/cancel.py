"""Cancelling and skipping rounds, and killing what an interrupted round left running."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from distill.launch import master_ports, remove_shm_buffers
from hive.config import HiveSettings
from hive.rounds.book import UNFINISHED, RoundBook, RoundError, RoundRecord, RoundState, end_round, get_round
from hive.rounds.lock import RoundBusy, RoundLock, lock_holder, round_lock

log = logging.getLogger(__name__)

CANCEL_FILE = "cancel"
# How often a running round looks for a cancel request.
CANCEL_POLL_S = 0.5


class RoundStateError(RuntimeError):
    """The round is in a state that does not allow the request (e.g. cancelling a released round)."""


def request_cancel(settings: HiveSettings, round_id: str) -> RoundRecord:
    """Asks the process running round ``round_id`` to stop it (it looks twice a second); an interrupted
    round is cancelled by the next process that takes the round lock (``hive round cancel`` does)."""
    book = RoundBook(settings.rounds_dir)
    record = get_round(book, round_id)
    if record.state not in UNFINISHED:
        raise RoundStateError(f"round {round_id} is already {record.state}; only an unfinished round can be cancelled")
    (book.path(round_id) / CANCEL_FILE).write_text(datetime.now(UTC).isoformat() + "\n")
    return record


def skip_round(settings: HiveSettings, round_id: str, dry_run: bool = False) -> RoundRecord:
    """Marks failed round ``round_id`` ``skipped``: its learnings count as taken (like a released or
    rejected round's), so the next round starts after them, and no later round replays them. Returns the
    record as it is (dry run) or as saved. Raises RoundNotFound, or RoundStateError for a round that is
    not failed.

    It takes no lock: a failed round is never written by the process running rounds, and the file is
    replaced atomically.
    """
    book = RoundBook(settings.rounds_dir)
    record = get_round(book, round_id)
    if record.state != "failed":
        raise RoundStateError(
            f"round {round_id} is {record.state}; only a failed round can be skipped"
            + (" (cancel an unfinished one first)" if record.state in UNFINISHED else "")
        )
    record.state = "skipped"
    if not dry_run:
        book.save(record)
        log.warning(
            "round %s skipped: learnings seq %d..%d will not be distilled",
            round_id,
            record.after_seq + 1,
            record.upto_seq,
        )
    return record


def kill_leftovers(manifest: Path) -> list[int]:
    """SIGKILLs every process whose command line names ``manifest``: the launcher and ranks that a hive
    killed mid-round left running. Returns their pids. Linux only (reads /proc)."""
    needle = str(manifest.resolve())
    mine = os.getpid()
    found: list[int] = []
    ports: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == mine:
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # the process ended while we looked, or is not ours to read
        args = [arg.decode(errors="replace") for arg in argv]
        if needle in args:
            found.append(int(entry.name))
            ports.update(master_ports(args))
    for pid in found:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() and not _is_zombie(pid) for pid in found):
        if time.monotonic() > deadline:
            raise RoundError(f"processes {found} of {manifest.parent.name} did not die after SIGKILL")
        time.sleep(0.05)
    for port in ports:
        remove_shm_buffers(port)
    return found


def cancel_round(settings: HiveSettings, round_id: str) -> None:
    """Cancels round ``round_id``: the process running it stops it within a second or so, and a round that
    no process runs is cancelled here and now. Raises RoundNotFound, or RoundStateError for a round that
    already ended. ``hive round cancel`` and the dashboard both cancel through this."""
    request_cancel(settings, round_id)
    holder = lock_holder(settings.home)
    if holder is not None and holder.get("round") == round_id:
        return
    try:
        with round_lock(settings.home) as lock:
            cancel_interrupted(settings, round_id, lock)
    except RoundBusy as err:
        # Another process took the lock meanwhile: it honours the request before anything else.
        log.info("round %s: cancel requested; %s", round_id, err)


def cancel_interrupted(settings: HiveSettings, round_id: str, lock: RoundLock) -> RoundRecord:
    """Cancels an unfinished round that no process runs (the caller holds the round lock): its leftover
    processes are killed and it ends ``cancelled``; its learnings go to the next round."""
    book = RoundBook(settings.rounds_dir)
    record = get_round(book, round_id)
    if record.state not in UNFINISHED:
        return record
    return end_unfinished(book, record, "cancelled", "cancelled by `hive round cancel` while interrupted")


def end_unfinished(book: RoundBook, record: RoundRecord, state: RoundState, error: str) -> RoundRecord:
    kill_leftovers(book.path(record.id) / "manifest.json")
    end_round(book, record, state, error)
    log.warning("round %s %s: %s", record.id, state, error)
    return record


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def watch_cancel(cancel_path: Path, cancel: threading.Event, done: threading.Event) -> None:
    while not done.wait(CANCEL_POLL_S):
        if cancel_path.exists():
            cancel.set()
            return
