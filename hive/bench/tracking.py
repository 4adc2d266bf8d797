"""Logs a benchmark's report and figures to MLflow, under HIVE_HOME like everything else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hive.config import HiveSettings
from hive.cores.registry import CoreRegistry


def log_bench_run(settings: HiveSettings, name: str, report: dict[str, Any], artifacts: list[Path]) -> str:
    """One MLflow run in the ``hive-bench`` experiment: the report's top-level numbers and the files."""
    # mlflow loads in seconds; only the bench commands that log pay for it.
    import mlflow

    registry = CoreRegistry(settings.mlflow_uri, experiment="hive-bench", artifact_root=settings.home / "mlartifacts")
    mlflow.set_tracking_uri(settings.mlflow_uri)
    with mlflow.start_run(experiment_id=registry.experiment_id(), run_name=f"bench-{name}") as run:
        numbers = {k: float(v) for k, v in report.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        mlflow.log_metrics(numbers)
        for path in artifacts:
            mlflow.log_artifact(str(path))
        return run.info.run_id
