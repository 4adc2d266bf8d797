"""The learning store interface: a durable, deduplicated, ordered log of learnings plus consumer offsets."""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType

from streams.events import Learning

TopicPartitionKey = tuple[str, int]


class StoreError(RuntimeError):
    """The store's files disagree with its catalog, or the store cannot be written."""


class LearningStore(ABC):
    """Where the hive keeps every learning it has accepted.

    Contract:
    - ``append`` is all or nothing. When it returns, the new learnings AND the offsets are durable
      (on disk, fsynced); a crash at any point leaves either the whole batch or none of it.
    - The consumer MUST commit its Kafka offsets only after ``append`` has returned.
    - A learning is stored at most once, keyed by ``Learning.id``; a repeat is silently skipped,
      whether it is already in the store or earlier in the same batch (the first one wins).
    - Every stored learning gets an integer ``seq``: 1, 2, 3, ... in append order, never reused,
      so ``seq`` ranges name stable slices of the store (a round's manifest uses them).
    - ``offsets`` are the next offset to read per (topic, partition); ``append`` merges them in
      (a partition not named keeps its previous value).
    - One process writes a store at a time; readers in that process may call from other threads.
    """

    @abstractmethod
    def append(self, learnings: list[Learning], offsets: dict[TopicPartitionKey, int]) -> int:
        """Stores the learnings not seen before, with the offsets, durably; returns how many were new."""

    @abstractmethod
    def count(self, agent_id: str | None = None, skill: str | None = None) -> int:
        """How many learnings are stored, optionally only those of one agent and/or skill."""

    @abstractmethod
    def unique_ids(self) -> int:
        """How many distinct learning ids are stored (equal to ``count()`` while dedupe holds)."""

    @abstractmethod
    def max_seq(self) -> int:
        """The highest ``seq`` stored, or 0 when the store is empty."""

    @abstractmethod
    def read(
        self,
        after_seq: int = 0,
        upto_seq: int | None = None,
        agent_id: str | None = None,
        skill: str | None = None,
        limit: int | None = None,
    ) -> list[Learning]:
        """Learnings with ``after_seq < seq <= upto_seq`` (no upper bound when None), ordered by seq."""

    @abstractmethod
    def read_with_seq(
        self,
        after_seq: int = 0,
        upto_seq: int | None = None,
        agent_id: str | None = None,
        skill: str | None = None,
        limit: int | None = None,
    ) -> list[tuple[int, Learning]]:
        """Like ``read``, with each learning's ``seq``."""

    @abstractmethod
    def offsets(self) -> dict[TopicPartitionKey, int]:
        """The next offset to read per (topic, partition), as of the last ``append``."""

    @abstractmethod
    def per_agent_counts(self, after_seq: int = 0, upto_seq: int | None = None) -> dict[str, int]:
        """How many learnings each agent has in ``after_seq < seq <= upto_seq``."""

    def close(self) -> None:  # noqa: B027 - stores without resources need not override it
        """Releases files and connections; the store is unusable afterwards."""

    def __enter__(self) -> LearningStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
