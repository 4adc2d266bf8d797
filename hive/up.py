"""``hive up``: a whole hive on one machine that keeps running, for a newcomer to explore.

The embedded broker (unless ``HIVE_KAFKA_BOOTSTRAP`` names one), ``hive serve`` with its core server, one agent
per skill learning on the job round after round, and the dashboard; each is a child process with its log under
``HIVE_HOME/up/``, stopped by its pid when ``hive up`` stops. Its state stays under ``HIVE_HOME``: started again,
it goes on from there (the same keys, cores and learnings).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from hive.config import HiveSettings
from hive.demo import AgentFleet, DemoPlan, make_agent_keys
from streams.broker import EmbeddedBroker, free_port

UP_DIR = "up"
# hive serve builds core v0 and releases it before agents can run; a pretrained model takes longer.
FIRST_RELEASE_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 20.0


class UpError(RuntimeError):
    """The hive could not be brought up; the message says which part and why (with its log's tail)."""


@dataclass
class Child:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, limit: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError as err:
            return f"(log unreadable: {err})"

    def stop(self) -> None:
        if self.alive():
            os.kill(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.kill(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)
        self.log.close()


@dataclass
class Addresses:
    broker: str
    cores: str
    dashboard: str
    home: Path
    agents: list[str] = field(default_factory=list)


class HiveUp:
    """Starts and stops the processes of one ``hive up``."""

    def __init__(self, settings: HiveSettings, plan: DemoPlan, cores_port: int, ui_port: int) -> None:
        self.settings = settings
        self.plan = plan
        self.cores_port = cores_port or free_port()
        self.ui_port = ui_port or free_port()
        self.log_dir = settings.home / UP_DIR
        self.broker: EmbeddedBroker | None = None
        self.children: list[Child] = []
        self.fleet: AgentFleet | None = None
        self.reported_dead: set[str] = set()

    def start(self, say: Callable[[str], None]) -> Addresses:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        settings = self.settings
        if not settings.kafka.bootstrap:
            say("starting the embedded broker")
            storage = settings.kafka.embedded_storage
            self.broker = EmbeddedBroker(log_path=self.log_dir / "broker.log", storage=storage)
            settings = settings.model_copy(
                update={"kafka": settings.kafka.model_copy(update={"bootstrap": self.broker.start()})}
            )
        self.settings = settings
        key_dir = make_agent_keys(settings.home, self.plan.agent_ids, keep=True)
        cores = f"http://127.0.0.1:{self.cores_port}"
        env = self._env() | {
            "HIVE_KAFKA_BOOTSTRAP": settings.kafka.bootstrap,
            "HIVE_HOME": str(settings.home.resolve()),
            "HIVE_INGEST__AGENT_KEY_DIR": str(key_dir.resolve()),
            "HIVE_CORES__LISTEN": f"127.0.0.1:{self.cores_port}",
            "HIVE_CORES__BASE_URL": cores,
            "HIVE_MODEL__PATH": self.plan.model,
            "HIVE_DISTILL__STEPS": str(self.plan.distill_steps),
            "HIVE_GATE__EVAL_TASKS": str(self.plan.eval_tasks),
            # A round as soon as the fleet has learned as much as one phase of relearning.
            "HIVE_SCHEDULE__MIN_NEW": str(self.plan.learnings_before_round(2)),
        }
        for key, value in self.plan.distill.items():
            env[f"HIVE_DISTILL__{key.upper()}"] = str(value)
        say(f"starting hive serve (log {self.log_dir / 'serve.log'})")
        serve = self._spawn("serve", [sys.executable, "-m", "hive", "serve"], env)
        self._await_first_release(serve)
        say(f"starting {len(self.plan.skills)} agents: " + ", ".join(self.plan.agent_ids))
        self.fleet = AgentFleet(settings, self.plan, self.log_dir, key_dir)
        say(f"starting the dashboard (log {self.log_dir / 'ui.log'})")
        self._spawn("ui", [sys.executable, "-m", "hive", "ui", "--port", str(self.ui_port)], env)
        return Addresses(
            broker=settings.kafka.bootstrap,
            cores=f"{cores}/cores/",
            dashboard=f"http://127.0.0.1:{self.ui_port}/",
            home=settings.home.resolve(),
            agents=self.plan.agent_ids,
        )

    def check(self) -> list[str]:
        """What died since the last check, each once; raises UpError when hive serve or the broker died."""
        serve = self.children[0]
        if not serve.alive():
            raise UpError(f"hive serve exited with code {serve.popen.returncode}:\n{serve.tail()}")
        if self.broker is not None and self.broker.pid is not None:
            try:
                os.kill(self.broker.pid, 0)
            except ProcessLookupError as err:
                raise UpError("the embedded broker exited; see its log in HIVE_HOME/up/broker.log") from err
        news = []
        procs = {child.name: child.popen for child in self.children[1:]}
        if self.fleet is not None:
            procs |= self.fleet.procs
        for name, proc in procs.items():
            if proc.poll() is not None and name not in self.reported_dead:
                self.reported_dead.add(name)
                news.append(f"{name} exited with code {proc.returncode} (its log: {self.log_dir / (name + '.log')})")
        return news

    def stop(self) -> None:
        """Stops the agents first (they send what they can), then the dashboard, hive serve and the broker."""
        if self.fleet is not None:
            self.fleet.stop()
        for child in reversed(self.children):
            child.stop()
        if self.broker is not None:
            self.broker.stop()

    def _env(self) -> dict[str, str]:
        # The caller's agent keys and pins would clash with the ones `hive up` gives each process.
        clashing = ("HIVE_AGENT_SIGNING_KEY", "HIVE_AGENT_SIGNING_KEY_FILE", "HIVE_AGENT_HIVE_PUBLIC_KEY")
        return {k: v for k, v in os.environ.items() if k not in clashing} | {"PYTHONUNBUFFERED": "1"}

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> Child:
        log_path = self.log_dir / f"{name}.log"
        log = log_path.open("ab")
        popen = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        child = Child(name, popen, log_path, log)
        self.children.append(child)
        return child

    def _await_first_release(self, serve: Child) -> None:
        deadline = time.monotonic() + FIRST_RELEASE_TIMEOUT_S
        key = self.settings.release_public_key_path
        while not (key.exists() and self.settings.manifests_dir.exists()):
            if not serve.alive():
                raise UpError(f"hive serve exited with code {serve.popen.returncode}:\n{serve.tail()}")
            if time.monotonic() > deadline:
                raise UpError(f"hive serve released no core within {FIRST_RELEASE_TIMEOUT_S:.0f} s:\n{serve.tail()}")
            time.sleep(0.5)
