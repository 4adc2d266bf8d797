"""Kills hives during their first start: run by test_first_start_killed.py as ``python first_start_runner.py ROOT``.

Everything is imported once, here; each start is a forked child, so a kill lands in the start itself (the
registry's migrations, core v0, its registration), not in Python's imports. Prints one JSON report.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path

import mlflow  # noqa: F401  imported before the forks
import torch  # noqa: F401
import transformers  # noqa: F401

from hive.config import HiveSettings
from hive.cores.files import champion_core
from hive.cores.registry import CoreRegistry

# Where the kills land: most in the registry's creation (fractions of the time it took in an uninterrupted
# start), where a kill used to leave a half-migrated database that no later start could open; the rest in
# what follows (fractions of the time from there to the end: core v0, its registration, the alias).
IN_REGISTRY = (0.4, 0.6, 0.8)
AFTER_REGISTRY = (0.5,)
# Starts run this many at a time (two cores); the uninterrupted ones too, so that all are timed alike.
PARALLEL = 2


def start(home: Path) -> None:
    """A hive's first start: the registry, then the champion core (core v0 built and registered on a new hive)."""
    started = time.monotonic()
    settings = HiveSettings(home=home)
    registry = CoreRegistry.from_settings(settings)
    registry.champion_version()  # the first registry call creates the database
    registry_s = time.monotonic() - started
    core = champion_core(settings, registry)
    result = {
        "registry_s": registry_s,
        "champion": registry.champion_version(),
        "versions": [row["core_version"] for row in registry.list_versions()],
        "sha256": core.sha256,
        "registered_sha256": registry.registered_sha256(0),
    }
    (home / "start.json").write_text(json.dumps(result))


def fork_start(home: Path) -> int:
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            start(home)
        except BaseException:  # noqa: BLE001  whatever failed the start, the test shows it (start.err)
            (home / "start.err").write_text(traceback.format_exc())
            code = 1
        finally:
            os._exit(code)
    return pid


def outcome(status: int) -> str:
    if os.WIFSIGNALED(status):
        return "killed" if os.WTERMSIG(status) == signal.SIGKILL else f"signal {os.WTERMSIG(status)}"
    return "finished" if os.WEXITSTATUS(status) == 0 else "failed"


def run_batch(homes: list[Path], delays: list[float] | list[None]) -> list[str]:
    """Starts one child per home at once; kills each after its delay (None: lets it finish)."""
    started = time.monotonic()
    pids = [fork_start(home) for home in homes]
    results: dict[int, str] = {}
    for pid, delay in sorted(zip(pids, delays, strict=True), key=lambda p: p[1] if p[1] is not None else 1e9):
        done = 0
        if delay is not None:
            time.sleep(max(0.0, started + delay - time.monotonic()))
            done, status = os.waitpid(pid, os.WNOHANG)
            if done == 0:
                os.kill(pid, signal.SIGKILL)
        if done == 0:
            _, status = os.waitpid(pid, 0)
        results[pid] = outcome(status)
    return [results[pid] for pid in pids]


def main(root: Path) -> dict:
    bases = [root / f"uninterrupted-{i}" for i in range(PARALLEL)]
    for base in bases:
        base.mkdir(parents=True)
    t = time.monotonic()
    first = run_batch(bases, [None] * PARALLEL)
    full_s = time.monotonic() - t
    registry_s = sum(json.loads((base / "start.json").read_text())["registry_s"] for base in bases) / PARALLEL
    kill_at = [f * registry_s for f in IN_REGISTRY] + [registry_s + f * (full_s - registry_s) for f in AFTER_REGISTRY]
    homes = [root / f"kill-{i}" for i in range(len(kill_at))]
    for home in homes:
        home.mkdir()
    kills: list[str] = []
    for i in range(0, len(homes), PARALLEL):
        kills += run_batch(homes[i : i + PARALLEL], kill_at[i : i + PARALLEL])
    left = [sorted(p.name for p in home.iterdir()) for home in homes]
    restarts: list[str] = []
    for i in range(0, len(homes), PARALLEL):
        restarts += run_batch(homes[i : i + PARALLEL], [None] * len(homes[i : i + PARALLEL]))
    return {
        "uninterrupted": {"outcomes": first, "wall_s": full_s, "registry_s": registry_s},
        "kill_at_s": kill_at,
        "kills": kills,
        "left_by_kill": left,
        "restarts": restarts,
        "results": [
            json.loads((h / "start.json").read_text()) if (h / "start.json").is_file() else None for h in homes
        ],
        "errors": [(h / "start.err").read_text() if (h / "start.err").is_file() else None for h in homes],
    }


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
