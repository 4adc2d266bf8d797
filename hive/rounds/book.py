"""The round book: one record (round.json) per round under HIVE_HOME/rounds, and how a round ends."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from distill.manifest import Lineage
from streams import durable

log = logging.getLogger(__name__)

RoundState = Literal["open", "distilling", "released", "rejected", "failed", "cancelled", "skipped"]
# A round in one of these states is unfinished: running, or interrupted and waiting to resume.
UNFINISHED: tuple[RoundState, ...] = ("open", "distilling")
# A round in one of these states took its learnings for good: the next round starts after its range.
# ``skipped`` is a failed round that an operator moved past (`hive round skip`).
COVERING: tuple[RoundState, ...] = ("released", "rejected", "skipped")
ROUND_FILE = "round.json"
# Where the bytes of a round.json that could not be read are kept when the book rewrites it.
TORN_SUFFIX = ".torn"
UNREADABLE = "unreadable round.json"
_ROUND_ID = re.compile(r"r\d{4,}")


class RoundError(RuntimeError):
    """A round that cannot be opened or run, with the reason."""


class RoundFailed(RoundError):
    """A round that ran and failed: its round.json holds the reason (state ``failed``, ``error``)."""


class NoNewLearnings(RoundError):
    """Nothing to distill: no learning arrived since the last round took its share."""


class RoundNotFound(KeyError):
    """No round with that id under HIVE_HOME/rounds."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass
class RoundRecord:
    """One round's bookkeeping, kept as ``round.json`` in the round's directory."""

    id: str
    state: RoundState
    base_version: int
    after_seq: int
    upto_seq: int
    learnings: int
    per_agent: dict[str, int]
    skills: list[str]
    created_at: float = field(default_factory=time.time)
    candidate_version: int | None = None
    eval: dict[str, float] = field(default_factory=dict)
    champion_eval: dict[str, float] = field(default_factory=dict)
    gate_reasons: list[str] = field(default_factory=list)
    distill: dict = field(default_factory=dict)
    wall_s: float = 0.0
    error: str | None = None
    # Why the round was opened: the schedule's triggers that fired, or "manual".
    trigger: str = ""
    # How often a restarted hive resumed it after an interruption.
    resumes: int = 0
    ended_at: float | None = None
    # How many learnings this round quarantined (a skill the hive cannot load, one the distill job could
    # not use): they are left out of every later round.
    quarantined: int = 0
    # Learnings left out because their agent was over HIVE_DISTILL__MAX_AGENT_SHARE of the round, per agent.
    capped: dict[str, int] = field(default_factory=dict)


_RECORD: TypeAdapter[RoundRecord] = TypeAdapter(RoundRecord)


def parse_record(data: bytes, round_id: str) -> RoundRecord:
    """Round ``round_id``'s record from the bytes of its round.json; ValueError says what is wrong with them.

    A field this hive does not know (one a later version added, or dropped since) is ignored; a field of
    the wrong type, a missing one or an unknown state is an error.
    """
    try:
        record = _RECORD.validate_json(data)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'the file'}: {e['msg']}" for e in err.errors()[:3])
        raise ValueError(problems) from err
    if record.id != round_id:
        raise ValueError(f"it names round {record.id!r}, not {round_id!r}")
    return record


class _ManifestRange(BaseModel):
    """The fields of a round's ``distill.manifest.Manifest`` that name the seqs it took, read on their own:
    a manifest that a crash left broken elsewhere still tells its round's range."""

    model_config = ConfigDict(extra="ignore")

    store_range: Lineage | None = None
    lineage: Lineage | None = None


class RoundBook:
    """The rounds of one hive, one directory each under ``HIVE_HOME/rounds``.

    Reading never raises for one round's bad file: a round.json that is missing, torn or of the wrong
    shape reads as a ``failed`` round whose error starts with "unreadable round.json", so that every
    reader (the scheduler, ``hive round list``, the dashboard) goes on.
    """

    def __init__(self, directory: Path) -> None:
        # Not created here: readers (`hive round list`, the dashboard) must not leave folders behind.
        self.directory = directory

    def path(self, round_id: str) -> Path:
        return self.directory / round_id

    def save(self, record: RoundRecord) -> None:
        """Replaces the round's round.json atomically and durably; an unreadable one is kept aside first."""
        target = self.path(record.id) / ROUND_FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        self._keep_torn(record.id)
        durable.write_text(target, json.dumps(asdict(record), indent=2))

    def _keep_torn(self, round_id: str) -> None:
        target = self.path(round_id) / ROUND_FILE
        torn = target.with_name(ROUND_FILE + TORN_SUFFIX)
        try:
            data = target.read_bytes()
        except FileNotFoundError:
            return
        try:
            parse_record(data, round_id)
        except ValueError:
            if not torn.exists():
                # The first bad bytes are the evidence of what happened; a later rewrite must not lose them.
                durable.write_bytes(torn, data)

    def ids(self) -> list[str]:
        """The ids of the rounds on record, oldest first: every ``rNNNN`` directory, with or without a
        readable round.json."""
        if not self.directory.is_dir():
            return []
        found = [p.name for p in self.directory.iterdir() if _ROUND_ID.fullmatch(p.name) and p.is_dir()]
        return sorted(found, key=lambda round_id: int(round_id[1:]))

    def all(self) -> list[RoundRecord]:
        return [self._load(round_id) for round_id in self.ids()]

    def get(self, round_id: str) -> RoundRecord | None:
        """Round ``round_id``'s record, or None when no round has that id (a path such as ``../x`` included)."""
        return self._load(round_id) if round_id in self.ids() else None

    def _load(self, round_id: str) -> RoundRecord:
        path = self.path(round_id) / ROUND_FILE
        try:
            return parse_record(path.read_bytes(), round_id)
        except FileNotFoundError:
            problem = "the file is missing"
        except OSError as err:
            problem = f"cannot read it: {err}"
        except ValueError as err:
            problem = str(err)
        return self._unreadable(round_id, problem)

    def _unreadable(self, round_id: str, problem: str) -> RoundRecord:
        """A failed record for a round whose round.json cannot be read, its learnings' range taken from its
        manifest when that can be read (else 0..0, a range that covers and blocks nothing)."""
        directory = self.path(round_id)
        after = upto = 0
        try:
            manifest = _ManifestRange.model_validate_json((directory / "manifest.json").read_bytes())
        except (OSError, ValidationError):
            manifest = _ManifestRange()  # the manifest cannot tell either: the range stays unknown
        seqs = manifest.store_range or manifest.lineage
        if seqs is not None:
            after, upto = seqs.after_seq, seqs.upto_seq
        try:
            created = (directory / ROUND_FILE).stat().st_mtime
        except OSError:
            created = directory.stat().st_mtime if directory.exists() else time.time()
        return RoundRecord(
            id=round_id,
            state="failed",
            base_version=0,
            after_seq=after,
            upto_seq=upto,
            learnings=0,
            per_agent={},
            skills=[],
            created_at=created,
            error=f"{UNREADABLE}: {problem}; its learnings go to the next round",
        )

    def repair(self) -> list[RoundRecord]:
        """Rewrites every unreadable round.json as the failed record it reads as (its bytes kept in
        ``round.json.torn``), so that it stays failed with a time it ended. Only the round lock's holder
        may call it; returns the rounds rewritten."""
        repaired = []
        for record in self.all():
            if record.error is not None and record.error.startswith(UNREADABLE) and record.ended_at is None:
                record.ended_at = time.time()
                self.save(record)
                log.warning("round %s: %s; recorded it as failed", record.id, record.error)
                repaired.append(record)
        return repaired

    def next_id(self) -> str:
        """One above the highest round id: an id is never given twice, even when a round's file is lost."""
        numbers = [int(round_id[1:]) for round_id in self.ids()]
        return f"r{max(numbers, default=0) + 1:04d}"

    def covered_seq(self) -> int:
        """The highest learning seq that a round has already taken in (released, rejected or skipped)."""
        done = [r.upto_seq for r in self.all() if r.state in COVERING]
        return max(done, default=0)

    def taught_skills(self) -> list[str]:
        """Every skill a released core was ever taught: the gate checks all of them."""
        return sorted({s for r in self.all() if r.state == "released" for s in r.skills})

    def failed_streak(self, after_seq: int) -> list[RoundRecord]:
        """The failed rounds, newest first, that tried the learnings after ``after_seq`` since a round last
        took any in: a streak that only a round ending otherwise (or a skip) breaks.

        A failed round that quarantined learnings does not count: the next one runs without them, so it
        is not the same try again. Cancelled rounds are an operator's choice and count neither way.
        """
        streak = []
        for record in reversed(self.all()):
            if record.state in ("cancelled", *UNFINISHED):
                continue
            if record.state != "failed" or record.after_seq != after_seq:
                break
            if record.upto_seq > record.after_seq and not record.quarantined:
                streak.append(record)
        return streak


def get_round(book: RoundBook, round_id: str) -> RoundRecord:
    record = book.get(round_id)
    if record is None:
        known = ", ".join(book.ids()) or "none"
        raise RoundNotFound(f"no round {round_id!r} in {book.directory} (known: {known})")
    return record


@contextlib.contextmanager
def failing_round(book: RoundBook, record: RoundRecord, started: float | None = None) -> Iterator[None]:
    """Isolates one round: any unexpected exception in the block (a bug, bad data: TypeError, KeyError,
    ValueError, ...) ends ``record`` failed with that error, is logged with its traceback, and comes out as
    RoundFailed, so that the service goes on. A RoundError passes as it is."""
    try:
        yield
    except RoundError:
        raise
    except Exception as err:
        log.exception("round %s failed", record.id)
        error = f"unexpected {type(err).__name__}: {err} (the traceback is in the hive's log)"
        end_round(book, record, "failed", error, started)
        raise RoundFailed(f"round {record.id} failed: {error}") from err


def end_round(
    book: RoundBook, record: RoundRecord, state: RoundState, error: str | None, started: float | None = None
) -> RoundRecord:
    """Ends the record in ``state`` (with ``error``) and saves it; ``started`` (monotonic) adds this run's
    time to ``wall_s``."""
    record.state, record.error = state, error
    if started is not None:
        record.wall_s += time.monotonic() - started
    record.ended_at = time.time()
    book.save(record)
    return record
