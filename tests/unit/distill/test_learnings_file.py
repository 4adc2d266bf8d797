"""A round's learnings file (learnings.jsonl, replay.jsonl): one writer and one reader, in distill/manifest.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from distill.manifest import LearningsError, read_learnings, write_learnings

from factories import make_learning


def test_what_is_written_reads_back_in_order(tmp_path: Path) -> None:
    # U+2028 is a line separator to str.splitlines, but JSON leaves it unescaped inside a string.
    items = [
        make_learning("a", prompt="add 1 2"),
        make_learning("b", prompt="add\u2028 1 2"),
        make_learning("a", prompt="add 2 1"),
    ]
    path = tmp_path / "learnings.jsonl"
    write_learnings(path, items)
    assert read_learnings(path) == items
    assert len(path.read_text().split("\n")) == len(items) + 1  # one line each, newline-terminated


def test_blank_lines_are_allowed_and_a_bad_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "learnings.jsonl"
    path.write_text(make_learning("a", prompt="p").model_dump_json() + "\n\n" + '{"agent_id": "a"}\n')
    with pytest.raises(LearningsError, match=r"learnings\.jsonl:3: not a valid Learning"):
        read_learnings(path)
    path.write_text(make_learning("a", prompt="p").model_dump_json() + "\n\n")
    assert [lr.prompt for lr in read_learnings(path)] == ["p"]


def test_a_missing_file_is_a_learnings_error(tmp_path: Path) -> None:
    with pytest.raises(LearningsError, match="cannot read learnings"):
        read_learnings(tmp_path / "absent.jsonl")
