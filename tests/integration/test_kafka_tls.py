"""Kafka over TLS: kafka-python's producer, consumer and admin client, and the kafkajs example, through a real TLS
terminator (Debian's stunnel4) in front of the embedded broker, whose advertised listener is stunnel's port, so
that every connection goes through TLS. Tansu 0.6 does not do TLS itself (FACTS.md); a wrong CA, a missing client
certificate under mutual TLS, and a client certificate of another CA are refused."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from kafka.errors import KafkaError
from tls import TestCA

from streams import topics
from streams.broker import HOST, EmbeddedBroker, free_port
from streams.config import KafkaSettings
from streams.kafka import create_topics, make_consumer, make_producer, send_and_wait

ROOT = Path(__file__).resolve().parents[2]
PUBLISH = ROOT / "tests" / "integration" / "kafkajs" / "publish.mjs"
EXAMPLE = ROOT / "docs" / "schemas" / "learning.example.json"


def _stunnel() -> str:
    found = shutil.which("stunnel4") or shutil.which("stunnel")
    # Fail, not skip: `make setup` installs it, and a missing terminator must not pass quietly.
    assert found is not None, "stunnel4 is not installed: run `make setup` (apt-get install stunnel4)"
    return found


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((HOST, port)) == 0


@contextmanager
def tls_broker(tmp_path: Path, ca: TestCA, client_ca: TestCA | None = None) -> Iterator[tuple[str, Path]]:
    """The embedded broker behind stunnel; yields the TLS ``host:port`` and stunnel's log. With ``client_ca``,
    stunnel requires a client certificate that CA signed (mutual TLS)."""
    tls_port = free_port()
    broker = EmbeddedBroker(log_path=tmp_path / "tansu.log", advertised_port=tls_port)
    broker.start()
    server = ca.issue("broker")
    log = tmp_path / "stunnel.log"
    conf = tmp_path / "stunnel.conf"
    lines = ["foreground = yes", "pid =", f"output = {log}", "debug = 5", "[kafka]"]
    lines += [f"accept = {HOST}:{tls_port}", f"connect = {broker.bootstrap}", f"cert = {server.cert}"]
    lines += [f"key = {server.key}"]
    if client_ca is not None:
        lines += [f"CAfile = {client_ca.cert}", "verifyChain = yes", "requireCert = yes"]
    conf.write_text("\n".join(lines) + "\n")
    proc = subprocess.Popen([_stunnel(), str(conf)], stdin=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while not _accepts(tls_port):
            assert proc.poll() is None, f"stunnel exited {proc.returncode}: {log.read_text(errors='replace')}"
            assert time.monotonic() < deadline, "stunnel did not listen within 15 s"
            time.sleep(0.05)
        yield f"{HOST}:{tls_port}", log
    finally:
        # Signalled by its pid only: other test runs may share the machine.
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        broker.stop()


def _settings(bootstrap: str, ca: Path, **given: Any) -> KafkaSettings:
    # Short limits: a refused handshake should fail the call in seconds, not after kafka-python's defaults.
    return KafkaSettings(bootstrap=bootstrap, security_protocol="SSL", ssl_cafile=ca, request_timeout_ms=5000, **given)


def _round_trip(settings: KafkaSettings) -> bytes:
    """Creates the topics (admin), sends one record (producer) and reads it back (consumer), all over TLS."""
    create_topics(settings)
    value = uuid.uuid4().bytes
    producer = make_producer(settings, max_block_ms=10_000)
    try:
        send_and_wait(producer, topics.FLEET, b"tls", value)
    finally:
        producer.close()
    return _read_back(settings, value)


def _read_back(settings: KafkaSettings, wanted: bytes, topic: str = topics.FLEET) -> bytes:
    consumer = make_consumer(settings, [topic], group_id=None, consumer_timeout_ms=500)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for record in consumer:
                if wanted in record.value:
                    return bytes(record.value)
        pytest.fail(f"the record did not come back from {topic} within 30 s")
    finally:
        consumer.close()


def test_kafka_python_over_tls_and_a_wrong_ca_refused(tmp_path: Path) -> None:
    ca, stranger = TestCA(tmp_path / "ca"), TestCA(tmp_path / "other-ca", name="another CA")
    with tls_broker(tmp_path, ca) as (bootstrap, log):
        assert len(_round_trip(_settings(bootstrap, ca.cert))) == 16
        assert "connection from" in log.read_text(errors="replace")  # the clients went through stunnel
        with pytest.raises(KafkaError):
            make_producer(_settings(bootstrap, stranger.cert), max_block_ms=5000)
        # Plaintext to the TLS port is no Kafka either.
        with pytest.raises(KafkaError):
            make_producer(KafkaSettings(bootstrap=bootstrap, request_timeout_ms=5000), max_block_ms=5000)


def test_mutual_tls_needs_a_client_certificate_the_broker_trusts(tmp_path: Path) -> None:
    ca, clients, stranger = TestCA(tmp_path / "ca"), TestCA(tmp_path / "clients"), TestCA(tmp_path / "stranger")
    ours, theirs = clients.issue("agent-1", client=True), stranger.issue("agent-x", client=True)
    with tls_broker(tmp_path, ca, client_ca=clients) as (bootstrap, _):
        with pytest.raises(KafkaError):
            make_producer(_settings(bootstrap, ca.cert), max_block_ms=5000)
        with pytest.raises(KafkaError):
            make_producer(
                _settings(bootstrap, ca.cert, ssl_certfile=theirs.cert, ssl_keyfile=theirs.key), max_block_ms=5000
            )
        mutual = _settings(bootstrap, ca.cert, ssl_certfile=ours.cert, ssl_keyfile=ours.key)
        assert len(_round_trip(mutual)) == 16


def test_the_kafkajs_example_publishes_over_tls_from_the_same_variables(tmp_path: Path) -> None:
    node = shutil.which("node")
    assert node is not None, "node is not on PATH: install Node.js 18+"
    ca = TestCA(tmp_path / "ca")
    with tls_broker(tmp_path, ca) as (bootstrap, _):
        settings = _settings(bootstrap, ca.cert)
        create_topics(settings)
        env = {k: v for k, v in os.environ.items() if not k.startswith("HIVE_")}
        env |= {"HIVE_KAFKA_BOOTSTRAP": bootstrap, "HIVE_KAFKA_SECURITY_PROTOCOL": "SSL"}
        refused = subprocess.run(
            [node, str(PUBLISH), str(EXAMPLE)], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert refused.returncode != 0, "kafkajs trusted a broker certificate no CA it was given had signed"
        done = subprocess.run(
            [node, str(PUBLISH), str(EXAMPLE)],
            env=env | {"HIVE_KAFKA_SSL_CAFILE": str(ca.cert)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        sent = json.loads(done.stdout)
        assert sent["id"].encode() in _read_back(settings, sent["id"].encode(), topics.LEARNINGS)
