"""Where a claim check's payload lies on this machine: `file://` URIs only (the embedded hive shares a disk).

A claim check comes from an agent, so its URI is untrusted input: it is parsed strictly, and the hive follows it
only into directories it was told to trust (``resolve_adapter``).
"""

from __future__ import annotations

import copy
import hashlib
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from agents.lora import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    MAX_CONFIG_BYTES,
    expected_tensors,
    merged,
    parse_adapter_config,
)
from agents.model import WEIGHTS_FILE

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

# The two spellings of a local file URI; anything else (another host, "file:/x", "file:x") is refused.
_PREFIXES = ("file:///", "file://localhost/")
# Percent-encoded "/", "\" and NUL would hide a separator or end the path inside one segment.
_ENCODED_TRICKS = ("%2f", "%5c", "%00")
SHA_MISMATCH = "adapter_sha_mismatch"
# PEFT's pickle format: never loaded, but named in the refusal so the agent knows to save safetensors.
PICKLED_ADAPTER = "adapter_model.bin"
# The default size cap: this many times the base core's weights file (safetensors adds only a small header).
MAX_BYTES_FACTOR = 4


class ClaimCheckError(ValueError):
    """A claim check that cannot be followed; ``reason`` is the short name counted in the round's metrics."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def parse_file_uri(uri: str) -> Path:
    """The absolute local path a ``file:///…`` or ``file://localhost/…`` URI names.

    Raises ClaimCheckError (``adapter_unsupported_uri``) for any other scheme, a host part, a query or a
    fragment, a ``..`` segment, control characters, lone surrogates, or a percent-encoded separator or NUL.
    """

    def refuse(why: str) -> ClaimCheckError:
        return ClaimCheckError("adapter_unsupported_uri", f"{uri[:200]!r}: {why}")

    if any(ord(c) < 0x20 or c == "\x7f" or c == "\\" or 0xD800 <= ord(c) <= 0xDFFF for c in uri):
        raise refuse("control characters, backslashes or lone surrogates")
    lowered = uri.lower()
    if not lowered.startswith(_PREFIXES):
        raise refuse("only file:///path or file://localhost/path URIs on this machine are followed")
    if "?" in uri or "#" in uri:
        raise refuse("a query or fragment")
    if any(trick in lowered for trick in _ENCODED_TRICKS):
        raise refuse("a percent-encoded separator or NUL")
    raw_path = urlsplit(uri).path
    path = unquote(raw_path, errors="strict")
    # '..' is refused before anything resolves it, raw or decoded: a claim check names its directory plainly.
    if ".." in raw_path.split("/") or ".." in path.split("/"):
        raise refuse("a '..' segment")
    if not path.startswith("/"):
        raise refuse("not an absolute path")
    return Path(path)


def adapter_path(uri: str) -> Path | None:
    """The local directory a ``file://`` URI names, or None for a URI ``parse_file_uri`` refuses."""
    try:
        return parse_file_uri(uri)
    except (ClaimCheckError, UnicodeDecodeError):
        return None


def under_roots(path: Path, roots: list[Path]) -> bool:
    """True when the resolved ``path`` lies inside one of ``roots`` (each resolved here)."""
    return any(path.is_relative_to(root.resolve()) for root in roots)


def resolve_adapter(uri: str, roots: list[Path]) -> Path:
    """The real directory of an adapter claim check, inside one of ``roots``; raises ClaimCheckError.

    Symlinks are resolved before the check, so a link inside a root that points outside it is refused
    (``adapter_outside_roots``), as is any path outside every root. A path that does not exist is
    ``adapter_missing``; one that cannot be resolved (a symlink loop, no permission) ``adapter_unreadable``.
    """
    try:
        path = parse_file_uri(uri)
    except UnicodeDecodeError as err:
        raise ClaimCheckError("adapter_unsupported_uri", f"{uri[:200]!r}: not UTF-8 once decoded") from err
    if not any(path.is_relative_to(root) or path.is_relative_to(root.resolve()) for root in roots):
        # Refused before touching the disk: a claim check must not probe what exists outside the roots.
        raise ClaimCheckError("adapter_outside_roots", f"{path} is outside the adapter roots ({_shown(roots)})")
    real = _real_under_roots(path, roots)
    if not real.is_dir():
        raise ClaimCheckError("adapter_missing", f"{real} is not a directory")
    return real


def read_weights(directory: Path, roots: list[Path], max_bytes: int) -> bytes:
    """``directory``'s weights file, read once; refuses a file outside ``roots`` or over ``max_bytes`` unread."""
    return read_capped(directory / WEIGHTS_FILE, roots, max_bytes)


def read_capped(path: Path, roots: list[Path], max_bytes: int) -> bytes:
    """The file at ``path``, read once; refuses one outside ``roots`` or over ``max_bytes`` unread."""
    real = _real_under_roots(path, roots)
    try:
        # O_NOFOLLOW: the file resolved above must not have been swapped for a link since.
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as err:
        raise ClaimCheckError("adapter_unreadable", f"cannot open {real}: {err}") from err
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ClaimCheckError("adapter_unreadable", f"{real} is not a regular file")
        if info.st_size > max_bytes:
            raise ClaimCheckError("adapter_too_large", f"{real} is {info.st_size} bytes, over the cap of {max_bytes}")
        # One byte more than the cap: a file that grew since fstat is still refused, not read whole.
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ClaimCheckError("adapter_too_large", f"{real} grew past the cap of {max_bytes} bytes while read")
    return data


def load_adapter(uri: str, sha256: str, base: PreTrainedModel, roots: list[Path], max_bytes: int) -> PreTrainedModel:
    """The specialist an adapter claim check names: ``base`` with the claim check's weights, in eval mode.

    A directory holding ``adapter_config.json`` is a PEFT LoRA adapter (``_load_lora``); any other holds full
    weights, ``model.safetensors``. The weights file is read once (``read_capped``: under ``roots``, at most
    ``max_bytes``) and hashed; only bytes whose sha256 equals the claim check's are loaded, so the hash covers
    exactly what is loaded. They must be safetensors (never pickle). Full weights must hold exactly ``base``'s
    tensors and shapes and are loaded strictly into a copy of ``base``: the agent's ``config.json`` is never
    read. Raises ClaimCheckError with the reason.
    """
    directory = resolve_adapter(uri, roots)
    if os.path.lexists(directory / ADAPTER_CONFIG):
        return _load_lora(directory, sha256, base, roots, max_bytes)
    state = _verified_safetensors(read_weights(directory, roots, max_bytes), sha256, directory / WEIGHTS_FILE)
    _check_tensors(state, base.state_dict(), directory)
    model = copy.deepcopy(base)
    model.load_state_dict(state, strict=True)
    model.requires_grad_(False)
    model.eval()
    return model


def _load_lora(
    directory: Path, sha256: str, base: PreTrainedModel, roots: list[Path], max_bytes: int
) -> PreTrainedModel:
    """A LoRA adapter merged into a copy of ``base``: the hive's core, whatever ``base_model_name_or_path`` says.

    ``adapter_model.safetensors`` is hashed before anything else (the claim check's sha256). adapter_config.json
    (at most MAX_CONFIG_BYTES, not covered by the sha256) is parsed as data only (``parse_adapter_config``):
    ``adapter_bad_config`` for anything but a plain LORA config whose targets are linear layers of ``base``. The
    tensors must be exactly a ``lora_A`` (r x in) and a ``lora_B`` (out x r) per targeted layer
    (``adapter_shape_mismatch``).
    """
    weights = directory / ADAPTER_WEIGHTS
    if not os.path.lexists(weights) and os.path.lexists(directory / PICKLED_ADAPTER):
        raise ClaimCheckError(
            "adapter_unreadable", f"{directory}: {PICKLED_ADAPTER} is pickle and is never loaded; save safetensors"
        )
    state = _verified_safetensors(read_capped(weights, roots, max_bytes), sha256, weights)
    config_path = directory / ADAPTER_CONFIG
    raw = read_capped(config_path, roots, MAX_CONFIG_BYTES)
    try:
        config = parse_adapter_config(raw, str(config_path))
        expected = expected_tensors(base, config)
    except ValueError as err:
        raise ClaimCheckError("adapter_bad_config", str(err)) from err
    _check_lora_tensors(state, expected, weights)
    try:
        model = merged(base, config, state)
    except (ValueError, RuntimeError) as err:
        raise ClaimCheckError("adapter_shape_mismatch", f"{weights}: {err}") from err
    model.requires_grad_(False)
    model.eval()
    return model


def _verified_safetensors(data: bytes, sha256: str, path: Path) -> dict[str, torch.Tensor]:
    """The tensors in ``data`` once its sha256 equals the claim check's (SHA_MISMATCH otherwise)."""
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise ClaimCheckError(SHA_MISMATCH, f"{path} has sha256 {actual}, the claim check {sha256}")
    # Imported here: safetensors' torch loader pulls in torch, which only loading a specialist needs.
    from safetensors import SafetensorError
    from safetensors.torch import load as load_safetensors

    try:
        return load_safetensors(data)
    except SafetensorError as err:
        raise ClaimCheckError("adapter_unreadable", f"{path} is not safetensors: {err}") from err


def _real_under_roots(path: Path, roots: list[Path]) -> Path:
    """``path`` with every symlink resolved, which must exist and lie under one of ``roots``; a link inside a
    root that points outside it is refused. Raises ClaimCheckError."""
    try:
        real = path.resolve(strict=True)
    except FileNotFoundError as err:
        raise ClaimCheckError("adapter_missing", f"{path} does not exist") from err
    except (OSError, RuntimeError) as err:
        raise ClaimCheckError("adapter_unreadable", f"{path} cannot be resolved: {err}") from err
    if not under_roots(real, roots):
        raise ClaimCheckError(
            "adapter_outside_roots", f"{path} resolves to {real}, outside the adapter roots ({_shown(roots)})"
        )
    return real


def _check_tensors(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], directory: Path) -> None:
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise ClaimCheckError(
            "adapter_shape_mismatch",
            f"{directory}: tensors missing {missing[:5]}, unexpected {extra[:5]} against the base core",
        )
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[name].shape) or not tensor.is_floating_point():
            raise ClaimCheckError(
                "adapter_shape_mismatch",
                f"{directory}: {name} is {tensor.dtype} {tuple(tensor.shape)}, "
                f"the base core's {expected[name].dtype} {tuple(expected[name].shape)}",
            )


def _check_lora_tensors(state: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]], path: Path) -> None:
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise ClaimCheckError(
            "adapter_shape_mismatch",
            f"{path}: LoRA tensors missing {missing[:5]}, unexpected {extra[:5]} for its config on the base core",
        )
    for name, tensor in state.items():
        if tuple(tensor.shape) != expected[name] or not tensor.is_floating_point():
            raise ClaimCheckError(
                "adapter_shape_mismatch",
                f"{path}: {name} is {tensor.dtype} {tuple(tensor.shape)}, expected floating {expected[name]}",
            )


def _shown(roots: list[Path]) -> str:
    return ", ".join(str(root) for root in roots) or "none configured"
