"""The fleet benchmark's bookkeeping: how skills arrive, what forgetting is, and the report's goals."""

from pathlib import Path

import pytest

from hive.bench.fleet import _forgetting, fresh_workdir, split_into_rounds
from hive.bench.html_report import goal_rows, render_html


def test_skills_arrive_over_rounds_with_the_first_taking_the_extra() -> None:
    assert split_into_rounds(["a", "b", "c", "d"], 3) == [["a", "b"], ["c"], ["d"]]
    assert split_into_rounds(["a", "b", "c"], 3) == [["a"], ["b"], ["c"]]
    assert split_into_rounds(["a", "b"], 1) == [["a", "b"]]


@pytest.mark.parametrize("rounds", [0, 5])
def test_impossible_round_counts_are_refused(rounds: int) -> None:
    with pytest.raises(ValueError, match="cannot arrive"):
        split_into_rounds(["a", "b", "c", "d"], rounds)


def test_forgetting_is_the_largest_later_drop_below_the_teaching_round() -> None:
    curves = [{"a": 0.9}, {"a": 0.95, "b": 0.8}, {"a": 0.85, "b": 0.7}]
    assert _forgetting(curves, {"a": 0, "b": 1}) == pytest.approx(0.1)


def test_no_forgetting_when_later_rounds_only_improve() -> None:
    assert _forgetting([{"a": 0.5}, {"a": 0.6}], {"a": 0}) == 0.0


def _report() -> dict:
    methods = ["base", "specialist", "core", "weight_average", "task_arithmetic", "ties", "multitask"]
    accuracy = {m: {"x": 0.5, "y": 1.0} for m in methods}
    return {
        "skills": ["x", "y"],
        "methods": methods,
        "accuracy": accuracy,
        "mean_accuracy": {m: 0.75 for m in methods},
        "absorption": 0.97,
        "absorption_min": 0.85,
        "forgetting": 0.0,
        "core_minus_best_merge": 0.3,
        "core_minus_multitask": -0.05,
        "kd_compare": {"gap_topk_vs_full": 0.004},
        "rounds": [{"round": 1, "eval": {"x": 0.5}}, {"round": 2, "eval": {"x": 0.6, "y": 1.0}}],
        "wall_s": {"total": 1.0},
        "machine": {"platform": "test"},
        "date": "2026-11-22T00:00:00+00:00",
    }


def test_goal_rows_mark_each_goal_met_or_missed() -> None:
    met = {key: ok for key, _, _, ok, _ in goal_rows(_report())}
    assert met == {
        "absorption": True,
        "absorption_min": False,
        "forgetting": True,
        "core_minus_best_merge": True,
        "core_minus_multitask": False,
        "kd_gap": True,
    }


def test_html_report_has_both_figures_and_every_method() -> None:
    page = render_html(_report())
    assert page.count("data:image/png;base64,") == 2
    for method in _report()["methods"]:
        assert f"<th>{method}</th>" in page
    assert "missed" in page


def test_forgetting_of_exactly_two_tasks_reads_as_0_02() -> None:
    assert _forgetting([{"a": 0.99}, {"a": 0.97}], {"a": 0}) == 0.02


def test_a_run_starts_in_an_empty_workdir(tmp_path: Path) -> None:
    """A second run in one HIVE_HOME must not find the first run's rounds (and resume their checkpoints)."""
    workdir = tmp_path / "bench" / "fleet"
    ckpt = workdir / "round1" / "out" / "ckpt"
    ckpt.mkdir(parents=True)
    (ckpt / "committed").write_text("global_step300")
    fresh_workdir(workdir)
    assert workdir.is_dir() and not any(workdir.iterdir())
    fresh_workdir(tmp_path / "new")
    assert (tmp_path / "new").is_dir()
