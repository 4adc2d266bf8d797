"""A round through a real ``mlflow server``: backend store on PostgreSQL (a cluster of the test's own), artifacts on
S3 (``moto_server``). The distill job logs its run there, the gate reads its figures, the core is registered
there with its files in the bucket, and a client (an agent's way in) downloads and verifies it."""

from __future__ import annotations

import random
from pathlib import Path

from agents.core_fetch import s3_client
from agents.model import WEIGHTS_FILE, build_core, file_sha256, save_core
from agents.skills import BUILTIN_SKILLS
from agents.skills.splits import sample_task
from hive.config import DistillSettings, GateSettings, HiveSettings, MlflowSettings
from hive.cores.files import core_dir, existing_core
from hive.cores.registry import CHAMPION, CoreRegistry
from hive.rounds.book import RoundBook
from hive.rounds.open import open_round
from hive.rounds.run import run_round
from hive.store.parquet import ParquetLearningStore

from factories import make_learning


def test_a_round_registers_gates_and_releases_through_an_mlflow_server(
    mlflow_server: str, s3_endpoint: str, tmp_path: Path
) -> None:
    settings = HiveSettings(
        home=tmp_path / "hive",
        mlflow=MlflowSettings(tracking_uri=mlflow_server),
        distill=DistillSettings(nproc=2, steps=10, batch_size=16, warmup_steps=1, replay_size=0, timeout_s=600),
        # The gate's verdict is not the question here (10 steps teach little); that it runs on the server's figures is.
        gate=GateSettings(eval_tasks=10, max_regression=1.0, eval_seed=10_000),
    )
    registry = CoreRegistry.from_settings(settings)
    assert registry.artifact_root is None  # the server decides: its --artifacts-destination
    v0 = core_dir(settings, 0)
    registry.log_core(v0, 0, save_core(build_core(seed=0), v0))
    registry.set_alias(CHAMPION, 0)

    rng, add = random.Random(0), BUILTIN_SKILLS["add"]
    learnings = []
    for i in range(64):
        prompt, answer = sample_task(add, rng, "train")
        learnings.append(make_learning("agent-1", "add", i, prompt=prompt, completion=answer, reward=1.0))
    book = RoundBook(settings.rounds_dir)
    with ParquetLearningStore(settings.store_dir) as store:
        store.append(learnings, {})
        record = open_round(settings, store, book, existing_core(settings, 0), registry.experiment)
    record = run_round(settings, book, registry, record)

    assert record.state == "released", (record.error, record.gate_reasons)
    assert set(record.eval) == {"add"} and set(record.champion_eval) == {"add"}
    assert [row["core_version"] for row in registry.list_versions()] == [0, 1]
    # The distill job's run is on the server, with its losses.
    client = registry._client()
    [run] = client.search_runs([registry.experiment_id()], filter_string=f"tags.mlflow.runName = '{record.id}'")
    assert "loss" in run.data.metrics
    # Both cores' files are in the bucket, not under HIVE_HOME.
    keys = [o["Key"] for o in s3_client(s3_endpoint).list_objects_v2(Bucket="mlflow-artifacts")["Contents"]]
    assert sum(key.endswith(f"core/{WEIGHTS_FILE}") for key in keys) == 2, keys
    assert not (settings.home / "mlartifacts").exists() and not settings.mlflow_db.exists()
    # Downloaded through the server and checked against the registered sha256, as an agent would.
    fetched = registry.download(1, tmp_path / "agent")
    assert file_sha256(fetched / WEIGHTS_FILE) == file_sha256(core_dir(settings, 1) / WEIGHTS_FILE)
