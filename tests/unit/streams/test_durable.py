"""Durable files: whole or absent, never torn, and no temp file left behind."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from streams import durable


def test_write_text_replaces_the_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "round.json"
    target.write_text("old")
    durable.write_text(target, '{"state": "released"}')
    assert target.read_text() == '{"state": "released"}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["round.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "manifest.json"
    target.write_text("old")

    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space"):
        durable.write_text(target, "new")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]


def test_write_lines_ends_each_line(tmp_path: Path) -> None:
    target = tmp_path / "learnings.jsonl"
    durable.write_lines(target, ["{}", '{"a": 1}'])
    assert target.read_text() == '{}\n{"a": 1}\n'
    durable.write_lines(target, [])
    assert target.read_text() == ""


def test_append_line_appends_and_refuses_a_newline(tmp_path: Path) -> None:
    target = tmp_path / "releases.jsonl"
    durable.append_line(target, "one")
    durable.append_line(target, "two")
    assert target.read_text() == "one\ntwo\n"
    with pytest.raises(ValueError, match="newline"):
        durable.append_line(target, "three\nfour")
    assert target.read_text() == "one\ntwo\n"


def test_read_lines_splits_on_newlines_only(tmp_path: Path) -> None:
    # JSON leaves U+2028, U+2029 and U+0085 unescaped in strings; str.splitlines() would cut such a line.
    target = tmp_path / "learnings.jsonl"
    lines = ['{"prompt": "a\u2028b\u0085c\u2029d\x1c"}', "{}"]
    durable.write_lines(target, lines)
    assert durable.read_lines(target) == lines
    durable.write_lines(target, [])
    assert durable.read_lines(target) == []
