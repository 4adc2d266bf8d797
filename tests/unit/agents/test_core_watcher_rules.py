"""Which release an agent runs: the newest trusted one in topic order that names no agent or names this one."""

from __future__ import annotations

import pytest

from agents.core_updates import CoreWatcher, applies_to
from agents.release_trust import INVALID, UNSIGNED, ReleaseTrust
from streams.codec import DecodeError, decode, encode
from streams.config import KafkaSettings
from streams.events import CoreRelease

from factories import ReleaseSigner

KAFKA = KafkaSettings(bootstrap="127.0.0.1:1")  # never contacted: the follower is not started
SIGNER = ReleaseSigner()


def _release(version: int, targets: list[str] | None = None, sha: str = "a") -> CoreRelease:
    """A release as the hive publishes it: each one numbered after the last, and signed."""
    release = CoreRelease(version=version, model_uri=f"file:///cores/v{version}", sha256=sha * 64, targets=targets)
    return SIGNER.sign(release)


def _watcher(agent_id: str) -> CoreWatcher:
    return CoreWatcher(KAFKA, agent_id, ReleaseTrust(SIGNER.pinned()))


def _watch(agent_id: str, releases: list[CoreRelease]) -> CoreRelease | None:
    watcher = _watcher(agent_id)
    for release in releases:
        watcher._offer(encode(release))  # what the follower hands over, in topic order
    return watcher.latest()


def test_a_fleet_release_applies_to_everyone_and_a_canary_only_to_its_targets() -> None:
    assert applies_to(_release(1), "agent-1")
    assert applies_to(_release(1, ["agent-1", "agent-2"]), "agent-2")
    assert not applies_to(_release(1, ["agent-1"]), "agent-10")
    assert not applies_to(_release(1, []), "agent-1")


def test_canary_then_promotion() -> None:
    topic = [_release(0), _release(1, ["agent-1"])]
    assert _watch("agent-1", topic) == topic[1]
    assert _watch("agent-2", topic) == topic[0]  # the canary is not for agent-2
    topic.append(_release(1))
    assert _watch("agent-1", topic) == topic[2]
    assert _watch("agent-2", topic) == topic[2]


def test_a_later_lower_version_wins_a_rollback() -> None:
    topic = [_release(0), _release(1), _release(0)]
    assert _watch("agent-1", topic) == topic[2]
    # A fleet release after a canary supersedes it for the canary agents too (here: a rollback).
    topic = [_release(1), _release(2, ["agent-1"]), _release(0)]
    assert _watch("agent-1", topic) == topic[2]
    # And a canary after a fleet release applies to its agents, whatever its version.
    topic = [_release(2), _release(1, ["agent-1"])]
    assert _watch("agent-1", topic) == topic[1]
    assert _watch("agent-2", topic) == topic[0]


def test_nothing_for_the_agent_and_invalid_records() -> None:
    assert _watch("agent-3", [_release(1, ["agent-1"])]) is None
    watcher = _watcher("agent-1")
    watcher._offer(b"not json")
    watcher._offer(encode(_release(4)))
    watcher._offer(b'{"schema_version": "1.0", "version": -1}')
    assert watcher.counts()[INVALID] == 2
    latest = watcher.latest()
    assert latest is not None and latest.version == 4


def test_a_release_from_an_older_hive_reads_as_a_fleet_release_but_is_refused_unsigned() -> None:
    # A 1.0 release has no "targets" (a fleet release), no sequence number and no signature.
    raw = b'{"schema_version": "1.0", "version": 3, "model_uri": "file:///c", "sha256": "' + b"b" * 64 + b'"}'
    old = decode(raw, CoreRelease, 1 << 20)
    assert old.targets is None and old.sequence is None
    watcher = _watcher("agent-1")
    watcher._offer(raw)
    assert watcher.latest() is None and watcher.counts()[UNSIGNED] == 1


def test_a_sequence_number_below_one_is_not_a_release() -> None:
    raw = encode(_release(1))
    assert b'"sequence":' in raw
    with pytest.raises(DecodeError):
        decode(raw.replace(b'"sequence":', b'"sequence":-'), CoreRelease, 1 << 20)
