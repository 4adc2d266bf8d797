"""Checkpoints of the distill job: which run they belong to, saving every rank's shard, and the saved student."""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from agents.codec import copy_tokenizer
from agents.construction import MODEL_CONSTRUCTION
from agents.model import WEIGHTS_FILE, file_sha256, save_core
from distill.data import Data
from distill.manifest import Manifest
from distill.student import is_lora
from streams import durable

if TYPE_CHECKING:
    from transformers import PreTrainedModel

# Names the last checkpoint every rank finished writing (see save_checkpoint).
COMMITTED = "committed"
# What run the checkpoints in a ckpt directory belong to (see run_fingerprint).
FINGERPRINT = "fingerprint.json"


def run_fingerprint(manifest: Manifest, data: Data, ds_config: str, world_size: int) -> dict[str, Any]:
    """What makes a checkpoint this run's: the learnings' and replay's ids in order, the distill parameters
    (the tuning, full or LoRA, named apart as well), the adapter settings, the DeepSpeed config, the world size
    and the base core's sha256.

    A checkpoint from a run with any other fingerprint is not resumed (see ``stale_checkpoint``).
    """
    parts: dict[str, Any] = {
        "learning_ids_sha256": hashlib.sha256(data.learning_ids.encode()).hexdigest(),
        "replay_ids_sha256": hashlib.sha256("\n".join(data.replay_ids).encode()).hexdigest(),
        # The timeout only bounds the run; it changes nothing it computes.
        "distill": manifest.distill.model_dump(mode="json", exclude={"timeout_s", "ds_config"}),
        # Also inside "distill"; named apart so that a discarded checkpoint of the other arm says why. A full-arm
        # checkpoint holds no adapter and a LoRA one no trained base weights: neither can resume the other.
        "tuning": manifest.distill.tuning,
        "ds_config": ds_config,
        "adapters": manifest.adapters.model_dump(mode="json"),
        "world_size": world_size,
        "base_core_sha256": file_sha256(manifest.base_core / WEIGHTS_FILE),
    }
    parts["sha256"] = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
    return parts


def stale_checkpoint(ckpt_dir: Path, fingerprint: dict[str, Any]) -> str | None:
    """Why the committed checkpoint in ``ckpt_dir`` is not this run's, or None when it is."""
    try:
        recorded = json.loads((ckpt_dir / FINGERPRINT).read_text())
    except FileNotFoundError:
        return f"it records no {FINGERPRINT}, so nothing says which run wrote it"
    except (OSError, ValueError) as err:
        return f"its {FINGERPRINT} cannot be read: {err}"
    if not isinstance(recorded, dict):
        return f"its {FINGERPRINT} is not a JSON object"
    if recorded.get("sha256") == fingerprint["sha256"]:
        return None
    differ = sorted(k for k in fingerprint if k != "sha256" and recorded.get(k) != fingerprint[k])
    return f"it was written for another run (differs in {', '.join(differ) or 'sha256'})"


def gathered_state_dict(engine) -> dict[str, torch.Tensor]:
    """A full copy of the student's weights; under ZeRO-3 every rank must call this (it gathers)."""
    # deepspeed is imported here, not at module level: an agent process must start without it.
    import deepspeed

    module = engine.module
    if engine.zero_optimization_stage() == 3:
        with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
            return {k: v.detach().clone() for k, v in module.state_dict().items()}
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def save_student(engine, directory: Path, rank: int, base_core: Path) -> str | None:
    """Saves the student as a plain core (no DeepSpeed or PEFT wrappers), with ``base_core``'s tokenizer, on rank
    0; returns its sha256 there. Every rank must call this (under ZeRO-3 it gathers).

    A LoRA student is saved with its adapter merged into the base weights: the released core is always a complete
    transformers model, never an adapter.
    """
    state = gathered_state_dict(engine)
    if rank != 0:
        return None
    clean = plain_model(engine.module, state)
    clean.eval()
    sha = save_core(clean, directory)
    copy_tokenizer(base_core, directory)
    return sha


def plain_model(module: Any, state: dict[str, torch.Tensor]) -> PreTrainedModel:
    """A new plain transformers model of ``module``'s kind holding ``state`` (``module``'s gathered weights).

    For a LoRA student (a PEFT model) that is its base model with the adapter merged in by PEFT's
    ``merge_and_unload``; ``state`` then has PEFT's keys (``base_model.model.…base_layer.weight``, ``…lora_A…``),
    so it is loaded into a fresh PEFT model of the same adapter config first. ``module`` is left as it was.
    """
    if not is_lora(module):
        with MODEL_CONSTRUCTION:
            clean: Any = type(module)(module.config)
        clean.load_state_dict(state)
        return clean
    from peft import get_peft_model

    base = module.get_base_model()
    adapter = copy.deepcopy(module.peft_config[module.active_adapter])
    with warnings.catch_warnings():
        # PEFT (0.21) asks transformers (5.x) a deprecated question on every wrap (as in agents.lora.wrap).
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        with MODEL_CONSTRUCTION:
            fresh = get_peft_model(type(base)(base.config), adapter)
    fresh.load_state_dict(state)
    return fresh.merge_and_unload()


def save_checkpoint(
    engine, ckpt_dir: Path, step: int, client_state: dict[str, Any], rank: int, fingerprint: dict[str, Any]
) -> None:
    """Saves every rank's shard, then marks the checkpoint committed; every rank must call this.

    DeepSpeed's own ``latest`` is written by rank 0 before the closing barrier, so a kill can leave it naming a
    checkpoint another rank never finished. ``committed`` is written after that barrier, when all shards exist.

    A LoRA student's checkpoint holds its adapter and optimizer state only: its frozen base is the round's base
    core, which the fingerprint pins by sha256 and ``resume`` finds already loaded.
    """
    tag = f"global_step{step}"
    engine.save_checkpoint(
        str(ckpt_dir), tag=tag, client_state=client_state, exclude_frozen_parameters=is_lora(engine.module)
    )
    if rank == 0:
        # The fingerprint first: a committed checkpoint always says which run it belongs to.
        durable.write_text(ckpt_dir / FINGERPRINT, json.dumps(fingerprint, sort_keys=True))
        durable.write_text(ckpt_dir / COMMITTED, tag)


def resume(engine, ckpt_dir: Path, fingerprint: dict[str, Any], rank: int) -> dict[str, Any] | None:
    """Loads this run's committed checkpoint under ``ckpt_dir`` into ``engine`` and returns its client state (the
    step and the history so far); None when training starts from step 0. Every rank must call this.

    A checkpoint another run wrote (see ``stale_checkpoint``) is removed, not resumed.
    """
    if not (ckpt_dir / COMMITTED).is_file():
        return None
    stale = stale_checkpoint(ckpt_dir, fingerprint)
    # Every rank has decided (on the same files) before rank 0 may remove them.
    torch.distributed.barrier()
    if stale is not None:
        if rank == 0:
            print(f"distill: discarding checkpoint {ckpt_dir}: {stale}; starting from step 0", flush=True)
            shutil.rmtree(ckpt_dir)
        torch.distributed.barrier()
        return None
    # Every rank loads its own shard; the client state carries the step and the history so far. A LoRA
    # checkpoint lacks the frozen base's weights (see save_checkpoint), so its module is loaded non-strictly.
    tag = (ckpt_dir / COMMITTED).read_text().strip()
    _, client = engine.load_checkpoint(str(ckpt_dir), tag=tag, load_module_strict=not is_lora(engine.module))
    if client is not None and rank == 0:
        print(f"distill: resumed from {ckpt_dir} at step {client['step']}", flush=True)
    return client
