"""Property tests of the door: any bytes, any JSON, any near-valid learning or heartbeat is stored once or
refused with a reason, and never raises; the fleet view and the scheduler read whatever got through."""

from __future__ import annotations

import json
import tempfile
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.skills import BUILTIN_SKILLS
from hive.fleet import UNPROCESSABLE as FLEET_UNPROCESSABLE
from hive.fleet import FleetView
from hive.ingest.admit import REASONS, UNPROCESSABLE, admit
from hive.ingest.auth import SenderPolicy
from hive.rounds.triggers import active_agents
from hive.store.parquet import ParquetLearningStore
from hive.views import fleet_json
from streams.codec import encode
from streams.events import Heartbeat, Learning
from streams.signing import KeyRing, signed

from factories import make_learning

KEY = bytes(range(32))
POLICY = SenderPolicy(KeyRing({"agent-1": (KEY,)}))
SKILLS = {name: BUILTIN_SKILLS[name] for name in ("add", "capital")}
MAX_BYTES = 64 * 1024
NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)
# Enough to find the classes of bad input in every `make test`; `hive bench fuzz` sends 10,000+ through a real hive.
EXAMPLES = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

GOOD = json.loads(encode(make_learning("agent-1", id=uuid.UUID(int=1), created_at=NOW, prompt="2+2=", completion="4")))
BEAT = json.loads(encode(Heartbeat(agent_id="agent-1", skill="add", core_version=0, sent_at=NOW)))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
zones = st.none() | st.builds(
    timezone, st.timedeltas(min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23, minutes=59))
)
timestamps = st.datetimes(min_value=datetime.min, max_value=datetime.max, timezones=zones).map(
    lambda moment: moment.isoformat()
) | st.text(max_size=30)
# Text with everything that breaks naive code: controls, NUL, bidi marks, astral characters, and (through the
# JSON escape that ensure_ascii writes) lone surrogates.
odd_text = st.text(alphabet=st.characters(codec=None, categories=None), max_size=200)
field_values = json_values | odd_text | timestamps | st.text(min_size=4000, max_size=9000)
fields = st.sampled_from([*sorted(GOOD), "teacher", "adapter", "schema_version", "unknown"])


def _resigned(data: dict[str, Any], key: bytes) -> dict[str, Any]:
    """Signs ``data`` when it parses as a learning, so that the field itself is what the door judges."""
    try:
        learning = Learning.model_validate(data)
    except ValueError:
        return data
    return data | {"signature": signed(learning, key).signature}


def _dump(data: Any) -> bytes:
    return json.dumps(data).encode("utf-8")


@st.composite
def records(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["bytes", "json", "near_valid", "near_valid_signed"]))
    if kind == "bytes":
        return draw(st.binary(max_size=600))
    if kind == "json":
        return _dump(draw(json_values))
    data = dict(GOOD) | {"id": str(draw(st.uuids()))}
    for _ in range(draw(st.integers(1, 3))):
        data[draw(fields)] = draw(field_values)
    return _dump(_resigned(data, KEY) if kind == "near_valid_signed" else data)


@EXAMPLES
@given(values=st.lists(records(), min_size=1, max_size=8))
def test_every_record_is_stored_once_or_refused_with_a_reason(values: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp, ParquetLearningStore(Path(tmp)) as store:
        admitted: list[Learning] = []
        for value in values:
            learning, rejection = admit(value, MAX_BYTES, POLICY, SKILLS)
            if rejection is None:
                assert learning is not None
                admitted.append(learning)
            else:
                # unprocessable means a check failed in a way nobody foresaw: a bug the fuzzer found.
                assert rejection.reason in REASONS and rejection.reason != UNPROCESSABLE, rejection
                assert rejection.detail
        stored = store.append(admitted, {("hive.learnings", 0): len(values)})
        unique = {learning.id: learning for learning in admitted}
        assert stored == len(unique)
        assert {x.id: x for x in store.read()} == unique


@st.composite
def heartbeats(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["bytes", "json", "near_valid"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "json":
        return _dump(draw(json_values))
    data = dict(BEAT)
    for _ in range(draw(st.integers(1, 2))):
        data[draw(st.sampled_from([*sorted(BEAT), "signature"]))] = draw(field_values)
    try:
        beat = Heartbeat.model_validate(data)
    except ValueError:
        return _dump(data)
    return _dump(data | {"signature": signed(beat, KEY).signature})


@EXAMPLES
@given(values=st.lists(heartbeats(), min_size=1, max_size=8))
def test_no_heartbeat_stops_the_fleet_view_or_the_scheduler(values: list[bytes]) -> None:
    view = FleetView()
    for value in values:
        view.offer_raw(value, MAX_BYTES, POLICY, max_skew_s=300.0, now=NOW)
    assert FLEET_UNPROCESSABLE not in view.rejected_by_reason
    assert view.rejected + len(view.latest) <= len(values)
    # A heartbeat that was counted is at most the allowed skew ahead, so an agent is never active for good.
    later = NOW + timedelta(hours=1)
    assert active_agents(view.heartbeat_times(), later, active_s=300.0) == []
    report = fleet_json(view, champion=0, now=NOW)
    assert all(agent["heartbeat_age_s"] >= 0 for agent in report["agents"])
