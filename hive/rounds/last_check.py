"""The outcome of ``hive serve``'s latest round check, kept in ``HIVE_HOME/schedule.json`` for the operator."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from streams import durable

log = logging.getLogger(__name__)

CHECK_FILE = "schedule.json"


def check_path(home: Path) -> Path:
    return home / CHECK_FILE


def read_check(home: Path) -> dict[str, Any] | None:
    """The recorded outcome: ``{"ok", "checked_at", "error", "failures", "since", "last_error"}``, or None
    when no check ever failed. A file that cannot be read says so in ``error`` rather than raising."""
    path = check_path(home)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        return {"ok": False, "checked_at": None, "error": f"unreadable {path}: {err}", "failures": 0}
    if not isinstance(data, dict):
        return {"ok": False, "checked_at": None, "error": f"unreadable {path}: not an object", "failures": 0}
    return data


def record_check(home: Path, error: str | None) -> None:
    """Records a check that failed with ``error``, or one that passed (None).

    A pass is written only after a failure (the file says the hive recovered, and what failed last); a
    hive whose checks never failed has no file. Repeated failures count up from the first one's time.
    """
    previous = read_check(home)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    if error is None:
        if previous is None or previous.get("ok"):
            return
        entry = {
            "ok": True,
            "checked_at": now,
            "error": None,
            "failures": 0,
            "since": None,
            "last_error": previous.get("error"),
        }
    else:
        failing = previous is not None and not previous.get("ok")
        failures = previous.get("failures", 0) if failing and previous is not None else 0
        entry = {
            "ok": False,
            "checked_at": now,
            "error": error,
            "failures": (failures if isinstance(failures, int) else 0) + 1,
            "since": previous.get("since") if failing and previous is not None else now,
            "last_error": error,
        }
    durable.write_text(check_path(home), json.dumps(entry, indent=2))


def describe_check(check: dict[str, Any] | None) -> str | None:
    """One line for a person when the latest check failed; None when it passed or never failed."""
    if check is None or check.get("ok"):
        return None
    return (
        f"the last round check failed at {check.get('checked_at')} ({check.get('failures')} in a row since "
        f"{check.get('since')}): {check.get('error')}; see the `hive serve` log for the traceback"
    )
