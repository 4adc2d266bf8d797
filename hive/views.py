"""The read models that the CLI's ``--json`` prints and the dashboard serves: one function per view."""

from __future__ import annotations

import base64
import json
import logging
import math
from collections import Counter
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hive.config import HiveSettings
from hive.cores.registry import CoreRegistry
from hive.cores.release_history import read_history
from hive.fleet import FleetView, as_utc
from hive.rounds.book import UNFINISHED, RoundBook, RoundRecord, get_round
from hive.rounds.cancel import CANCEL_FILE
from hive.rounds.lock import lock_holder
from hive.rounds.progress import read_progress
from hive.store.interface import DeadLetter, Quarantined
from streams.events import Learning

log = logging.getLogger(__name__)

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
        # Which core each agent ran, and when (by its heartbeats' sent_at), oldest first.
        "timeline": {
            agent: [
                {"core_version": run.core_version, "from": run.first.isoformat(), "to": run.last.isoformat()}
                for run in view.runs[agent]
            ]
            for agent in sorted(view.runs)
        },
    }


# -- rounds and cores ------------------------------------------------------------------------------------


def round_view(book: RoundBook, record: RoundRecord, holder: dict[str, Any] | None) -> dict[str, Any]:
    """A round as ``hive round show --json`` prints it: the record, plus what a reader needs to know now.

    ``display_state`` is ``interrupted`` for an unfinished round that no live process runs: the next
    ``hive serve`` (or ``hive round run``) resumes it, or fails it with a reason; it is never stuck.
    """
    view = asdict(record)
    running = holder is not None and holder.get("round") == record.id
    if record.state in UNFINISHED and not running:
        view["display_state"] = "interrupted"
    else:
        view["display_state"] = record.state
    directory = book.path(record.id)
    view["progress"] = read_progress(directory) if record.state == "distilling" else None
    view["cancel_requested"] = (directory / CANCEL_FILE).exists()
    view["runner_pid"] = holder.get("pid") if running and holder is not None else None
    return view


def rounds_json(settings: HiveSettings) -> list[dict[str, Any]]:
    """Every round, oldest first, as ``hive round list --json`` prints them."""
    book = RoundBook(settings.rounds_dir)
    holder = lock_holder(settings.home)
    return [round_view(book, record, holder) for record in book.all()]


def round_json(settings: HiveSettings, round_id: str) -> dict[str, Any]:
    """One round, as ``hive round show R --json`` prints it, with ``losses`` (every step's loss, from the distill
    job's ``out/metrics.json``; None until the job has written it); raises RoundNotFound."""
    book = RoundBook(settings.rounds_dir)
    view = round_view(book, get_round(book, round_id), lock_holder(settings.home))
    view["losses"] = read_losses(book.path(round_id) / "out" / "metrics.json")
    return view


def read_losses(path: Path) -> list[float | None] | None:
    """The ``losses`` list of a distill job's metrics.json, or None when the file is absent or holds no such list
    (a damaged file is logged, never raised: a page must still show the round). A loss that is not finite (a
    diverged step) reads as None: JSON has no NaN."""
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        log.warning("cannot read the losses of %s: %s", path, err)
        return None
    losses = metrics.get("losses") if isinstance(metrics, dict) else None
    if not isinstance(losses, list) or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in losses):
        log.warning("%s holds no list of losses", path)
        return None
    return [float(x) if math.isfinite(x) else None for x in losses]


def cores_json(settings: HiveSettings, registry: CoreRegistry) -> list[dict[str, Any]]:
    """Every registered core, oldest first, with its per-skill accuracy and where it was last released.

    ``eval`` is {skill: accuracy} from the round records: a round's ``eval`` for its candidate and its
    ``champion_eval`` for its base core, newer rounds overriding older figures skill by skill. Across
    cores it is the knowledge matrix (skills x core versions). ``released_to`` is the targets of the
    latest release of the core (None: the fleet), and ``released_at`` its time (None: never released).
    """
    evals: dict[int, dict[str, float]] = {}
    rounds = sorted(RoundBook(settings.rounds_dir).all(), key=lambda r: (r.created_at, r.id))
    for record in rounds:
        if record.champion_eval:
            evals.setdefault(record.base_version, {}).update(record.champion_eval)
        if record.candidate_version is not None and record.eval:
            evals.setdefault(record.candidate_version, {}).update(record.eval)
    latest: dict[int, dict[str, Any]] = {}
    for entry in read_history(settings):
        latest[entry["version"]] = entry
    rows = []
    for row in registry.list_versions():
        version = row["core_version"]
        released = latest.get(version) if version is not None else None
        rows.append(
            {
                **row,
                "eval": dict(sorted(evals.get(version, {}).items())) if version is not None else {},
                "released_to": released.get("targets") if released else None,
                "released_at": released.get("time") if released else None,
            }
        )
    return rows
