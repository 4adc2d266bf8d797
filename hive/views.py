"""The read models that the CLI's ``--json`` prints and the dashboard serves: one function per view."""

from __future__ import annotations

import base64
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from hive.fleet import FleetView, as_utc
from hive.store.interface import DeadLetter, Quarantined
from streams.events import Learning

# -- dead letters, learnings, the quarantine and the fleet ---------------------------------------------

PREVIEW_CHARS = 60


def dlq_json(
    counts: dict[str, int], latest: list[DeadLetter], quarantined: dict[str, int] | None = None
) -> dict[str, Any]:
    """The report ``hive dlq ls --json`` prints (and the dashboard serves): counts per reason, the latest,
    and the quarantined learnings counted per reason."""
    return {
        "total": sum(counts.values()),
        "by_reason": counts,
        "latest": [dead_letter_json(d) for d in latest],
        "quarantined": {"total": sum((quarantined or {}).values()), "by_reason": quarantined or {}},
    }


def payload_preview(payload: bytes, size: int) -> str:
    if size < 0:
        return "(no value)"
    text = payload.decode("utf-8", errors="replace")
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


def dead_letter_json(d: DeadLetter) -> dict[str, Any]:
    """One dead letter as JSON: its provenance, and its payload's head both exact (base64) and readable."""
    return {
        "reason": d.reason,
        "detail": d.detail,
        "source_topic": d.source_topic,
        "source_partition": d.source_partition,
        "source_offset": d.source_offset,
        "size": d.size,
        "key": d.key,
        "agent_id": d.agent_id,
        "recorded_at": d.recorded_at,
        "payload_sha256": d.payload_sha256,
        # Exact bytes for a program, and a readable preview for a person; the head is at most 4 KB.
        "payload_head_base64": base64.b64encode(d.payload_head).decode("ascii"),
        "payload_preview": payload_preview(d.payload_head, d.size),
    }


def quarantined_json(q: Quarantined) -> dict[str, Any]:
    """One quarantined learning as ``hive learnings ls --quarantined --json`` prints it (the dashboard too)."""
    return {
        "id": q.learning_id,
        "seq": q.seq,
        "agent_id": q.agent_id,
        "skill": q.skill,
        "reason": q.reason,
        "detail": q.detail,
        "round_id": q.round_id,
        "recorded_at": q.recorded_at,
    }


def learning_json(seq: int, learning: Learning) -> dict[str, Any]:
    """One stored learning as ``hive learnings ls --json`` prints it (and the dashboard serves it)."""
    return {"seq": seq, **learning.model_dump(mode="json")}


# An agent whose last heartbeat is older than this counts as gone: listed, but not in the fleet summary.
ACTIVE_S = 60.0


def fleet_json(
    view: FleetView, champion: int | None, now: datetime | None = None, active_s: float = ACTIVE_S
) -> dict[str, Any]:
    """What ``hive fleet --json`` prints: each agent's core, heartbeat, lag and skew, and a fleet summary.

    ``lag`` is the agent's ``spool_size`` counter (learnings waiting for the broker; None if it sent
    none), and ``skew`` its running version minus the champion (None without a champion). An agent is
    ``active`` when its last heartbeat is at most ``active_s`` old and it is not stopping; ``versions``
    (version -> agents) and ``max_skew`` (the largest absolute skew, 0 when none) count active agents only.
    """
    now = as_utc(now or datetime.now(UTC))
    agents: list[dict[str, Any]] = []
    for agent_id in sorted(view.latest):
        beat = view.latest[agent_id]
        sent_at = as_utc(beat.sent_at)
        # Never below 0: a heartbeat a little ahead (an agent's clock, within the allowed skew) is "just now".
        age = max(0.0, (now - sent_at).total_seconds())
        agents.append(
            {
                "agent_id": agent_id,
                "skill": beat.skill,
                "core_version": beat.core_version,
                "state": beat.state,
                "last_heartbeat": sent_at.isoformat(),
                "heartbeat_age_s": round(age, 3),
                "lag": beat.counters.get("spool_size"),
                "skew": None if champion is None else beat.core_version - champion,
                "active": age <= active_s and beat.state != "stopping",
            }
        )
    active = [a for a in agents if a["active"]]
    versions = Counter(a["core_version"] for a in active)
    return {
        "champion": champion,
        "agents": agents,
        "versions": {str(v): versions[v] for v in sorted(versions)},
        "max_skew": max((abs(a["skew"]) for a in active if a["skew"] is not None), default=0),
    }
