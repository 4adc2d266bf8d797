"""Durable files and directories: written whole or not at all, and still there after a crash or a power cut."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def fsync_dir(path: Path) -> None:
    """Makes the entries of directory ``path`` durable: POSIX keeps a rename or a new file only once its
    directory is fsynced too."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes(path: Path, data: bytes) -> None:
    """Replaces ``path`` with ``data`` atomically and durably: a temp file beside it, fsync, rename, fsync
    of the directory. A crash at any point leaves the old file or the new one, never a torn one.

    The temp file has a name of its own (``mkstemp``), so two writers of one path never share a temp file.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        # The temp file is ours alone; a failed write must not leave it behind (a full disk, say).
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_text(path: Path, text: str) -> None:
    """``write_bytes`` of ``text`` as UTF-8."""
    write_bytes(path, text.encode("utf-8"))


def write_lines(path: Path, lines: list[str]) -> None:
    """Replaces ``path`` with ``lines``, each ending in a newline, atomically and durably (``write_bytes``)."""
    write_bytes(path, "".join(line + "\n" for line in lines).encode("utf-8"))


def read_lines(path: Path, errors: str = "strict") -> list[str]:
    """The lines of a file that ``write_lines`` or ``append_line`` wrote (JSON lines), without their newlines.

    Split on ``\n`` alone, never with ``str.splitlines``: that also splits on U+2028, U+0085 and other
    separators, which JSON leaves unescaped inside strings, so a learning's text would cut its line in two.
    """
    text = path.read_text(encoding="utf-8", errors=errors)
    lines = text.split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def read_json_lines(path: Path, errors: str = "strict") -> list[tuple[int, Any]]:
    """``(line number, parsed value)`` for each line of a JSON-lines file that parses; a blank line is skipped,
    and a line that is not JSON (a torn last line, a bug) is skipped with a warning, so that the rest of the
    file stays usable. The caller checks each value's shape."""
    values = []
    for number, line in enumerate(read_lines(path, errors), 1):
        if not line.strip():
            continue
        try:
            values.append((number, json.loads(line)))
        except json.JSONDecodeError as err:
            log.warning("%s line %d is not JSON (%s); skipped", path, number, err)
    return values


def append_line(path: Path, line: str) -> None:
    """Appends ``line`` and a newline to ``path`` durably: one write in append mode, then fsync.

    One ``write`` of one small line with O_APPEND keeps concurrent appenders' lines whole; a crash can
    still cut the last line short, so a reader MUST skip a last line that does not parse.
    """
    if "\n" in line:
        raise ValueError("an appended line must not contain a newline")
    created = not path.exists()
    with path.open("a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())
    if created:
        fsync_dir(path.parent)


def building_dir(target: Path) -> Path:
    """An empty directory beside ``target`` (same filesystem, so the final rename is atomic) to build it in.

    What a killed attempt left there is removed. The caller MUST be the only one building ``target`` (one hive
    per HIVE_HOME, one agent per agent home; ``hive model prepare`` holds a lock).
    """
    building = target.with_name(f".{target.name}.building")
    if building.exists():
        shutil.rmtree(building)
    building.mkdir(parents=True)
    return building


def publish_dir(building: Path, target: Path) -> None:
    """Makes ``building`` durable and renames it to ``target``, replacing what was there.

    A crash before the rename leaves ``target`` as it was; after it, ``target`` holds every file. The old
    ``target`` is moved aside first and removed last, because a directory cannot be renamed over one that
    is not empty.
    """
    for path in sorted(building.rglob("*")):
        if path.is_file() and not path.is_symlink():
            with path.open("rb") as fh:
                os.fsync(fh.fileno())
    fsync_dir(building)
    old = target.with_name(f".{target.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(building, target)
    fsync_dir(target.parent)
    if old.exists():
        shutil.rmtree(old)
