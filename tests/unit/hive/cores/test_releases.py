"""Release control on a real MLflow (SQLite) with a fake producer: aliases, history, rollback, canaries, the CLI."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from agents.model import WEIGHTS_FILE, CoreSize, build_core, save_core
from hive.cli.app import app
from hive.config import HiveSettings
from hive.cores.files import core_dir
from hive.cores.registry import CoreIntegrityError, CoreRegistry, UnknownVersionError
from hive.cores.release import (
    CANARY_KEY,
    FLEET_KEY,
    ReleaseError,
    release_core,
    rollback,
    round_release,
)
from hive.cores.release_history import champion_stack, history_path, read_history
from hive.fleet import FleetView
from hive.rounds.book import RoundBook, RoundRecord
from hive.views import cores_json, fleet_json
from streams import topics
from streams.codec import decode
from streams.events import CoreRelease, Heartbeat

runner = CliRunner()
VERSIONS = (0, 1, 2)


@dataclass
class _Metadata:
    topic: str
    partition: int
    offset: int


class _Future:
    def __init__(self, metadata: _Metadata) -> None:
        self.metadata = metadata

    def get(self, timeout: float | None = None) -> _Metadata:
        return self.metadata


class FakeProducer:
    """Records what was sent, as a broker with one partition would, with offsets."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, int | None]] = []

    def send(self, topic: str, key=None, value=None, headers=None, partition=None) -> _Future:
        self.sent.append((topic, key, value, partition))
        return _Future(_Metadata(topic, partition or 0, len(self.sent) - 1))

    def releases(self) -> list[CoreRelease]:
        return [decode(value, CoreRelease, 1_000_000) for _, _, value, _ in self.sent if value is not None]


@pytest.fixture(scope="module")
def template_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A hive home with cores v0, v1 and v2 registered and no alias set; each test copies it."""
    home = tmp_path_factory.mktemp("template") / "home"
    settings = HiveSettings(home=home)
    registry = CoreRegistry.from_settings(settings)
    for version in VERSIONS:
        directory = core_dir(settings, version)
        sha = save_core(build_core(CoreSize(), seed=version), directory)
        registry.log_core(directory, version, sha)
    return home


@pytest.fixture
def hive(template_home: Path, tmp_path: Path) -> tuple[HiveSettings, CoreRegistry]:
    home = tmp_path / "home"
    shutil.copytree(template_home, home)
    settings = HiveSettings(home=home)
    return settings, CoreRegistry.from_settings(settings)


def _aliases(registry: CoreRegistry) -> dict[str, int | None]:
    return {alias: registry.alias_version(alias) for alias in ("champion", "previous", "canary")}


def test_champion_stack_replays_promotions_and_rollbacks() -> None:
    def entry(action: str, version: int, before: int | None = None) -> dict[str, Any]:
        return {"action": action, "version": version, "previous_champion": before}

    assert champion_stack([]) == []
    # The champion before the history began (v0, set by the service) seeds the stack.
    assert champion_stack([entry("round", 1, 0)]) == [0, 1]
    history = [entry("promote", 0), entry("round", 1, 0), entry("canary", 2, 1), entry("promote", 2, 1)]
    assert champion_stack(history) == [0, 1, 2]
    assert champion_stack([*history, entry("promote", 2, 2)]) == [0, 1, 2]  # a re-release changes nothing
    assert champion_stack([*history, entry("rollback", 1, 2)]) == [0, 1]
    assert champion_stack([*history, entry("rollback", 1, 2), entry("rollback", 0, 1)]) == [0]
    # Promoting an old version again is a new step: rolling back undoes it.
    assert champion_stack([*history, entry("promote", 0, 2)]) == [0, 1, 2, 0]


def test_a_round_releases_its_core_to_the_fleet_with_its_id_and_figures(
    hive: tuple[HiveSettings, CoreRegistry],
) -> None:
    settings, registry = hive
    producer = FakeProducer()
    release_core(settings, registry, producer, 0)
    record = RoundRecord(
        id="r0001", state="distilling", base_version=0, after_seq=0, upto_seq=4, learnings=4, per_agent={}, skills=[]
    )
    record.eval = {"add": 0.75}
    round_release(settings, registry, producer)(1, record)
    assert _aliases(registry) == {"champion": 1, "previous": 0, "canary": None}
    release = producer.releases()[-1]
    assert (release.version, release.targets, release.round_id, release.gate) == (1, None, "r0001", {"add": 0.75})
    assert [(e["action"], e["version"], e["round_id"]) for e in read_history(settings)][-1] == ("round", 1, "r0001")


def test_promote_canary_promote_and_roll_back_twice(hive: tuple[HiveSettings, CoreRegistry]) -> None:
    settings, registry = hive
    producer = FakeProducer()

    plan = release_core(settings, registry, producer, 0)
    assert (plan.champion_before, plan.champion_after, plan.previous_after) == (None, 0, None)
    assert _aliases(registry) == {"champion": 0, "previous": None, "canary": None}

    release_core(settings, registry, producer, 1, round_id="r0001", gate={"add": 0.9}, action="round")
    assert _aliases(registry) == {"champion": 1, "previous": 0, "canary": None}

    plan = release_core(settings, registry, producer, 2, canary=["agent-1", "agent-2", "agent-1"])
    assert plan.action == "canary" and plan.targets == ["agent-1", "agent-2"]
    assert _aliases(registry) == {"champion": 1, "previous": 0, "canary": 2}

    release_core(settings, registry, producer, 2)
    assert _aliases(registry) == {"champion": 2, "previous": 1, "canary": None}  # the canary is over
    release_core(settings, registry, producer, 2)  # idempotent: published again, aliases unchanged
    assert _aliases(registry) == {"champion": 2, "previous": 1, "canary": None}

    plan = rollback(settings, registry, producer)
    assert (plan.action, plan.version, plan.champion_before, plan.previous_after) == ("rollback", 1, 2, 0)
    assert _aliases(registry) == {"champion": 1, "previous": 0, "canary": None}
    rollback(settings, registry, producer)
    assert _aliases(registry) == {"champion": 0, "previous": None, "canary": None}
    with pytest.raises(ReleaseError, match="nothing to roll back"):
        rollback(settings, registry, producer)

    # Every release went to partition 0 of hive.core: fleet ones keyed "core", the canary keyed "canary".
    assert {(topic, partition) for topic, _, _, partition in producer.sent} == {(topics.CORE, 0)}
    assert [key for _, key, _, _ in producer.sent] == [FLEET_KEY, FLEET_KEY, CANARY_KEY] + [FLEET_KEY] * 4
    releases = producer.releases()
    assert [(r.version, r.targets) for r in releases] == [
        (0, None),
        (1, None),
        (2, ["agent-1", "agent-2"]),
        (2, None),
        (2, None),
        (1, None),
        (0, None),
    ]
    assert releases[1].round_id == "r0001" and releases[1].gate == {"add": 0.9}
    shas = {row["core_version"]: row["sha256"] for row in registry.list_versions()}
    assert all(r.sha256 == shas[r.version] for r in releases)

    history = read_history(settings)
    assert [(e["action"], e["version"], e["targets"], e["previous_champion"]) for e in history] == [
        ("promote", 0, None, None),
        ("round", 1, None, 0),
        ("canary", 2, ["agent-1", "agent-2"], 1),
        ("promote", 2, None, 1),
        ("promote", 2, None, 2),
        ("rollback", 1, None, 2),
        ("rollback", 0, None, 1),
    ]
    assert [e["offset"] for e in history] == list(range(7))


def test_dry_run_changes_and_publishes_nothing(hive: tuple[HiveSettings, CoreRegistry]) -> None:
    settings, registry = hive
    producer = FakeProducer()
    release_core(settings, registry, producer, 0)
    release_core(settings, registry, producer, 1)
    before = (_aliases(registry), history_path(settings).read_text(), len(producer.sent))

    plan = release_core(settings, registry, None, 2, dry_run=True)
    assert (plan.dry_run, plan.champion_after, plan.previous_after, plan.published) == (True, 2, 1, None)
    plan = release_core(settings, registry, None, 2, canary=["agent-9"], dry_run=True)
    assert (plan.canary_after, plan.champion_after) == (2, 1)
    plan = rollback(settings, registry, None, dry_run=True)
    assert (plan.version, plan.champion_after, plan.previous_after) == (0, 0, None)
    assert "would release core v0 to the fleet" in plan.describe()

    assert (_aliases(registry), history_path(settings).read_text(), len(producer.sent)) == before


def test_bad_requests_are_refused_before_anything_is_published(hive: tuple[HiveSettings, CoreRegistry]) -> None:
    settings, registry = hive
    producer = FakeProducer()
    with pytest.raises(UnknownVersionError, match=r"known: \[0, 1, 2\]"):
        release_core(settings, registry, producer, 7)
    with pytest.raises(ValueError, match="bad agent id"):
        release_core(settings, registry, producer, 1, canary=["agent 1"])
    with pytest.raises(ValueError, match="at least one agent"):
        release_core(settings, registry, producer, 1, canary=[])
    with pytest.raises(ReleaseError, match="no champion"):
        rollback(settings, registry, producer)

    # Weights that no longer match the registered sha256 are never published.
    weights = core_dir(settings, 1) / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    with pytest.raises(CoreIntegrityError):
        release_core(settings, registry, producer, 1)
    shutil.rmtree(core_dir(settings, 2))
    with pytest.raises(ReleaseError, match="files are missing"):
        release_core(settings, registry, producer, 2)
    assert producer.sent == []
    assert _aliases(registry) == {"champion": None, "previous": None, "canary": None}
    assert read_history(settings) == []


def test_rollback_without_history_uses_the_previous_alias(hive: tuple[HiveSettings, CoreRegistry]) -> None:
    settings, registry = hive
    registry.set_alias("champion", 2)
    registry.set_alias("previous", 1)
    producer = FakeProducer()
    plan = rollback(settings, registry, producer)
    assert (plan.version, plan.previous_after) == (1, None)
    assert _aliases(registry) == {"champion": 1, "previous": None, "canary": None}
    assert [(r.version, r.targets) for r in producer.releases()] == [(1, None)]


def test_a_torn_history_line_is_skipped(hive: tuple[HiveSettings, CoreRegistry]) -> None:
    settings, registry = hive
    release_core(settings, registry, FakeProducer(), 0)
    with history_path(settings).open("a") as f:
        f.write('{"action": "promote", "vers')
    assert [e["version"] for e in read_history(settings)] == [0]


def _round(
    rid: str, base: int, candidate: int | None, evals: dict[str, float], champion_eval: dict[str, float], at: float
) -> RoundRecord:
    return RoundRecord(
        id=rid,
        state="released" if candidate is not None else "rejected",
        base_version=base,
        after_seq=0,
        upto_seq=10,
        learnings=10,
        per_agent={"agent-1": 10},
        skills=sorted(evals),
        created_at=at,
        candidate_version=candidate,
        eval=evals,
        champion_eval=champion_eval,
    )


def test_cores_json_merges_round_figures_newest_last(hive: tuple[HiveSettings, CoreRegistry]) -> None:
    settings, registry = hive
    book = RoundBook(settings.rounds_dir)
    book.save(_round("r0001", 0, 1, {"add": 0.8, "capital": 0.5}, {"add": 0.1, "capital": 0.0}, at=1.0))
    # Rejected, but its measure of the base (v1) is newer: it overrides v1's "add" and adds "reverse".
    book.save(_round("r0002", 1, None, {"add": 0.9, "reverse": 0.2}, {"add": 0.7, "reverse": 0.0}, at=2.0))
    book.save(_round("r0003", 1, 2, {"add": 0.75, "reverse": 0.6}, {"add": 0.72, "reverse": 0.01}, at=3.0))
    producer = FakeProducer()
    release_core(settings, registry, producer, 1)
    release_core(settings, registry, producer, 2, canary=["agent-3"])

    rows = cores_json(settings, registry)
    assert [r["core_version"] for r in rows] == [0, 1, 2]
    assert [r["eval"] for r in rows] == [
        {"add": 0.1, "capital": 0.0},
        {"add": 0.72, "capital": 0.5, "reverse": 0.01},
        {"add": 0.75, "reverse": 0.6},
    ]
    assert [r["released_to"] for r in rows] == [None, None, ["agent-3"]]
    assert [r["released_at"] is not None for r in rows] == [False, True, True]
    assert [r["aliases"] for r in rows] == [[], ["champion"], ["canary"]]
    assert set(rows[0]) == {
        "core_version",
        "mlflow_version",
        "sha256",
        "aliases",
        "round_id",
        "created",
        "eval",
        "released_to",
        "released_at",
    }


def _beat(agent_id: str, version: int, age_s: float, now: datetime, **kw: Any) -> Heartbeat:
    return Heartbeat(agent_id=agent_id, skill="add", core_version=version, sent_at=now - timedelta(seconds=age_s), **kw)


def test_fleet_json_reports_skew_lag_and_the_active_summary() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    view = FleetView()
    view.offer(_beat("agent-2", 1, 3.0, now, counters={"spool_size": 7}))
    view.offer(_beat("agent-1", 3, 1.0, now, counters={"spool_size": 0}, state="serving"))
    view.offer(_beat("agent-3", 1, 500.0, now))  # gone: listed, not counted
    view.offer(_beat("agent-4", 0, 2.0, now, state="stopping"))

    report = fleet_json(view, champion=1, now=now, active_s=60.0)
    agents = {a["agent_id"]: a for a in report["agents"]}
    assert [a["agent_id"] for a in report["agents"]] == ["agent-1", "agent-2", "agent-3", "agent-4"]
    assert agents["agent-1"] == {
        "agent_id": "agent-1",
        "skill": "add",
        "core_version": 3,
        "state": "serving",
        "last_heartbeat": "2026-01-01T11:59:59+00:00",
        "heartbeat_age_s": 1.0,
        "lag": 0,
        "skew": 2,
        "active": True,
    }
    assert (agents["agent-2"]["core_version"], agents["agent-2"]["lag"], agents["agent-2"]["skew"]) == (1, 7, 0)
    assert agents["agent-3"]["lag"] is None and agents["agent-3"]["active"] is False
    assert agents["agent-4"]["skew"] == -1 and agents["agent-4"]["active"] is False
    assert report["champion"] == 1
    assert report["versions"] == {"1": 1, "3": 1}
    assert report["max_skew"] == 2

    unknown = fleet_json(view, champion=None, now=now)
    assert all(a["skew"] is None for a in unknown["agents"]) and unknown["max_skew"] == 0
    empty = {"champion": 0, "agents": [], "versions": {}, "max_skew": 0, "timeline": {}}
    assert fleet_json(FleetView(), champion=0, now=now) == empty
    # Each agent's runs: agent-1 ran v3 only, from its one heartbeat to itself.
    assert report["timeline"]["agent-1"] == [
        {"core_version": 3, "from": "2026-01-01T11:59:59+00:00", "to": "2026-01-01T11:59:59+00:00"}
    ]


# --- the CLI --------------------------------------------------------------------------------------------


def _env(home: Path, bootstrap: str | None = None) -> dict[str, str | None]:
    return {"HIVE_HOME": str(home), "HIVE_KAFKA_BOOTSTRAP": bootstrap}


def test_core_list_json_and_table(hive: tuple[HiveSettings, CoreRegistry]) -> None:
    settings, registry = hive
    release_core(settings, registry, FakeProducer(), 0)
    result = runner.invoke(app, ["core", "list", "--json"], env=_env(settings.home))
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert rows == json.loads(json.dumps(cores_json(settings, registry)))
    assert rows[0]["aliases"] == ["champion"] and rows[0]["released_to"] is None

    result = runner.invoke(app, ["core", "list"], env=_env(settings.home))
    assert result.exit_code == 0, result.output
    assert "champion" in result.stdout and "fleet" in result.stdout


def test_core_commands_without_a_registry_exit_1(tmp_path: Path) -> None:
    for args in (["core", "list"], ["core", "promote", "0", "--dry-run"], ["core", "rollback", "--dry-run"]):
        result = runner.invoke(app, args, env=_env(tmp_path / "nowhere"))
        assert result.exit_code == 1, (args, result.output)
        assert "no core registry" in result.stderr


def test_release_commands_check_their_input(hive: tuple[HiveSettings, CoreRegistry]) -> None:
    settings, registry = hive
    home = settings.home
    # Publishing needs the broker's address; a dry run does not.
    result = runner.invoke(app, ["core", "promote", "1"], env=_env(home))
    assert result.exit_code == 2 and "HIVE_KAFKA_BOOTSTRAP" in result.stderr
    result = runner.invoke(app, ["core", "release", "1", "--canary", "agent-1,bad id"], env=_env(home, "x:1"))
    assert result.exit_code == 2 and "bad agent id 'bad id'" in result.stderr
    result = runner.invoke(app, ["core", "release", "9", "--dry-run"], env=_env(home))
    assert result.exit_code == 2 and "known: [0, 1, 2]" in result.stderr
    result = runner.invoke(app, ["core", "rollback", "--dry-run"], env=_env(home))
    assert result.exit_code == 1 and "no champion" in result.stderr

    result = runner.invoke(app, ["core", "release", "1", "--canary", "agent-1", "--dry-run", "--json"], env=_env(home))
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert (plan["action"], plan["targets"], plan["dry_run"], plan["published"]) == (
        "canary",
        ["agent-1"],
        True,
        None,
    )
    result = runner.invoke(app, ["core", "promote", "1", "--dry-run"], env=_env(home))
    assert result.exit_code == 0, result.output
    assert "would release core v1 to the fleet" in result.stdout
    assert _aliases(registry) == {"champion": None, "previous": None, "canary": None}
    assert not history_path(settings).exists()


def test_fleet_needs_the_broker_address(tmp_path: Path) -> None:
    result = runner.invoke(app, ["fleet", "--json"], env=_env(tmp_path))
    assert result.exit_code == 2 and "HIVE_KAFKA_BOOTSTRAP" in result.stderr


def test_fleet_with_an_unreachable_broker_exits_1(tmp_path: Path) -> None:
    # Port 1 on loopback: nothing listens, so the connection is refused at once; --timeout bounds the retries.
    result = runner.invoke(app, ["fleet", "--timeout", "1"], env=_env(tmp_path, "127.0.0.1:1"))
    assert result.exit_code == 1, result.output
    assert "cannot reach the broker at 127.0.0.1:1" in result.stderr


class FailingProducer(FakeProducer):
    """A broker that never acks; it checks, when asked to send, that the history already holds the release."""

    def __init__(self, settings: HiveSettings, error: BaseException) -> None:
        super().__init__()
        self.settings = settings
        self.error = error
        self.history_at_send: list[dict[str, Any]] = []

    def send(self, topic: str, key=None, value=None, headers=None, partition=None) -> _Future:
        self.history_at_send = read_history(self.settings)
        raise self.error


def test_the_history_entry_is_written_before_the_publish_and_withdrawn_when_it_fails(
    hive: tuple[HiveSettings, CoreRegistry],
) -> None:
    from kafka.errors import KafkaTimeoutError

    settings, registry = hive
    release_core(settings, registry, FakeProducer(), 0)
    producer = FailingProducer(settings, KafkaTimeoutError("no ack"))
    with pytest.raises(KafkaTimeoutError):
        release_core(settings, registry, producer, 1, round_id="r0001", action="round")
    # At the moment of the send, the history named the release already (offset not known yet).
    assert [(e["version"], e["offset"]) for e in producer.history_at_send] == [(0, 0), (1, None)]
    # It never went out: the history withdraws it and the aliases did not move.
    assert [e["version"] for e in read_history(settings)] == [0]
    assert champion_stack(read_history(settings)) == [0]
    assert _aliases(registry) == {"champion": 0, "previous": None, "canary": None}
    lines = [json.loads(line) for line in history_path(settings).read_text().splitlines()]
    assert [line["action"] for line in lines] == ["promote", "published", "round", "failed"]
    assert lines[3]["of"] == lines[2]["id"] and "no ack" in lines[3]["error"]
    # The retry goes out and is counted once.
    release_core(settings, registry, FakeProducer(), 1, round_id="r0001", action="round")
    assert [(e["version"], e["offset"]) for e in read_history(settings)] == [(0, 0), (1, 0)]
    assert _aliases(registry) == {"champion": 1, "previous": 0, "canary": None}


def test_a_crash_before_the_publish_leaves_a_history_that_promote_settles(
    hive: tuple[HiveSettings, CoreRegistry],
) -> None:
    settings, registry = hive
    release_core(settings, registry, FakeProducer(), 0)
    # The process dies while it publishes: no outcome line, nothing on the topic, no alias moved.
    with pytest.raises(SystemExit):
        release_core(settings, registry, FailingProducer(settings, SystemExit(137)), 1)
    history = read_history(settings)
    assert [(e["version"], e["offset"]) for e in history] == [(0, 0), (1, None)]  # offset None: unconfirmed
    assert registry.champion_version() == 0
    # `hive core promote 1`, as the operator guide says: it goes out, and the history stays one step per core.
    producer = FakeProducer()
    release_core(settings, registry, producer, 1)
    assert [r.version for r in producer.releases()] == [1]
    assert _aliases(registry) == {"champion": 1, "previous": 0, "canary": None}
    assert champion_stack(read_history(settings)) == [0, 1]
    assert rollback(settings, registry, FakeProducer()).version == 0


def test_a_crash_after_the_publish_leaves_the_release_in_the_history(
    hive: tuple[HiveSettings, CoreRegistry], monkeypatch: pytest.MonkeyPatch
) -> None:
    import hive.cores.release as releases

    settings, registry = hive
    release_core(settings, registry, FakeProducer(), 0)

    def die(*args: object) -> None:
        raise SystemExit(137)

    monkeypatch.setattr(releases, "close_entry", die)
    producer = FakeProducer()
    with pytest.raises(SystemExit):
        release_core(settings, registry, producer, 1)
    monkeypatch.undo()
    # Agents got v1 and the history knows it, though the hive died before it set the aliases.
    assert [r.version for r in producer.releases()] == [1]
    assert [e["version"] for e in read_history(settings)] == [0, 1]
    assert registry.champion_version() == 0
    release_core(settings, registry, FakeProducer(), 1)
    assert _aliases(registry) == {"champion": 1, "previous": 0, "canary": None}
    assert champion_stack(read_history(settings)) == [0, 1]


def test_every_release_is_signed_and_numbered_and_rollback_is_a_new_number(
    hive: tuple[HiveSettings, CoreRegistry],
) -> None:
    from streams.release_signing import read_public_keys, verify_release

    settings, registry = hive
    producer = FakeProducer()
    release_core(settings, registry, producer, 0)
    release_core(settings, registry, producer, 1, canary=["agent-1"])
    release_core(settings, registry, producer, 1)
    rollback(settings, registry, producer)
    releases = producer.releases()
    assert [(r.version, r.sequence) for r in releases] == [(0, 1), (1, 2), (1, 3), (0, 4)]
    # The key was made once, private to its owner; its public half is where agents sharing HIVE_HOME look.
    assert settings.release_key_path.stat().st_mode & 0o777 == 0o600
    keys = read_public_keys(settings.release_public_key_path)
    assert all(verify_release(r, keys) for r in releases)
    assert [e["sequence"] for e in read_history(settings)] == [1, 2, 3, 4]
    # Another process (the CLI) continues the numbering from the history, with the same key.
    release_core(HiveSettings(home=settings.home), registry, producer, 1)
    assert producer.releases()[-1].sequence == 5 and verify_release(producer.releases()[-1], keys)


def test_a_failed_publish_burns_its_number(hive: tuple[HiveSettings, CoreRegistry]) -> None:
    from kafka.errors import KafkaTimeoutError

    settings, registry = hive
    with pytest.raises(KafkaTimeoutError):
        release_core(settings, registry, FailingProducer(settings, KafkaTimeoutError("no ack")), 0)
    producer = FakeProducer()
    release_core(settings, registry, producer, 0)
    # The broker may have taken the failed one after all: its number 1 is never given to another release.
    assert [r.sequence for r in producer.releases()] == [2]


def test_a_configured_release_key_must_exist_and_be_ed25519(hive: tuple[HiveSettings, CoreRegistry]) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    settings, registry = hive
    missing = HiveSettings(home=settings.home, release_key_file=settings.home / "no-such.pem")
    producer = FakeProducer()
    with pytest.raises(ReleaseError, match=r"no-such\.pem cannot be read"):
        release_core(missing, registry, producer, 0)
    assert not missing.release_key_path.exists()  # never made up: every agent would refuse a new key
    wrong = settings.home / "ec.pem"
    wrong.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(ReleaseError, match="must be Ed25519"):
        release_core(HiveSettings(home=settings.home, release_key_file=wrong), registry, producer, 0)
    garbage = settings.home / "garbage.pem"
    garbage.write_text("not a key\n")
    with pytest.raises(ReleaseError, match="not an unencrypted PEM private key"):
        release_core(HiveSettings(home=settings.home, release_key_file=garbage), registry, producer, 0)
    # Nothing was published, recorded or changed.
    assert producer.sent == [] and read_history(settings) == [] and registry.champion_version() is None


def test_concurrent_releases_reach_the_broker_in_number_order(hive: tuple[HiveSettings, CoreRegistry]) -> None:
    import threading

    settings, registry = hive
    producer = FakeProducer()
    threads = [
        threading.Thread(target=release_core, args=(HiveSettings(home=settings.home), registry, producer, v % 3))
        for v in range(6)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Whatever order the six took the lock in, each was numbered and sent under it: agents see 1..6 in order.
    assert [r.sequence for r in producer.releases()] == [1, 2, 3, 4, 5, 6]


def test_a_release_signs_the_manifest_it_records_and_names_the_core_server(
    hive: tuple[HiveSettings, CoreRegistry],
) -> None:
    from agents.core_manifest import build_manifest, parse_manifest
    from hive.config import CoreTransportSettings
    from streams.release_signing import read_public_keys, verify_release

    settings, registry = hive
    settings = settings.model_copy(update={"cores": CoreTransportSettings(base_url="http://hive.internal:8470/")})
    producer = FakeProducer()

    release_core(settings, registry, producer, 1)

    [release] = producer.releases()
    assert release.model_uri == "http://hive.internal:8470/cores/v1/"
    recorded = (settings.manifests_dir / "v1.json").read_bytes()
    assert release.manifest_sha256 == build_manifest(core_dir(settings, 1), 1).sha256()
    assert parse_manifest(recorded).sha256() == release.manifest_sha256
    assert verify_release(release, read_public_keys(settings.release_public_key_path))
    # Changing the manifest's hash after signing breaks the signature, as any other field does.
    forged = release.model_copy(update={"manifest_sha256": "0" * 64})
    assert not verify_release(forged, read_public_keys(settings.release_public_key_path))


def test_a_dry_run_records_no_manifest(hive: tuple[HiveSettings, CoreRegistry]) -> None:
    settings, registry = hive
    plan = release_core(settings, registry, None, 1, dry_run=True)
    assert plan.manifest_sha256 and plan.model_uri.startswith("file://")
    assert not (settings.manifests_dir / "v1.json").exists()
