"""Kafka connection settings, read once from ``HIVE_KAFKA_*`` variables."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams import topics

# The embedded broker's storage engines: Tansu 0.6 in the wheel has in-memory and S3 storage compiled in (sqlite://
# is refused with FeatureNotEnabled).
MEMORY_STORAGE = "memory://tansu/"
STORAGE_SCHEMES = ("memory://", "s3://")

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class KafkaSettings(BaseSettings):
    """How to reach the broker. ``bootstrap`` empty means: start the embedded broker.

    ``security_protocol`` is the listener's: ``SSL`` and ``SASL_SSL`` speak TLS (``ssl_cafile`` is the CA that
    signed the brokers' certificates, the system's CAs when unset; ``ssl_certfile`` and ``ssl_keyfile`` together
    are the client's certificate for mutual TLS), ``SASL_PLAINTEXT`` and ``SASL_SSL`` log in with ``sasl_mechanism``
    as ``sasl_username``. A setting the protocol does not use is refused, not ignored: it means a mistake.
    """

    model_config = SettingsConfigDict(env_prefix="HIVE_KAFKA_", extra="ignore", hide_input_in_errors=True)

    bootstrap: str = ""
    # Where the embedded broker (bootstrap empty) keeps its data: in memory (lost when it stops), or s3://BUCKET/,
    # which survives a restart, even kill -9; Tansu reads the AWS_* variables (docs/operator-guide.md).
    embedded_storage: str = MEMORY_STORAGE
    # The embedded broker's group join waits about half the session timeout; kafka-python's
    # default of 45 s makes each join take ~22 s (measured with Tansu 0.6 and kafka-python 3.0), so keep it low.
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 2000
    request_timeout_ms: int = 15000
    max_message_bytes: int = 1_000_000
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_key_password: SecretStr | None = None
    # Off only for a broker reached by an address its certificate does not name; the CA is still checked.
    ssl_check_hostname: bool = True
    # How the hive creates its topics on a real cluster (streams.kafka.topic_plan; `hive topics plan` prints it):
    # replicas per partition (None: the broker's default), min.insync.replicas on every topic, more partitions
    # for hive.learnings, and topic configs (retention.ms, ...) per topic over the hive's own.
    replication_factor: int | None = Field(default=None, ge=1)
    min_insync_replicas: int | None = Field(default=None, ge=1)
    topic_partitions: dict[str, int] = Field(default_factory=dict)
    topic_configs: dict[str, dict[str, str]] = Field(default_factory=dict)

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    @model_validator(mode="after")
    def _consistent(self) -> KafkaSettings:
        protocol = self.security_protocol
        sasl: dict[str, object] = {"sasl_mechanism": self.sasl_mechanism, "sasl_username": self.sasl_username}
        sasl["sasl_password"] = self.sasl_password
        tls: dict[str, object] = {"ssl_cafile": self.ssl_cafile, "ssl_keyfile": self.ssl_keyfile}
        tls |= {"ssl_certfile": self.ssl_certfile, "ssl_key_password": self.ssl_key_password}
        if self.uses_sasl and (missing := _variables(sasl, lambda value: not value)):
            raise ValueError(f"security_protocol {protocol} needs {missing}")
        if not self.uses_sasl and (given := _variables(sasl, lambda value: value is not None)):
            raise ValueError(f"{given} given, but security_protocol {protocol} has no SASL")
        if not self.uses_tls and (given := _variables(tls, lambda value: value is not None)):
            raise ValueError(f"{given} given, but security_protocol {protocol} has no TLS")
        if not self.embedded_storage.startswith(STORAGE_SCHEMES):
            raise ValueError(f"HIVE_KAFKA_EMBEDDED_STORAGE {self.embedded_storage!r} is neither memory:// nor s3://")
        if not self.bootstrap and protocol != "PLAINTEXT":
            raise ValueError(
                f"security_protocol {protocol} needs HIVE_KAFKA_BOOTSTRAP: without it the hive starts its embedded "
                "broker, which speaks PLAINTEXT only"
            )
        if self.replication_factor and self.min_insync_replicas and self.min_insync_replicas > self.replication_factor:
            raise ValueError(
                f"HIVE_KAFKA_MIN_INSYNC_REPLICAS {self.min_insync_replicas} is above HIVE_KAFKA_REPLICATION_FACTOR "
                f"{self.replication_factor}: no write could ever succeed"
            )
        unknown = sorted((set(self.topic_partitions) | set(self.topic_configs)) - set(topics.ALL_TOPICS))
        if unknown:
            raise ValueError(f"{', '.join(unknown)}: not a hive topic ({', '.join(topics.ALL_TOPICS)})")
        ordered = sorted(set(self.topic_partitions) & {topics.CORE, topics.FLEET})
        if ordered:
            raise ValueError(
                f"{', '.join(ordered)} keep one partition: releases and heartbeats are read in order from partition 0"
            )
        if any(count < 1 for count in self.topic_partitions.values()):
            raise ValueError("HIVE_KAFKA_TOPIC_PARTITIONS: a topic has at least one partition")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("mutual TLS needs both HIVE_KAFKA_SSL_CERTFILE and HIVE_KAFKA_SSL_KEYFILE")
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"HIVE_KAFKA_{name.upper()} {path} is not a file")
        return self


def _variables(settings: dict[str, object], chosen: Callable[[object], bool]) -> str:
    """The environment variables of the ``chosen`` settings, for a message."""
    return ", ".join(f"HIVE_KAFKA_{name.upper()}" for name, value in settings.items() if chosen(value))
