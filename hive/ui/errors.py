"""Error answers: JSON under ``/api/``, an HTML page everywhere else."""

from __future__ import annotations

from fastapi import Request
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
