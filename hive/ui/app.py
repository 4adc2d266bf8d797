"""The dashboard's FastAPI app: server-rendered pages and their JSON, read-only unless actions are allowed."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, Response
from starlette.middleware.trustedhost import TrustedHostMiddleware

from hive.config import LOOPBACK_NAMES, DashboardSettings, HiveSettings
from hive.fleet import FleetTracker
from hive.ingest.admit import DESCRIPTIONS, REASONS
from hive.rounds.book import RoundNotFound
from hive.ui.charts import accuracy_chart, ingest_charts, loss_chart, timeline_chart
from hive.ui.errors import answer_errors
from hive.ui.render import render
from hive.ui.sources import DEFAULT_HOURS, MAX_HOURS, BadRequest, HiveReader, Unavailable, knowledge_matrix

log = logging.getLogger(__name__)

MAX_LIMIT = 1000
# No script may run on these pages, whatever a learning holds: escaping is the first defence, this the second.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def app_from_env() -> FastAPI:
    """The dashboard that ``hive ui`` serves (a uvicorn factory): the hive from ``HIVE_*``, and the options
    from ``HIVE_UI_*`` (``DashboardSettings``, which refuses unsafe ones). Raises KeyRingError for bad
    ``HIVE_INGEST__*`` key settings."""
    options = DashboardSettings()
    # On loopback, only loopback names may reach it: a web page cannot rebind its own DNS name to 127.0.0.1
    # and read the dashboard. On any other address the operator chose who may connect.
    allowed = [*LOOPBACK_NAMES] if options.host in LOOPBACK_NAMES else None
    return create_app(
        HiveSettings(),
        allowed_hosts=allowed,
        allow_actions=options.allow_actions,
        action_token=options.token or None,
    )


def create_app(
    settings: HiveSettings,
    tracker: FleetTracker | None = None,
    allowed_hosts: list[str] | None = None,
    allow_actions: bool = False,
    action_token: str | None = None,
) -> FastAPI:
    """The dashboard for the hive under ``settings.home``: GET routes only, unless ``allow_actions`` adds
    the write routes of ``hive.ui.actions`` (cancel a round, promote or roll back a core).

    With ``tracker`` None and a broker configured (``HIVE_KAFKA_BOOTSTRAP``), the app follows ``hive.fleet``
    itself while it runs. ``allowed_hosts`` limits the Host header (against DNS rebinding when served on
    loopback); None accepts any. With ``action_token``, every write must carry it (``hive.ui.actions``).
    """
    if tracker is None and settings.kafka.bootstrap:
        tracker = FleetTracker.from_settings(settings)
    reader = HiveReader(settings, tracker)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if tracker is not None:
            tracker.start()
        try:
            yield
        finally:
            if tracker is not None:
                tracker.stop()

    app = FastAPI(title="hive-mind dashboard", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.reader = reader
    if allowed_hosts is not None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    answer_errors(app, 503, Unavailable)
    answer_errors(app, 400, BadRequest)
    answer_errors(app, 404, RoundNotFound)

    if allow_actions:
        # Imported only here: the write routes pull in the Kafka producer and the release code.
        from hive.ui.actions import mount_actions

        mount_actions(app, reader, action_token)
    _pages(app, reader, allow_actions, token_required=allow_actions and action_token is not None)
    _api(app, reader)
    return app


def _blank(value: str | None) -> str | None:
    """An empty form field means no filter."""
    return value.strip() or None if value is not None else None


def _pages(app: FastAPI, reader: HiveReader, actions: bool, token_required: bool) -> None:
    def page(template: str, **context: Any) -> str:
        return render(template, actions=actions, token_required=token_required, **context)

    @app.get("/", response_class=HTMLResponse)
    def overview() -> str:
        return page("index.html", title="Overview", parts=_overview(reader))

    @app.get("/fleet", response_class=HTMLResponse)
    def fleet() -> str:
        try:
            data, notice = reader.fleet(), None
        except Unavailable as err:
            # A dashboard without a broker is a valid setup: say so on the page rather than fail it.
            data, notice = None, str(err)
        timeline = timeline_chart(data["timeline"]) if data is not None else None
        return page("fleet.html", title="Fleet", fleet=data, notice=notice, now=datetime.now(UTC), timeline=timeline)

    @app.get("/rounds", response_class=HTMLResponse)
    def rounds() -> str:
        rows = list(reversed(reader.rounds()))
        return page("rounds.html", title="Rounds", rounds=rows, notices=reader.schedule_notices())

    @app.get("/rounds/{round_id}", response_class=HTMLResponse)
    def round_page(round_id: str) -> str:
        row = reader.round(round_id)
        return page("round.html", title=f"Round {round_id}", round=row, loss_chart=loss_chart(row["losses"]))

    @app.get("/knowledge", response_class=HTMLResponse)
    def knowledge() -> str:
        cores = reader.cores()
        matrix = knowledge_matrix(cores)
        chart = accuracy_chart(matrix)
        return page("knowledge.html", title="Knowledge", cores=cores, knowledge=matrix, accuracy_chart=chart)

    @app.get("/ingest", response_class=HTMLResponse)
    def ingest(hours: float = Query(DEFAULT_HOURS, gt=0, le=MAX_HOURS)) -> str:
        data = reader.ingest(hours)
        rate, lag = ingest_charts(data["minutes"])
        return page("ingest.html", title="Ingest", ingest=data, rate_chart=rate, lag_chart=lag)

    @app.get("/learnings", response_class=HTMLResponse)
    def learnings(
        agent: str | None = None, skill: str | None = None, limit: int = Query(50, ge=1, le=MAX_LIMIT)
    ) -> str:
        agent, skill = _blank(agent), _blank(skill)
        rows = reader.learnings(limit, agent, skill)
        counts = reader.learning_counts()
        return page(
            "learnings.html",
            title="Learnings",
            rows=list(reversed(rows)),
            quarantine=reader.quarantined(limit),
            agents=sorted(counts["per_agent"]),
            total=counts["count"],
            agent=agent or "",
            skill=skill or "",
            limit=limit,
        )

    @app.get("/dlq", response_class=HTMLResponse)
    def dlq(reason: str | None = None, limit: int = Query(50, ge=0, le=MAX_LIMIT)) -> str:
        reason = _blank(reason)
        report = reader.dlq(limit, reason)
        return page(
            "dlq.html",
            title="Dead letters",
            report=report,
            reasons=REASONS,
            descriptions=DESCRIPTIONS,
            reason=reason or "",
            limit=limit,
        )


def _api(app: FastAPI, reader: HiveReader) -> None:
    @app.get("/api/fleet")
    def fleet() -> dict[str, Any]:
        return reader.fleet()

    @app.get("/api/rounds")
    def rounds() -> list[dict[str, Any]]:
        return reader.rounds()

    @app.get("/api/rounds/{round_id}")
    def round_api(round_id: str) -> dict[str, Any]:
        return reader.round(round_id)

    @app.get("/api/cores")
    def cores() -> list[dict[str, Any]]:
        return reader.cores()

    @app.get("/api/knowledge")
    def knowledge() -> dict[str, Any]:
        return knowledge_matrix(reader.cores())

    @app.get("/api/ingest")
    def ingest(hours: float = Query(DEFAULT_HOURS, gt=0, le=MAX_HOURS)) -> dict[str, Any]:
        return reader.ingest(hours)

    @app.get("/api/learnings")
    def learnings(
        agent: str | None = None, skill: str | None = None, limit: int = Query(20, ge=1, le=MAX_LIMIT)
    ) -> list[dict[str, Any]]:
        return reader.learnings(limit, _blank(agent), _blank(skill))

    @app.get("/api/learnings/quarantined")
    def quarantined(limit: int = Query(20, ge=0, le=MAX_LIMIT)) -> dict[str, Any]:
        return reader.quarantined(limit)

    @app.get("/api/dlq")
    def dlq(reason: str | None = None, limit: int = Query(20, ge=0, le=MAX_LIMIT)) -> dict[str, Any]:
        return reader.dlq(limit, _blank(reason))


def _overview(reader: HiveReader) -> list[dict[str, Any]]:
    """One card per page, each with its headline number, or why it cannot be read now."""

    def part(name: str, href: str, value: Callable[[], Any], what: str) -> dict[str, Any]:
        try:
            return {"name": name, "href": href, "value": value(), "what": what, "error": None}
        except Unavailable as err:
            return {"name": name, "href": href, "value": None, "what": what, "error": str(err)}

    return [
        part("fleet", "/fleet", lambda: len(reader.fleet()["agents"]), "agents reporting"),
        part("rounds", "/rounds", lambda: len(reader.rounds()), "rounds"),
        part("knowledge", "/knowledge", lambda: reader.champion(), "champion core version"),
        part("learnings", "/learnings", lambda: reader.learning_counts()["count"], "learnings stored"),
        part("ingest", "/ingest", lambda: reader.ingest(1.0)["stored"], "stored in the last hour"),
        part("dlq", "/dlq", lambda: reader.dlq(0)["total"], "dead letters"),
    ]
