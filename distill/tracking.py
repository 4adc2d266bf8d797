"""Where the distill job's run is tracked: rank 0's MLflow run, or a no-op for the other ranks."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from distill.manifest import MlflowParams


class Tracker:
    """A no-op run: what every rank but 0 gets, and rank 0 when the manifest has no MLflow section."""

    run_id: str | None = None

    def log_params(self, params: dict[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        pass

    def flush(self) -> None:
        pass

    def log_artifact(self, path: Path) -> None:
        pass

    def close(self) -> None:
        pass


class MlflowTracker(Tracker):
    """Rank 0's MLflow run; per-step metrics are buffered and written in batches, one per progress line."""

    def __init__(self, settings: MlflowParams) -> None:
        # mlflow is imported here, not at module level: an agent process must start without it.
        import mlflow
        from mlflow.tracking import MlflowClient

        self._mlflow = mlflow
        mlflow.set_tracking_uri(settings.tracking_uri)
        mlflow.set_experiment(settings.experiment)
        self._run = mlflow.start_run(run_name=settings.run_name)
        self.run_id = self._run.info.run_id
        self._client = MlflowClient(settings.tracking_uri)
        self._pending: list[Any] = []

    def log_params(self, params: dict[str, Any]) -> None:
        self._mlflow.log_params(params)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._pending.extend(Metric(key, float(value), now, step or 0) for key, value in metrics.items())

    def flush(self) -> None:
        # log_batch takes at most 1000 metrics per call.
        while self._pending:
            chunk, self._pending = self._pending[:1000], self._pending[1000:]
            self._client.log_batch(self._run.info.run_id, metrics=chunk)

    def log_artifact(self, path: Path) -> None:
        self._mlflow.log_artifact(str(path))

    def close(self) -> None:
        self.flush()
        self._mlflow.end_run()
