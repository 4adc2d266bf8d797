"""An agent runs only releases its pinned hive key signed, each newer than the last: the refusals are counted."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

import agents.release_trust as trust_module
from agents.core_updates import CoreWatcher
from agents.release_trust import (
    BAD_SIGNATURE,
    NO_KEY,
    REPLAYED,
    SEQUENCE_FILE,
    UNSIGNED,
    PinnedKeys,
    ReleaseTrust,
)
from streams.codec import encode
from streams.config import KafkaSettings
from streams.events import CoreRelease
from streams.release_signing import generate_private_key, public_key_pem, sign_release

from factories import ReleaseSigner

KAFKA = KafkaSettings(bootstrap="127.0.0.1:1")  # never contacted: the follower is not started


def _core(version: int, targets: list[str] | None = None) -> CoreRelease:
    return CoreRelease(version=version, model_uri=f"file:///cores/v{version}", sha256="a" * 64, targets=targets)


def _watcher(signer: ReleaseSigner, state: Path | None = None, agent_id: str = "agent-1") -> CoreWatcher:
    return CoreWatcher(KAFKA, agent_id, ReleaseTrust(signer.pinned(), state))


def _read(watcher: CoreWatcher, releases: list[CoreRelease]) -> CoreRelease | None:
    for release in releases:
        watcher._offer(encode(release))  # as the follower hands records over, in topic order
    return watcher.latest()


def _refused(watcher: CoreWatcher) -> dict[str, int]:
    return {reason: n for reason, n in watcher.counts().items() if n}


def test_unsigned_forged_tampered_and_replayed_releases_are_refused_and_counted() -> None:
    hive = ReleaseSigner()
    v1, v2 = hive.sign(_core(1)), hive.sign(_core(2))
    watcher = _watcher(hive)
    assert _read(watcher, [v1, v2]) == v2 and _refused(watcher) == {}
    # Whoever can write to hive.core, without the hive's key:
    unsigned = _core(9).model_copy(update={"sequence": 3})
    forged = ReleaseSigner()
    forged.sequence = 2
    tampered = hive.sign(_core(3)).model_copy(update={"model_uri": "file:///evil/v3"})
    assert _read(watcher, [unsigned, forged.sign(_core(9)), tampered, v1]) == v2
    assert _refused(watcher) == {UNSIGNED: 1, BAD_SIGNATURE: 2, REPLAYED: 1}
    # The hive's own next release still goes through.
    v3 = hive.sign(_core(3))
    assert _read(watcher, [v3]) == v3


def test_a_rollback_is_a_newer_release_of_an_old_version() -> None:
    hive = ReleaseSigner()
    v1, v2 = hive.sign(_core(1)), hive.sign(_core(2))
    watcher = _watcher(hive)
    back = hive.sign(_core(1))
    assert _read(watcher, [v1, v2, back]) == back and _refused(watcher) == {}
    # Replaying the old v2 release to undo the rollback is refused.
    assert _read(watcher, [v2]) == back and _refused(watcher) == {REPLAYED: 1}


def test_a_release_delivered_twice_is_neither_run_again_nor_counted() -> None:
    hive = ReleaseSigner()
    v1 = hive.sign(_core(1))
    watcher = _watcher(hive)
    assert _read(watcher, [v1, v1]) == v1 and _refused(watcher) == {}


def test_a_canary_for_other_agents_still_counts_in_the_sequence() -> None:
    hive = ReleaseSigner()
    v1, canary = hive.sign(_core(1)), hive.sign(_core(2, targets=["agent-2"]))
    watcher = _watcher(hive, agent_id="agent-1")
    assert _read(watcher, [v1, canary]) == v1
    # Re-sent with a new target list, the canary's signature fails.
    retargeted = canary.model_copy(update={"targets": ["agent-1"]})
    assert _read(watcher, [retargeted]) == v1 and _refused(watcher) == {BAD_SIGNATURE: 1}
    # Re-sent as it was after the hive's next release, it is a replay.
    v3 = hive.sign(_core(3))
    assert _read(watcher, [v3, canary]) == v3 and _refused(watcher) == {BAD_SIGNATURE: 1, REPLAYED: 1}


def test_a_restarted_agent_does_not_run_an_older_release_than_it_ever_admitted(tmp_path: Path) -> None:
    hive = ReleaseSigner()
    topic = [hive.sign(_core(v)) for v in (1, 2, 3)]
    assert _read(_watcher(hive, tmp_path), topic) == topic[2]
    assert json.loads((tmp_path / SEQUENCE_FILE).read_text()) == {"admitted": 3, "taken": 3}
    # A restart reads the same topic from its beginning: it ends on the same release, nothing counted.
    again = _watcher(hive, tmp_path)
    assert again.trust.floor == 3
    assert _read(again, topic[:2]) is None  # not caught up yet: the agent keeps the core it runs
    assert _read(again, topic[2:]) == topic[2] and _refused(again) == {}
    # A broker that lost its topic, refilled with the hive's old releases: the agent runs none of them.
    reset = _watcher(hive, tmp_path)
    assert _read(reset, topic[:2]) is None


def test_without_a_pinned_key_nothing_is_run_until_the_key_file_appears(tmp_path: Path) -> None:
    key = generate_private_key()
    path = tmp_path / "keys" / "release.pub"
    watcher = CoreWatcher(KAFKA, "agent-1", ReleaseTrust(PinnedKeys(path=path)))
    v1 = sign_release(_core(1).model_copy(update={"sequence": 1}), key)
    assert _read(watcher, [v1]) is None and _refused(watcher) == {NO_KEY: 1}
    # The hive writes its key on its first release; the agent reads it when it appears, and when it changes.
    path.parent.mkdir()
    path.write_bytes(public_key_pem(key.public_key()))
    v2 = sign_release(_core(2).model_copy(update={"sequence": 2}), key)
    assert _read(watcher, [v2]) == v2
    rotated = generate_private_key()
    path.write_bytes(public_key_pem(rotated.public_key()))
    v3 = sign_release(_core(3).model_copy(update={"sequence": 3}), key)
    assert _read(watcher, [v3]) == v2 and _refused(watcher) == {NO_KEY: 1, BAD_SIGNATURE: 1}
    path.write_text("not a key\n")
    v4 = sign_release(_core(4).model_copy(update={"sequence": 4}), rotated)
    assert _read(watcher, [v4]) == v2 and _refused(watcher) == {NO_KEY: 2, BAD_SIGNATURE: 1}


def test_a_refilled_topic_never_takes_the_agent_back_to_an_older_core(tmp_path: Path) -> None:
    hive = ReleaseSigner()
    v1, v2 = hive.sign(_core(1)), hive.sign(_core(2))
    canary = hive.sign(_core(3, targets=["agent-2"]))
    assert _read(_watcher(hive, tmp_path), [v1, v2, canary]) == v2
    # The topic emptied, then refilled with v1 by whoever holds it, then the hive's next release, a canary for
    # another agent: the reading catches up, but v1 is older than what this agent ran.
    later = hive.sign(_core(4, targets=["agent-2"]))
    restarted = _watcher(hive, tmp_path)
    assert _read(restarted, [v1, later]) is None and _refused(restarted) == {}
    assert json.loads((tmp_path / SEQUENCE_FILE).read_text()) == {"admitted": 4, "taken": 2}
    # A genuine newer fleet release is taken.
    v5 = hive.sign(_core(5))
    assert _read(restarted, [v5]) == v5


def test_a_topic_that_starts_over_in_a_running_agent_keeps_its_core_until_the_reading_catches_up() -> None:
    hive = ReleaseSigner()
    v1, v2 = hive.sign(_core(1)), hive.sign(_core(2))
    watcher = _watcher(hive)
    assert _read(watcher, [v1, v2]) == v2
    watcher._restart_reading()  # what the follower calls when offsets go backwards or the cluster id changes
    assert watcher.latest() is None  # the agent keeps running v2; nothing new to load
    assert _read(watcher, [v1]) is None  # an old release on the new topic is neither run nor a replay
    assert _read(watcher, [v2]) == v2 and _refused(watcher) == {}
    v3 = hive.sign(_core(3))
    assert _read(watcher, [v3]) == v3


@pytest.mark.parametrize("text", ["../../etc\n", "3\n", '{"admitted": -1, "taken": 0}', '{"admitted": 1}', "[1, 2]"])
def test_a_corrupt_sequence_file_stops_the_agent_at_startup(tmp_path: Path, text: str) -> None:
    (tmp_path / SEQUENCE_FILE).write_text(text)
    with pytest.raises(ValueError, match="not the release sequence marks"):
        ReleaseTrust(ReleaseSigner().pinned(), tmp_path)


def test_a_full_disk_admits_the_release_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def full(path: Path, text: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(trust_module.durable, "write_text", full)
    hive = ReleaseSigner()
    v1 = hive.sign(_core(1))
    with caplog.at_level(logging.ERROR, logger="agents.release_trust"):
        assert _read(_watcher(hive, tmp_path), [v1]) == v1
    assert "could not record release #1" in caplog.text and not (tmp_path / SEQUENCE_FILE).exists()
