"""Kafka security settings: checked as they are read, and handed to every kafka-python client the hive makes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from pydantic import ValidationError

from hive.config import HiveSettings
from streams import kafka as streams_kafka
from streams.config import KafkaSettings
from streams.kafka import make_admin, make_consumer, make_producer, security_config


@pytest.fixture
def pem(tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\n")  # only its existence is checked when settings are read
    return path


def test_plaintext_is_the_default_and_adds_nothing_else() -> None:
    assert security_config(KafkaSettings(bootstrap="b:9092")) == {"security_protocol": "PLAINTEXT"}


def test_sasl_ssl_scram_reaches_kafka_python_names_and_hides_the_password(pem: Path) -> None:
    settings = KafkaSettings(
        bootstrap="b:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="hive",
        sasl_password="s3cret-pass",  # type: ignore[arg-type]
        ssl_cafile=pem,
    )
    assert "s3cret-pass" not in repr(settings) and "s3cret-pass" not in str(settings.model_dump())
    config = security_config(settings)
    assert config == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "hive",
        "sasl_plain_password": "s3cret-pass",
        "ssl_check_hostname": True,
        "ssl_cafile": str(pem),
        "ssl_certfile": None,
        "ssl_keyfile": None,
        "ssl_password": None,
    }
    for client in (KafkaProducer, KafkaConsumer, KafkaAdminClient):  # every name is one kafka-python takes
        assert set(config) <= set(client.DEFAULT_CONFIG), client.__name__


def test_every_client_the_hive_makes_carries_the_security(monkeypatch: pytest.MonkeyPatch, pem: Path) -> None:
    made: dict[str, dict[str, Any]] = {}

    def fake(name: str):
        class Client:
            def __init__(self, *args: Any, **config: Any) -> None:
                made[name] = config

            def subscribe(self, topics: list[str]) -> None: ...

        return Client

    for name in ("KafkaProducer", "KafkaConsumer", "KafkaAdminClient"):
        monkeypatch.setattr(streams_kafka, name, fake(name))
    settings = KafkaSettings(
        bootstrap="b:9092",
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_username="agent-1",
        sasl_password="pw",  # type: ignore[arg-type]
    )
    make_producer(settings)
    make_consumer(settings, ["hive.core"], group_id=None)
    make_admin(settings)
    for name, config in made.items():
        assert config["security_protocol"] == "SASL_PLAINTEXT", name
        assert (config["sasl_mechanism"], config["sasl_plain_username"], config["sasl_plain_password"]) == (
            "PLAIN",
            "agent-1",
            "pw",
        ), name
    assert sorted(made) == ["KafkaAdminClient", "KafkaConsumer", "KafkaProducer"]


SASL_NO_PASSWORD = {"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "sasl_username": "u"}
REFUSED = [
    (SASL_NO_PASSWORD, "needs HIVE_KAFKA_SASL_PASSWORD"),
    ({"sasl_username": "u"}, "HIVE_KAFKA_SASL_USERNAME given, but security_protocol PLAINTEXT has no SASL"),
    ({"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "GSSAPI"}, "sasl_mechanism"),
    ({"security_protocol": "TLS"}, "security_protocol"),
    ({"ssl_check_hostname": False, "ssl_cafile": "CA"}, "HIVE_KAFKA_SSL_CAFILE given, but security_protocol PLAINTEXT"),
    ({"security_protocol": "SSL", "ssl_certfile": "CA"}, "mutual TLS needs both"),
    ({"security_protocol": "SSL", "ssl_cafile": "/nowhere/ca.pem"}, "SSL_CAFILE /nowhere/ca.pem is not a file"),
]


@pytest.mark.parametrize(("given", "message"), REFUSED)
def test_a_setting_that_cannot_work_is_refused_naming_it(given: dict[str, Any], message: str, pem: Path) -> None:
    given = {k: (pem if v == "CA" else v) for k, v in given.items()}
    with pytest.raises(ValidationError, match=message):
        KafkaSettings(bootstrap="b:9092", **given)


def test_the_embedded_broker_is_plaintext_only(pem: Path) -> None:
    with pytest.raises(ValidationError, match="needs HIVE_KAFKA_BOOTSTRAP"):
        KafkaSettings(bootstrap="", security_protocol="SSL", ssl_cafile=pem)


def test_the_variables_reach_the_settings_of_agents_and_of_the_hive(monkeypatch: pytest.MonkeyPatch, pem: Path) -> None:
    monkeypatch.setenv("HIVE_KAFKA_BOOTSTRAP", "b:9093")
    monkeypatch.setenv("HIVE_KAFKA_SECURITY_PROTOCOL", "SSL")
    monkeypatch.setenv("HIVE_KAFKA_SSL_CAFILE", str(pem))
    assert KafkaSettings().ssl_cafile == pem  # as an agent reads them
    assert HiveSettings().kafka.security_protocol == "SSL"  # and the hive
