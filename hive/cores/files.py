"""Where released cores live under HIVE_HOME, and how the first one is made."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from agents.model import WEIGHTS_FILE, CoreSize, build_core, file_sha256, save_core
from hive.config import HiveSettings
from hive.cores.registry import CHAMPION, CoreRegistry
from streams.durable import fsync_dir


@dataclass(frozen=True)
class CoreFiles:
    version: int
    directory: Path
    sha256: str

    @property
    def uri(self) -> str:
        return self.directory.resolve().as_uri()


def core_dir(settings: HiveSettings, version: int) -> Path:
    return settings.cores_dir / f"v{version}"


def existing_core(settings: HiveSettings, version: int) -> CoreFiles:
    directory = core_dir(settings, version)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"core v{version}: no {weights}")
    return CoreFiles(version, directory, file_sha256(weights))


def build_core_v0(settings: HiveSettings, seed: int = 0) -> CoreFiles:
    """Builds core v0 from the tiny config (nothing is downloaded) and saves it as safetensors, whole or not at all.

    The files are written in a temp directory beside ``cores/v0``, fsynced, and renamed into place, so a start
    killed midway never leaves a ``v0`` with half its files. A ``v0`` already there is one a killed start built
    but never registered (the caller builds only an unregistered v0): it is replaced.
    """
    directory = core_dir(settings, 0)
    directory.parent.mkdir(parents=True, exist_ok=True)
    building = directory.with_name(f".{directory.name}.building")
    if building.exists():
        shutil.rmtree(building)
    sha = save_core(build_core(CoreSize(), seed=seed), building)
    for path in building.iterdir():
        with path.open("rb") as fh:
            os.fsync(fh.fileno())
    fsync_dir(building)
    if directory.exists():
        shutil.rmtree(directory)
    os.replace(building, directory)
    fsync_dir(directory.parent)
    return CoreFiles(0, directory, sha)


def champion_core(settings: HiveSettings, registry: CoreRegistry) -> CoreFiles:
    """The current champion core, building and registering core v0 on a new hive."""
    version = registry.champion_version()
    if version is not None:
        return existing_core(settings, version)
    if registry.has_version(0):
        # A hive stopped between registering v0 and aliasing it: finish the job rather than build v0 again.
        registry.set_alias(CHAMPION, 0)
        return existing_core(settings, 0)
    core = build_core_v0(settings)
    registry.log_core(core.directory, core.version, core.sha256)
    registry.set_alias(CHAMPION, core.version)
    return core
