"""The quarantine: stored learnings that no later round takes in, from a round's checks and the distill job."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from hive.store.interface import LearningStore, Quarantined
from streams.durable import read_json_lines

log = logging.getLogger(__name__)

# Written by the distill job (success or failure): one JSON object per line, {"id", "reason", "detail"},
# naming a learning of the round (or of its replay) that the job could not use.
UNUSABLE_FILE = "unusable.jsonl"


def quarantine(store: LearningStore, entries: list[Quarantined], round_id: str | None) -> int:
    """Quarantines ``entries`` in the name of ``round_id``, each one logged; returns how many were new."""
    if not entries:
        return 0
    added = store.quarantine([replace(entry, round_id=round_id) for entry in entries])
    # One warning per agent, skill and reason (a screened agent's whole round is one), each learning at DEBUG.
    groups: dict[tuple[str, str, str], list[Quarantined]] = {}
    for entry in entries:
        groups.setdefault((entry.agent_id, entry.skill, entry.reason), []).append(entry)
        log.debug("quarantined learning %s (seq %d): %s: %s", entry.learning_id, entry.seq, entry.reason, entry.detail)
    for (agent, skill, reason), group in groups.items():
        first = group[0]
        log.warning(
            "quarantined %d learning(s) of agent %s, skill %s (seqs %d..%d): %s: %s",
            len(group),
            agent,
            skill,
            min(e.seq for e in group),
            max(e.seq for e in group),
            reason,
            first.detail,
        )
    return added


# Reasons the distill job lists a learning as unusable that are no fault of the learning: a reward below 1 with no
# correction and no signal (distill.dataset's ``no_signal``) teaches nothing new, but it is a valid learning, and
# replay (which needs no signal) still uses it. It stays listed in unusable.jsonl, and is not quarantined.
NOT_A_FAULT = frozenset({"no_signal"})


def read_unusable(path: Path) -> list[tuple[str, str, str]]:
    """``(learning id, reason, detail)`` per line of a distill job's ``unusable.jsonl``, first of an id
    first; a line that is not such an object (a torn last line, a bug) is skipped with a warning."""
    try:
        entries = read_json_lines(path, errors="replace")
    except FileNotFoundError:
        return []
    found: dict[str, tuple[str, str, str]] = {}
    for number, entry in entries:
        if not isinstance(entry, dict):
            log.warning("%s line %d is not an object; skipped", path, number)
            continue
        learning_id, reason, detail = entry.get("id"), entry.get("reason"), entry.get("detail", "")
        if not isinstance(learning_id, str) or not isinstance(reason, str) or not reason:
            log.warning("%s line %d has no string id and reason; skipped", path, number)
            continue
        found.setdefault(learning_id, (learning_id, reason, detail if isinstance(detail, str) else str(detail)))
    return list(found.values())


def take_unusable(store: LearningStore, round_dir: Path, round_id: str) -> int:
    """Quarantines every learning that the round's distill job named in ``out/unusable.jsonl``, but for
    ``NOT_A_FAULT`` reasons; returns how many were new. An id the store does not hold is skipped with a
    warning."""
    path = round_dir / "out" / UNUSABLE_FILE
    named = read_unusable(path)
    if not named:
        return 0
    stored = store.lookup([learning_id for learning_id, _, _ in named])
    entries = []
    for learning_id, reason, detail in named:
        if reason in NOT_A_FAULT:
            continue
        if learning_id not in stored:
            log.warning("%s names learning %r, which the store does not hold; skipped", path, learning_id)
            continue
        seq, agent, skill = stored[learning_id]
        entries.append(Quarantined(learning_id, seq, agent, skill, reason, detail or f"named in {path}"))
    return quarantine(store, entries, round_id)
