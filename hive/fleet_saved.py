"""The hive's last-known fleet view, kept under ``HIVE_HOME`` so that the fleet can be shown without a broker.

``hive serve`` (and ``hive demo``) save the heartbeats they admitted at most every ``SAVE_EVERY_S`` and when they
stop; ``hive fleet`` and the dashboard fall back to it when no broker is configured or reachable, and say as of
when. The file holds only heartbeats the hive's sender policy admitted, so reading it back checks nothing again.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hive.config import HiveSettings
from hive.fleet import CoreRun, FleetTracker, FleetView, as_utc
from streams.durable import write_text
from streams.events import Heartbeat

log = logging.getLogger(__name__)

FLEET_VIEW_FILE = "fleet-view.json"
FORMAT = 1
SAVE_EVERY_S = 5.0


class SavedViewError(ValueError):
    """The saved fleet view cannot be read: the message names the file and what is wrong."""


@dataclass(frozen=True)
class SavedView:
    view: FleetView
    as_of: datetime


def saved_view_path(settings: HiveSettings) -> Path:
    return settings.home / FLEET_VIEW_FILE


def save_view(path: Path, view: FleetView, now: datetime | None = None) -> None:
    """Writes ``view`` whole (temp file, fsync, rename): a reader never sees half a file."""
    document: dict[str, Any] = {
        "format": FORMAT,
        "as_of": as_utc(now or datetime.now(UTC)).isoformat(),
        "heartbeats": [beat.model_dump(mode="json") for beat in view.latest.values()],
        "evaluations": [
            {"agent_id": agent, "core_version": core, "evaluation": evaluation}
            for (agent, core), evaluation in sorted(view.evaluations.items())
        ],
        "rejected": view.rejected,
        "rejected_by_reason": view.rejected_by_reason,
        "runs": [
            {
                "agent_id": agent,
                "core_version": run.core_version,
                "first": run.first.isoformat(),
                "last": run.last.isoformat(),
            }
            for agent, runs in sorted(view.runs.items())
            for run in runs
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(document))


def load_view(settings: HiveSettings) -> SavedView | None:
    """The saved view, or None when the hive never saved one; raises SavedViewError for a damaged file."""
    path = saved_view_path(settings)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SavedViewError(f"{path}: cannot be read: {err}") from err
    try:
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise ValueError(f"not a format-{FORMAT} fleet view")
        as_of = datetime.fromisoformat(document["as_of"])
        if as_of.tzinfo is None:
            raise ValueError("as_of has no time zone")
        view = FleetView()
        for raw in document["heartbeats"]:
            beat = Heartbeat.model_validate(raw)
            view.latest[beat.agent_id] = beat
        for entry in document["evaluations"]:
            view.evaluations[(str(entry["agent_id"]), int(entry["core_version"]))] = {
                str(k): float(v) for k, v in entry["evaluation"].items()
            }
        view.rejected = int(document["rejected"])
        view.rejected_by_reason = {str(k): int(v) for k, v in document["rejected_by_reason"].items()}
        for entry in document.get("runs", []):  # absent in a view saved before the timeline existed
            first, last = datetime.fromisoformat(entry["first"]), datetime.fromisoformat(entry["last"])
            if first.tzinfo is None or last.tzinfo is None:
                raise ValueError("a core run's time has no time zone")
            run = CoreRun(int(entry["core_version"]), first, last)
            view.runs.setdefault(str(entry["agent_id"]), []).append(run)
    except (KeyError, TypeError, ValueError, AttributeError, ValidationError) as err:
        raise SavedViewError(f"{path}: not a fleet view this hive can read: {err}") from err
    return SavedView(view, as_of)


class FleetSaver:
    """Saves a tracker's view every ``SAVE_EVERY_S`` when it changed, and once more on ``stop``, on its own thread.

    A save that fails (a full disk) is logged and tried again at the next change: the fleet view is a convenience
    for when the broker is gone, never a reason to stop the hive.
    """

    def __init__(self, tracker: FleetTracker, path: Path, every_s: float = SAVE_EVERY_S) -> None:
        self.tracker = tracker
        self.path = path
        self.every_s = every_s
        self.saves = 0
        self._saved: tuple[Any, ...] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fleet-saver", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=10)
        self.save_if_changed()

    def save_if_changed(self) -> None:
        view = self.tracker.snapshot()
        stamp = (
            tuple(sorted((agent, beat.sent_at.isoformat(), beat.state) for agent, beat in view.latest.items())),
            len(view.evaluations),
            view.rejected,
        )
        if stamp == self._saved or not view.latest:
            return
        try:
            save_view(self.path, view)
        except OSError as err:
            log.warning("cannot save the fleet view to %s (tried again at the next change): %s", self.path, err)
            return
        self._saved = stamp
        self.saves += 1

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.save_if_changed()
