"""LoRA on the shared core: an agent's adapter settings, wrapping, saving, and checking an adapter as data."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from agents.codec import BYTE_CODEC, Codec
from agents.construction import MODEL_CONSTRUCTION

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

# The files PEFT's save_pretrained(safe_serialization=True) writes; the weights file is the claim check's sha256.
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
# Every linear layer of a Llama block: attention and MLP (measured on SmolLM2 in FACTS.md).
LLAMA_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# The largest rank an agent may train and the hive will load: far above any useful adapter, low enough that a
# config cannot ask for absurd tensors.
MAX_LORA_R = 256
# adapter_config.json is a few KB; anything bigger is not one.
MAX_CONFIG_BYTES = 64 * 1024
_TARGET = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]{0,99}$")
# Fields of adapter_config.json that the hive reads; ...
_USED = {"peft_type", "r", "lora_alpha", "target_modules", "use_rslora"}
# ... fields that describe the agent's run and change nothing the hive computes (the base is always the hive's
# own core, never ``base_model_name_or_path``; dropout and initialisation do not act at inference) ...
_IGNORED = {
    "task_type",
    "peft_version",
    "base_model_name_or_path",
    "revision",
    "inference_mode",
    "lora_dropout",
    "init_lora_weights",
}
# ... and every other LoraConfig field must hold its default: each turns on a variant (DoRA, biases, patterns,
# code such as auto_mapping) that this loader does not do. A field LoraConfig does not have is refused.

Tuning = Literal["auto", "full", "lora"]


@dataclass(frozen=True)
class LoraSpec:
    """How an agent's LoRA adapter is made: rank, alpha, dropout, the linear layers it targets and its learning
    rate (None: the Specialist's ``lr``). Raises ValueError for a rank outside 1..MAX_LORA_R or no targets."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    targets: tuple[str, ...] = LLAMA_LINEAR
    lr: float | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.r <= MAX_LORA_R:
            raise ValueError(f"LoRA rank r must be in 1..{MAX_LORA_R}, got {self.r}")
        if not self.targets:
            raise ValueError("LoRA needs at least one target module (e.g. q_proj)")
        bad = [t for t in self.targets if not _TARGET.match(t)]
        if bad:
            raise ValueError(f"LoRA target modules are module names such as q_proj, got {bad}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}")
        if not (math.isfinite(self.alpha) and self.alpha > 0):
            raise ValueError(f"LoRA alpha must be a positive number, got {self.alpha}")


def resolve_tuning(tuning: str, codec: Codec) -> Literal["full", "lora"]:
    """What ``tuning`` means on a core with ``codec``: ``auto`` is LoRA on a core with its own tokenizer and full
    fine-tuning on the tiny byte core, which learns only by full fine-tuning (ValueError for ``lora`` there)."""
    byte_core = codec.fingerprint == BYTE_CODEC.fingerprint
    if tuning == "auto":
        return "full" if byte_core else "lora"
    if tuning == "lora" and byte_core:
        raise ValueError("tuning 'lora' needs a pretrained core with its own tokenizer; the tiny core tunes 'full'")
    if tuning not in ("full", "lora"):
        raise ValueError(f"tuning must be auto, full or lora, got {tuning!r}")
    return "lora" if tuning == "lora" else "full"


def _lora_config(r: int, alpha: float, targets: Sequence[str], dropout: float = 0.0, rslora: bool = False) -> Any:
    # Imported here: only an agent or a round on a pretrained core needs PEFT; the tiny path never loads it.
    from peft import LoraConfig, TaskType

    return LoraConfig(
        r=r,
        # PEFT types alpha as int, yet only ever divides by it; a config may hold 16.0.
        lora_alpha=cast("int", alpha),
        lora_dropout=dropout,
        target_modules=list(targets),
        use_rslora=rslora,
        bias="none",
        task_type=TaskType.CAUSAL_LM,
    )


def wrap(core: PreTrainedModel, spec: LoraSpec) -> PreTrainedModel:
    """A copy of ``core`` with a fresh LoRA adapter (a PeftModel): only the adapter's parameters are trainable.

    A PeftModel forwards everything the codec functions use (the forward pass, ``config``, train and eval), so
    it is typed as the model it wraps. Raises ValueError naming a target that matches no linear layer."""
    from peft import get_peft_model

    linear_targets(core, spec.targets)
    with _quiet_peft(), MODEL_CONSTRUCTION:
        model = get_peft_model(copy.deepcopy(core), _lora_config(spec.r, spec.alpha, spec.targets, spec.dropout))
    return cast("PreTrainedModel", model)


def save_adapter(model: PreTrainedModel, directory: Path) -> None:
    """Writes the adapter of ``model`` (made by ``wrap``) as PEFT does: ``adapter_model.safetensors`` and
    ``adapter_config.json`` in ``directory``."""
    from peft import PeftModel
    from transformers.utils import logging as hf_logging

    if not isinstance(model, PeftModel):
        raise TypeError(f"{type(model).__name__} holds no LoRA adapter")
    hf_logging.disable_progress_bar()
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(directory), safe_serialization=True)


def linear_targets(base: PreTrainedModel, targets: Sequence[str]) -> dict[str, tuple[int, int]]:
    """The base's linear layers that ``targets`` name, as PEFT matches them (the full name, or its dotted tail):
    module name -> (in_features, out_features). Raises ValueError for a target that names no linear layer."""
    import torch

    found: dict[str, tuple[int, int]] = {}
    for target in dict.fromkeys(targets):
        matched = [
            (name, module) for name, module in base.named_modules() if name == target or name.endswith("." + target)
        ]
        linear = [(name, m) for name, m in matched if isinstance(m, torch.nn.Linear)]
        if not linear:
            kinds = sorted({type(m).__name__ for _, m in matched})
            what = f"only {', '.join(kinds)}" if kinds else "nothing"
            raise ValueError(f"LoRA target {target!r} names no linear layer of the core ({what} matches)")
        found.update((name, (m.in_features, m.out_features)) for name, m in linear)
    return found


@dataclass(frozen=True)
class AdapterConfig:
    """What the hive reads of an agent's adapter_config.json."""

    r: int
    alpha: float
    targets: tuple[str, ...]
    rslora: bool


def parse_adapter_config(data: bytes, where: str) -> AdapterConfig:
    """adapter_config.json parsed strictly as data: JSON of a LORA adapter, no field the loader would not honour.

    Raises ValueError naming ``where`` and what is wrong; nothing in the file is imported or run.
    """
    try:
        raw = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as err:
        raise ValueError(f"{where}: not JSON: {err}") from err
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: not a JSON object")
    if raw.get("peft_type") != "LORA":
        raise ValueError(f"{where}: peft_type is {raw.get('peft_type')!r}; only LORA adapters are loaded")
    defaults = _lora_defaults()
    for key, value in raw.items():
        if key in _USED or key in _IGNORED:
            continue
        if key not in defaults:
            raise ValueError(f"{where}: unknown field {key!r} (a LoRA config of peft {raw.get('peft_version')!r})")
        if value != defaults[key]:
            raise ValueError(f"{where}: {key} is {str(value)[:80]!r}; only its default {defaults[key]!r} is loaded")
    r = raw.get("r")
    if not isinstance(r, int) or isinstance(r, bool) or not 1 <= r <= MAX_LORA_R:
        raise ValueError(f"{where}: r must be an integer in 1..{MAX_LORA_R}, got {str(r)[:40]}")
    alpha = raw.get("lora_alpha", 8)
    if not isinstance(alpha, int | float) or isinstance(alpha, bool) or not 0 < alpha <= 1e4:
        raise ValueError(f"{where}: lora_alpha must be a number in (0, 10000], got {str(alpha)[:40]}")
    targets = raw.get("target_modules")
    if not isinstance(targets, list) or not targets or len(targets) > 64:
        raise ValueError(f"{where}: target_modules must be a list of 1 to 64 module names, got {str(targets)[:80]}")
    if not all(isinstance(t, str) and _TARGET.match(t) for t in targets):
        raise ValueError(f"{where}: target_modules must be module names such as q_proj, got {str(targets)[:80]}")
    rslora = raw.get("use_rslora", False)
    if not isinstance(rslora, bool):
        raise ValueError(f"{where}: use_rslora must be true or false")
    return AdapterConfig(r, float(alpha), tuple(sorted(set(targets))), rslora)


def expected_tensors(base: PreTrainedModel, config: AdapterConfig) -> dict[str, tuple[int, ...]]:
    """The tensors a LoRA adapter of ``config`` on ``base`` holds, as PEFT names them in its file, with shapes:
    ``lora_A`` r x in and ``lora_B`` out x r for every targeted linear layer. ValueError as ``linear_targets``."""
    shapes: dict[str, tuple[int, ...]] = {}
    for name, (fan_in, fan_out) in linear_targets(base, config.targets).items():
        shapes[f"base_model.model.{name}.lora_A.weight"] = (config.r, fan_in)
        shapes[f"base_model.model.{name}.lora_B.weight"] = (fan_out, config.r)
    return shapes


def merged(base: PreTrainedModel, config: AdapterConfig, state: dict[str, torch.Tensor]) -> PreTrainedModel:
    """A copy of ``base`` with the adapter ``state`` (already checked against ``expected_tensors``) loaded through
    PEFT and merged into its weights: a plain model for inference. ``base`` is left as it was."""
    from peft import get_peft_model, set_peft_model_state_dict

    with _quiet_peft(), MODEL_CONSTRUCTION:
        model = get_peft_model(
            copy.deepcopy(base), _lora_config(config.r, config.alpha, config.targets, rslora=config.rslora)
        )
    result = set_peft_model_state_dict(model, state)
    unexpected = list(getattr(result, "unexpected_keys", []))
    if unexpected:
        raise ValueError(f"PEFT did not load {unexpected[:5]}")
    return model.merge_and_unload()


@contextlib.contextmanager
def _quiet_peft() -> Iterator[None]:
    # PEFT (0.21) asks transformers (5.x) a deprecated question on every wrap; the warning is about PEFT, not us.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def _lora_defaults() -> dict[str, Any]:
    from peft import LoraConfig

    defaults: dict[str, Any] = {}
    for field in dataclasses.fields(LoraConfig):
        if field.default is not dataclasses.MISSING:
            defaults[field.name] = field.default
        elif field.default_factory is not dataclasses.MISSING:
            defaults[field.name] = field.default_factory()
    return defaults


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError(f"duplicate keys {sorted({k for k in keys if keys.count(k) > 1})[:5]}")
    return dict(pairs)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
