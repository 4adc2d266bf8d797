"""Model directories written whole or not at all: built beside their place, fsynced, then renamed into it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from streams.durable import fsync_dir


def building_dir(target: Path) -> Path:
    """An empty directory beside ``target`` (same filesystem, so the final rename is atomic) to build it in.

    What a killed attempt left there is removed. The caller MUST be the only one building ``target`` (one hive
    per HIVE_HOME; ``hive model prepare`` holds a lock).
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
