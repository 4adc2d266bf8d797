"""The dashboard app through FastAPI's TestClient: pages, JSON equal to the CLI's, filters, escaping, read-only."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from hive.config import HiveSettings
from hive.fleet import FleetView
from hive.rounds.book import RoundBook, RoundRecord
from hive.rounds.last_check import record_check
from hive.store.interface import PAYLOAD_HEAD_BYTES, DeadLetter, Quarantined
from hive.store.parquet import ParquetLearningStore
from hive.ui.app import app_from_env, create_app
from hive.ui.sources import knowledge_matrix
from hive.views import dlq_json, learning_json, quarantined_json
from streams.config import KafkaSettings
from streams.events import Heartbeat

from factories import make_learning

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def dead_letter(reason: str, offset: int, payload: bytes) -> DeadLetter:
    return DeadLetter(
        reason=reason,
        detail=f"bad record {offset} {HOSTILE}",
        source_topic="hive.learnings",
        source_partition=0,
        source_offset=offset,
        size=len(payload),
        payload_sha256=hashlib.sha256(payload).hexdigest(),
        payload_head=payload[:PAYLOAD_HEAD_BYTES],
        key="a1",
    )


class FakeTracker:
    """Stands in for FleetTracker: a fixed fleet view, and a record of start/stop."""

    def __init__(self, beats: list[Heartbeat]) -> None:
        self.view = FleetView()
        for beat in beats:
            self.view.offer(beat)
        self.error: BaseException | None = None
        self.started = self.stopped = False

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.stopped = True

    def snapshot(self) -> FleetView:
        return self.view


@pytest.fixture
def settings(tmp_path: Path) -> HiveSettings:
    home = tmp_path / ".hive"
    with ParquetLearningStore(home / "store") as store:
        # Rewards from 0 to 1 and a correction on each, as the learnings page shows them.
        store.append([make_learning("a1", "reverse", n, reward=0.25 * n, correction=f"x{n}") for n in range(5)], {})
        store.append([make_learning("a2", "sort", n, reward=0.25 * n, correction=f"x{n}") for n in range(3)], {})
        store.append([make_learning("a2", "sort", 9, prompt=HOSTILE, reward=1.0, correction="x9")], {})
        dead = [dead_letter("invalid_json", 1, b"{not json"), dead_letter("schema", 2, HOSTILE.encode())]
        store.append([], {}, dead)
    book = RoundBook(home / "rounds")
    book.save(
        RoundRecord(
            id="r0001",
            state="released",
            base_version=0,
            after_seq=0,
            upto_seq=5,
            learnings=5,
            per_agent={"a1": 5},
            skills=["reverse"],
            candidate_version=1,
            eval={"reverse": 0.75},
            champion_eval={"reverse": 0.125},
            distill={"steps": 40, "first_loss": 3.5, "final_loss": 0.5},
        )
    )
    book.save(
        RoundRecord(
            id="r0002",
            state="failed",
            base_version=1,
            after_seq=5,
            upto_seq=9,
            learnings=4,
            per_agent={"a2": 4},
            skills=["reverse", "sort"],
            error=f"distill job exited 1\n{HOSTILE}",
        )
    )
    return HiveSettings(home=home, kafka=KafkaSettings(bootstrap=""))


@pytest.fixture
def client(settings: HiveSettings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def test_every_page_loads(client: TestClient) -> None:
    for path, heading in [
        ("/", "Overview"),
        ("/fleet", "Fleet"),
        ("/rounds", "Rounds"),
        ("/rounds/r0001", "Round r0001"),
        ("/knowledge", "Knowledge"),
        ("/learnings", "Learnings"),
        ("/ingest", "Ingest"),
        ("/dlq", "Dead letters"),
    ]:
        response = client.get(path)
        assert response.status_code == 200, path
        assert f"<h1>{heading}</h1>" in response.text
        assert "script-src" not in response.headers["content-security-policy"]
        assert response.headers["content-security-policy"].startswith("default-src 'none'")


def test_learnings_json_is_the_clis(settings: HiveSettings, client: TestClient) -> None:
    with ParquetLearningStore(settings.store_dir, read_only=True) as store:
        expected = [learning_json(seq, x) for seq, x in store.tail(3, "a1", None)]
    assert client.get("/api/learnings", params={"agent": "a1", "limit": 3}).json() == expected
    assert [row["seq"] for row in expected] == [3, 4, 5]


def test_learnings_page_filters_and_escapes(client: TestClient) -> None:
    page = client.get("/learnings", params={"agent": "a2", "skill": "sort", "limit": 10}).text
    assert page.count('class="learning"') == 4
    assert 'data-agent="a1"' not in page
    assert HOSTILE not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
    # An empty field, as a submitted form sends it, means no filter.
    assert client.get("/learnings", params={"agent": "", "skill": ""}).text.count('class="learning"') == 9


def test_learnings_limit_is_bounded(client: TestClient) -> None:
    assert client.get("/learnings", params={"limit": 0}).status_code == 422
    assert client.get("/api/learnings", params={"limit": 100_000}).status_code == 422


def test_dlq_counts_match_the_clis_report(settings: HiveSettings, client: TestClient) -> None:
    with ParquetLearningStore(settings.store_dir, read_only=True) as store:
        expected = dlq_json(store.dead_letter_counts(), store.dead_letters(20, None))
    assert client.get("/api/dlq").json() == expected
    assert expected["total"] == 2
    page = client.get("/dlq", params={"reason": "schema"}).text
    assert 'data-reason="schema" data-count="1"' in page
    assert page.count('class="dead-letter"') == 1
    assert "<script>" not in page


def test_unknown_dlq_reason_is_a_bad_request(client: TestClient) -> None:
    response = client.get("/api/dlq", params={"reason": "nope"})
    assert response.status_code == 400
    assert "the reasons are" in response.json()["detail"]
    assert client.get("/dlq", params={"reason": "nope"}).status_code == 400


def test_rounds_timeline_and_round_page(client: TestClient) -> None:
    rounds = client.get("/api/rounds").json()
    assert [r["id"] for r in rounds] == ["r0001", "r0002"]
    page = client.get("/rounds").text
    # Newest first on the timeline.
    assert page.index('data-round="r0002"') < page.index('data-round="r0001"')
    assert 'data-skill="reverse" data-value="0.75" data-champion="0.125"' in page
    assert HOSTILE not in client.get("/rounds/r0002").text
    assert client.get("/rounds/r9999").status_code == 404
    assert "r0001" in client.get("/api/rounds/r9999").json()["detail"]


def test_fleet_without_a_broker_says_so(client: TestClient) -> None:
    assert "no broker configured" in client.get("/fleet").text
    assert client.get("/api/fleet").status_code == 503


def test_fleet_from_a_tracker(settings: HiveSettings) -> None:
    now = datetime.now(UTC)
    beats = [
        Heartbeat(agent_id="a1", skill="reverse", core_version=1, sent_at=now),
        Heartbeat(agent_id="a2", skill="sort", core_version=0, sent_at=now),
    ]
    tracker = FakeTracker(beats)
    with TestClient(create_app(settings, tracker=tracker)) as c:  # type: ignore[arg-type]
        assert tracker.started
        fleet = c.get("/api/fleet").json()
        page = c.get("/fleet").text
    assert tracker.stopped
    assert sorted(a["agent_id"] for a in fleet["agents"]) == ["a1", "a2"]
    assert fleet["versions"] == {"0": 1, "1": 1}
    assert 'data-agent="a1"' in page
    assert 'data-version="1" data-count="1"' in page


def test_no_cores_before_the_registry_exists(settings: HiveSettings, client: TestClient) -> None:
    assert client.get("/api/cores").json() == []
    assert "No cores registered yet" in client.get("/knowledge").text
    # Reading must not create the registry's database.
    assert not (settings.home / "mlflow.db").exists()


def test_knowledge_matrix_is_skills_by_versions() -> None:
    cores = [
        {"core_version": 0, "eval": {}},
        {"core_version": 1, "eval": {"reverse": 0.5}},
        {"core_version": 2, "eval": {"reverse": 0.75, "sort": 0.25}},
    ]
    assert knowledge_matrix(cores) == {
        "skills": ["reverse", "sort"],
        "versions": [0, 1, 2],
        "matrix": {"reverse": {"1": 0.5, "2": 0.75}, "sort": {"2": 0.25}},
    }


def test_read_only(client: TestClient) -> None:
    for path in ("/", "/learnings", "/api/rounds", "/api/dlq"):
        assert client.post(path).status_code == 405
        assert client.delete(path).status_code == 405


def test_no_store_yet_is_unavailable(tmp_path: Path) -> None:
    settings = HiveSettings(home=tmp_path / "empty", kafka=KafkaSettings(bootstrap=""))
    with TestClient(create_app(settings)) as c:
        assert c.get("/api/learnings").status_code == 503
        page = c.get("/learnings")
        assert page.status_code == 503
        assert "no learning store" in page.text
        assert c.get("/").status_code == 200
    assert not (tmp_path / "empty" / "store").exists()


def test_loopback_host_check(settings: HiveSettings) -> None:
    app = create_app(settings, allowed_hosts=["127.0.0.1", "localhost"])
    with TestClient(app, base_url="http://127.0.0.1:8765") as c:
        assert c.get("/").status_code == 200
    with TestClient(app, base_url="http://evil.example:8765") as c:
        assert c.get("/").status_code == 400


def test_the_factory_reads_the_hive_ui_variables(settings: HiveSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    _unfinished_round(settings)
    monkeypatch.setenv("HIVE_HOME", str(settings.home))
    monkeypatch.setenv("HIVE_KAFKA_BOOTSTRAP", "")
    for name, value in {"HIVE_UI_HOST": "127.0.0.1", "HIVE_UI_ALLOW_ACTIONS": "true", "HIVE_UI_TOKEN": TOKEN}.items():
        monkeypatch.setenv(name, value)
    app = app_from_env()
    with TestClient(app, base_url="http://evil.example:8765") as c:
        assert c.get("/").status_code == 400
    with TestClient(app, base_url="http://127.0.0.1:8765") as c:
        assert c.get("/api/rounds").json()[0]["id"] == "r0001"
        assert c.post("/api/rounds/r0003/cancel").status_code == 401
        assert c.post("/api/rounds/r0003/cancel", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    # Off loopback any Host is answered; without the variables the dashboard is read-only.
    for name in ("HIVE_UI_ALLOW_ACTIONS", "HIVE_UI_TOKEN"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("HIVE_UI_HOST", "0.0.0.0")
    with TestClient(app_from_env(), base_url="http://dashboard.example") as c:
        assert c.get("/").status_code == 200
        assert c.post("/api/rounds/r0003/cancel").status_code in (404, 405)


def test_actions_are_off_by_default(client: TestClient) -> None:
    assert client.post("/api/rounds/r0001/cancel").status_code in (404, 405)
    assert client.post("/api/cores/rollback").status_code in (404, 405)
    assert "read-only" in client.get("/").text


def _unfinished_round(settings: HiveSettings) -> None:
    RoundBook(settings.rounds_dir).save(
        RoundRecord(
            id="r0003",
            state="distilling",
            base_version=1,
            after_seq=9,
            upto_seq=9,
            learnings=0,
            per_agent={},
            skills=["reverse"],
        )
    )


def test_cancel_a_round_with_actions(settings: HiveSettings) -> None:
    _unfinished_round(settings)
    with TestClient(create_app(settings, allow_actions=True)) as c:
        assert 'id="cancel"' in c.get("/rounds/r0003").text
        assert c.post("/api/rounds/r0001/cancel").status_code == 409  # already released
        assert c.post("/api/rounds/r9999/cancel").status_code == 404
        # A form post lands back on the round's page, which no longer offers to cancel it.
        response = c.post("/rounds/r0003/cancel", follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"] == "/rounds/r0003"
        assert c.get("/api/rounds/r0003").json()["cancel_requested"] is True
        assert 'id="cancel"' not in c.get("/rounds/r0003").text


def test_cross_site_writes_are_refused(settings: HiveSettings) -> None:
    _unfinished_round(settings)
    with TestClient(create_app(settings, allow_actions=True)) as c:
        forged = c.post("/rounds/r0003/cancel", headers={"Origin": "http://evil.example"})
        assert forged.status_code == 403
        assert c.post("/rounds/r0003/cancel", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
        assert c.get("/api/rounds/r0003").json()["cancel_requested"] is False
        same = c.post("/api/rounds/r0003/cancel", headers={"Origin": "http://testserver"})
        assert same.status_code == 200


def test_releases_need_a_registry_and_a_broker(settings: HiveSettings) -> None:
    with TestClient(create_app(settings, allow_actions=True)) as c:
        response = c.post("/api/cores/1/promote")
        assert response.status_code == 503
        assert "no broker configured" in response.json()["detail"]


TOKEN = "s3cret-token-0123456789"


def test_a_token_guards_every_write(settings: HiveSettings) -> None:
    _unfinished_round(settings)
    with TestClient(create_app(settings, allow_actions=True, action_token=TOKEN)) as c:
        assert c.post("/api/rounds/r0003/cancel").status_code == 401
        assert c.post("/api/rounds/r0003/cancel", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.post("/rounds/r0003/cancel", data={"token": "wrong"}, follow_redirects=False).status_code == 401
        # A non-ASCII token is refused like any wrong one, not with a 500.
        assert c.post("/rounds/r0003/cancel", data={"token": "tökén"}, follow_redirects=False).status_code == 401
        assert c.get("/api/rounds/r0003").json()["cancel_requested"] is False
        # The pages ask for the token in the action forms; reads need none.
        assert 'name="token"' in c.get("/rounds/r0003").text
        ok = c.post("/rounds/r0003/cancel", data={"token": TOKEN}, follow_redirects=False)
        assert ok.status_code == 303
        assert c.get("/api/rounds/r0003").json()["cancel_requested"] is True


def test_a_bearer_token_passes_and_cross_site_still_fails(settings: HiveSettings) -> None:
    _unfinished_round(settings)
    with TestClient(create_app(settings, allow_actions=True, action_token=TOKEN)) as c:
        forged = c.post(
            "/api/rounds/r0003/cancel",
            headers={"Authorization": f"Bearer {TOKEN}", "Origin": "http://evil.example"},
        )
        assert forged.status_code == 403
        assert c.post("/api/rounds/r0003/cancel", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_without_a_token_the_forms_have_no_token_field(settings: HiveSettings) -> None:
    _unfinished_round(settings)
    with TestClient(create_app(settings, allow_actions=True)) as c:
        assert 'name="token"' not in c.get("/rounds/r0003").text


def test_quarantine_torn_rounds_and_a_failed_check_are_shown(settings: HiveSettings, client: TestClient) -> None:
    with ParquetLearningStore(settings.store_dir) as store:
        seq, x = store.read_with_seq(after_seq=8)[0]
        store.quarantine([Quarantined(str(x.id), seq, x.agent_id, x.skill, "unknown_skill", HOSTILE, "r0002")])
    quarantine = client.get("/api/learnings/quarantined").json()
    assert quarantine["total"] == 1
    with ParquetLearningStore(settings.store_dir, read_only=True) as store:
        assert quarantine["latest"] == [quarantined_json(q) for q in store.quarantined()]
    page = client.get("/learnings").text
    assert 'class="quarantined" data-seq="9"' in page and 'data-reason="unknown_skill"' in page
    assert HOSTILE not in page
    assert 'id="quarantined-total" data-value="1"' in client.get("/dlq").text
    torn = settings.rounds_dir / "r0003"
    torn.mkdir()
    (torn / "round.json").write_text('{"state": "rel')
    record_check(settings.home, "TypeError: can't compare offset-naive and offset-aware datetimes")
    rounds = client.get("/rounds").text
    assert 'data-round="r0003" data-state="failed"' in rounds
    assert "the last round check failed" in rounds and "offset-naive" in rounds
    assert "unreadable round.json" in client.get("/rounds/r0003").text


def test_ingest_page_and_api_draw_the_recorded_minutes(settings: HiveSettings, client: TestClient) -> None:
    from hive.ingest.history import HISTORY_FILE, IngestHistory

    empty = client.get("/ingest").text
    assert 'id="ingest-empty"' in empty and "<svg" not in empty
    now = datetime.now(UTC)
    history = IngestHistory(settings.home / HISTORY_FILE)
    history.record(6, 1, 2, [now], now=now - timedelta(minutes=2))
    history.record(3, 0, 0, [now], now=now - timedelta(minutes=1))
    history.flush()
    data = client.get("/api/ingest").json()
    assert (data["stored"], data["duplicates"], data["dead_lettered"]) == (9, 1, 2)
    assert [m["stored"] for m in data["minutes"]] == [6, 3]
    page = client.get("/ingest").text
    assert 'id="rate-chart"' in page and 'id="lag-chart"' in page and "<script" not in page
    assert 'id="stored" data-value="9"' in page
    assert client.get("/api/ingest", params={"hours": 0}).status_code == 422
    assert client.get("/api/ingest", params={"hours": 1000}).status_code == 422
    assert "stored in the last hour" in client.get("/").text


def test_round_page_draws_its_loss_curve_and_screen(settings: HiveSettings, client: TestClient) -> None:
    import json

    assert 'id="loss-chart"' not in client.get("/rounds/r0001").text  # no metrics.json yet
    out = settings.home / "rounds" / "r0001" / "out"
    out.mkdir(parents=True)
    (out / "metrics.json").write_text(json.dumps({"losses": [3.5, 2.0, float("nan"), 0.5]}))
    assert client.get("/api/rounds/r0001").json()["losses"] == [3.5, 2.0, None, 0.5]
    page = client.get("/rounds/r0001").text
    assert 'id="loss-chart"' in page and '<desc class="value">4: 0.5</desc>' in page
    (out / "metrics.json").write_text("{torn")
    assert client.get("/api/rounds/r0001").json()["losses"] is None
    assert client.get("/rounds/r0001").status_code == 200
    book = RoundBook(settings.home / "rounds")
    record = book.get("r0001")
    assert record is not None
    record.distill = record.distill | {
        "screen": {
            "enabled": True,
            "skills": {"reverse": {"agreement": 0.9, "known": True}},
            "agents": {"a1": {"reverse": {"learnings": 5, "screened": True, "agreement": 0.1, "excluded": True}}},
            "excluded": [{"agent": "a1", "skill": "reverse", "learnings": 5, "agreement": 0.1, "floor": 0.6}],
        },
        "teacher_skipped": {"adapter_sha_mismatch": 2},
    }
    book.save(record)
    page = client.get("/rounds/r0001").text
    assert 'data-agent="a1" data-skill="reverse" data-agreement="0.1" data-excluded="true"' in page
    assert "adapter_sha_mismatch" in page  # a mapping metric shows as text, not a server error


def test_fleet_page_draws_the_timeline(settings: HiveSettings) -> None:
    beats = [
        Heartbeat(agent_id="a1", skill="reverse", core_version=0, sent_at=datetime(2026, 12, 2, 10, 0, tzinfo=UTC)),
        Heartbeat(agent_id="a1", skill="reverse", core_version=1, sent_at=datetime(2026, 12, 2, 10, 5, tzinfo=UTC)),
        Heartbeat(agent_id="a1", skill="reverse", core_version=1, sent_at=datetime(2026, 12, 2, 10, 9, tzinfo=UTC)),
    ]
    with TestClient(create_app(settings, tracker=FakeTracker(beats))) as c:  # type: ignore[arg-type]
        data = c.get("/api/fleet").json()
        page = c.get("/fleet").text
    assert data["timeline"] == {
        "a1": [
            {"core_version": 0, "from": "2026-12-02T10:00:00+00:00", "to": "2026-12-02T10:00:00+00:00"},
            {"core_version": 1, "from": "2026-12-02T10:05:00+00:00", "to": "2026-12-02T10:09:00+00:00"},
        ]
    }
    assert 'id="timeline-chart"' in page and "2026-12-02T10:09:00: a1" in page
