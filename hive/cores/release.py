"""Release control: which registered core the fleet (or a canary) runs; each release is recorded in its history."""

from __future__ import annotations

import logging
import uuid
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import TypeAdapter, ValidationError

from agents.core_manifest import ManifestError, build_manifest
from hive.cores.files import existing_core
from hive.cores.registry import CHAMPION, CoreRegistry, verify_core
from hive.cores.release_history import (
    append_history,
    champion_stack,
    close_entry,
    history_path,
    last_sequence,
    read_history,
    release_lock,
)
from hive.cores.release_key import release_key
from hive.cores.transport import record_manifest, release_uri, upload_core
from streams import topics
from streams.codec import encode
from streams.events import AgentId, CoreRelease
from streams.kafka import send_and_wait
from streams.release_signing import ReleaseKeyError, sign_release

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from kafka import KafkaProducer

    from hive.config import HiveSettings
    from hive.rounds.book import RoundRecord
    from hive.rounds.run import ReleaseFn

log = logging.getLogger(__name__)

PREVIOUS = "previous"
CANARY = "canary"
# Agents follow partition 0 only. Two keys, so that on a compacted topic the latest fleet release and the
# latest canary both survive, and a canary never erases the fleet release.
RELEASE_PARTITION = 0
FLEET_KEY = b"core"
CANARY_KEY = b"canary"

Action = Literal["round", "promote", "rollback", "canary"]
_AGENT_ID: TypeAdapter[str] = TypeAdapter(AgentId)


class ReleaseError(RuntimeError):
    """A release that the hive's state does not allow: nothing to roll back to, a core's files missing."""


@dataclass
class ReleasePlan:
    """What a release did, or (``dry_run``) would do."""

    action: str
    version: int
    targets: list[str] | None  # None: the whole fleet
    sha256: str
    model_uri: str
    # The sha256 of the core's manifest (every file, with its size and sha256), which the release signs.
    manifest_sha256: str
    champion_before: int | None
    champion_after: int | None
    previous_before: int | None
    previous_after: int | None
    canary_after: int | None
    round_id: str | None
    dry_run: bool
    # Where the release landed (topic, partition, offset, key); None for a dry run.
    published: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """One line for a person."""
        verb = "would release" if self.dry_run else "released"
        who = "the fleet" if self.targets is None else "canary " + ",".join(self.targets)
        text = f"{verb} core v{self.version} to {who} ({self.action})"
        if self.champion_before != self.champion_after:
            text += f"; champion {_v(self.champion_before)} -> {_v(self.champion_after)}"
        else:
            text += f"; champion stays {_v(self.champion_after)}"
        if self.previous_before != self.previous_after:
            text += f"; previous {_v(self.previous_before)} -> {_v(self.previous_after)}"
        if self.published is not None:
            text += f"; {self.published['topic']}[{self.published['partition']}]@{self.published['offset']}"
        return text


def _v(version: int | None) -> str:
    return "none" if version is None else f"v{version}"


def parse_agent_ids(raw: list[str]) -> list[str]:
    """The agent ids, validated like ``streams.events.AgentId`` and de-duplicated in order; ValueError
    names the first bad one."""
    ids: list[str] = []
    for agent_id in raw:
        try:
            _AGENT_ID.validate_python(agent_id)
        except ValidationError as err:
            raise ValueError(
                f"bad agent id {agent_id!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
            ) from err
        if agent_id not in ids:
            ids.append(agent_id)
    if not ids:
        raise ValueError("a canary release needs at least one agent id")
    return ids


def release_core(
    settings: HiveSettings,
    registry: CoreRegistry,
    producer: KafkaProducer | None,
    version: int,
    *,
    canary: list[str] | None = None,
    round_id: str | None = None,
    gate: dict[str, float] | None = None,
    action: Action = "promote",
    dry_run: bool = False,
) -> ReleasePlan:
    """Releases registered core ``version``: to the whole fleet, or with ``canary`` to those agents only.

    Fleet-wide, ``version`` becomes the ``champion`` (the old champion becomes ``previous`` unless it is
    ``version`` itself), the ``canary`` alias is removed, and a CoreRelease with no targets is published
    with key ``core``. A canary publishes a CoreRelease naming the agents with key ``canary`` and points
    the ``canary`` alias at ``version``; the champion stays. Either way the release goes to partition 0 of
    ``hive.core``, after its entry in ``HIVE_HOME/releases.jsonl`` (see ``read_history``).

    Idempotent: releasing the champion again publishes it again and changes no alias, which is how a
    release whose publish failed is retried. The core's files (``hive.cores.files.existing_core``) MUST match the
    sha256 it was registered with. The aliases change only after the broker acked, so a failed send changes
    nothing in the registry, and its history entry is withdrawn. Raises UnknownVersionError for an
    unregistered version, CoreIntegrityError for a sha256 mismatch, ReleaseError when the core's files are
    missing or the history cannot be written (nothing is published then), ValueError for a bad agent id,
    and the Kafka error when the broker does not ack.
    ``producer`` may be None only for a dry run.
    """
    targets = parse_agent_ids(canary) if canary is not None else None
    if targets is not None:
        action = "canary"
    elif action == "canary":
        raise ValueError("a canary release needs the agents it is for")
    champion = registry.champion_version()
    previous = registry.alias_version(PREVIOUS)
    if targets is None:
        plan = _plan(settings, registry, version, None, action, round_id, dry_run, champion, previous)
        plan.champion_after = version
        plan.previous_after = champion if champion is not None and champion != version else previous
    else:
        plan = _plan(settings, registry, version, targets, action, round_id, dry_run, champion, previous)
        plan.canary_after = version
    return _execute(settings, registry, producer, plan, gate)


def round_release(settings: HiveSettings, registry: CoreRegistry, producer: KafkaProducer) -> ReleaseFn:
    """How a round releases the core that passed its gate: to the whole fleet (action ``round``), with the
    round's id and its candidate's per-skill figures. ``hive serve`` and ``hive round run`` both use it."""

    def release(version: int, record: RoundRecord) -> None:
        release_core(settings, registry, producer, version, round_id=record.id, gate=record.eval, action="round")

    return release


def rollback(
    settings: HiveSettings, registry: CoreRegistry, producer: KafkaProducer | None, dry_run: bool = False
) -> ReleasePlan:
    """Releases the champion before the current one to the whole fleet (a downgrade), and makes it champion.

    The champion before is taken from the release history, or, when the history does not end at the
    current champion (it was set by other means), from the ``previous`` alias. ``previous`` then points at
    the one before that, if the history knows it, and is removed otherwise. Raises ReleaseError when
    there is nothing to roll back to.
    """
    champion = registry.champion_version()
    previous = registry.alias_version(PREVIOUS)
    if champion is None:
        raise ReleaseError("no champion is set: nothing to roll back")
    stack = champion_stack(read_history(settings))
    if not stack or stack[-1] != champion:
        stack = [champion] if previous is None or previous == champion else [previous, champion]
    if len(stack) < 2:
        raise ReleaseError(f"core v{champion} is the first champion on record: there is nothing to roll back to")
    plan = _plan(settings, registry, stack[-2], None, "rollback", None, dry_run, champion, previous)
    plan.champion_after = stack[-2]
    plan.previous_after = stack[-3] if len(stack) >= 3 else None
    return _execute(settings, registry, producer, plan, None)


def _plan(
    settings: HiveSettings,
    registry: CoreRegistry,
    version: int,
    targets: list[str] | None,
    action: Action,
    round_id: str | None,
    dry_run: bool,
    champion: int | None,
    previous: int | None,
) -> ReleasePlan:
    """A plan that changes no alias yet (the caller sets the ``*_after`` fields), for a verified core."""
    sha = registry.registered_sha256(version)
    try:
        core = existing_core(settings, version)
    except FileNotFoundError as err:
        raise ReleaseError(f"core v{version} is registered but its files are missing: {err}") from err
    # The file agents will fetch is the one that must match the registry; a mismatch must never be published.
    verify_core(core.directory, sha)
    try:
        manifest = build_manifest(core.directory, version)
    except ManifestError as err:
        raise ReleaseError(f"core v{version} cannot be released: {err}") from err
    return ReleasePlan(
        action=action,
        version=version,
        targets=targets,
        sha256=sha,
        model_uri=release_uri(settings, version, core.directory),
        manifest_sha256=manifest.sha256(),
        champion_before=champion,
        champion_after=champion,
        previous_before=previous,
        previous_after=previous,
        canary_after=None,
        round_id=round_id,
        dry_run=dry_run,
    )


def _execute(
    settings: HiveSettings,
    registry: CoreRegistry,
    producer: KafkaProducer | None,
    plan: ReleasePlan,
    gate: dict[str, float] | None,
) -> ReleasePlan:
    """Records the plan's release, publishes it, then sets the aliases; a dry run only returns the plan."""
    if plan.dry_run:
        return plan
    if producer is None:
        raise ValueError("a release that is not a dry run needs a producer")
    # Before the lock and the history: a hive without a usable key publishes nothing, and says why.
    try:
        signing_key = release_key(settings)
    except ReleaseKeyError as err:
        raise ReleaseError(f"core v{plan.version} was not released: {err}") from err
    _place_core(settings, plan)
    with release_lock(settings):
        plan.published = _publish(settings, producer, plan, gate, signing_key)
    if plan.targets is None:
        if plan.previous_after is None:
            registry.delete_alias(PREVIOUS)
        elif plan.previous_after != plan.previous_before:
            registry.set_alias(PREVIOUS, plan.previous_after)
        if plan.champion_after is not None and plan.champion_after != plan.champion_before:
            registry.set_alias(CHAMPION, plan.champion_after)
        # A fleet release supersedes any canary: every agent now runs it.
        registry.delete_alias(CANARY)
    else:
        registry.set_alias(CANARY, plan.version)
    log.info("%s", plan.describe())
    return plan


def _place_core(settings: HiveSettings, plan: ReleasePlan) -> None:
    """Records the core's manifest and, for S3, uploads the core: where agents will fetch it, before they are told.

    The manifest is built again from the files, and must be the one planned: files changed between plan and
    release would otherwise go out under a signature over other bytes.
    """
    directory = existing_core(settings, plan.version).directory
    try:
        manifest = build_manifest(directory, plan.version)
        if manifest.sha256() != plan.manifest_sha256:
            raise ManifestError(f"core v{plan.version}'s files changed since the release was planned")
        record_manifest(settings, manifest)
        upload_core(settings, manifest, directory)
    except (ManifestError, OSError) as err:
        raise ReleaseError(f"core v{plan.version} was not released: {err}") from err


def _publish(
    settings: HiveSettings,
    producer: KafkaProducer,
    plan: ReleasePlan,
    gate: dict[str, float] | None,
    signing_key: Ed25519PrivateKey,
) -> dict[str, Any]:
    """Numbers, signs, records and sends the plan's release; returns where it landed. Call under the release lock."""
    version, targets = plan.version, plan.targets
    release = CoreRelease(
        version=version,
        model_uri=plan.model_uri,
        sha256=plan.sha256,
        manifest_sha256=plan.manifest_sha256,
        round_id=plan.round_id,
        gate=gate or {},
        targets=targets,
        sequence=last_sequence(settings) + 1,
    )
    release = sign_release(release, signing_key)
    key = FLEET_KEY if targets is None else CANARY_KEY
    entry = {
        "id": uuid.uuid4().hex,
        "time": release.released_at.isoformat(),
        "action": plan.action,
        "version": version,
        "targets": targets,
        "previous_champion": plan.champion_before,
        "round_id": plan.round_id,
        "sha256": plan.sha256,
        "sequence": release.sequence,
        "offset": None,
    }
    # Written before the release goes out: a hive that dies while publishing leaves a history that names
    # the release (an operator re-runs `hive core promote`), never agents on a core the history does not know.
    try:
        append_history(settings, entry)
    except OSError as err:
        raise ReleaseError(
            f"core v{version} was not released: the release history {history_path(settings)} cannot be written: {err}"
        ) from err
    try:
        metadata = send_and_wait(producer, topics.CORE, key, encode(release), partition=RELEASE_PARTITION)
    except Exception as err:
        # The broker did not ack it: withdraw the entry, so that the history does not count it.
        close_entry(settings, entry, {"action": "failed", "error": f"{type(err).__name__}: {err}"})
        raise
    close_entry(settings, entry, {"action": "published", "offset": metadata.offset})
    return {"topic": topics.CORE, "partition": metadata.partition, "offset": metadata.offset, "key": key.decode()}
