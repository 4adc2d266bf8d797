"""How the hive creates its topics on a real cluster, and `hive topics plan`, which prints it (GitOps clusters)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

from hive.cli.app import app
from streams import kafka as streams_kafka
from streams import topics
from streams.config import KafkaSettings
from streams.kafka import DEFAULT_PARTITIONS, create_topics, topic_plan

runner = CliRunner()
PRODUCTION = {
    "replication_factor": 3,
    "min_insync_replicas": 2,
    "topic_partitions": {topics.LEARNINGS: 12},
    "topic_configs": {topics.LEARNINGS: {"retention.ms": "604800000"}, topics.CORE: {"retention.ms": "-1"}},
}


def test_by_default_the_broker_chooses_replication_and_only_the_core_is_compacted() -> None:
    plan = {spec.name: spec for spec in topic_plan(KafkaSettings(bootstrap="b:9092"))}
    assert {name: spec.partitions for name, spec in plan.items()} == DEFAULT_PARTITIONS
    assert all(spec.replication_factor is None for spec in plan.values())
    assert plan[topics.CORE].configs == {"cleanup.policy": "compact"}
    assert plan[topics.LEARNINGS].configs == {}


def test_production_settings_shape_every_topic() -> None:
    plan = {spec.name: spec for spec in topic_plan(KafkaSettings(bootstrap="b:9092", **PRODUCTION))}
    assert plan[topics.LEARNINGS].partitions == 12 and plan[topics.FLEET].partitions == 1
    assert {spec.replication_factor for spec in plan.values()} == {3}
    assert all(spec.configs["min.insync.replicas"] == "2" for spec in plan.values())
    assert plan[topics.LEARNINGS].configs["retention.ms"] == "604800000"
    assert plan[topics.CORE].configs == {"cleanup.policy": "compact", "retention.ms": "-1", "min.insync.replicas": "2"}


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"replication_factor": 2, "min_insync_replicas": 3}, "no write could ever succeed"),
        ({"topic_partitions": {"hive.learning": 8}}, "hive.learning: not a hive topic"),
        ({"topic_configs": {"other": {"retention.ms": "1"}}}, "other: not a hive topic"),
        ({"topic_partitions": {topics.CORE: 3}}, "hive.core keep one partition"),
        ({"topic_partitions": {topics.LEARNINGS: 0}}, "at least one partition"),
    ],
)
def test_a_topic_setting_that_cannot_work_is_refused(given: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        KafkaSettings(bootstrap="b:9092", **given)


def test_create_topics_asks_the_cluster_for_the_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: dict[str, Any] = {}

    class Admin:
        def create_topics(self, request: dict[str, Any], **_: Any) -> dict[str, Any]:
            asked.update(request)
            return {"topics": [{"name": name, "error_code": 0} for name in request]}

        def wait_for_topics(self, names: list[str], **_: Any) -> None: ...

        def describe_topics(self, names: list[str]) -> list[dict[str, Any]]:
            return [{"name": n, "partitions": [0] * asked[n]["num_partitions"]} for n in names]

        def close(self) -> None: ...

    monkeypatch.setattr(streams_kafka, "make_admin", lambda settings: Admin())
    create_topics(KafkaSettings(bootstrap="b:9092", **PRODUCTION))
    assert asked[topics.LEARNINGS] == {
        "num_partitions": 12,
        "replication_factor": 3,
        "configs": {"retention.ms": "604800000", "min.insync.replicas": "2"},
    }
    create_topics(KafkaSettings(bootstrap="b:9092"))
    assert asked[topics.FLEET] == {"num_partitions": 1, "replication_factor": -1}  # the broker's default


def _env(**values: Any) -> dict[str, str]:
    return {f"HIVE_KAFKA_{k.upper()}": json.dumps(v) if isinstance(v, dict) else str(v) for k, v in values.items()}


def test_topics_plan_prints_json_and_strimzi_kafkatopics() -> None:
    env = _env(**PRODUCTION)
    as_json = runner.invoke(app, ["topics", "plan", "-o", "json"], env=env)
    assert as_json.exit_code == 0, as_json.output
    assert {row["name"]: row["partitions"] for row in json.loads(as_json.stdout)}[topics.LEARNINGS] == 12

    strimzi = runner.invoke(
        app, ["topics", "plan", "-o", "strimzi", "--cluster", "prod", "--namespace", "kafka"], env=env
    )
    assert strimzi.exit_code == 0, strimzi.output
    resources = list(yaml.safe_load_all(strimzi.stdout))
    assert [r["spec"]["topicName"] for r in resources] == list(DEFAULT_PARTITIONS)
    for resource in resources:
        assert (resource["apiVersion"], resource["kind"]) == ("kafka.strimzi.io/v1", "KafkaTopic")
        metadata, spec = resource["metadata"], resource["spec"]
        # A Kubernetes resource name: the topic's dots cannot be in it, so spec.topicName carries the real name.
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", metadata["name"]), metadata["name"]
        assert metadata["labels"]["strimzi.io/cluster"] == "prod" and metadata["namespace"] == "kafka"
        assert spec["replicas"] == 3 and spec["partitions"] >= 1
        assert all(isinstance(v, str) for v in spec["config"].values())  # Kafka configs are strings
    older = runner.invoke(app, ["topics", "plan", "-o", "strimzi", "--api-version", "v1beta2"], env={})
    assert "apiVersion: kafka.strimzi.io/v1beta2" in older.stdout and "replicas" not in older.stdout

    bad = runner.invoke(app, ["topics", "plan"], env=_env(topic_partitions={topics.FLEET: 4}))
    assert bad.exit_code == 2 and "keep one partition" in bad.output
