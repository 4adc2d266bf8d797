"""A Node.js agent (kafkajs 2) publishes a signed learning from the schema's example file; the hive stores it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from pathlib import Path

from hive.config import HiveSettings, IngestSettings
from hive.ingest.ingestor import Ingestor
from hive.store.parquet import ParquetLearningStore
from streams.config import KafkaSettings
from streams.events import Learning
from streams.kafka import create_topics
from streams.signing import verify

ROOT = Path(__file__).resolve().parents[2]
INTEROP = ROOT / "tests" / "integration" / "kafkajs"
EXAMPLE = ROOT / "docs" / "schemas" / "learning.example.json"
DEADLINE_S = 60.0
KEY = bytes(range(100, 132))


def test_kafkajs_learning_from_the_example_is_stored(fresh_broker: str, tmp_path: Path) -> None:
    node = shutil.which("node")
    # Fail, not skip: a missing client would otherwise pass CI silently.
    assert node is not None, "node is not on PATH: install Node.js 18+ to run the interop test"
    assert (INTEROP / "node_modules" / "kafkajs").is_dir(), (
        f"{INTEROP / 'node_modules'} has no kafkajs: run `make setup` (it runs `npm ci` in tests/integration/kafkajs)"
    )
    kafka = KafkaSettings(bootstrap=fresh_broker)
    create_topics(kafka)
    # The example's agent has a key: its learning is stored only if the JavaScript signature verifies.
    ingest = IngestSettings(agent_keys={"agent-7": KEY.hex()}, allowed_agents=["agent-7"])  # type: ignore[dict-item]
    assert ingest.require_signatures  # the default: an unsigned learning would be dead-lettered
    settings = HiveSettings(home=tmp_path / "hive", kafka=kafka, ingest=ingest)
    with ParquetLearningStore(settings.store_dir) as store:
        ingestor = Ingestor(settings, store)
        stop = threading.Event()
        runner = threading.Thread(target=ingestor.run, args=(stop,), kwargs={"timeout_ms": 200})
        runner.start()
        try:
            env = {k: v for k, v in os.environ.items() if not k.startswith("HIVE_")}
            result = subprocess.run(
                [node, str(INTEROP / "publish.mjs"), "--key-hex", KEY.hex(), str(EXAMPLE)],
                env=env | {"HIVE_KAFKA_BOOTSTRAP": fresh_broker},
                capture_output=True,
                text=True,
                timeout=DEADLINE_S,
                check=False,
            )
            assert result.returncode == 0, f"publish.mjs failed ({result.returncode}):\n{result.stderr}"
            sent = json.loads(result.stdout)
            started = time.monotonic()
            while store.count() < 1 and time.monotonic() - started < DEADLINE_S:
                time.sleep(0.1)
            stored = store.read()
        finally:
            stop.set()
            runner.join(timeout=30)
    assert ingestor.totals.dead_lettered == 0, store_dead_letters(settings)
    assert len(stored) == 1, "the kafkajs learning was not stored"
    (learning,) = stored
    example = Learning.model_validate_json(EXAMPLE.read_text())
    assert learning.id == uuid.UUID(sent["id"]) != example.id
    unchanged = {"id", "created_at", "signature"}
    assert learning.model_dump(exclude=unchanged) == example.model_dump(exclude=unchanged)
    assert learning.teacher is not None and learning.teacher.k == 4
    assert learning.signature == sent["signature"] and verify(learning, KEY)
    assert ingestor.totals.unsigned == 0


def store_dead_letters(settings: HiveSettings) -> list[str]:
    with ParquetLearningStore(settings.store_dir, read_only=True) as store:
        return [f"{d.reason}: {d.detail}" for d in store.dead_letters()]
