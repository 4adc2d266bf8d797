"""What ``hive bench fuzz`` checks: every message stored once or dead-lettered with a reason, and what a crashed
hive left behind handled at the next start."""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from hive.bench.hostile import Message
from hive.bench.synthetic import synthetic_learning
from hive.config import HiveSettings
from hive.store.parquet import ParquetLearningStore
from hive.views import round_json
from streams import topics

# What an older or a crashed hive leaves behind for the next start: a round.json cut short by a crash, and
# learnings of a skill this hive cannot load, stored by a hive that did not check skills at its door.
TORN_ROUND = '{"id": "r0001", "state": "distil'
LEFTOVER_SKILL = "acme.skills:haiku"
LEFTOVERS = 2


class FuzzError(RuntimeError):
    """The hive did not take the traffic as it must: it stopped, lost a message, or the round failed."""


def account(messages: list[Message], placed: dict[int, tuple[int, int]], store_dir: Path) -> dict[str, Any]:
    """Checks every learning record against the store: stored once, or dead-lettered with a reason.

    Returns the counts; raises FuzzError listing the first few messages that went the wrong way.
    """
    with ParquetLearningStore(store_dir, read_only=True) as store:
        stored = [str(learning.id) for learning in store.read()]
        letters = store.dead_letters(limit=None)
    stored_ids = Counter(stored)
    dead_at = {(d.source_partition, d.source_offset): d for d in letters if d.source_topic == topics.LEARNINGS}
    wrong: list[str] = []
    outcome: Counter[str] = Counter()
    for index, message in enumerate(messages):
        if message.topic != topics.LEARNINGS:
            continue
        where = placed[index]
        letter = dead_at.get(where)
        is_stored = message.learning_id is not None and message.learning_id in stored_ids
        if letter is not None and not letter.reason:
            wrong.append(f"{message.kind} at {where}: dead-lettered without a reason")
        if message.expect == "stored" and not is_stored:
            wrong.append(f"{message.kind} at {where}: not stored ({letter.reason if letter else 'no dead letter'})")
        elif message.expect == "dead" and letter is None:
            wrong.append(f"{message.kind} at {where}: not dead-lettered")
        elif message.expect == "either" and letter is None and not is_stored:
            wrong.append(f"{message.kind} at {where}: neither stored nor dead-lettered")
        outcome["dead_lettered" if letter is not None else "stored_or_duplicate"] += 1
    twice = [learning_id for learning_id, n in stored_ids.items() if n > 1]
    if twice:
        wrong.append(f"{len(twice)} learnings stored more than once, e.g. {twice[0]}")
    if wrong:
        raise FuzzError(f"{len(wrong)} messages went the wrong way:\n" + "\n".join(wrong[:20]))
    by_reason = Counter(d.reason for d in letters if d.source_topic == topics.LEARNINGS)
    return {
        "stored": len(stored_ids),
        "dead_lettered": sum(by_reason.values()),
        "dead_letters_by_reason": dict(sorted(by_reason.items())),
        "outcomes": dict(outcome),
    }


def leave_crash_leftovers(home: Path) -> list[str]:
    """Stores ``LEFTOVERS`` learnings of ``LEFTOVER_SKILL`` straight into the store and tears ``r0001``'s
    round.json, before the hive starts; returns the learnings' ids."""
    leftovers = [
        synthetic_learning(uuid.uuid4(), "agent-old", LEFTOVER_SKILL, f"haiku {n}", "…") for n in range(LEFTOVERS)
    ]
    with ParquetLearningStore(home / "store") as store:
        store.append(leftovers, {})
    torn = home / "rounds" / "r0001"
    torn.mkdir(parents=True)
    (torn / "round.json").write_text(TORN_ROUND)
    return [str(x.id) for x in leftovers]


def check_leftovers(settings: HiveSettings, leftovers: list[str], round_id: str) -> dict[str, Any]:
    """The torn round reads as failed with its reason and its bytes kept aside (what ``hive round show r0001``
    prints); the leftover learnings were quarantined by the round that released (``hive learnings ls
    --quarantined``). Raises FuzzError otherwise; returns what was found."""
    torn = round_json(settings, "r0001")
    if torn["state"] != "failed" or not str(torn["error"]).startswith("unreadable round.json: "):
        raise FuzzError(f"the torn round r0001 is not failed with its reason: {torn}")
    if (settings.rounds_dir / "r0001" / "round.json.torn").read_text() != TORN_ROUND:
        raise FuzzError("the torn round.json's bytes were not kept aside")
    with ParquetLearningStore(settings.store_dir, read_only=True) as store:
        held = {q.learning_id: q for q in store.quarantined() if q.reason == "unknown_skill"}
    if set(held) != set(leftovers) or {q.round_id for q in held.values()} != {round_id}:
        raise FuzzError(f"round {round_id} did not quarantine exactly the leftover learnings: {list(held.values())}")
    return {"torn_round": torn["error"].splitlines()[0], "quarantined_unknown_skill": len(held)}
