"""Where released cores live under HIVE_HOME, and how the first one is made."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agents.model import WEIGHTS_FILE, CoreSize, build_core, file_sha256, save_core
from hive.config import HiveSettings


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
    """Builds core v0 from the tiny config (nothing is downloaded) and saves it as safetensors."""
    directory = core_dir(settings, 0)
    sha = save_core(build_core(CoreSize(), seed=seed), directory)
    return CoreFiles(0, directory, sha)
