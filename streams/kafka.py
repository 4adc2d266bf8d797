"""kafka-python wrappers: a safe producer, a manual-commit consumer, topic creation and a checked send."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka import errors as kafka_errors

from streams import topics
from streams.config import KafkaSettings

log = logging.getLogger(__name__)

# Room for the record batch framing, key and headers on top of the largest value we allow.
REQUEST_HEADROOM_BYTES = 64 * 1024

DEFAULT_PARTITIONS: dict[str, int] = {
    topics.LEARNINGS: 4,
    topics.LEARNINGS_DLQ: 1,
    topics.FLEET: 1,
    topics.CORE: 1,
}
# The broker may accept these without enforcing them (Tansu 0.6 does not compact); readers must
# not rely on compaction to find the latest release.
DEFAULT_TOPIC_CONFIGS: dict[str, dict[str, str]] = {
    topics.CORE: {"cleanup.policy": "compact"},
}

Headers = Sequence[tuple[str, bytes]]


def _servers(settings: KafkaSettings) -> list[str]:
    servers = [s.strip() for s in settings.bootstrap.split(",") if s.strip()]
    if not servers:
        raise ValueError("KafkaSettings.bootstrap is empty: start the embedded broker or set HIVE_KAFKA_BOOTSTRAP")
    return servers


def security_config(settings: KafkaSettings) -> dict[str, Any]:
    """The kafka-python settings of the listener's security (``KafkaSettings.security_protocol``): every producer,
    consumer and admin client the hive and its agents make carries them."""
    config: dict[str, Any] = {"security_protocol": settings.security_protocol}
    if settings.uses_sasl:
        # kafka-python names the login "sasl_plain_*" for SCRAM too.
        assert settings.sasl_password is not None  # KafkaSettings refuses SASL without one
        config |= {
            "sasl_mechanism": settings.sasl_mechanism,
            "sasl_plain_username": settings.sasl_username,
            "sasl_plain_password": settings.sasl_password.get_secret_value(),
        }
    if settings.uses_tls:
        password = settings.ssl_key_password
        config |= {
            "ssl_check_hostname": settings.ssl_check_hostname,
            "ssl_cafile": None if settings.ssl_cafile is None else str(settings.ssl_cafile),
            "ssl_certfile": None if settings.ssl_certfile is None else str(settings.ssl_certfile),
            "ssl_keyfile": None if settings.ssl_keyfile is None else str(settings.ssl_keyfile),
            "ssl_password": None if password is None else password.get_secret_value(),
        }
    return config


def make_producer(settings: KafkaSettings, **overrides: Any) -> KafkaProducer:
    """A producer that does not lose or duplicate on retry: acks from all replicas, idempotence on.

    Keys and values are bytes; encoding is the codec's job.
    """
    config: dict[str, Any] = {
        "bootstrap_servers": _servers(settings),
        # Spelled out although they are kafka-python 3's defaults: acks 0/1 or retries=0 silently
        # turn idempotence off (kafka-python 3 only warns), so an override must be a visible decision.
        "acks": "all",
        "enable_idempotence": True,
        "retries": 10,
        "max_in_flight_requests_per_connection": 5,
        "linger_ms": 5,
        "max_request_size": settings.max_message_bytes + REQUEST_HEADROOM_BYTES,
        "request_timeout_ms": settings.request_timeout_ms,
    } | security_config(settings)
    config.update(overrides)
    return KafkaProducer(**config)


class RenewableProducer:
    """A ``make_producer`` producer that its owner can make again, in place, for everyone holding this object.

    kafka-python's idempotent producer does not come back from a broker that lost its state: Tansu answers its
    InitProducerId with an unknown error, which kafka-python treats as fatal, and every later send fails. A
    long-running owner renews the producer after a failed send. It passes for a KafkaProducer: the calls made on
    it (``send``, ``flush``, ``close`` and the rest) go to the current one.
    """

    def __init__(self, settings: KafkaSettings, **overrides: Any) -> None:
        self._settings = settings
        self._overrides = overrides
        self._producer = make_producer(settings, **overrides)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._producer, name)

    def renew(self) -> None:
        """Closes the current producer (without waiting on what it holds: it failed) and makes a new one."""
        old, self._producer = self._producer, make_producer(self._settings, **self._overrides)
        old.close(timeout=0)


def make_consumer(
    settings: KafkaSettings,
    topics: list[str] | None = None,
    group_id: str | None = None,
    **overrides: Any,
) -> KafkaConsumer:
    """A consumer that never commits on its own: the caller commits after its work is durable.

    With ``topics`` it subscribes at once; pass ``None`` to call ``subscribe``/``assign`` yourself
    (for instance with a rebalance listener). Records come back as raw bytes.
    """
    config: dict[str, Any] = {
        "bootstrap_servers": _servers(settings),
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        # The embedded broker's group join waits about half the session timeout (measured with Tansu 0.6).
        "session_timeout_ms": settings.session_timeout_ms,
        "heartbeat_interval_ms": settings.heartbeat_interval_ms,
        "request_timeout_ms": settings.request_timeout_ms,
    } | security_config(settings)
    config.update(overrides)
    consumer = KafkaConsumer(**config)
    if topics:
        consumer.subscribe(topics)
    return consumer


def make_admin(settings: KafkaSettings) -> KafkaAdminClient:
    """An admin client on the same listener, with the same security, as the producers and consumers."""
    config = {"bootstrap_servers": _servers(settings), "request_timeout_ms": settings.request_timeout_ms}
    return KafkaAdminClient(**config, **security_config(settings))


@dataclass(frozen=True)
class TopicSpec:
    """A topic as the hive creates it: ``replication_factor`` None is the broker's default."""

    name: str
    partitions: int
    replication_factor: int | None
    configs: dict[str, str]


def topic_plan(
    settings: KafkaSettings,
    partitions: Mapping[str, int] | None = None,
    configs: Mapping[str, Mapping[str, str]] | None = None,
) -> list[TopicSpec]:
    """The topics ``create_topics`` makes: ``partitions`` (default ``DEFAULT_PARTITIONS``) and ``configs`` (default
    ``DEFAULT_TOPIC_CONFIGS``), with the settings' partition counts, topic configs, replication factor and
    ``min.insync.replicas`` over them."""
    partitions = dict(DEFAULT_PARTITIONS if partitions is None else partitions)
    configs = DEFAULT_TOPIC_CONFIGS if configs is None else configs
    plan = []
    for name, count in partitions.items():
        config = dict(configs.get(name, {})) | settings.topic_configs.get(name, {})
        if settings.min_insync_replicas is not None:
            config["min.insync.replicas"] = str(settings.min_insync_replicas)
        plan.append(TopicSpec(name, settings.topic_partitions.get(name, count), settings.replication_factor, config))
    return plan


def create_topics(
    settings: KafkaSettings,
    partitions: Mapping[str, int] | None = None,
    configs: Mapping[str, Mapping[str, str]] | None = None,
    timeout_s: float = 15.0,
) -> None:
    """Creates the topics of ``topic_plan`` if they are missing (an existing topic is fine) and waits until
    metadata shows them. An existing topic keeps its partition count and configs; a partition mismatch is logged,
    not changed.
    """
    plan = topic_plan(settings, partitions, configs)
    partitions = {spec.name: spec.partitions for spec in plan}
    request = {
        spec.name: {"num_partitions": spec.partitions, "replication_factor": spec.replication_factor or -1}
        | ({"configs": spec.configs} if spec.configs else {})
        for spec in plan
    }
    admin = make_admin(settings)
    try:
        result = admin.create_topics(request, timeout_ms=int(timeout_s * 1000), raise_errors=False)
        for topic in result["topics"]:
            error = kafka_errors.for_code(topic["error_code"])
            if error is kafka_errors.NoError or error is kafka_errors.TopicAlreadyExistsError:
                continue
            raise error(f"creating topic {topic['name']!r}: {topic.get('error_message') or error.__name__}")
        admin.wait_for_topics(list(partitions), timeout_ms=int(timeout_s * 1000))
        for described in admin.describe_topics(list(partitions)):
            have, want = len(described["partitions"]), partitions[described["name"]]
            if have != want:
                log.warning("topic %s has %d partitions, not the %d asked for", described["name"], have, want)
    finally:
        admin.close()


def send_and_wait(
    producer: KafkaProducer,
    topic: str,
    key: bytes | None,
    value: bytes | None,
    headers: Headers | None = None,
    timeout_s: float = 30.0,
    partition: int | None = None,
) -> Any:
    """Sends one record and blocks until the broker acknowledges it; raises the Kafka error if it fails.

    ``partition`` None lets the producer's partitioner choose (by key). Returns the ``RecordMetadata``
    (topic, partition, offset).
    """
    future = producer.send(topic, key=key, value=value, headers=list(headers) if headers else None, partition=partition)
    metadata = future.get(timeout=timeout_s)
    if metadata is None or metadata.offset < 0:
        raise kafka_errors.KafkaError(f"send to {topic!r} returned no offset: {metadata!r}")
    return metadata
