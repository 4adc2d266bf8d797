"""The dashboard's charts: SVG with no script, every point's numbers as written in the JSON, hostile text escaped."""

from __future__ import annotations

import re

from hive.ui import charts
from hive.ui.charts import accuracy_chart, ingest_charts, loss_chart, loss_steps, timeline_chart

VALUE = re.compile(r'<desc class="value">([^<]*)</desc>')


def test_accuracy_chart_draws_every_evaluated_cell_and_no_script() -> None:
    knowledge = {
        "versions": [0, 1, 2],
        "skills": ["add", "capital"],
        "matrix": {"add": {"0": 0.1, "1": 0.55}, "capital": {"1": 0.9, "2": 0.95}},
    }
    svg = str(accuracy_chart(knowledge))
    assert "<script" not in svg
    assert VALUE.findall(svg) == ["0.1", "0.55", "0.9", "0.95"]
    assert ">v0<" in svg and ">capital<" in svg
    assert accuracy_chart({"versions": [], "skills": [], "matrix": {}}) is None


def test_a_long_loss_curve_is_drawn_on_evenly_spaced_steps_and_the_last(monkeypatch) -> None:
    monkeypatch.setattr(charts, "MAX_LOSS_POINTS", 10)
    losses = [10.0 / (i + 1) for i in range(95)]
    steps = loss_steps(losses)
    assert steps[0] == 1 and steps[-1] == 95 and len(steps) <= 11
    svg = str(loss_chart(losses))
    assert VALUE.findall(svg) == [f"{s}: {losses[s - 1]!r}" for s in steps]
    assert loss_chart(None) is None and loss_chart([]) is None


def test_a_diverged_step_is_left_out_of_the_curve() -> None:
    assert loss_steps([3.0, None, 1.0]) == [1, 3]


def test_ingest_charts_draw_rate_and_lag_per_minute() -> None:
    minutes = [
        {
            "minute": "2026-12-02T10:00:00+00:00",
            "stored": 5,
            "duplicates": 0,
            "dead_lettered": 1,
            "lag_p50_s": 0.5,
            "lag_max_s": 1.5,
        },
        {
            "minute": "2026-12-02T10:01:00+00:00",
            "stored": 7,
            "duplicates": 2,
            "dead_lettered": 0,
            "lag_p50_s": None,
            "lag_max_s": None,
        },
    ]
    rate, lag = ingest_charts(minutes)
    assert VALUE.findall(str(rate)) == [
        "2026-12-02T10:00:00: 5",
        "2026-12-02T10:01:00: 7",
        "2026-12-02T10:00:00: 0",
        "2026-12-02T10:01:00: 2",
        "2026-12-02T10:00:00: 1",
        "2026-12-02T10:01:00: 0",
    ]
    assert VALUE.findall(str(lag)) == ["2026-12-02T10:00:00: 0.5", "2026-12-02T10:00:00: 1.5"]
    assert ingest_charts([]) == (None, None)


def test_the_timeline_has_a_bar_per_run_coloured_by_version_and_escapes_agent_ids() -> None:
    timeline = {
        "agent-1": [
            {"core_version": 0, "from": "2026-12-02T10:00:00+00:00", "to": "2026-12-02T10:05:00+00:00"},
            {"core_version": 1, "from": "2026-12-02T10:06:00+00:00", "to": "2026-12-02T10:09:00+00:00"},
        ],
        "<b>x</b>": [{"core_version": 1, "from": "2026-12-02T10:02:00+00:00", "to": "2026-12-02T10:03:00+00:00"}],
    }
    svg = str(timeline_chart(timeline))
    assert "<b>" not in svg and "&lt;b&gt;x&lt;/b&gt;" in svg
    assert VALUE.findall(svg) == [
        "2026-12-02T10:00:00: agent-1",
        "2026-12-02T10:05:00: agent-1",
        "2026-12-02T10:02:00: &lt;b&gt;x&lt;/b&gt;",
        "2026-12-02T10:03:00: &lt;b&gt;x&lt;/b&gt;",
        "2026-12-02T10:06:00: agent-1",
        "2026-12-02T10:09:00: agent-1",
    ]
    assert ">v0<" in svg and ">v1<" in svg
    assert timeline_chart({}) is None
