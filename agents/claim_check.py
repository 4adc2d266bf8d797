"""Where a claim check's payload lies on this machine: `file://` URIs only (the embedded hive shares a disk)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname


def adapter_path(uri: str) -> Path | None:
    """The local directory a ``file://`` URI names, or None for any other scheme or a remote host."""
    parsed = urlparse(uri)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        return None
    return Path(url2pathname(parsed.path))
