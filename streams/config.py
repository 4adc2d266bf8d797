"""Kafka connection settings, read once from ``HIVE_KAFKA_*`` variables."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class KafkaSettings(BaseSettings):
    """How to reach the broker. ``bootstrap`` empty means: start the embedded broker."""

    model_config = SettingsConfigDict(env_prefix="HIVE_KAFKA_", extra="ignore")

    bootstrap: str = ""
    # The embedded broker's group join waits about half the session timeout; kafka-python's
    # default of 45 s makes each join take ~22 s (measured with Tansu 0.6 and kafka-python 3.0), so keep it low.
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 2000
    request_timeout_ms: int = 15000
    max_message_bytes: int = 1_000_000
