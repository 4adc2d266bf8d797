"""Specialists uploaded by agents on other hosts: ``PUT /adapters/<agent id>/<sha256>/<file>`` on the core server.

A request is taken only when it is signed with the agent's HMAC key (``HIVE_INGEST__*``: the same keys, allow-
list and revocations as its learnings) over the method, path, body's sha256 and a time within
``HIVE_INGEST__MAX_CLOCK_SKEW_S`` of the hive's. Only a specialist's files are taken: the weights, whose
sha256 must be the one in the path, at most ``HIVE_ADAPTERS__MAX_BYTES`` (default four times the largest core's
weights), and a LoRA ``adapter_config.json`` of at most 64 KiB. Each file is written whole (temp file, fsync,
rename) to ``HIVE_HOME/uploads/adapters/<agent id>/<sha256>/``; the round still checks everything it loads
from there (``agents.claim_check``). The answer is that directory's ``file://`` URI, for the claim check.

Imports FastAPI (the ``hive`` extra): only the core server imports this module.
"""

from __future__ import annotations

import hashlib
import logging
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from agents.adapter_upload import AGENT_HEADER, SIGNATURE_HEADER, TIME_HEADER, upload_path
from agents.claim_check import MAX_BYTES_FACTOR
from agents.lora import ADAPTER_CONFIG, ADAPTER_WEIGHTS, MAX_CONFIG_BYTES
from agents.model import WEIGHTS_FILE
from hive.config import HiveSettings
from hive.ingest.auth import keyring
from streams.durable import write_bytes
from streams.signing import KeyRing, KeyRingError, verify_request

log = logging.getLogger(__name__)

_AGENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
WEIGHT_FILES = (ADAPTER_WEIGHTS, WEIGHTS_FILE)


class UploadRefused(Exception):
    """A request the hive does not take; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def max_upload_bytes(settings: HiveSettings, name: str) -> int:
    if name == ADAPTER_CONFIG:
        return MAX_CONFIG_BYTES
    if settings.adapters.max_bytes is not None:
        return settings.adapters.max_bytes
    sizes = [p.stat().st_size for p in settings.cores_dir.glob(f"v*/{WEIGHTS_FILE}")]
    return MAX_BYTES_FACTOR * max(sizes, default=0)


def check_request(settings: HiveSettings, agent_id: str, sha256: str, name: str, headers: Any) -> None:
    """Raises UploadRefused unless the request's path names a specialist file and its sender may send it.
    The signature is checked once the body is read (``check_signature``)."""
    if not _AGENT_ID.match(agent_id) or not _SHA256.match(sha256):
        raise UploadRefused(404, "no such upload path")
    if name not in (*WEIGHT_FILES, ADAPTER_CONFIG):
        raise UploadRefused(
            404, f"a specialist has no file {name[:64]!r}: only {', '.join((*WEIGHT_FILES, ADAPTER_CONFIG))}"
        )
    if headers.get(AGENT_HEADER) != agent_id:
        raise UploadRefused(401, f"the {AGENT_HEADER} header must name the agent in the path")
    ingest = settings.ingest
    if ingest.allowed_agents is not None and agent_id not in ingest.allowed_agents:
        raise UploadRefused(403, f"agent {agent_id!r} is not in the allow-list")
    if agent_id in ingest.revoked_agents:
        raise UploadRefused(403, f"agent {agent_id!r} is revoked")
    stamp = headers.get(TIME_HEADER) or ""
    try:
        sent = datetime.fromisoformat(stamp)
    except ValueError as err:
        raise UploadRefused(401, f"{TIME_HEADER} {stamp[:64]!r} is not an ISO 8601 time") from err
    if sent.tzinfo is None:
        raise UploadRefused(401, f"{TIME_HEADER} {stamp[:64]!r} has no time zone")
    skew = abs((datetime.now(UTC) - sent).total_seconds())
    if skew > ingest.max_clock_skew_s:
        raise UploadRefused(
            401, f"{TIME_HEADER} is {skew:.0f} s from the hive's clock (at most {ingest.max_clock_skew_s:g})"
        )


def check_signature(ring: KeyRing, agent_id: str, path: str, body_sha256: str, headers: Any) -> None:
    try:
        keys = ring.get(agent_id)
    except KeyRingError as err:
        log.error("adapter upload from %s: %s", agent_id, err)
        raise UploadRefused(503, "the hive cannot read this agent's key now") from err
    if keys is None:
        # Fail closed whatever HIVE_INGEST__REQUIRE_SIGNATURES says: an upload writes to the hive's disk.
        raise UploadRefused(401, f"agent {agent_id!r} has no key on the hive: uploads must be signed")
    signature = headers.get(SIGNATURE_HEADER) or ""
    if not verify_request(keys, signature, "PUT", path, body_sha256, headers.get(TIME_HEADER) or ""):
        raise UploadRefused(401, f"the signature does not match agent {agent_id!r}'s key")


def store_upload(settings: HiveSettings, agent_id: str, sha256: str, name: str, body: bytes) -> Path:
    """Writes the file whole into the upload's directory; returns the directory."""
    digest = hashlib.sha256(body).hexdigest()
    if name in WEIGHT_FILES and digest != sha256:
        raise UploadRefused(400, f"{name} has sha256 {digest}, the path says {sha256}")
    directory = settings.uploads_dir / agent_id / sha256
    directory.mkdir(parents=True, exist_ok=True)
    write_bytes(directory / name, body)  # a temp file of its own: two uploads of one file never share one
    return directory


def adapter_routes(app: Any, settings: HiveSettings) -> None:
    """Adds ``PUT /adapters/<agent id>/<sha256>/<file>`` to the core server's app. Raises KeyRingError for a
    malformed ``HIVE_INGEST__*`` key setting."""
    ring = keyring(settings.ingest)

    @app.put("/adapters/{agent_id}/{sha256}/{name}")
    async def upload(agent_id: str, sha256: str, name: str, request: Request) -> JSONResponse:
        try:
            check_request(settings, agent_id, sha256, name, request.headers)
            cap = max_upload_bytes(settings, name)
            body = await _read_capped(request, cap)
            path = upload_path(agent_id, sha256, name)
            check_signature(ring, agent_id, path, hashlib.sha256(body).hexdigest(), request.headers)
            directory = store_upload(settings, agent_id, sha256, name, body)
        except UploadRefused as err:
            log.warning("adapter upload %s/%s/%s refused: %s", agent_id[:64], sha256[:16], name[:64], err.detail)
            return JSONResponse({"detail": err.detail}, status_code=err.status)
        except OSError as err:
            log.error("adapter upload %s/%s/%s could not be stored: %s", agent_id, sha256[:16], name, err)
            return JSONResponse({"detail": "the hive could not store the file"}, status_code=507)
        log.info("stored %s of agent %s's specialist %s (%d bytes)", name, agent_id, sha256[:16], len(body))
        return JSONResponse({"uri": directory.resolve().as_uri(), "sha256": sha256})


async def _read_capped(request: Request, cap: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise UploadRefused(413, f"{declared} bytes, over the cap of {cap}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise UploadRefused(413, f"over the cap of {cap} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
