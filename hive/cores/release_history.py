"""The release history: every release the hive made, as lines of ``HIVE_HOME/releases.jsonl``."""

from __future__ import annotations

import fcntl
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streams import durable

if TYPE_CHECKING:
    from hive.config import HiveSettings

log = logging.getLogger(__name__)

HISTORY_FILE = "releases.jsonl"
LOCK_FILE = "releases.lock"
ACTIONS: tuple[str, ...] = ("round", "promote", "rollback", "canary")
# The lines that close a release entry: it went out (with its offset), or it never did.
OUTCOMES: tuple[str, ...] = ("published", "failed")


def history_path(settings: HiveSettings) -> Path:
    return settings.home / HISTORY_FILE


def read_history(settings: HiveSettings) -> list[dict[str, Any]]:
    """Every recorded release, oldest first, as it stands after its outcome lines.

    A release is written as an entry (with an ``id``, ``offset`` None) *before* it is published; then a
    line ``{"action": "published", "of": id, "offset": N}`` fills in its offset, or a line
    ``{"action": "failed", "of": id, "error": ...}`` withdraws it, since it never went out. An entry whose
    outcome never came (the hive died while publishing) stays, with ``offset`` None: `hive core promote`
    of its version publishes it for sure. A line that is not a JSON object (a write cut short by a crash)
    is skipped with a warning: the rest of the history stays usable.
    """
    path = history_path(settings)
    if not path.is_file():
        return []
    entries: list[dict[str, Any]] = []
    by_id: dict[str, dict[str, Any]] = {}
    for number, entry in durable.read_json_lines(path):
        if isinstance(entry, dict) and entry.get("action") in OUTCOMES and isinstance(entry.get("of"), str):
            target = by_id.pop(entry["of"], None)
            if target is None:
                log.warning("%s line %d is the outcome of a release it does not hold; skipped", path, number)
            elif entry["action"] == "published":
                target["offset"] = entry.get("offset")
            else:
                entries.remove(target)
        elif isinstance(entry, dict) and isinstance(entry.get("version"), int) and entry.get("action") in ACTIONS:
            entries.append(entry)
            if isinstance(entry.get("id"), str):
                by_id[entry["id"]] = entry
        else:
            log.warning("%s line %d is not a release entry; skipped", path, number)
    return entries


def last_sequence(settings: HiveSettings) -> int:
    """The highest release sequence number on record (0 for none), failed releases included: a release whose
    send failed may still have reached the broker, so its number is never given to another one."""
    path = history_path(settings)
    if not path.is_file():
        return 0
    lines = durable.read_json_lines(path)
    return max((e["sequence"] for _, e in lines if isinstance(e, dict) and type(e.get("sequence")) is int), default=0)


def last_published(settings: HiveSettings) -> dict[str, Any] | None:
    """The newest release entry that went out (its offset known) with a sequence number, or None."""
    published = [e for e in read_history(settings) if e.get("offset") is not None and type(e.get("sequence")) is int]
    return published[-1] if published else None


@contextmanager
def release_lock(settings: HiveSettings) -> Iterator[None]:
    """Holds this hive's release lock: one release at a time, from taking its number to publishing it.

    ``hive serve`` and a ``hive core promote`` may release at once; without the lock the later number could
    reach the broker first, and agents would refuse the earlier one as a replay.
    """
    path = settings.home / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def append_history(settings: HiveSettings, entry: dict[str, Any]) -> None:
    path = history_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    # One fsynced write of one line in append mode: the service and the CLI may both append, and O_APPEND
    # keeps each small write whole.
    durable.append_line(path, json.dumps(entry, sort_keys=True))


def champion_stack(history: list[dict[str, Any]]) -> list[int]:
    """The champions in force, oldest first, replayed from the history: a fleet release of a new
    version pushes it, a rollback pops back to the version it released; canaries change nothing.

    The previous champion recorded with the first fleet release seeds the stack, so a champion set before
    the history began (core v0 of a new hive) is still one to roll back to.
    """
    stack: list[int] = []
    for entry in history:
        action, version = entry["action"], entry["version"]
        if action == "canary":
            continue
        before = entry.get("previous_champion")
        if not stack and isinstance(before, int) and before != version:
            stack.append(before)
        if action == "rollback":
            while stack and stack[-1] != version:
                stack.pop()
            if not stack:
                stack.append(version)
        elif not stack or stack[-1] != version:
            stack.append(version)
    return stack


def close_entry(settings: HiveSettings, entry: dict[str, Any], outcome: dict[str, Any]) -> None:
    """Appends the outcome line of history ``entry``; one that cannot be written is logged: the entry
    stands as released with an unknown offset, which `hive core promote` of its version settles."""
    try:
        append_history(settings, {"of": entry["id"], "time": entry["time"], **outcome})
    except OSError:
        log.exception("cannot record the outcome (%s) of the release of core v%s", outcome["action"], entry["version"])
