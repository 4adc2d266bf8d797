"""``hive topics plan``: the topics the hive needs and how it would create them, for clusters managed by GitOps."""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from enum import StrEnum
from typing import Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from hive.cli.common import settings_or_exit
from streams.kafka import TopicSpec, topic_plan

app = typer.Typer(no_args_is_help=True, help="The hive's Kafka topics.")


class Output(StrEnum):
    table = "table"
    json = "json"
    strimzi = "strimzi"


# A Kubernetes resource name: lowercase alphanumerics and '-', at most 253 characters (DNS-1123 subdomain, no dots
# kept so that the name reads as the topic's).
_NOT_IN_NAME = re.compile(r"[^a-z0-9-]+")


def strimzi_topics(
    plan: list[TopicSpec], cluster: str, namespace: str | None, api_version: str
) -> list[dict[str, Any]]:
    """One Strimzi ``KafkaTopic`` per topic: the topic's own name in ``spec.topicName`` (its dots are no part of a
    resource name), the cluster in the ``strimzi.io/cluster`` label, configs as strings."""
    resources = []
    for spec in plan:
        metadata: dict[str, Any] = {
            "name": _NOT_IN_NAME.sub("-", spec.name.lower()).strip("-"),
            "labels": {"strimzi.io/cluster": cluster, "app.kubernetes.io/part-of": "hive-mind"},
        }
        if namespace:
            metadata["namespace"] = namespace
        body: dict[str, Any] = {"topicName": spec.name, "partitions": spec.partitions}
        if spec.replication_factor is not None:
            body["replicas"] = spec.replication_factor
        if spec.configs:
            body["config"] = dict(sorted(spec.configs.items()))
        resources.append(
            {"apiVersion": f"kafka.strimzi.io/{api_version}", "kind": "KafkaTopic", "metadata": metadata, "spec": body}
        )
    return resources


@app.command("plan")
def plan(
    output: Output = typer.Option(Output.table, "--output", "-o", help="table, json, or strimzi (KafkaTopic YAML)."),
    cluster: str = typer.Option("my-cluster", help="strimzi: the Kafka cluster's name (the strimzi.io/cluster label)."),
    namespace: str | None = typer.Option(None, help="strimzi: the namespace of the KafkaTopic resources."),
    api_version: str = typer.Option("v1", help="strimzi: kafka.strimzi.io API version (v1; v1beta2 before 0.49)."),
) -> None:
    """Print the topics the hive needs, with partitions, replication and configs, as `hive serve` would create them
    from HIVE_KAFKA_REPLICATION_FACTOR, HIVE_KAFKA_MIN_INSYNC_REPLICAS, HIVE_KAFKA_TOPIC_PARTITIONS and
    HIVE_KAFKA_TOPIC_CONFIGS. Reads no broker."""
    settings = settings_or_exit()
    topics = topic_plan(settings.kafka)
    if output is Output.json:
        typer.echo(json.dumps([asdict(spec) for spec in topics], indent=2))
        return
    if output is Output.strimzi:
        resources = strimzi_topics(topics, cluster, namespace, api_version)
        typer.echo(yaml.safe_dump_all(resources, sort_keys=False, explicit_start=True), nl=False)
        return
    table = Table("topic", "partitions", "replicas", "configs")
    for spec in topics:
        replicas = "broker default" if spec.replication_factor is None else str(spec.replication_factor)
        configs = ", ".join(f"{k}={v}" for k, v in sorted(spec.configs.items())) or "-"
        table.add_row(spec.name, str(spec.partitions), replicas, configs)
    Console(soft_wrap=False).print(table)
