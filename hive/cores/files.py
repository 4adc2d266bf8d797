"""Where released cores live under HIVE_HOME, and how the first one is made from ``HIVE_MODEL__PATH``."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from agents.core_files import CoreDirError, check_core_dir
from agents.model import WEIGHTS_FILE, CoreSize, build_core, file_sha256, save_core
from hive.config import HiveSettings
from hive.cores.pretrained import core_source
from hive.cores.registry import CHAMPION, CoreRegistry
from streams.durable import building_dir, publish_dir


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
    """Makes core v0 from ``HIVE_MODEL__PATH`` and saves it under ``cores/v0``, whole or not at all.

    ``tiny`` is built from its config (nothing is downloaded; the same seed gives the same bytes); a prepared
    built-in model or a local directory that ``check_core_dir`` accepts is copied with its tokenizer files. The
    files are written in a temp directory beside ``cores/v0``, fsynced, and renamed into place, so a start killed
    midway never leaves a ``v0`` with half its files. A ``v0`` already there is one a killed start built but
    never registered (the caller builds only an unregistered v0): it is replaced.
    """
    source = core_source(settings.model.path, settings.model_cache_dir)
    directory = core_dir(settings, 0)
    directory.parent.mkdir(parents=True, exist_ok=True)
    building = building_dir(directory)
    try:
        if source is None:
            save_core(build_core(CoreSize(), seed=seed), building)
        else:
            _copy_core(source, building)
        publish_dir(building, directory)
    finally:
        if building.exists():
            shutil.rmtree(building)
    return CoreFiles(0, directory, file_sha256(directory / WEIGHTS_FILE))


def _copy_core(source: Path, building: Path) -> None:
    """Copies the top-level files of ``source`` (weights, config, tokenizer); a core is flat, as the registry
    logs only top-level files, and a folder beside them (a ``.git``) is not part of the model."""
    for path in sorted(source.iterdir()):
        if path.is_file():
            shutil.copy2(path, building / path.name)
    if not (building / WEIGHTS_FILE).is_file():
        shards = sorted(p.name for p in building.glob("*.safetensors"))
        # The hive verifies, registers and releases a core by the sha256 of its one weights file.
        raise CoreDirError(
            f"{source}: no {WEIGHTS_FILE} (it has {', '.join(shards)}): a core's weights must be one "
            f"{WEIGHTS_FILE}; save the model again with save_pretrained(..., max_shard_size='50GB')"
        )
    check_core_dir(building)


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
