"""A core's manifest: every file of a released core with its size and sha256, in one canonical JSON document.

The hive writes it when it releases a core and signs its sha256 into the ``CoreRelease``
(``manifest_sha256``), so that an agent verifies every file it fetches, ``config.json`` and the tokenizer
files included, not only the weights. The same bytes are served over HTTP and stored on S3 beside the core.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = 1
# A manifest names the top-level files of one core: a few weights, config and tokenizer files. The bounds keep a
# hostile server from making an agent parse or plan without limit before any file is checked.
MAX_MANIFEST_BYTES = 1 << 20
MAX_FILES = 64
# A file name as a core directory holds it: no separator, no "..", no hidden file, no control character.
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
CHUNK_BYTES = 1 << 20


class ManifestError(ValueError):
    """A manifest that cannot be trusted to describe a core: malformed, oversized, or naming a bad file."""


@dataclass(frozen=True)
class ManifestFile:
    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class CoreManifest:
    version: int
    files: tuple[ManifestFile, ...]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def file(self, name: str) -> ManifestFile | None:
        return next((f for f in self.files if f.name == name), None)

    def to_bytes(self) -> bytes:
        """The canonical form whose sha256 a release signs: sorted keys, no spaces, files by name."""
        document = {
            "format": MANIFEST_FORMAT,
            "version": self.version,
            "files": [{"name": f.name, "size": f.size, "sha256": f.sha256} for f in self.files],
        }
        return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()

    def sha256(self) -> str:
        return hashlib.sha256(self.to_bytes()).hexdigest()


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def build_manifest(directory: Path, version: int) -> CoreManifest:
    """The manifest of the top-level files of ``directory`` (a core is flat). Raises ManifestError for a file
    name a manifest may not carry or a directory that holds no file or too many."""
    files = []
    for path in sorted(directory.iterdir()):
        if not path.is_file() or path.is_symlink():
            continue
        if not _NAME.match(path.name):
            raise ManifestError(f"{path}: a core file name must match {_NAME.pattern}")
        files.append(ManifestFile(path.name, path.stat().st_size, file_digest(path)))
    if not files or len(files) > MAX_FILES:
        raise ManifestError(f"{directory}: {len(files)} files; a core has between 1 and {MAX_FILES}")
    return CoreManifest(version, tuple(files))


def parse_manifest(raw: bytes) -> CoreManifest:
    """Parses a manifest received from elsewhere, strictly: every field present and well formed, file names
    plain and unique. Raises ManifestError, naming what is wrong."""
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"manifest of {len(raw)} bytes, over the limit of {MAX_MANIFEST_BYTES}")
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ManifestError(f"manifest is not JSON: {err}") from err
    if not isinstance(document, dict) or document.get("format") != MANIFEST_FORMAT:
        raise ManifestError(f"manifest is not a format-{MANIFEST_FORMAT} object")
    version = document.get("version")
    entries = document.get("files")
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise ManifestError(f"manifest version {version!r} is not a non-negative integer")
    if not isinstance(entries, list) or not 1 <= len(entries) <= MAX_FILES:
        raise ManifestError(f"manifest files must be a list of 1 to {MAX_FILES} entries")
    files = []
    for entry in entries:
        if not isinstance(entry, dict) or set(entry) != {"name", "size", "sha256"}:
            raise ManifestError(f"manifest entry {str(entry)[:200]!r}: needs exactly name, size and sha256")
        name, size, sha = entry["name"], entry["size"], entry["sha256"]
        if not isinstance(name, str) or not _NAME.match(name):
            raise ManifestError(f"manifest file name {str(name)[:200]!r}: must match {_NAME.pattern}")
        if not _is_int(size) or size < 0:
            raise ManifestError(f"manifest file {name}: size {size!r} is not a non-negative integer")
        if not isinstance(sha, str) or not _SHA256.match(sha):
            raise ManifestError(f"manifest file {name}: sha256 {str(sha)[:80]!r} is not 64 lowercase hex digits")
        files.append(ManifestFile(name, size, sha))
    names = [f.name for f in files]
    if len(set(names)) != len(names):
        raise ManifestError("manifest names a file twice")
    return CoreManifest(version, tuple(sorted(files, key=lambda f: f.name)))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
