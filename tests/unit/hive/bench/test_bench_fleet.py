"""The fleet benchmark's bookkeeping: how skills arrive, what forgetting is, and the report's goals."""

from pathlib import Path

import pytest

from hive.bench.fleet import (
    FleetBenchPlan,
    forgetting,
    fresh_workdir,
    multitask_steps,
    run_fleet_bench,
    split_into_rounds,
    summarise,
)
from hive.bench.fleet_seed import SeedRun
from hive.bench.fleet_stats import comparison, mean_sd
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
    assert forgetting(curves, {"a": 0, "b": 1}) == pytest.approx(0.1)


def test_no_forgetting_when_later_rounds_only_improve() -> None:
    assert forgetting([{"a": 0.5}, {"a": 0.6}], {"a": 0}) == 0.0


def _report() -> dict:
    methods = ["base", "specialist", "core", "weight_average", "task_arithmetic", "ties", "multitask"]
    accuracy = {m: {"x": 0.5, "y": 1.0} for m in methods}
    return {
        "skills": ["x", "y"],
        "methods": methods,
        "accuracy": accuracy,
        "mean_accuracy": {m: 0.75 for m in methods},
        "absorption_kd_only": 0.97,
        "absorption_kd_only_min": 0.85,
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
        "absorption_kd_only": True,
        "absorption_kd_only_min": False,
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
    assert forgetting([{"a": 0.99}, {"a": 0.97}], {"a": 0}) == 0.02


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


def test_multitask_gets_at_least_the_cores_rows_of_every_skill() -> None:
    # 64 rows per step over 3 skills: 21 of each at least; the busiest skill of the core had 1,000.
    steps = multitask_steps({"a": 1000, "b": 400, "c": 10}, skills=3, batch_size=64)
    assert steps == 48 and steps * (64 // 3) >= 1000
    with pytest.raises(ValueError, match="cannot hold a row of each"):
        multitask_steps({"a": 1}, skills=65, batch_size=64)


def test_a_difference_is_a_win_only_beyond_two_sds_and_never_on_one_seed() -> None:
    assert comparison([0.10, 0.12, 0.11])["win"] is True
    assert comparison([0.10, -0.05, 0.02])["win"] is False
    one = comparison([0.5])
    assert one["win"] is None and one["sd"] == 0.0
    assert mean_sd([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0))  # the sample sd


def _run(seed: int, core: float, kd_only: float) -> SeedRun:
    run = SeedRun(seed)
    flat = {"g": 0.0, "r": 0.0}
    run.accuracy = {
        "base": flat,
        "specialist": {"g": 0.8, "r": 1.0},
        "core": {"g": core, "r": 1.0},
        "core_kd_only": {"g": kd_only, "r": 1.0},
        "core_ce_only": {"g": 0.5, "r": 1.0},
        "weight_average": flat,
        "task_arithmetic": {"g": 0.2, "r": 0.1},
        "ties": flat,
        "multitask": {"g": 0.8, "r": 1.0},
    }
    run.rounds = [{"round": 1, "new_skills": ["g", "r"], "eval": {"g": core, "r": 1.0}}]
    run.budget = {"core": {"steps": 1}}
    return run


def test_the_headline_is_the_seed_mean_on_generalize_skills_with_recall_apart() -> None:
    runs = [_run(0, 0.8, 0.76), _run(1, 0.72, 0.8), _run(2, 0.76, 0.72)]
    report = summarise(
        FleetBenchPlan(skills=["g", "r"], seeds=3),
        ["g", "r"],
        ["generalize", "recall"],
        runs,
        [{"g": {"overlap": 0}, "r": {"overlap": 40}}] * 3,
    )
    assert report["seeds"] == [0, 1, 2]
    assert report["accuracy"]["core"]["g"] == pytest.approx(0.76)
    assert report["accuracy_sd"]["core"]["g"] == pytest.approx(0.04)
    # Absorption on the generalize skill only: 0.76 / 0.8; the recall skill's 1.0 / 1.0 does not lift it.
    assert report["absorption"] == pytest.approx(0.95)
    assert report["absorption_kd_only"] == pytest.approx(0.95)
    assert report["by_kind"]["recall"]["absorption"]["mean"] == pytest.approx(1.0)
    assert report["core_minus_best_merge"] == pytest.approx(0.56)
    assert report["by_kind"]["generalize"]["core_minus_best_merge"]["win"] is True
    # Core 0.76 ± 0.04 against multitask 0.8: no win either way.
    assert report["by_kind"]["generalize"]["core_minus_multitask"]["win"] is False
    assert report["contamination"] == {"g": 0, "r": 40}
    assert report["split"] == {"g": "generalize", "r": "recall"}
    assert set(report["ablations"]) == {"core_kd_only", "core_ce_only"}
    assert report["rounds"][0]["eval_sd"]["g"] == pytest.approx(0.04)


def test_a_plan_the_bench_cannot_run_fairly_is_refused_before_any_training(tmp_path: Path, monkeypatch) -> None:
    workdir = tmp_path / "fleet"
    with pytest.raises(ValueError, match="pretrained on skills the bench evaluates: reverse"):
        run_fleet_bench(FleetBenchPlan(skills=["agents.skills.text:Reverse", "capital"], rounds=1), workdir, print)
    (tmp_path / "tiny_space.py").write_text(
        "class Coin:\n    name = 'coin'\n    def sample(self, rng):\n        return 'flip', rng.choice(['h', 't'])\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match="'coin' drew 2000 tasks without one in its 'test' split"):
        run_fleet_bench(FleetBenchPlan(skills=["tiny_space:Coin", "capital"], rounds=1), workdir, print)
    assert not workdir.exists()  # nothing was trained, nothing written


def test_kd_comparison_arms_parse_and_bad_ones_are_refused(tmp_path: Path) -> None:
    from hive.bench.fleet_seed import KdArm, parse_kd_arm

    assert parse_kd_arm("top32") == KdArm(32)
    arm = parse_kd_arm("top16-renorm-t2")
    assert arm == KdArm(16, True, 2.0) and arm.name == "top16-renorm-t2"
    assert arm.overrides() == {"kd_residual": False, "temperature": 2.0}
    assert KdArm(16).overrides() == {"kd_residual": True, "temperature": 1.0}
    for bad in ("top0", "top16-t0", "top999", "k16", "top16-renorm-renorm", "top16 "):
        with pytest.raises(ValueError, match="KD arm"):
            parse_kd_arm(bad)
    workdir = tmp_path / "fleet"
    with pytest.raises(ValueError, match="KD arm 'top-5'"):
        run_fleet_bench(FleetBenchPlan(skills=["capital"], rounds=1, kd_variants=("top-5",)), workdir, print)
    assert not workdir.exists()


def test_every_arm_trains_on_the_plans_batch_and_an_uneven_one_is_refused() -> None:
    from hive.config import DistillSettings

    plan = FleetBenchPlan(skills=["capital"], batch_size=24, distill=DistillSettings(steps=5, batch_size=64))
    assert plan.distill.batch_size == 24 and plan.distill.steps == 5
    with pytest.raises(ValueError, match="--batch-size 33 must split evenly over 2 distill ranks"):
        FleetBenchPlan(skills=["capital"], batch_size=33)


def _named_run(seed: int, directory: Path) -> SeedRun:
    """A seed's figures over capital and swap, as run_seed returns them (without training anything)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "half-done").write_text("a seed cut short leaves files behind")
    run = SeedRun(seed)
    skills = ("capital", "swap")
    run.accuracy = {m: dict.fromkeys(skills, 0.5 + 0.01 * seed) for m in ("base", "specialist", "core", "multitask")}
    run.accuracy |= {m: dict.fromkeys(skills, 0.1) for m in ("weight_average", "task_arithmetic", "ties")}
    run.rounds = [{"round": 1, "new_skills": list(skills), "eval": run.accuracy["core"]}]
    run.budget = {"core": {"steps": 1}}
    run.streams = {"core": {"capital": {"cap zorvia"}, "swap": {"swap ab"}}}
    run.wall_s = {"core": 1.0}
    return run


def test_resume_reads_back_whole_seeds_and_runs_only_the_rest(tmp_path: Path, monkeypatch) -> None:
    import hive.bench.fleet as fleet

    ran: list[int] = []

    def fake_run_seed(plan, seed, skills, start, directory, phase, tune):
        assert not (directory / "half-done").exists(), "a seed cut short must start over in an empty directory"
        ran.append(seed)
        return _named_run(seed, directory)

    monkeypatch.setattr(fleet, "run_seed", fake_run_seed)
    workdir = tmp_path / "fleet"
    plan = FleetBenchPlan(skills=["capital", "swap"], rounds=1, seeds=2, base_steps=0, eval_tasks=4, val_tasks=2)
    first = run_fleet_bench(plan, workdir, print, resume=True)
    assert ran == [0, 1] and first["seeds"] == [0, 1]
    assert (workdir / "seed0" / "run.json").is_file()

    # A third seed later: the first two are read back, and the report covers all three.
    (workdir / "seed2").mkdir()
    (workdir / "seed2" / "half-done").write_text("killed midway")
    report = run_fleet_bench(FleetBenchPlan(**{**plan.__dict__, "seeds": 3}), workdir, print, resume=True)
    assert ran == [0, 1, 2]
    assert report["seeds"] == [0, 1, 2]
    assert [row["accuracy"]["core"]["capital"] for row in report["per_seed"]] == [0.5, 0.51, 0.52]
    assert report["contamination"]["capital"] == first["contamination"]["capital"]

    # Any other setting is another plan: nothing is read back.
    other = FleetBenchPlan(**{**plan.__dict__, "eval_tasks": 5})
    run_fleet_bench(other, workdir, print, resume=True)
    assert ran == [0, 1, 2, 0, 1]
    # Without --resume the directory is emptied first, saved seeds included.
    run_fleet_bench(plan, workdir, print)
    assert ran == [0, 1, 2, 0, 1, 0, 1]


def test_a_saved_seed_reads_back_whole_or_not_at_all(tmp_path: Path) -> None:
    from hive.bench.fleet_seed import load_seed_run, save_seed_run

    run = _named_run(3, tmp_path / "seed3")
    save_seed_run(run, tmp_path / "run.json", "abc")
    assert load_seed_run(tmp_path / "run.json", "abc") == run
    assert load_seed_run(tmp_path / "run.json", "another plan") is None
    (tmp_path / "run.json").write_text('{"seed": 3, "accur')
    assert load_seed_run(tmp_path / "run.json", "abc") is None
    (tmp_path / "run.json").write_text('{"fingerprint": "abc", "seed": 3, "unknown_field": 1, "streams": {}}')
    assert load_seed_run(tmp_path / "run.json", "abc") is None
    assert load_seed_run(tmp_path / "absent.json", "abc") is None
