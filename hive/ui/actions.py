"""The dashboard's write routes, mounted only with ``hive ui --allow-actions``: cancel a round, promote or
roll back a core, through the same functions as ``hive round cancel`` and ``hive core promote|rollback``."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from kafka import KafkaProducer
from kafka.errors import KafkaError

from hive.cores.registry import RegistryError
from hive.cores.release import ReleaseError, release_core, rollback
from hive.rounds.cancel import RoundStateError, cancel_round
from hive.ui.errors import answer_errors, error_response
from hive.ui.sources import HiveReader, Unavailable
from streams.kafka import make_producer

WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
# A form post is a few fields; a bigger body is not one of ours, and is not read into memory.
MAX_FORM_BYTES = 4096


def cross_site(request: Request) -> bool:
    """True for a write a browser sent from another site's page (a forged form post).

    A browser names the page's origin in ``Origin`` (and ``Sec-Fetch-Site``) on every POST; a script or
    curl sends neither, and is let through: it could read the dashboard's answers anyway.
    """
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return True
    origin = request.headers.get("origin")
    if origin is None:
        return False
    return urlsplit(origin).netloc != request.headers.get("host")


@contextmanager
def _producer(reader: HiveReader) -> Iterator[KafkaProducer]:
    if not reader.settings.kafka.bootstrap:
        raise Unavailable("no broker configured: set HIVE_KAFKA_BOOTSTRAP to release cores")
    try:
        producer = make_producer(reader.settings.kafka)
    except KafkaError as err:
        raise Unavailable(f"cannot reach the broker at {reader.settings.kafka.bootstrap}: {err}") from err
    try:
        yield producer
    finally:
        producer.close()


async def presented_token(request: Request) -> str | None:
    """The token a write carries: ``Authorization: Bearer T`` (scripts), or the form field ``token`` (the
    pages' buttons, which a browser cannot give a header)."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        body = await request.body()
        if len(body) <= MAX_FORM_BYTES:
            fields = parse_qs(body.decode("utf-8", errors="replace"))
            return fields.get("token", [None])[0]
    return None


def token_matches(presented: str | None, expected: str) -> bool:
    # compare_digest needs ASCII str on both sides (or bytes): compare the UTF-8 bytes, in constant time.
    return presented is not None and hmac.compare_digest(presented.encode("utf-8"), expected.encode("utf-8"))


def mount_actions(app: FastAPI, reader: HiveReader, token: str | None = None) -> None:
    """Adds the write routes: JSON under ``/api/``, and form posts that redirect back to the page.

    With ``token``, a write without it (``presented_token``) is refused with 401 before anything happens.
    """

    @app.middleware("http")
    async def guarded_writes(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if request.method in WRITE_METHODS:
            if cross_site(request):
                return error_response(request, 403, "cross-site request refused: post from the dashboard's own pages")
            if token is not None and not token_matches(await presented_token(request), token):
                return error_response(request, 401, "this dashboard's actions need its token (hive ui --token)")
        return await call_next(request)

    # RegistryError: an unknown core version (UnknownVersionError) or a core that fails its sha256 check.
    answer_errors(app, 409, RoundStateError, ReleaseError, RegistryError)
    answer_errors(app, 503, KafkaError, prefix="the broker did not take the release: ")

    def cancel(round_id: str) -> dict[str, Any]:
        cancel_round(reader.settings, round_id)
        return reader.round(round_id)

    def promote(version: int) -> dict[str, Any]:
        with _producer(reader) as producer:
            return release_core(reader.settings, reader.registry(), producer, version, action="promote").to_json()

    def roll_back() -> dict[str, Any]:
        with _producer(reader) as producer:
            return rollback(reader.settings, reader.registry(), producer).to_json()

    @app.post("/api/rounds/{round_id}/cancel")
    def cancel_api(round_id: str) -> dict[str, Any]:
        return cancel(round_id)

    @app.post("/api/cores/{version}/promote")
    def promote_api(version: int) -> dict[str, Any]:
        return promote(version)

    @app.post("/api/cores/rollback")
    def rollback_api() -> dict[str, Any]:
        return roll_back()

    # Forms on the pages post here and land back on the page, which shows the new state.
    @app.post("/rounds/{round_id}/cancel")
    def cancel_form(round_id: str) -> RedirectResponse:
        cancel(round_id)
        return RedirectResponse(f"/rounds/{round_id}", status_code=303)

    @app.post("/cores/{version}/promote")
    def promote_form(version: int) -> RedirectResponse:
        promote(version)
        return RedirectResponse("/knowledge", status_code=303)

    @app.post("/cores/rollback")
    def rollback_form() -> RedirectResponse:
        roll_back()
        return RedirectResponse("/knowledge", status_code=303)
