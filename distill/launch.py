"""Runs a distill round under the DeepSpeed launcher in a subprocess, streaming its progress and log."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from distill.manifest import MANIFEST_MARKER, load_manifest
from streams.broker import free_port

PROGRESS_RE = re.compile(r"^progress step=(\d+)/(\d+) loss=(\S+)\s*$")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
TAIL_LINES = 60
# Opens each attempt's section of distill.log.
LOG_HEADER = "$ DS_ACCELERATOR=cpu "
# How long the launcher gets to stop its ranks on SIGTERM before the whole group is killed.
TERM_GRACE_S = 10.0


class DistillError(RuntimeError):
    """A round whose job failed, timed out or left no metrics; ``log_tail`` holds its last output lines."""

    def __init__(self, message: str, log_tail: str = "") -> None:
        super().__init__(f"{message}\n--- last lines of the distill log ---\n{log_tail}" if log_tail else message)
        self.log_tail = log_tail


class DistillCancelled(DistillError):
    """The caller's ``cancel`` event stopped the job; its checkpoints stay, nothing else is written."""


def build_command(
    manifest_paths: Sequence[Path | str], nproc: int, master_port: int, ds_config: Path | str
) -> list[str]:
    """The launcher command line for one job (one or several rounds, trained in turn by the same ranks); run it
    with ``DS_ACCELERATOR=cpu`` in the environment."""
    # The runner module rather than the `deepspeed` script: it works wherever the package is importable,
    # including interpreters whose scripts are not next to sys.executable.
    command = [
        sys.executable,
        "-m",
        "deepspeed.launcher.runner",
        "--num_accelerators",
        str(nproc),
        "--master_port",
        str(master_port),
        "--module",
        "distill.train",
    ]
    for path in manifest_paths:
        command += ["--manifest", str(Path(path).resolve())]
    return [*command, "--ds-config", str(ds_config)]


def master_ports(args: list[str]) -> list[int]:
    """The DeepSpeed master port named in a launcher's or rank's arguments (``--master_port[=]N``)."""
    ports = []
    for i, arg in enumerate(args):
        value = arg.split("=", 1)[1] if arg.startswith("--master_port=") else None
        if arg == "--master_port" and i + 1 < len(args):
            value = args[i + 1]
        if value is not None and value.isdigit():
            ports.append(int(value))
    return ports


def parse_progress(line: str) -> tuple[int, int, float] | None:
    """``(step, total, loss)`` from a ``progress step=N/M loss=X`` line, else None."""
    match = PROGRESS_RE.match(line.strip())
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2)), float(match.group(3))


def _kill_group(proc: subprocess.Popen) -> None:
    """Stops the launcher and every rank it started: SIGTERM to the group, then SIGKILL after a grace period."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=TERM_GRACE_S)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        proc.wait()


# DeepSpeed's CPU shared-memory allreduce names one buffer per rank after the master port
# (csrc/cpu/comm/shm.cpp) and never unlinks it: each 2-rank job left ~140 MB in /dev/shm.
SHM_DIR = Path("/dev/shm")
SHM_BUFFER = "deepspeed_allreduce_buffer_*_{port}_*"


def remove_shm_buffers(master_port: int) -> list[Path]:
    """Unlinks the shared-memory buffers of the job that used ``master_port``; returns what it removed.

    Call it once the job's ranks are gone: a live rank keeps its mapping, but a rank still starting
    would no longer find the buffer by name.
    """
    removed = []
    for path in SHM_DIR.glob(SHM_BUFFER.format(port=master_port)):
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _kill_on(cancel: threading.Event, done: threading.Event, proc: subprocess.Popen) -> None:
    """Kills the launcher's group once ``cancel`` is set, unless the job ended first (``done``)."""
    while not done.is_set():
        if cancel.wait(0.2):
            _kill_group(proc)
            return


def launch_env() -> dict[str, str]:
    """The environment of the DeepSpeed launcher and its ranks: this one's, plus what a CPU job needs."""
    env = dict(os.environ)
    env["DS_ACCELERATOR"] = "cpu"
    # Ranks print progress as it happens, not when a pipe buffer fills.
    env["PYTHONUNBUFFERED"] = "1"
    # DeepSpeed JIT-builds its CPU comm op under TORCH_EXTENSIONS_DIR, behind a lock file. The default is shared
    # by every Python environment of the user, so two environments rebuild it in turn, and a build killed half-way
    # leaves a lock that hangs every later job. One directory per environment confines both to that environment.
    env.setdefault("TORCH_EXTENSIONS_DIR", str(Path(sys.prefix) / "torch_extensions"))
    # The ranks import distill.train; make that work whatever the caller's working directory.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH")) if p)
    return env


def launch_job(
    manifest_path: Path | str,
    nproc: int | None = None,
    on_progress: Callable[[int, int, float], None] | None = None,
    timeout_s: float | None = None,
    cancel: threading.Event | None = None,
) -> dict[str, Any]:
    """Runs the round's distill job to completion and returns its metrics.json.

    ``nproc`` and ``timeout_s`` default to the manifest's. The full output is appended to ``distill.log``
    next to the round's out_dir, each attempt after a ``$ DS_ACCELERATOR=cpu <command>`` line. Raises
    DistillError, with the log tail, on a nonzero exit, a timeout or missing metrics. The launcher runs in
    its own process group, which is killed on a timeout, when ``cancel`` is set (DistillCancelled), and
    on any interruption of the caller (KeyboardInterrupt included), so no rank outlives the call.
    """
    return launch_jobs([manifest_path], nproc, on_progress, timeout_s, cancel)[0]


def launch_jobs(
    manifest_paths: Sequence[Path | str],
    nproc: int | None = None,
    on_progress: Callable[[int, int, float], None] | None = None,
    timeout_s: float | None = None,
    cancel: threading.Event | None = None,
) -> list[dict[str, Any]]:
    """Runs several rounds in one launch, in turn, in the same ranks, and returns their metrics.json in order.

    As ``launch_job`` for one round; here the rounds must agree on ``nproc`` and ``ds_config`` (the launch's), the
    timeout defaults to the sum of theirs, and each round's output goes to its own ``distill.log`` (the launcher's
    own lines to the first). One launch instead of one per round saves the launcher's and the ranks' start and
    exit, about 15 s on two CPU cores. A failure fails the launch: rounds already done keep their outputs.
    """
    if not manifest_paths:
        raise ValueError("launch_jobs needs at least one manifest")
    manifests = [load_manifest(Path(p)) for p in manifest_paths]
    first = manifests[0].distill
    for manifest in manifests[1:]:
        if (manifest.distill.nproc, manifest.distill.ds_config) != (first.nproc, first.ds_config):
            raise ValueError(
                f"round {manifest.round_id} asks for nproc {manifest.distill.nproc} and {manifest.distill.ds_config}, "
                f"round {manifests[0].round_id} for {first.nproc} and {first.ds_config}: one launch runs one of each"
            )
    out_dirs = [m.out_dir.resolve() for m in manifests]
    if len(set(out_dirs)) < len(out_dirs):
        raise ValueError("two rounds of one launch write the same out_dir: each would overwrite the other's core")
    nproc = nproc or first.nproc
    timeout = timeout_s or sum(m.distill.timeout_s for m in manifests)
    names = ", ".join(m.round_id for m in manifests)
    label = f"round {names}" if len(manifests) == 1 else f"rounds {names}"
    log_of = {str(Path(p).resolve()): m.log_path for p, m in zip(manifest_paths, manifests, strict=True)}
    for manifest in manifests:
        manifest.out_dir.parent.mkdir(parents=True, exist_ok=True)
    master_port = free_port()
    command = build_command(manifest_paths, nproc, master_port, first.ds_config_path())

    env = launch_env()

    tail: deque[str] = deque(maxlen=TAIL_LINES)
    timed_out = threading.Event()
    # Appended, not overwritten: a retried round keeps the log of the attempt that failed.
    logs = {path: path.open("a") for path in dict.fromkeys(log_of.values())}
    log = logs[manifests[0].log_path]
    try:
        for each in logs.values():
            each.write(f"{LOG_HEADER}{' '.join(command)}\n")
            each.flush()
        proc = subprocess.Popen(
            command,
            cwd=manifests[0].out_dir.parent,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,
        )

        def on_timeout() -> None:
            timed_out.set()
            _kill_group(proc)

        timer = threading.Timer(timeout, on_timeout)
        timer.daemon = True
        timer.start()
        done = threading.Event()
        if cancel is not None:
            watcher = threading.Thread(target=_kill_on, args=(cancel, done, proc), name="distill-cancel", daemon=True)
            watcher.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith(MANIFEST_MARKER):
                    log.flush()
                    log = logs.get(log_of.get(line[len(MANIFEST_MARKER) :].strip(), Path()), log)
                log.write(line)
                tail.append(line.rstrip("\n"))
                progress = parse_progress(line)
                if progress is not None:
                    log.flush()
                    if on_progress is not None:
                        on_progress(*progress)
            returncode = proc.wait()
        finally:
            # Reached with an exception too (KeyboardInterrupt, a failing callback): never leave ranks behind.
            done.set()
            timer.cancel()
            _kill_group(proc)
            remove_shm_buffers(master_port)
    finally:
        for each in logs.values():
            each.close()

    log_tail = "\n".join(tail)
    if cancel is not None and cancel.is_set():
        raise DistillCancelled(f"{label}: distill was cancelled", log_tail)
    if timed_out.is_set():
        raise DistillError(f"{label}: distill timed out after {timeout:.0f}s", log_tail)
    if returncode != 0:
        raise DistillError(f"{label}: distill exited with code {returncode}", log_tail)
    results = []
    for manifest in manifests:
        metrics_path = manifest.out_dir / "metrics.json"
        try:
            results.append(json.loads(metrics_path.read_text()))
        except (OSError, json.JSONDecodeError) as err:
            raise DistillError(f"round {manifest.round_id}: no readable {metrics_path}: {err}", log_tail) from err
    return results
