"""A round's lineage: which learnings, from which agents and store seqs, a core was distilled from."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from distill.manifest import Lineage
from streams.events import Learning


class LineageError(ValueError):
    """A learnings file that does not hold the store slice its manifest names."""


def learning_ids_text(learnings: Sequence[Learning]) -> str:
    """One learning id per line, in file (seq) order: the content of ``learning_ids.txt``."""
    return "".join(f"{learning.id}\n" for learning in learnings)


def round_lineage(learnings: Sequence[Learning], lineage: Lineage | None) -> dict[str, Any]:
    """The ``lineage.json`` payload: the seq range, the learning count, the sha256 of ``learning_ids.txt``,
    and per agent ``{count, first_seq, last_seq}``.

    The store numbers learnings 1, 2, 3, ... and a round takes every one in its range, so the file's n-th
    learning has seq ``after_seq + n``; a file whose length disagrees with the range raises LineageError,
    since its seqs could not be told. Without a lineage the seqs are None.
    """
    if lineage is not None and len(learnings) != lineage.upto_seq - lineage.after_seq:
        raise LineageError(
            f"the learnings file holds {len(learnings)} learnings, but the manifest's lineage names seqs "
            f"{lineage.after_seq + 1}..{lineage.upto_seq} ({lineage.upto_seq - lineage.after_seq})"
        )
    agents: dict[str, dict[str, Any]] = {}
    skills: dict[str, int] = {}
    for position, learning in enumerate(learnings, start=1):
        seq = lineage.after_seq + position if lineage is not None else None
        entry = agents.setdefault(learning.agent_id, {"count": 0, "first_seq": seq, "last_seq": seq})
        entry["count"] += 1
        entry["last_seq"] = seq
        skills[learning.skill] = skills.get(learning.skill, 0) + 1
    return {
        "after_seq": lineage.after_seq if lineage is not None else None,
        "upto_seq": lineage.upto_seq if lineage is not None else None,
        "learnings": len(learnings),
        "learning_ids_sha256": hashlib.sha256(learning_ids_text(learnings).encode()).hexdigest(),
        "agents": dict(sorted(agents.items())),
        "skills": dict(sorted(skills.items())),
    }
