"""The read models that ``--json`` and the dashboard share: one function per view, read from HIVE_HOME."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from hive.config import HiveSettings
from hive.cores.registry import CoreRegistry
from hive.cores.release_history import read_history
from hive.rounds.book import UNFINISHED, RoundBook, RoundRecord, get_round
from hive.rounds.cancel import CANCEL_FILE
from hive.rounds.lock import lock_holder
from hive.rounds.progress import read_progress

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
    """One round, as ``hive round show R --json`` prints it; raises RoundNotFound."""
    book = RoundBook(settings.rounds_dir)
    return round_view(book, get_round(book, round_id), lock_holder(settings.home))


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
