"""Where a claim check's payload lies on this machine: `file://` URIs only (the embedded hive shares a disk).

A claim check comes from an agent, so its URI is untrusted input: it is parsed strictly, and the hive follows it
only into directories it was told to trust (``resolve_adapter``).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

# The two spellings of a local file URI; anything else (another host, "file:/x", "file:x") is refused.
_PREFIXES = ("file:///", "file://localhost/")
# Percent-encoded "/", "\" and NUL would hide a separator or end the path inside one segment.
_ENCODED_TRICKS = ("%2f", "%5c", "%00")


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
    if not real.is_dir():
        raise ClaimCheckError("adapter_missing", f"{real} is not a directory")
    return real


def _shown(roots: list[Path]) -> str:
    return ", ".join(str(root) for root in roots) or "none configured"
