"""A running round's progress: its steps and loss in progress.json, and an ETA from its pace."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROGRESS_FILE = "progress.json"
# How often a running round's progress file is rewritten.
PROGRESS_EVERY_S = 1.0
ProgressFn = Callable[[int, int, float], None]


class ProgressLog:
    """Records a running round's progress in ``progress.json`` (for ``hive round show`` and the dashboard),
    with an ETA from the pace since this process started the job, and passes each step on to ``forward``."""

    def __init__(self, path: Path, forward: ProgressFn | None = None) -> None:
        self.path = path
        self.forward = forward
        self._first: tuple[int, float] | None = None
        self._written = 0.0

    def __call__(self, step: int, total: int, loss: float) -> None:
        now = time.monotonic()
        if self._first is None:
            self._first = (step, now)
        eta = eta_s(self._first, step, total, now)
        if step >= total or now - self._written >= PROGRESS_EVERY_S:
            self._written = now
            payload = {"step": step, "total": total, "loss": loss, "eta_s": eta, "updated_at": time.time()}
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(payload))
            tmp.replace(self.path)
        if self.forward is not None:
            self.forward(step, total, loss)


def eta_s(first: tuple[int, float], step: int, total: int, now: float) -> float | None:
    """Seconds left at the pace since ``first`` (step, monotonic time); None before a step has passed."""
    done = step - first[0]
    if done <= 0:
        return None
    return (now - first[1]) / done * max(0, total - step)


def read_progress(round_dir: Path) -> dict[str, Any] | None:
    path = round_dir / PROGRESS_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError:
        # Replaced atomically, so a bad file is not a partial write; say so rather than show nothing.
        return {"error": f"unreadable {path}"}
