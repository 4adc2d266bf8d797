"""What ``hive inspect`` shares: its errors, verified cores and agent specialists, skill names."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agents.claim_check import MAX_BYTES_FACTOR, ClaimCheckError, load_adapter
from agents.codec import Codec, load_codec
from agents.model import WEIGHTS_FILE, load_core
from agents.skills import BUILTIN_SKILLS, SkillLoadError, load_skills, skill_catalog
from hive.config import HiveSettings
from hive.cores.files import core_dir
from hive.cores.registry import CoreIntegrityError, CoreRegistry, RegistryError, UnknownVersionError, verify_core
from hive.store.interface import LearningStore
from streams.events import Learning

if TYPE_CHECKING:
    from transformers import PreTrainedModel

# How many of an agent's newest learnings are searched for an adapter before the whole history is read.
ADAPTER_SEARCH = 1000


class InspectInputError(ValueError):
    """Bad input: an unknown round, core version, agent or skill, or a request the state cannot answer."""


class InspectStateError(RuntimeError):
    """The hive's state cannot be read or fails a check (a missing registry, a core failing its sha256)."""


@dataclass(frozen=True)
class VerifiedCore:
    """A registered core, loaded after its sha256 checked out, with the codec of its own tokenizer."""

    version: int
    model: PreTrainedModel
    codec: Codec


@dataclass(frozen=True)
class Specialist:
    """An agent's specialist: its weights (full, or its LoRA adapter merged into the core), the core version it
    was trained from, and that core's codec."""

    agent_id: str
    core_version: int
    uri: str
    sha256: str
    model: PreTrainedModel
    codec: Codec


def load_verified_core(settings: HiveSettings, registry: CoreRegistry, version: int) -> VerifiedCore:
    """Core ``version`` from HIVE_HOME/cores/vN, checked against the registry's sha256 before it is loaded.

    A core registered but missing on disk is downloaded (and verified) into a temporary folder, leaving
    HIVE_HOME as it was. Raises InspectInputError for a version the registry does not know, and
    InspectStateError for weights that fail their sha256.
    """
    try:
        sha = registry.registered_sha256(version)
    except UnknownVersionError as err:
        raise InspectInputError(f"core v{version} is not registered; known: {err.known}") from err
    directory = core_dir(settings, version)
    try:
        if (directory / WEIGHTS_FILE).is_file():
            verify_core(directory, sha)
            return VerifiedCore(version, load_core(directory), load_codec(directory))
        with tempfile.TemporaryDirectory(prefix="hive-inspect-") as tmp:
            downloaded = registry.download(version, Path(tmp))
            return VerifiedCore(version, load_core(downloaded), load_codec(downloaded))
    except CoreIntegrityError as err:
        raise InspectStateError(f"core v{version}: {err}") from err
    except RegistryError as err:
        raise InspectStateError(f"core v{version} cannot be downloaded from the registry: {err}") from err


def newest_adapter_learning(store: LearningStore, agent_id: str) -> Learning:
    """The agent's newest stored learning that carries an adapter claim check.

    Raises InspectInputError naming what is missing: the agent, or any adapter of it.
    """
    if store.count(agent_id) == 0:
        raise InspectInputError(f"agent {agent_id!r} has no learnings in the store")
    rows = store.tail(ADAPTER_SEARCH, agent_id)
    if not any(x.adapter is not None for _, x in rows):
        rows = store.read_with_seq(agent_id=agent_id)
    with_adapter = [x for _, x in rows if x.adapter is not None]
    if not with_adapter:
        raise InspectInputError(
            f"agent {agent_id!r} has no learning with an adapter claim check in the store: the agent must save "
            "its specialist (AgentSDK.save_specialist) before its learnings name one"
        )
    return with_adapter[-1]


def load_specialist(settings: HiveSettings, registry: CoreRegistry, store: LearningStore, agent_id: str) -> Specialist:
    """The specialist of the agent's newest adapter, followed as a round follows it (``load_adapter``): under
    ``HIVE_ADAPTERS__ROOTS``, size-capped, hashed before it is loaded, and loaded into the verified core the
    agent ran, never from the agent's ``config.json``: full weights (a tiny core's agent), or a PEFT LoRA adapter
    (a pretrained core's) merged into that core. Raises InspectStateError naming what was refused."""
    learning = newest_adapter_learning(store, agent_id)
    assert learning.adapter is not None
    claim = learning.adapter
    base = load_verified_core(settings, registry, learning.core_version)
    # The round's default cap is a multiple of the base core's weights file; its tensors' bytes are that file's
    # size less a small header, and need no file on disk (a core downloaded from the registry).
    tensor_bytes = sum(t.numel() * t.element_size() for t in base.model.state_dict().values())
    max_bytes = settings.adapters.max_bytes or MAX_BYTES_FACTOR * tensor_bytes
    try:
        model = load_adapter(claim.uri, claim.sha256, base.model, settings.adapter_roots, max_bytes)
    except ClaimCheckError as err:
        raise InspectStateError(f"agent {agent_id!r}'s adapter {claim.uri}: {err}") from err
    # The adapter is a tuning of its base core: it reads and writes that core's tokens.
    return Specialist(agent_id, learning.core_version, claim.uri, claim.sha256, model, base.codec)


def resolve_skills(settings: HiveSettings, names: list[str], default: list[str]) -> list[object]:
    """Loads skills by name (built-ins and ``HIVE_SKILLS`` plugins); ``default`` when none is named, and every
    built-in when that is empty too."""
    wanted = list(dict.fromkeys(names or default or sorted(BUILTIN_SKILLS)))
    try:
        catalog = skill_catalog(settings.skills)
    except SkillLoadError as err:
        raise InspectStateError(f"HIVE_SKILLS names a skill that cannot be loaded: {err}") from err
    unknown = [name for name in wanted if name not in catalog]
    if unknown:
        raise InspectInputError(f"unknown skill {', '.join(unknown)}; known: {', '.join(sorted(catalog))}")
    return load_skills([catalog[name] for name in wanted])
