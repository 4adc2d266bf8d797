"""Integration fixtures: the embedded Tansu broker on a free loopback port and ``hive serve``, stopped by pid."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agents.core_fetch import s3_client
from agents.skills import BUILTIN_SKILLS
from streams.broker import EmbeddedBroker, free_port
from streams.events import Learning

from factories import make_learning


def _start(log_path: Path) -> EmbeddedBroker:
    broker = EmbeddedBroker(log_path=log_path)
    broker.start()
    return broker


def _stop(broker: EmbeddedBroker) -> None:
    pid = broker.pid
    broker.stop()
    if pid is not None:
        # The broker is our child and has been reaped, so its pid no longer names a process.
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One broker for the whole session; tests sharing it must not count what others put on a topic."""
    embedded = _start(tmp_path_factory.mktemp("broker") / "tansu.log")
    try:
        yield embedded.bootstrap
    finally:
        _stop(embedded)


@pytest.fixture
def fresh_broker(tmp_path: Path) -> Iterator[str]:
    """A broker of the test's own (it starts in milliseconds), for tests that count a topic's records."""
    embedded = _start(tmp_path / "tansu.log")
    try:
        yield embedded.bootstrap
    finally:
        _stop(embedded)


class HiveServe:
    """``hive serve`` as a child process in its own session, signalled by its pid only.

    Its stderr goes to ``log_path`` (appended across restarts), so a failing test can show it.
    """

    def __init__(self, env: dict[str, str], log_path: Path, args: tuple[str, ...] = ("--no-rounds",)) -> None:
        self.env = env
        self.log_path = log_path
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> subprocess.Popen[bytes]:
        assert self.proc is None or self.proc.poll() is not None, "hive serve is already running"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hive", "serve", *self.args],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self.starts += 1
        return self.proc

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind, as in a crash or an OOM kill."""
        if self.alive:
            assert self.proc is not None
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def terminate(self, timeout_s: float = 30.0) -> int:
        """SIGTERM and wait for the exit code (SIGKILL, and a failure, if it does not stop in time)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"hive serve did not stop within {timeout_s} s of SIGTERM:\n{self.log_tail()}")

    def log_tail(self, limit: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except FileNotFoundError:
            return "(no log)"


@pytest.fixture
def hive_serve(tmp_path: Path, agent_keys: Any) -> Iterator[Callable[..., HiveServe]]:
    """Makes ``HiveServe`` runners for the test; any still running at the end is killed by its pid.

    Each hive reads the test's ``agent_keys`` directory (signatures are required by default): sign what the
    test publishes with ``agent_keys.sign``. ``extra_env`` may override it.
    """
    made: list[HiveServe] = []

    def make(
        bootstrap: str, home: Path, extra_env: dict[str, str] | None = None, args: tuple[str, ...] = ("--no-rounds",)
    ) -> HiveServe:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HIVE_")}
        env |= {"HIVE_KAFKA_BOOTSTRAP": bootstrap, "HIVE_HOME": str(home), "PYTHONUNBUFFERED": "1"}
        env |= agent_keys.env
        env |= extra_env or {}
        runner = HiveServe(env, tmp_path / f"serve-{len(made)}.log", args)
        made.append(runner)
        return runner

    yield make
    for runner in made:
        runner.kill()


@pytest.fixture
def add_learnings(agent_keys: Any) -> Callable[[int], list[Learning]]:
    """Makes ``n`` learnings of the built-in ``add`` skill from two agents, each with its correction, signed
    with the agents' keys from ``agent_keys`` (give the hive ``agent_keys.env``)."""

    def make(n: int) -> list[Learning]:
        rng, add = random.Random(3), BUILTIN_SKILLS["add"]
        items = []
        for i in range(n):
            prompt, answer = add.sample(rng)
            learning = make_learning(f"agent-{i % 2}", prompt=prompt, completion="0", reward=0.0, correction=answer)
            items.append(agent_keys.sign(learning))
        return items

    return make


@pytest.fixture
def s3_endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A real ``moto_server`` process on a free loopback port, stopped by its pid, with the AWS_* variables boto3
    reads set for the test; yields its http URL once it answers. Tests make their own buckets."""
    from botocore.exceptions import EndpointConnectionError

    binary = shutil.which("moto_server") or str(Path(sys.executable).with_name("moto_server"))
    port = free_port()
    log = (tmp_path / "moto.log").open("wb")
    process = subprocess.Popen([binary, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    for variable, value in {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(variable, value)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                s3_client(endpoint).list_buckets()
                break
            except EndpointConnectionError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.2)
        yield endpoint
    finally:
        os.kill(process.pid, signal.SIGTERM)
        process.wait(10)
        log.close()


def _postgres_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    # Fail, not skip: Debian's postgresql is part of the setup, and a missing server must not pass quietly.
    assert found, (
        "PostgreSQL is not installed: /usr/lib/postgresql/*/bin/initdb is missing (apt-get install postgresql)"
    )
    return found[-1].parent


@pytest.fixture
def postgres() -> Iterator[str]:
    """A PostgreSQL cluster of the test's own on a free loopback port, stopped by its postmaster's pid; yields a
    SQLAlchemy URL (psycopg 3) of its database ``hive``. initdb and pg_ctl refuse root, so they run as the
    ``postgres`` user, in a directory it owns under /tmp (pytest's own temporary directories are root's alone)."""
    import pwd
    import tempfile

    bindir, user = _postgres_bin(), pwd.getpwnam("postgres")
    top = Path(tempfile.mkdtemp(prefix="hive-pg-", dir="/tmp"))
    os.chown(top, user.pw_uid, user.pw_gid)
    data, port = top / "data", free_port()

    def as_postgres(*cmd: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *cmd], check=True, capture_output=True, timeout=120)

    pid: int | None = None
    try:
        as_postgres(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-instructions")
        options = f"-p {port} -k {top} -c listen_addresses=127.0.0.1"
        as_postgres(str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(top / "log"), "-w", "start")
        pid = int((data / "postmaster.pid").read_text().split()[0])
        as_postgres(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "hive")
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/hive"
    finally:
        if pid is not None:
            os.kill(pid, signal.SIGINT)  # PostgreSQL's fast shutdown
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def mlflow_server(postgres: str, s3_endpoint: str, tmp_path: Path) -> Iterator[str]:
    """A real ``mlflow server`` with its backend store on ``postgres`` and its artifacts on S3 (``moto_server``,
    bucket ``mlflow-artifacts``), in its own process group, stopped by it; yields its URL once ``/health`` answers."""
    import urllib.error
    import urllib.request

    s3_client(s3_endpoint).create_bucket(Bucket="mlflow-artifacts")
    port = free_port()
    env = os.environ | {"MLFLOW_S3_ENDPOINT_URL": s3_endpoint}
    cmd = [str(Path(sys.executable).with_name("mlflow")), "server", "--backend-store-uri", postgres]
    cmd += ["--artifacts-destination", "s3://mlflow-artifacts/", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--workers", "1"]
    log = (tmp_path / "mlflow-server.log").open("wb")
    process = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    return response.status == 200
            except (urllib.error.URLError, OSError):
                return False  # not listening yet

        while not healthy():
            assert process.poll() is None, f"mlflow server exited: {(tmp_path / 'mlflow-server.log').read_text()}"
            assert time.monotonic() < deadline, "mlflow server did not answer /health within 120 s"
            time.sleep(0.5)
        yield url
    finally:
        # Its own session: the group is this server and the workers it started, nothing else.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)
        log.close()
