"""Ingest over time, one line per minute: what was stored, repeated and dead-lettered, and how late it arrived.

``hive serve``'s ingest records every batch it commits; each minute that saw a batch becomes one JSON line of
``HIVE_HOME/ingest-history.jsonl`` once the minute is over (or when the hive stops). The dashboard draws the
ingest rate and lag from it (``/ingest``, ``/api/ingest``). The lag of a learning is the time from its own
``created_at`` to the commit that stored it (0 for a learning dated in the future). The file keeps the newest
``MAX_MINUTES`` lines: when it holds twice that many, it is rewritten with the newest half.
"""

from __future__ import annotations

import json
import logging
import random
import statistics
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from streams import durable

log = logging.getLogger(__name__)

HISTORY_FILE = "ingest-history.jsonl"
MAX_MINUTES = 10_080  # a week
# Lags kept per minute for its median: a uniform sample (reservoir) of the minute's learnings.
LAG_SAMPLE = 2048


def _minute(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(second=0, microsecond=0)


class IngestHistory:
    """The minute being counted, and the file the finished ones go to. Thread-safe: ingest records, the
    service's stop flushes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._minute: datetime | None = None
        self._counts = {"stored": 0, "duplicates": 0, "dead_lettered": 0, "learnings": 0}
        self._lags: list[float] = []
        self._lag_max = 0.0
        self._rng = random.Random(0)
        self._lines = self._count_lines()

    def _count_lines(self) -> int:
        try:
            with self.path.open("rb") as f:
                return sum(1 for _ in f)
        except FileNotFoundError:
            return 0
        except OSError as err:
            # The chart's file must never stop the hive from starting; writing will say so again.
            log.warning("cannot read the ingest history %s: %s", self.path, err)
            return 0

    def record(
        self, stored: int, duplicates: int, dead_lettered: int, created: list[datetime], now: datetime | None = None
    ) -> None:
        """Counts one committed batch; ``created`` holds the ``created_at`` of each learning it admitted."""
        now = now or datetime.now(UTC)
        with self._lock:
            if self._minute is not None and _minute(now) != self._minute:
                self._write_locked()
            if self._minute is None:
                self._minute = _minute(now)
            self._counts["stored"] += stored
            self._counts["duplicates"] += duplicates
            self._counts["dead_lettered"] += dead_lettered
            for moment in created:
                # A zone-less time (one an older hive stored) reads as UTC rather than failing the batch.
                zoned = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
                lag = max(0.0, (now - zoned).total_seconds())
                self._lag_max = max(self._lag_max, lag)
                seen = self._counts["learnings"]
                self._counts["learnings"] += 1
                if len(self._lags) < LAG_SAMPLE:
                    self._lags.append(lag)
                else:
                    slot = self._rng.randrange(seen + 1)
                    if slot < LAG_SAMPLE:
                        self._lags[slot] = lag

    def flush(self) -> None:
        """Writes the minute being counted, if any (at stop: a partial minute is still a minute seen)."""
        with self._lock:
            if self._minute is not None:
                self._write_locked()

    def _write_locked(self) -> None:
        assert self._minute is not None
        line = {
            "minute": self._minute.isoformat(),
            **self._counts,
            "lag_p50_s": round(statistics.median(self._lags), 3) if self._lags else None,
            "lag_max_s": round(self._lag_max, 3) if self._lags else None,
        }
        self._minute = None
        self._counts = dict.fromkeys(self._counts, 0)
        self._lags, self._lag_max = [], 0.0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            durable.append_line(self.path, json.dumps(line, sort_keys=True))
            self._lines += 1
            if self._lines >= 2 * MAX_MINUTES:
                kept = self.path.read_text(encoding="utf-8").splitlines()[-MAX_MINUTES:]
                durable.write_lines(self.path, kept)
                self._lines = len(kept)
        except OSError:
            # A full disk must not stop ingest: the minute is lost from the chart, nothing else.
            log.exception("cannot write the ingest history to %s; this minute is left out", self.path)


def read_history(path: Path, since: datetime | None = None) -> list[dict[str, Any]]:
    """The recorded minutes from ``since`` on (all when None), oldest first. A line that is not a minute's
    object (a torn last line) is skipped with a warning."""
    minutes: list[dict[str, Any]] = []
    try:
        entries = durable.read_json_lines(path, errors="replace")
    except FileNotFoundError:
        return []
    for number, entry in entries:
        try:
            moment = datetime.fromisoformat(entry["minute"])
            if moment.tzinfo is None:
                raise ValueError("minute has no zone")
            row = {
                "minute": moment.astimezone(UTC).isoformat(),
                "stored": int(entry["stored"]),
                "duplicates": int(entry["duplicates"]),
                "dead_lettered": int(entry["dead_lettered"]),
                "lag_p50_s": None if entry.get("lag_p50_s") is None else float(entry["lag_p50_s"]),
                "lag_max_s": None if entry.get("lag_max_s") is None else float(entry["lag_max_s"]),
            }
        except (TypeError, KeyError, ValueError) as err:
            log.warning("%s line %d is not an ingest minute (%s); skipped", path, number, err)
            continue
        if since is None or moment >= since:
            minutes.append(row)
    return minutes


def recent(path: Path, hours: float, now: datetime | None = None) -> list[dict[str, Any]]:
    """The minutes of the last ``hours``."""
    now = now or datetime.now(UTC)
    return read_history(path, since=now - timedelta(hours=hours))
