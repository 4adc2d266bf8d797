"""Which release an agent runs: the newest in topic order that names no agent or names this one."""

from __future__ import annotations

from agents.core_updates import CoreWatcher, applies_to
from streams.codec import encode
from streams.config import KafkaSettings
from streams.events import CoreRelease

KAFKA = KafkaSettings(bootstrap="127.0.0.1:1")  # never contacted: the follower is not started


def _release(version: int, targets: list[str] | None = None, sha: str = "a") -> CoreRelease:
    return CoreRelease(version=version, model_uri=f"file:///cores/v{version}", sha256=sha * 64, targets=targets)


def _watch(agent_id: str, releases: list[CoreRelease]) -> CoreRelease | None:
    watcher = CoreWatcher(KAFKA, agent_id)
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
    watcher = CoreWatcher(KAFKA, "agent-1")
    watcher._offer(b"not json")
    watcher._offer(encode(_release(4)))
    watcher._offer(b'{"schema_version": "1.0", "version": -1}')
    assert watcher.rejected == 2
    latest = watcher.latest()
    assert latest is not None and latest.version == 4


def test_a_release_from_an_older_hive_has_no_targets() -> None:
    # A 1.0 release has no "targets": it is a fleet release.
    raw = b'{"schema_version": "1.0", "version": 3, "model_uri": "file:///c", "sha256": "' + b"b" * 64 + b'"}'
    latest = _watch_raw("agent-1", [raw])
    assert latest is not None and latest.version == 3 and latest.targets is None


def _watch_raw(agent_id: str, raws: list[bytes]) -> CoreRelease | None:
    watcher = CoreWatcher(KAFKA, agent_id)
    for raw in raws:
        watcher._offer(raw)
    return watcher.latest()
