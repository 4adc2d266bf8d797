"""The dashboard's charts: pygal SVG drawn on the server from the same data as the JSON API.

The pages run no script (their Content-Security-Policy allows none), so pygal's tooltip script is left out of
every chart (an XML filter removes its config script too); what a chart shows is in its SVG. Each point carries
its numbers in a ``<desc class="value">`` element, written with ``repr`` so that a reader (the browser test)
can compare them exactly with the JSON of the same figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pygal
from markupsafe import Markup
from pygal.style import Style

# A loss curve is drawn on at most this many of its steps (evenly spaced, the last one always).
MAX_LOSS_POINTS = 400

STYLE = Style(
    background="white",
    plot_background="white",
    font_family="system-ui, sans-serif",
    title_font_size=14,
    label_font_size=11,
    major_label_font_size=11,
    legend_font_size=11,
)


def _no_script(root: Any) -> Any:
    """An XML filter: removes every ``script`` element (pygal adds its config script whatever ``js`` says)."""
    for parent in list(root.iter()):
        for child in list(parent):
            if isinstance(child.tag, str) and child.tag.rsplit("}", 1)[-1] == "script":
                parent.remove(child)
    return root


def _chart(kind: type, **config: Any) -> Any:
    defaults = {
        "style": STYLE,
        "js": [],
        "disable_xml_declaration": True,
        "width": 800,
        "height": 320,
        "explicit_size": True,
        "legend_at_bottom": True,
        "value_formatter": repr,
    }
    chart = kind(**(defaults | config))
    chart.add_xml_filter(_no_script)
    return chart


def _render(chart: Any) -> Markup:
    # pygal builds the SVG with an XML library, which escapes every label and title: agent ids are untrusted.
    return Markup(chart.render(is_unicode=True))


def accuracy_chart(knowledge: dict[str, Any]) -> Markup | None:
    """Each skill's accuracy across core versions, from ``/api/knowledge``; None with no core evaluated."""
    versions, skills, matrix = knowledge["versions"], knowledge["skills"], knowledge["matrix"]
    if not versions or not skills:
        return None
    chart = _chart(
        pygal.Line,
        title="Accuracy per skill across core versions",
        x_title="core version",
        y_title="accuracy on held-out tasks",
        range=(0, 1),
        allow_interruptions=True,
    )
    chart.x_labels = [f"v{v}" for v in versions]
    for skill in skills:
        chart.add(skill, [matrix[skill].get(str(v)) for v in versions])
    return _render(chart)


def loss_steps(losses: Sequence[float | None]) -> list[int]:
    """The 1-based steps a loss curve is drawn on: every step, or ``MAX_LOSS_POINTS`` evenly spaced and the last."""
    n = len(losses)
    stride = max(1, -(-n // MAX_LOSS_POINTS))
    steps = sorted({*range(1, n + 1, stride), n}) if n else []
    return [step for step in steps if losses[step - 1] is not None]


def loss_chart(losses: Sequence[float | None] | None) -> Markup | None:
    """A round's loss at each step, from ``/api/rounds/{id}``'s ``losses``; None before the job wrote them."""
    if not losses:
        return None
    chart = _chart(
        pygal.XY, title="Distillation loss per step", x_title="step", y_title="loss", dots_size=1.5, show_legend=False
    )
    chart.x_value_formatter = lambda step: f"{step:g}"  # steps are whole: 40, not 40.0
    chart.add("loss", [(step, losses[step - 1]) for step in loss_steps(losses)])
    return _render(chart)


def _minute(row: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(row["minute"])


def ingest_charts(minutes: list[dict[str, Any]]) -> tuple[Markup | None, Markup | None]:
    """The ingest rate (learnings stored, duplicates and dead letters per minute) and lag (median and largest) over
    the minutes of ``/api/ingest``; None and None with no minute recorded."""
    if not minutes:
        return None, None
    common = {"x_value_formatter": lambda moment: moment.isoformat(), "x_label_rotation": 20, "dots_size": 2}
    rate = _chart(pygal.DateTimeLine, title="Ingest rate", y_title="per minute", **common)
    for key, label in (("stored", "stored"), ("duplicates", "duplicates"), ("dead_lettered", "dead letters")):
        rate.add(label, [(_minute(row), row[key]) for row in minutes])
    lag = _chart(pygal.DateTimeLine, title="Ingest lag", y_title="seconds", allow_interruptions=True, **common)
    for key, label in (("lag_p50_s", "median"), ("lag_max_s", "largest")):
        lag.add(label, [(_minute(row), row[key]) if row[key] is not None else None for row in minutes])
    return _render(rate), _render(lag)


def timeline_chart(timeline: dict[str, list[dict[str, Any]]]) -> Markup | None:
    """Which agent ran which core version, and when, from ``/api/fleet``'s ``timeline``: one row per agent, one
    bar per run, one colour per core version; None with no heartbeat."""
    agents = sorted(timeline)
    if not agents:
        return None
    row_of = {agent: len(agents) - i for i, agent in enumerate(agents)}  # the first agent on top
    agent_at = {row: agent for agent, row in row_of.items()}
    chart = _chart(
        pygal.DateTimeLine,
        title="Which core each agent ran",
        allow_interruptions=True,
        x_value_formatter=lambda moment: moment.isoformat(),
        x_label_rotation=20,
        height=max(200, 60 + 28 * len(agents)),
        range=(0.5, len(agents) + 0.5),
        stroke_style={"width": 10, "linecap": "butt"},
        dots_size=3,
    )
    # The points' value is the row; shown as the agent's id.
    chart.value_formatter = lambda row: agent_at.get(round(row), "")
    chart.y_labels = [{"label": agent, "value": row} for agent, row in row_of.items()]
    versions = sorted({run["core_version"] for runs in timeline.values() for run in runs})
    for version in versions:
        points: list[tuple[datetime, int] | None] = []
        for agent in agents:
            for run in timeline[agent]:
                if run["core_version"] == version:
                    start, end = datetime.fromisoformat(run["from"]), datetime.fromisoformat(run["to"])
                    points += [(start, row_of[agent]), (end, row_of[agent]), None]
        chart.add(f"v{version}", points)
    return _render(chart)
