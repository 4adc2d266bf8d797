"""What the distill job reports on rank 0: its MLflow run, lineage.json, learning_ids.txt and metrics.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from distill.data import Data
from distill.manifest import Manifest
from distill.tracking import MlflowTracker, Tracker
from streams import durable

METRICS = "metrics.json"


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Writes atomically and durably, so a reader never sees half a metrics file, even after a crash."""
    durable.write_text(path, json.dumps(payload, indent=2, sort_keys=True))


def open_run(manifest: Manifest, data: Data, world_size: int, ds_config: str, zero_stage: int) -> Tracker:
    """Rank 0's start of the run: the tracker (MLflow when the manifest has a section for it), the run's
    parameters and lineage, and ``lineage.json`` and ``learning_ids.txt`` in the out dir."""
    out_dir = manifest.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    tracker = MlflowTracker(manifest.mlflow) if manifest.mlflow is not None else Tracker()
    tracker.log_params(
        {
            "round_id": manifest.round_id,
            "world_size": world_size,
            "ds_config": ds_config,
            "zero_stage": zero_stage,
            "skills": ",".join(manifest.skills),
            "examples": data.report.kept,
            "replay_examples": len(data.replay),
            "agents": len(data.sampler.agents),
            **manifest.distill.model_dump(),
        }
    )
    lineage = data.lineage
    if manifest.lineage is not None:
        tracker.log_params(
            {
                "learnings": lineage["learnings"],
                "after_seq": lineage["after_seq"],
                "upto_seq": lineage["upto_seq"],
                "learning_ids_sha256": lineage["learning_ids_sha256"],
            }
        )
    else:
        tracker.log_params({"learnings": lineage["learnings"]})
    write_json(out_dir / "lineage.json", lineage)
    (out_dir / "learning_ids.txt").write_text(data.learning_ids)
    tracker.log_artifact(out_dir / "lineage.json")
    tracker.log_artifact(out_dir / "learning_ids.txt")
    skipped = dict(data.report.skipped)
    print(f"distill: {data.report.kept} examples from {len(data.sampler.agents)} agents, skipped {skipped}")
    if data.report.teacher_skipped:
        print(f"distill: teacher_skipped {dict(data.report.teacher_skipped)}", flush=True)
    return tracker


def close_run(tracker: Tracker, out_dir: Path, metrics: dict[str, Any]) -> None:
    """Writes ``metrics.json``, logs its figures and the file itself to the tracker, and ends the run."""
    write_json(out_dir / METRICS, metrics)
    tracker.log_metrics({f"eval_{name}": acc for name, acc in metrics["eval"].items()})
    tracker.log_metrics({f"base_eval_{name}": acc for name, acc in metrics["base_eval"].items()})
    tracker.log_metrics({f"teacher_skipped_{k}": n for k, n in metrics["teacher_skipped"].items()})
    tracker.log_metrics({"final_loss": metrics["final_loss"] or 0.0, "tokens_per_s": metrics["tokens_per_s"] or 0.0})
    tracker.log_artifact(out_dir / METRICS)
    tracker.close()
