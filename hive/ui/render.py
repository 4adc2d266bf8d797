"""The dashboard's Jinja2 templates, autoescaped: every learning and dead letter is untrusted text."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

# Autoescape every template, whatever its name: a prompt or a payload may hold markup or script.
_env = Environment(
    loader=PackageLoader("hive.ui", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)

STATE_COLOURS = {
    "open": "#6c8ebf",
    "distilling": "#3b7dd8",
    "released": "#2e9d55",
    "rejected": "#d08a1e",
    "failed": "#c0392b",
    "cancelled": "#7f8c8d",
    "skipped": "#95a5a6",
    "interrupted": "#8e44ad",
}


def heat(value: float | None) -> str:
    """A cell background for an accuracy in [0, 1]: red for 0 through yellow to green for 1."""
    if value is None:
        return "#eeeeee"
    clamped = min(1.0, max(0.0, float(value)))
    return f"hsl({round(120 * clamped)}, 65%, {round(82 - 22 * clamped)}%)"


def num(value: Any, digits: int = 3) -> str:
    """A number for a table cell; anything else (a metric that is a mapping, a name) as its text."""
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def epoch(value: float | None) -> str:
    """A Unix time as UTC ISO 8601 to the second."""
    if value is None:
        return "—"
    return datetime.fromtimestamp(value, UTC).isoformat(timespec="seconds")


def exact(value: float | int | None) -> str:
    """A number as a ``data-value`` attribute: Python's repr round-trips a float, so a reader can compare
    it exactly with the JSON of the same number."""
    return "" if value is None else repr(value)


_env.filters.update(heat=heat, num=num, epoch=epoch, exact=exact, state_colour=lambda s: STATE_COLOURS.get(s, "#999"))


def render(template: str, **context: Any) -> str:
    return _env.get_template(template).render(**context)
