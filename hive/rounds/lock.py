"""The round lock: one process at a time (``hive serve`` or ``hive round run``) runs a hive's rounds."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

ROUND_LOCK = "round.lock"


class RoundBusy(RuntimeError):
    """Another process holds the round lock: it is running a round."""


class RoundLock:
    """The held ``HIVE_HOME/round.lock``; it names the holder's pid and the round it runs, for readers."""

    def __init__(self, handle: IO[str]) -> None:
        self._handle = handle
        self.set_round(None)

    def set_round(self, round_id: str | None) -> None:
        self._handle.seek(0)
        self._handle.truncate()
        self._handle.write(json.dumps({"pid": os.getpid(), "round": round_id}) + "\n")
        self._handle.flush()


@contextlib.contextmanager
def round_lock(home: Path, wait_s: float = 2.0) -> Iterator[RoundLock]:
    """Holds the round lock, so that one process at a time (``hive serve`` or ``hive round run``) runs rounds.

    Waits up to ``wait_s`` (a reader's check takes the lock for an instant), then raises RoundBusy naming
    the holder. An flock is released by the kernel when its holder dies, even by SIGKILL.
    """
    home.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    with open(home / ROUND_LOCK, "a+") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError as err:
                if time.monotonic() >= deadline:
                    holder = _read_holder(handle)
                    what = f"round {holder['round']}" if holder.get("round") else "rounds"
                    raise RoundBusy(f"pid {holder.get('pid', '?')} is running {what} in {home}") from err
                time.sleep(0.05)
        yield RoundLock(handle)


def lock_holder(home: Path) -> dict[str, Any] | None:
    """``{"pid", "round"}`` of the process holding the round lock, or None when no process holds it."""
    path = home / ROUND_LOCK
    if not path.is_file():
        return None
    with open(path) as handle:
        try:
            # A shared lock succeeds only when no one holds the exclusive one; released at once.
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(handle)
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


def _read_holder(handle: IO[str]) -> dict[str, Any]:
    handle.seek(0)
    try:
        holder = json.loads(handle.read() or "{}")
    except json.JSONDecodeError:
        return {}
    return holder if isinstance(holder, dict) else {}
