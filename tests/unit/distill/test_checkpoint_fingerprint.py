"""A checkpoint is resumed only by the run that wrote it: its fingerprint names the learnings, the replay, the
distill parameters, the adapter settings and the base core."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.model import CoreSize, build_core, save_core
from distill.checkpoint import FINGERPRINT, run_fingerprint, stale_checkpoint
from distill.data import Data
from distill.dataset import BalancedSampler, LoadReport
from distill.manifest import Manifest


@pytest.fixture(scope="module")
def cores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cores")
    save_core(build_core(CoreSize(width=32, layers=1), seed=0), root / "a")
    save_core(build_core(CoreSize(width=32, layers=1), seed=1), root / "b")
    return root / "a", root / "b"


def _manifest(base: Path, **over) -> Manifest:
    fields = {
        "round_id": "r0001",
        "base_core": base,
        "out_dir": base.parent / "out",
        "learnings": base.parent / "learnings.jsonl",
        "skills": ["capital"],
    }
    return Manifest.model_validate(fields | over)


def _data(ids: str = "a\nb\n", replay: list[str] | None = None) -> Data:
    return Data([], LoadReport(), BalancedSampler(["x"]), [], None, {}, ids, replay or [])


def _print(manifest: Manifest, data: Data | None = None, ds: str = "zero2_cpu.yaml", world: int = 2) -> dict:
    return run_fingerprint(manifest, data or _data(), ds, world)


def test_the_fingerprint_changes_with_whatever_the_training_depends_on(cores: tuple[Path, Path]) -> None:
    a, b = cores
    same = _print(_manifest(a))
    assert _print(_manifest(a)) == same
    # The timeout bounds a run; it changes nothing a run computes.
    assert _print(_manifest(a, distill={"timeout_s": 5})) == same
    others = {
        "learnings": _print(_manifest(a), _data("b\na\n")),
        "replay": _print(_manifest(a), _data(replay=["c"])),
        "params": _print(_manifest(a, distill={"lr": 1e-4})),
        "steps": _print(_manifest(a, distill={"steps": 401})),
        "adapters": _print(_manifest(a, adapters={"roots": ["/srv/agents"]})),
        "base core": _print(_manifest(b)),
        "ds config": _print(_manifest(a), ds="zero1_cpu.yaml"),
        "world size": _print(_manifest(a), world=1),
    }
    assert all(other["sha256"] != same["sha256"] for other in others.values())
    assert len({other["sha256"] for other in others.values()}) == len(others)


def test_a_checkpoint_is_stale_unless_it_records_this_runs_fingerprint(
    tmp_path: Path, cores: tuple[Path, Path]
) -> None:
    a, _ = cores
    mine = _print(_manifest(a))
    (tmp_path / FINGERPRINT).write_text(json.dumps(mine))
    assert stale_checkpoint(tmp_path, mine) is None

    other = _print(_manifest(a), _data("c\n"))
    reason = stale_checkpoint(tmp_path, other)
    assert reason is not None and "learning_ids_sha256" in reason and "distill" not in reason

    (tmp_path / FINGERPRINT).write_text("{torn")
    assert "cannot be read" in (stale_checkpoint(tmp_path, mine) or "")
    (tmp_path / FINGERPRINT).write_text("[]")
    assert "not a JSON object" in (stale_checkpoint(tmp_path, mine) or "")
    (tmp_path / FINGERPRINT).unlink()
    # A checkpoint from before fingerprints (or another tool) says nothing of its run: it is not resumed.
    assert "records no" in (stale_checkpoint(tmp_path, mine) or "")


def test_a_manifest_without_adapters_follows_no_claim_check(cores: tuple[Path, Path]) -> None:
    a, _ = cores
    assert _manifest(a, adapters=None).adapters.roots == []
    with pytest.raises(ValueError, match="absolute"):
        _manifest(a, adapters={"roots": ["relative/agents"]})
