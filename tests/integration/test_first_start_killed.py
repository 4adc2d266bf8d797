"""A hive killed at any point of its first start starts again: the registry is created whole or not at all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from distill.launch import PROJECT_ROOT

RUNNER = Path(__file__).with_name("first_start_runner.py")


def test_a_first_start_killed_at_any_point_leaves_no_hive_or_a_whole_one(tmp_path: Path) -> None:
    env = os.environ | {"PYTHONPATH": str(PROJECT_ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(RUNNER), str(tmp_path)], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["uninterrupted"]["outcomes"] == ["finished", "finished"]
    # The kills must land inside the starts, or the test proves nothing.
    assert report["kills"].count("killed") >= len(report["kills"]) - 1, report
    # Each kill left no database or a whole one: never the half-migrated file every later start refused.
    errors = [error for error in report["errors"] if error]
    assert not errors, errors[0][-2000:]
    assert report["restarts"] == ["finished"] * len(report["kills"])
    for result in report["results"]:
        assert result["champion"] == 0
        assert result["versions"] == [0]  # v0 registered once, whatever the kill interrupted
        assert result["sha256"] == result["registered_sha256"]
