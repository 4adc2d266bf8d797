"""What one launch of several rounds refuses before it starts anything."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distill.launch import launch_jobs


def _manifest(root: Path, name: str, out: str | None = None, **distill) -> Path:
    directory = root / name
    directory.mkdir(parents=True)
    manifest = {
        "round_id": name,
        "base_core": str(root / "core_v0"),
        "out_dir": str(root / (out or name) / "out"),
        "learnings": str(directory / "learnings.jsonl"),
        "skills": ["capital"],
        "distill": {"nproc": 2, "ds_config": "zero2_cpu.yaml", **distill},
    }
    path = directory / "manifest.json"
    path.write_text(json.dumps(manifest))
    return path


def _nothing_ran(root: Path) -> bool:
    return not list(root.rglob("distill.log"))


def test_rounds_that_need_different_ranks_are_refused(tmp_path: Path) -> None:
    paths = [_manifest(tmp_path, "a"), _manifest(tmp_path, "b", nproc=1)]
    with pytest.raises(ValueError, match="one launch runs one of each"):
        launch_jobs(paths)
    assert _nothing_ran(tmp_path)


def test_rounds_with_different_deepspeed_configs_are_refused(tmp_path: Path) -> None:
    paths = [_manifest(tmp_path, "a"), _manifest(tmp_path, "b", ds_config="zero3_cpu.yaml")]
    with pytest.raises(ValueError, match="one launch runs one of each"):
        launch_jobs(paths)
    assert _nothing_ran(tmp_path)


def test_two_rounds_writing_one_out_dir_are_refused(tmp_path: Path) -> None:
    paths = [_manifest(tmp_path, "a"), _manifest(tmp_path, "b", out="a")]
    with pytest.raises(ValueError, match="same out_dir"):
        launch_jobs(paths)
    assert _nothing_ran(tmp_path)


def test_no_rounds_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one manifest"):
        launch_jobs([])
