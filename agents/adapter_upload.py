"""Sends an agent's saved specialist (its adapter, or full weights) to the hive over HTTP(S), for agents that do
not share the hive's disk. The hive answers with the claim check's URI: its own copy, under its adapter roots.

Each file goes in one ``PUT /adapters/<agent id>/<sha256>/<file>``, signed with the agent's HMAC key over the
method, path, body's sha256 and time (``streams.signing.request_signature``). The hive refuses an unsigned,
forged or stale request, a revoked agent, a file other than a specialist's, and weights whose sha256 is not the
one in the path. A second upload of the same bytes is answered as the first.
"""

from __future__ import annotations

import hashlib
import json
import ssl
from datetime import UTC, datetime
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.parse import quote, urlsplit
from urllib.request import Request, urlopen

from agents.lora import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from agents.model import WEIGHTS_FILE
from streams.signing import request_signature

# The files of a saved specialist: a LoRA adapter's two, or a full fine-tune's weights.
SPECIALIST_FILES = (ADAPTER_WEIGHTS, ADAPTER_CONFIG, WEIGHTS_FILE)
AGENT_HEADER = "X-Hive-Agent"
TIME_HEADER = "X-Hive-Time"
SIGNATURE_HEADER = "X-Hive-Signature"


class UploadError(RuntimeError):
    """The hive did not take the specialist: unreachable, or it refused (the message says why)."""


def upload_path(agent_id: str, sha256: str, name: str) -> str:
    return f"/adapters/{quote(agent_id)}/{sha256}/{quote(name)}"


def upload_specialist(
    directory: Path,
    sha256: str,
    base_url: str,
    agent_id: str,
    key: bytes,
    ca_file: Path | None = None,
    timeout_s: float = 30.0,
) -> str:
    """Uploads the specialist saved in ``directory`` (claim check ``sha256``) to the hive at ``base_url``;
    returns the URI of the hive's copy, for the claim check. Raises UploadError."""
    names = [name for name in SPECIALIST_FILES if (directory / name).is_file()]
    if not names:
        raise UploadError(f"{directory} holds no specialist ({', '.join(SPECIALIST_FILES)})")
    context = None
    if urlsplit(base_url).scheme.lower() == "https":
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file is not None else None)
    uri = ""
    for name in names:
        body = (directory / name).read_bytes()
        path = upload_path(agent_id, sha256, name)
        now = datetime.now(UTC).isoformat()
        headers = {
            AGENT_HEADER: agent_id,
            TIME_HEADER: now,
            SIGNATURE_HEADER: request_signature(key, "PUT", path, hashlib.sha256(body).hexdigest(), now),
            "Content-Type": "application/octet-stream",
        }
        request = Request(base_url.rstrip("/") + path, data=body, headers=headers, method="PUT")
        try:
            with urlopen(request, timeout=timeout_s, context=context) as response:
                answer = json.loads(response.read(65536))
        except HTTPError as err:
            detail = err.read(2048).decode("utf-8", "replace")
            raise UploadError(f"the hive refused {name} (HTTP {err.code}): {detail}") from err
        except (URLError, OSError, ValueError) as err:
            raise UploadError(f"cannot upload {name} to {base_url}: {err}") from err
        uri = str(answer.get("uri", "")) if isinstance(answer, dict) else ""
        if not uri:
            raise UploadError(f"the hive took {name} but named no claim check URI")
    return uri
