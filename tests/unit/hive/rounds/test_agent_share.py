"""No agent buys a round with volume: past HIVE_DISTILL__MAX_AGENT_SHARE, its learnings are sampled down."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from distill.manifest import read_learnings
from hive.config import DistillSettings, HiveSettings
from hive.cores.files import CoreFiles
from hive.rounds.book import RoundBook
from hive.rounds.open import open_round
from hive.rounds.share import agent_cap, cap_agents
from hive.store.parquet import ParquetLearningStore

from factories import make_learning


@pytest.mark.parametrize(
    ("counts", "share", "cap"),
    [
        ({"a": 900, "b": 100}, 0.5, 101),  # the flooder keeps about as many as the rest of the fleet
        ({"a": 900, "b": 100, "c": 100, "d": 100, "e": 100}, 0.2, 101),
        ({"a": 900, "b": 300, "c": 200}, 0.5, 501),
        ({"a": 5, "b": 5}, 0.5, None),  # nobody over the share: nothing to cap
        ({"a": 4, "b": 3}, 0.5, None),  # one over an exact half is rounding, not flooding
        ({"a": 50}, 0.5, None),  # one agent alone cannot be held to half of itself: it keeps everything
        ({"a": 30, "b": 10}, 0.25, 10),  # two agents and a share of 0.25: both keep as many as the fewest
        ({"a": 900, "b": 100}, 1.0, None),
    ],
)
def test_the_cap_is_the_largest_that_holds_the_share(counts: dict[str, int], share: float, cap: int | None) -> None:
    assert agent_cap(counts, share) == cap


@given(st.dictionaries(st.sampled_from("abcdefgh"), st.integers(1, 400), min_size=1), st.sampled_from([0.2, 0.3, 0.5]))
def test_after_the_cap_no_agent_is_over_its_share_when_the_fleet_allows_it(
    counts: dict[str, int], share: float
) -> None:
    cap = agent_cap(counts, share)
    kept = {a: n if cap is None else min(n, cap) for a, n in counts.items()}
    if len(counts) * share >= 1:
        assert max(kept.values()) <= math.ceil(share * sum(kept.values()) - 1e-9)
    # The cap never takes anything from an agent at or under it, and is as large as it can be.
    if cap is not None and cap < max(counts.values()):
        bigger = {a: min(n, cap + 1) for a, n in counts.items()}
        assert len(counts) * share < 1 or cap + 1 > math.ceil(share * sum(bigger.values()) - 1e-9)


def test_capping_keeps_a_seeded_sample_of_the_flooders_own_and_every_other_learning() -> None:
    learnings = [make_learning("flood", "add", n) for n in range(90)] + [
        make_learning("b", "capital", n) for n in range(10)
    ]
    kept, capped = cap_agents(learnings, 0.5, "r0001")
    assert Counter(lr.agent_id for lr in kept) == {"flood": 11, "b": 10}
    assert capped == {"flood": 79}
    assert [lr for lr in kept if lr.agent_id == "b"] == learnings[90:]
    assert [lr.id for lr in kept] == [lr.id for lr in learnings if lr in kept]  # the store's order is kept
    again, _ = cap_agents(learnings, 0.5, "r0001")
    assert [lr.id for lr in again] == [lr.id for lr in kept]
    other, _ = cap_agents(learnings, 0.5, "r0002")
    assert {lr.id for lr in other} != {lr.id for lr in kept}


def test_a_round_and_its_replay_hold_no_agent_over_its_share(tmp_path: Path) -> None:
    settings = HiveSettings(home=tmp_path, distill=DistillSettings(replay_size=100, seed=5, max_agent_share=0.5))
    book = RoundBook(settings.rounds_dir)
    base = CoreFiles(0, tmp_path / "cores" / "v0", "0" * 64)
    with ParquetLearningStore(settings.store_dir) as store:
        flood = [make_learning("flood", "add", n) for n in range(300)]
        honest = [make_learning(f"h{k}", "add", 1000 + 10 * k + n) for k in range(2) for n in range(10)]
        store.append(flood + honest, {})
        first = open_round(settings, store, book, base, "hive-rounds")
        assert first.per_agent == {"flood": 21, "h0": 10, "h1": 10} and first.capped == {"flood": 279}
        assert first.learnings == 41
        first.state = "released"
        book.save(first)
        store.append([make_learning("h0", "add", 5000 + n) for n in range(4)], {})
        second = open_round(settings, store, book, base, "hive-rounds")
        replay = read_learnings(book.path(second.id) / "replay.jsonl")
    assert Counter(lr.agent_id for lr in replay) == {"flood": 21, "h0": 10, "h1": 10}
    # The round's file holds exactly the learnings it counts.
    assert len(read_learnings(book.path(first.id) / "learnings.jsonl")) == 41
