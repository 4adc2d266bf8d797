"""The hive's server for agents on other hosts: released cores out, specialists in.

``GET /cores/v<N>/manifest.json`` answers the manifest recorded when core N was released, byte for byte (its
sha256 is in the signed release); ``GET /cores/v<N>/<file>`` answers a file that manifest names, with Range
requests (206) so that a download cut off resumes (``agents.core_fetch``). Nothing else under ``HIVE_HOME`` is
reachable: a name is looked up in the manifest, never joined to a path as given. A core that was never released
is 404.

``PUT /adapters/<agent id>/<sha256>/<file>`` takes one file of an agent's saved specialist
(``agents.adapter_upload``), signed with the agent's HMAC key, and answers the claim check URI of the hive's
copy under ``HIVE_HOME/uploads/adapters``, which is always among the adapter roots a round follows.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any

from agents.core_manifest import MANIFEST_FILE, ManifestError
from hive.config import HiveSettings, listen_address
from hive.cores.files import core_dir
from hive.cores.transport import recorded_manifest
from hive.cores.uploads import adapter_routes

log = logging.getLogger(__name__)


def create_core_app(settings: HiveSettings) -> Any:
    """The FastAPI app that serves ``settings``' released cores."""
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import FileResponse, Response

    app = FastAPI(title="hive-mind cores", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/cores/v{version}/{name}")
    def core_file(version: int, name: str) -> Response:
        if version < 0:
            raise HTTPException(404, "no such core")
        try:
            recorded = recorded_manifest(settings, version)
        except ManifestError as err:
            log.error("core v%d: its recorded manifest is damaged: %s", version, err)
            raise HTTPException(500, "this core's manifest is damaged on the hive") from err
        if recorded is None:
            raise HTTPException(404, f"core v{version} was never released with a manifest")
        raw, manifest = recorded
        if name == MANIFEST_FILE:
            return Response(raw, media_type="application/json")
        entry = manifest.file(name)
        if entry is None:
            raise HTTPException(404, f"core v{version} has no file {name[:128]!r}")
        # The name comes from the manifest, not the request: no path the client writes reaches the filesystem.
        return FileResponse(core_dir(settings, version) / entry.name, media_type="application/octet-stream")

    adapter_routes(app, settings)
    return app


class CoreServer:
    """The core server on its own thread, for ``hive serve``; ``hive core serve`` runs it in the foreground."""

    def __init__(self, settings: HiveSettings, listen: str) -> None:
        import uvicorn

        host, port = listen_address(listen)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        tls = settings.cores
        scheme = "https" if tls.tls_cert_file is not None else "http"
        self.url = f"{scheme}://{f'[{host}]' if ':' in host else host}:{self.port}"
        config = uvicorn.Config(
            create_core_app(settings),
            log_level="warning",
            access_log=False,
            lifespan="off",
            ssl_certfile=str(tls.tls_cert_file) if tls.tls_cert_file is not None else None,
            ssl_keyfile=str(tls.tls_key_file) if tls.tls_key_file is not None else None,
        )
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    def run(self) -> None:
        """Serves until ``stop`` (from another thread) or Ctrl-C."""
        self.server.run(sockets=[self.sock])

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="core-server", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout_s)
        self.sock.close()
