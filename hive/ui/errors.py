"""Error answers: JSON under ``/api/``, an HTML page everywhere else."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from hive.ui.render import render


def error_response(request: Request, status: int, detail: str) -> Response:
    if request.url.path.startswith("/api/"):
        return JSONResponse({"detail": detail}, status_code=status)
    title = {
        400: "Bad request",
        401: "Token required",
        403: "Forbidden",
        404: "Not found",
        409: "Refused",
        503: "Unavailable",
    }
    page = render("error.html", title=title.get(status, "Error"), detail=detail, status=status, actions=False)
    return HTMLResponse(page, status_code=status)


def answer_errors(app: FastAPI, status: int, *errors: type[Exception], prefix: str = "") -> None:
    """Answers each of ``errors`` that a route raises with ``status`` and the error's message after ``prefix``."""

    async def answer(request: Request, err: Exception) -> Response:
        return error_response(request, status, prefix + str(err))

    for error in errors:
        app.add_exception_handler(error, answer)
