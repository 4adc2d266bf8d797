"""The learning store interface: a durable, deduplicated, ordered log of learnings, dead letters, offsets and
the quarantine."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import NamedTuple

from streams.events import Learning

TopicPartitionKey = tuple[str, int]


class Indexed(NamedTuple):
    """A stored learning as the catalog indexes it: enough to sample from the history without reading it."""

    seq: int
    agent_id: str
    skill: str


# How much of a dead letter's payload the store keeps: enough to see what was sent, bounded for a hostile flood.
PAYLOAD_HEAD_BYTES = 4096


class StoreError(RuntimeError):
    """The store's files disagree with its catalog, or the store cannot be written."""


@dataclass(frozen=True)
class DeadLetter:
    """A record the hive refused, as kept in the store: why, where it came from, and the head of its payload.

    ``(source_topic, source_partition, source_offset, payload_sha256)`` identifies it: a replayed batch
    records nothing twice, while a different record at a reused offset (an in-memory broker that
    restarted from offset 0) is still recorded.
    """

    reason: str
    detail: str
    source_topic: str
    source_partition: int
    source_offset: int
    size: int  # of the whole payload, in bytes; -1 for a record with no value
    payload_sha256: str  # of the whole payload (of b"" for a record with no value)
    payload_head: bytes  # the first PAYLOAD_HEAD_BYTES bytes
    key: str | None = None  # the record key as text (agents use their id)
    agent_id: str | None = None  # when the payload was a valid learning (refused for its signature or sender)
    recorded_at: str | None = None  # ISO 8601 UTC, set by the store


@dataclass(frozen=True)
class Quarantined:
    """A stored learning that no later round may take in (nor replay), and why.

    Reasons: ``unknown_skill`` (a skill the hive cannot load), ``unreadable`` (its stored JSON no longer
    parses as a Learning), ``held_out_prompt`` (a prompt evaluation holds out, stored before ingest refused
    those), or the short reason the distill job gave in its ``out/unusable.jsonl``.
    """

    learning_id: str
    seq: int
    agent_id: str
    skill: str
    reason: str
    detail: str
    round_id: str | None = None  # the round that quarantined it
    recorded_at: str | None = None  # ISO 8601 UTC, set by the store


class LearningStore(ABC):
    """Where the hive keeps every learning it has accepted.

    Contract:
    - ``append`` is all or nothing. When it returns, the new learnings, the dead letters AND the offsets
      are durable (on disk, fsynced); a crash at any point leaves either the whole batch or none of it.
    - The consumer MUST commit its Kafka offsets only after ``append`` has returned.
    - A learning is stored at most once, keyed by ``Learning.id``; a repeat is silently skipped,
      whether it is already in the store or earlier in the same batch (the first one wins).
    - Every stored learning gets an integer ``seq``: 1, 2, 3, ... in append order, never reused,
      so ``seq`` ranges name stable slices of the store (a round's manifest uses them).
    - ``offsets`` are the next offset to read per (topic, partition); ``append`` merges them in
      (a partition not named keeps its previous value).
    - A dead letter is recorded at most once (see ``DeadLetter``); a repeat is silently skipped.
    - One process writes a store at a time; readers in that process may call from other threads. A
      store opened read-only may be read by other processes while the writer runs.
    - The quarantine is the exception: it is written by the process that holds the round lock (the
      one that runs rounds), which may hold the store read-only (``hive round run`` beside ``hive serve``).
      ``quarantine`` MUST work on such a store; it writes nothing else.
    - A quarantined learning stays stored (``count``, ``read`` and ``tail`` still see it); readers that
      pass ``skip_quarantined=True`` (every round's read) do not.
    """

    @abstractmethod
    def append(
        self,
        learnings: list[Learning],
        offsets: dict[TopicPartitionKey, int],
        dead_letters: Sequence[DeadLetter] = (),
    ) -> int:
        """Stores the learnings not seen before, the dead letters and the offsets, durably; returns how many
        learnings were new."""

    @abstractmethod
    def count(self, agent_id: str | None = None, skill: str | None = None) -> int:
        """How many learnings are stored, optionally only those of one agent and/or skill."""

    @abstractmethod
    def unique_ids(self, agent_id: str | None = None, skill: str | None = None) -> int:
        """How many distinct learning ids are stored (equal to ``count()`` while dedupe holds)."""

    @abstractmethod
    def max_seq(self) -> int:
        """The highest ``seq`` stored, or 0 when the store is empty."""

    def read(
        self,
        after_seq: int = 0,
        upto_seq: int | None = None,
        agent_id: str | None = None,
        skill: str | None = None,
        limit: int | None = None,
        skip_quarantined: bool = False,
    ) -> list[Learning]:
        """Learnings with ``after_seq < seq <= upto_seq`` (no upper bound when None), ordered by seq.

        Raises StoreError naming the seq when a stored learning no longer parses (``read_checked`` does not).
        """
        return [x for _, x in self.read_with_seq(after_seq, upto_seq, agent_id, skill, limit, skip_quarantined)]

    @abstractmethod
    def read_with_seq(
        self,
        after_seq: int = 0,
        upto_seq: int | None = None,
        agent_id: str | None = None,
        skill: str | None = None,
        limit: int | None = None,
        skip_quarantined: bool = False,
    ) -> list[tuple[int, Learning]]:
        """Like ``read``, with each learning's ``seq``."""

    @abstractmethod
    def read_checked(
        self, after_seq: int = 0, upto_seq: int | None = None, limit: int | None = None
    ) -> tuple[list[tuple[int, Learning]], list[Quarantined]]:
        """The learnings in the range that are not quarantined, with their seq, as a round takes them; a
        stored learning whose JSON no longer parses comes back in the second list (reason ``unreadable``,
        ``round_id`` None) instead of raising. Records nothing."""

    @abstractmethod
    def index(self, after_seq: int = 0, upto_seq: int | None = None) -> list[Indexed]:
        """``(seq, agent_id, skill)`` of the learnings in the range that are not quarantined, ordered by seq, from
        the catalog alone: no learning is read."""

    @abstractmethod
    def read_seqs(self, seqs: Sequence[int]) -> tuple[list[tuple[int, Learning]], list[Quarantined]]:
        """``read_checked`` of exactly these seqs (ordered by seq; a seq not stored is left out), reading only
        their rows."""

    @abstractmethod
    def quarantine(self, entries: Sequence[Quarantined]) -> int:
        """Records the entries durably; returns how many were new. A learning already quarantined keeps
        its first entry. See the class contract for who may call it."""

    @abstractmethod
    def quarantined(
        self, limit: int | None = None, after_seq: int = 0, upto_seq: int | None = None
    ) -> list[Quarantined]:
        """The quarantined learnings with ``after_seq < seq <= upto_seq``, newest quarantine first."""

    @abstractmethod
    def quarantine_counts(self) -> dict[str, int]:
        """How many learnings are quarantined, per reason."""

    @abstractmethod
    def lookup(self, ids: Sequence[str]) -> dict[str, tuple[int, str, str]]:
        """``{id: (seq, agent_id, skill)}`` of the stored learnings among ``ids``."""

    @abstractmethod
    def tail(self, n: int, agent_id: str | None = None, skill: str | None = None) -> list[tuple[int, Learning]]:
        """The newest ``n`` matching learnings with their ``seq``, oldest of them first."""

    @abstractmethod
    def dead_letter_counts(self) -> dict[str, int]:
        """How many dead letters are recorded, per reason."""

    @abstractmethod
    def dead_letters(self, limit: int | None = None, reason: str | None = None) -> list[DeadLetter]:
        """The recorded dead letters, newest first, optionally only those with one reason."""

    @abstractmethod
    def offsets(self) -> dict[TopicPartitionKey, int]:
        """The next offset to read per (topic, partition), as of the last ``append``."""

    @abstractmethod
    def per_agent_counts(
        self, after_seq: int = 0, upto_seq: int | None = None, skip_quarantined: bool = False
    ) -> dict[str, int]:
        """How many learnings each agent has in ``after_seq < seq <= upto_seq``."""

    def close(self) -> None:  # noqa: B027 - stores without resources need not override it
        """Releases files and connections; the store is unusable afterwards."""

    def __enter__(self) -> LearningStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
