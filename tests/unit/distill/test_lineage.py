"""A round's lineage: per-agent counts and seqs from the store slice, and the ids file's sha256."""

from __future__ import annotations

import hashlib

import pytest

from distill.lineage import LineageError, learning_ids_text, round_lineage
from distill.manifest import Lineage

from factories import make_learning


def test_lineage_counts_agents_and_their_seqs() -> None:
    learnings = [
        make_learning("b"),
        make_learning("a", "capital"),
        make_learning("b"),
        make_learning("b"),
        make_learning("a"),
    ]
    payload = round_lineage(learnings, Lineage(after_seq=10, upto_seq=15))
    assert payload["after_seq"] == 10 and payload["upto_seq"] == 15
    assert payload["learnings"] == 5
    assert payload["agents"] == {
        "a": {"count": 2, "first_seq": 12, "last_seq": 15},
        "b": {"count": 3, "first_seq": 11, "last_seq": 14},
    }
    assert payload["skills"] == {"add": 4, "capital": 1}
    ids = learning_ids_text(learnings)
    assert ids.splitlines() == [str(lr.id) for lr in learnings]
    assert payload["learning_ids_sha256"] == hashlib.sha256(ids.encode()).hexdigest()


def test_lineage_without_a_range_has_no_seqs() -> None:
    payload = round_lineage([make_learning("a")], None)
    assert payload["agents"] == {"a": {"count": 1, "first_seq": None, "last_seq": None}}
    assert payload["after_seq"] is None


def test_a_file_that_is_not_the_range_is_refused() -> None:
    with pytest.raises(LineageError, match="holds 2 learnings"):
        round_lineage([make_learning("a"), make_learning("a")], Lineage(after_seq=0, upto_seq=3))
    with pytest.raises(ValueError, match="below"):
        Lineage(after_seq=4, upto_seq=3)
