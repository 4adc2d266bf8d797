"""Your own agent loop on the hive SDK, on one machine: ``python docs/examples/sdk_agent.py``."""

from __future__ import annotations

import secrets
import sys
import tempfile
import time
from pathlib import Path

from agents.config import AgentSettings
from agents.model import build_core, save_core
from agents.sdk import HiveAgent
from streams import topics
from streams.broker import EmbeddedBroker
from streams.codec import encode
from streams.config import KafkaSettings
from streams.events import CoreRelease
from streams.kafka import create_topics, make_producer, send_and_wait
from streams.release_signing import generate_private_key, public_key_pem, sign_release

# The hive's release key. A real hive makes its own (HIVE_HOME/release-key/release.pem) and writes the public half
# to HIVE_HOME/release-key/release.pub; agents pin that public key, and run only releases it signed.
HIVE_KEY = generate_private_key()


def release_core(kafka: KafkaSettings, cores: Path, version: int, sequence: int) -> None:
    """What the hive does after a round: save a core, then announce it on ``hive.core``, numbered and signed."""
    directory = cores / f"v{version}"
    sha = save_core(build_core(seed=version), directory)
    producer = make_producer(kafka)
    try:
        release = CoreRelease(version=version, model_uri=directory.resolve().as_uri(), sha256=sha, sequence=sequence)
        send_and_wait(producer, topics.CORE, b"core", encode(sign_release(release, HIVE_KEY)))
    finally:
        producer.close()


def make_key(key_dir: Path, agent_id: str) -> Path:
    """What an operator does once per agent: a random key (32 bytes; at least 16) in a file only its owner reads.
    The hive holds the same file in its key directory (HIVE_INGEST__AGENT_KEY_DIR) and, by default, refuses
    whatever an agent without a key sends."""
    key_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = key_dir / f"{agent_id}.key"
    path.touch(mode=0o600)
    path.write_text(secrets.token_hex(32) + "\n")
    return path


def run_agent(kafka: KafkaSettings, home: Path, cores: Path, key_file: Path, hive_key: Path) -> None:
    """The part a team writes: its own loop, calling the SDK."""
    # Every learning and heartbeat is signed with key_file (or set HIVE_AGENT_SIGNING_KEY_FILE), and only the
    # releases that the hive's key signed are run (HIVE_AGENT_HIVE_PUBLIC_KEY_FILE).
    settings = AgentSettings(
        agent_id="support-7", skill="capital", home=home, signing_key_file=key_file, hive_public_key_file=hive_key
    )
    with HiveAgent(settings, kafka) as agent:
        agent.on_new_core(lambda release: print(f"running core v{release.version}", file=sys.stderr))
        agent.wait_for_core(timeout_s=60)

        # Your framework's tasks and its judge; here two questions and their known answers.
        tasks = {"cap zorvia": "belmar", "cap quenta": "ostrel"}
        answers = agent.generate(list(tasks))
        learnings = [
            agent.record_feedback(prompt, answer, reward=float(answer == truth), correction=truth)
            for (prompt, truth), answer in zip(tasks.items(), answers, strict=True)
        ]
        learnings = agent.learn(learnings)  # one step on the verified answers; adds the teacher signals
        agent.publish(learnings)  # on disk now; sent in the background, kept until the broker acks
        agent.heartbeat("learning")  # the hive's fleet view: alive, which core, the counters (best effort)
        assert agent.flush(timeout_s=30), "the broker did not ack in time"
        counts = agent.counters()
        print(f"published {counts['published']} of {counts['spooled']} learnings", file=sys.stderr)
        assert counts["published"] == len(learnings)

        release_core(kafka, cores, version=1, sequence=2)  # the hive releases a newer core
        deadline = time.monotonic() + 30
        while agent.poll_core() is None:
            assert time.monotonic() < deadline, "core v1 never arrived"
            time.sleep(0.2)
        assert agent.core_version == 1


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        kafka = KafkaSettings(bootstrap=broker.bootstrap)
        create_topics(kafka)
        release_core(kafka, Path(tmp) / "cores", version=0, sequence=1)
        key_file = make_key(Path(tmp) / "keys", "support-7")
        hive_key = Path(tmp) / "release.pub"
        hive_key.write_bytes(public_key_pem(HIVE_KEY.public_key()))
        run_agent(kafka, Path(tmp) / "agents", Path(tmp) / "cores", key_file, hive_key)
    print("ok")


if __name__ == "__main__":
    main()
