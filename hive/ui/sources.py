"""What the dashboard shows, read through the same functions that the CLI's ``--json`` prints."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from hive.config import HiveSettings
from hive.cores.registry import CoreRegistry, RegistryError
from hive.fleet import FleetTracker
from hive.fleet_saved import SavedViewError, load_view
from hive.ingest.admit import REASONS
from hive.ingest.history import HISTORY_FILE, recent
from hive.rounds.book import RoundBook
from hive.rounds.last_check import describe_check, read_check
from hive.store.interface import StoreError
from hive.store.parquet import READ_ERRORS, NoStoreError, ParquetLearningStore, open_read_only
from hive.views import cores_json, dlq_json, fleet_json, learning_json, quarantined_json, round_json, rounds_json

# The ingest page's window: a day by default, a week (what the history keeps) at most.
DEFAULT_HOURS = 24.0
MAX_HOURS = 168.0


class Unavailable(RuntimeError):
    """A part of the hive's state that cannot be read now; the message says why, for a person to act on."""


class BadRequest(ValueError):
    """A query the dashboard refuses (an unknown reason), with the allowed values."""


@contextmanager
def read_store(settings: HiveSettings) -> Iterator[ParquetLearningStore]:
    """The learning store opened read-only for one request: ``hive serve`` may be appending to it meanwhile,
    and a store opened per request sees its latest commits."""
    directory = settings.store_dir
    try:
        store = open_read_only(directory)
    except NoStoreError as err:
        raise Unavailable(f"no learning store at {directory} yet: `hive serve` creates it") from err
    except StoreError as err:
        raise Unavailable(str(err)) from err
    try:
        yield store
    except READ_ERRORS as err:
        raise Unavailable(f"cannot read the learning store at {directory}: {err}") from err
    finally:
        store.close()


class HiveReader:
    """The dashboard's read access to one hive: its store, rounds, registry and (with a broker) its fleet.

    Every method returns plain JSON-ready data, the same that the matching ``hive ... --json`` prints,
    and raises Unavailable for state that cannot be read now.
    """

    def __init__(self, settings: HiveSettings, tracker: FleetTracker | None = None) -> None:
        self.settings = settings
        self.tracker = tracker
        self._registry: CoreRegistry | None = None
        # Requests run on a thread pool; one lock keeps the lazily made MLflow client single.
        self._registry_lock = threading.Lock()

    # -- the learning store ----------------------------------------------------------------------------

    def learnings(self, limit: int, agent: str | None = None, skill: str | None = None) -> list[dict[str, Any]]:
        """The newest ``limit`` learnings (oldest of them first), as ``hive learnings ls --json``."""
        with read_store(self.settings) as store:
            return [learning_json(seq, x) for seq, x in store.tail(limit, agent, skill)]

    def learning_counts(self) -> dict[str, Any]:
        """How many learnings the store holds, in all and per agent."""
        with read_store(self.settings) as store:
            return {"count": store.count(), "per_agent": store.per_agent_counts()}

    def dlq(self, limit: int, reason: str | None = None) -> dict[str, Any]:
        """Dead letters counted per reason, and the latest ``limit`` (newest first), as ``hive dlq ls --json``."""
        if reason is not None and reason not in REASONS:
            raise BadRequest(f"unknown reason {reason!r}; the reasons are: {', '.join(REASONS)}")
        with read_store(self.settings) as store:
            counts = store.dead_letter_counts()
            latest = store.dead_letters(limit, reason) if limit else []
            quarantined = store.quarantine_counts()
        return dlq_json(counts, latest, quarantined)

    def quarantined(self, limit: int) -> dict[str, Any]:
        """The quarantined learnings counted per reason, and the latest ``limit`` (newest first), as
        ``hive learnings ls --quarantined --json`` lists them."""
        with read_store(self.settings) as store:
            counts = store.quarantine_counts()
            latest = store.quarantined(limit)
        return {
            "total": sum(counts.values()),
            "by_reason": counts,
            "latest": [quarantined_json(q) for q in latest],
        }

    # -- rounds ----------------------------------------------------------------------------------------

    def rounds(self) -> list[dict[str, Any]]:
        """Every round, oldest first, as ``hive round list --json``."""
        return rounds_json(self.settings)

    def schedule_notices(self) -> list[str]:
        """What keeps rounds from running by themselves, for a person: the last round check failed, or
        failed rounds in a row block the learnings (``hive round list`` says the same on stderr)."""
        notices = []
        line = describe_check(read_check(self.settings.home))
        if line is not None:
            notices.append(line)
        book = RoundBook(self.settings.rounds_dir)
        streak = book.failed_streak(book.covered_seq())
        limit = self.settings.schedule.max_failed_rounds
        if limit and len(streak) >= limit:
            notices.append(
                f"the schedule is blocked: {len(streak)} rounds in a row failed over the same learnings; "
                f"see {streak[0].id}, and `hive round skip {streak[0].id}` moves past them"
            )
        return notices

    def round(self, round_id: str) -> dict[str, Any]:
        """One round as ``hive round show R --json``; raises RoundNotFound."""
        return round_json(self.settings, round_id)

    # -- the registry ----------------------------------------------------------------------------------

    def cores(self) -> list[dict[str, Any]]:
        """Every registered core with its per-skill evaluation, as ``hive core list --json``."""
        if not self.has_registry():
            return []
        registry = self.registry()
        with self._registry_lock:
            return cores_json(self.settings, registry)

    def champion(self) -> int | None:
        if not self.has_registry():
            return None
        registry = self.registry()
        with self._registry_lock:
            return registry.champion_version()

    def has_registry(self) -> bool:
        # Opening the local registry creates mlflow.db; a read-only dashboard must not, so a hive that has
        # registered nothing yet simply has no cores. A tracking server is always there to ask.
        return self.settings.has_registry()

    def registry(self) -> CoreRegistry:
        """The hive's core registry; raises Unavailable before any core is registered."""
        if not self.has_registry():
            raise Unavailable(f"no core registry at {self.settings.mlflow_db} yet: no core is registered")
        with self._registry_lock:
            if self._registry is None:
                self._registry = CoreRegistry.from_settings(self.settings)
            return self._registry

    # -- the fleet -------------------------------------------------------------------------------------

    def ingest(self, hours: float) -> dict[str, Any]:
        return ingest_json(self.settings, hours)

    def fleet(self) -> dict[str, Any]:
        """Each agent's running core, heartbeat, lag and skew, as ``hive fleet --json``, with ``source`` and
        ``as_of``. Without a broker (none configured, or the follower stopped) it is the hive's last-known view
        (``hive.fleet_saved``), ``source`` "saved", with ages as of then; Unavailable when there is none."""
        why = None
        if self.tracker is None:
            why = "no broker configured (HIVE_KAFKA_BOOTSTRAP)"
        elif self.tracker.error is not None:
            why = f"the fleet follower stopped: {self.tracker.error}"
        try:
            saved = load_view(self.settings) if why is not None else None
        except SavedViewError as err:
            raise Unavailable(f"{why}, and the last-known fleet view cannot be read: {err}") from err
        if why is not None and saved is None:
            raise Unavailable(f"{why}: set HIVE_KAFKA_BOOTSTRAP to follow the fleet's heartbeats")
        try:
            champion = self.champion()
        except RegistryError as err:
            raise Unavailable(f"cannot read the registry: {err}") from err
        if saved is not None:
            data = fleet_json(saved.view, champion, now=saved.as_of)
            return data | {"source": "saved", "as_of": saved.as_of.isoformat(), "why": why}
        assert self.tracker is not None
        now = datetime.now(UTC)
        return fleet_json(self.tracker.snapshot(), champion, now=now) | {"source": "broker", "as_of": now.isoformat()}


def ingest_json(settings: HiveSettings, hours: float, now: datetime | None = None) -> dict[str, Any]:
    """The ingest minutes of the last ``hours`` (``hive.ingest.history``), oldest first, with their totals."""
    now = now or datetime.now(UTC)
    minutes = recent(settings.home / HISTORY_FILE, hours, now)
    return {
        "hours": hours,
        "as_of": now.isoformat(),
        "minutes": minutes,
        "stored": sum(m["stored"] for m in minutes),
        "duplicates": sum(m["duplicates"] for m in minutes),
        "dead_lettered": sum(m["dead_lettered"] for m in minutes),
    }


def knowledge_matrix(cores: list[dict[str, Any]]) -> dict[str, Any]:
    """Skills × core versions from ``cores`` rows: ``matrix[skill][version]`` is the core's accuracy on the
    skill, absent where the core was not evaluated on it."""
    versions = [row["core_version"] for row in cores if row.get("core_version") is not None]
    skills = sorted({skill for row in cores for skill in (row.get("eval") or {})})
    matrix: dict[str, dict[str, float]] = {skill: {} for skill in skills}
    for row in cores:
        for skill, value in (row.get("eval") or {}).items():
            matrix[skill][str(row["core_version"])] = value
    return {"skills": skills, "versions": versions, "matrix": matrix}
