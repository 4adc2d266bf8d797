"""``hive bench fleet`` on plugin skills from a file outside the project, as a researcher would run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

PLUGINS = textwrap.dedent(
    """
    class Vowels:
        name = "vowels"

        def sample(self, rng):
            word = "".join(rng.choice("bcdfgaeiou") for _ in range(rng.randint(3, 5)))
            return f"vow {word}", str(sum(c in "aeiou" for c in word))


    class Echo:
        name = "echo"

        def sample(self, rng):
            word = "".join(rng.choice("xyz") for _ in range(3))
            return f"echo {word}", word

        def score(self, prompt, answer, output):
            return sum(a == b for a, b in zip(answer, output)) / len(answer)


    class Parity:
        name = "parity"

        def sample(self, rng):
            n = rng.randint(0, 99)
            return f"par {n}", "even" if n % 2 == 0 else "odd"
    """
)


def test_bench_fleet_runs_on_three_plugin_skills(tmp_path: Path) -> None:
    plugins = tmp_path / "outside"
    plugins.mkdir()
    (plugins / "lab_skills.py").write_text(PLUGINS)
    env = dict(os.environ)
    env["HIVE_HOME"] = str(tmp_path / ".hive")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(plugins), env.get("PYTHONPATH")) if p)
    out = tmp_path / "fleet.json"
    args = ["--skill", "lab_skills:Vowels", "--skill", "lab_skills:Echo", "--skill", "lab_skills:Parity"]
    small = ["--rounds", "2", "--specialist-steps", "5", "--distill-steps", "5", "--kd-compare", "0", "--seeds", "1"]
    small += ["--base-steps", "5", "--teacher", "latest"]
    result = subprocess.run(
        [sys.executable, "-m", "hive", "bench", "fleet", "--json", str(out), *args, *small],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    report = json.loads(out.read_text())
    assert report["skills"] == ["vowels", "echo", "parity"]
    # None gives a kind or a split of its own: each generalizes, held out by the hash split, with no leak.
    assert report["split"] == {"vowels": "generalize", "echo": "generalize", "parity": "generalize"}
    assert report["contamination"] == {"vowels": 0, "echo": 0, "parity": 0}
    for skill, detail in report["contamination_detail"].items():
        assert detail["test_prompts"] > 0 and detail["validation_in_test"] == 0, skill
        streams = {"base", "specialists", "learnings", "replay", "multitask", "kd_compare"}
        assert set(detail["by_stream"]["test"]) == streams
        assert not any(detail["by_stream"]["validation"].values()), skill
    assert set(report["accuracy"]) == {
        "base",
        "specialist",
        "core",
        "core_kd_only",
        "core_ce_only",
        "weight_average",
        "task_arithmetic",
        "ties",
        "multitask",
    }
    assert report["seeds"] == [0] and report["model"] == "tiny"
    # One seed shows no spread, so no difference is called a win.
    assert report["by_kind"]["generalize"]["core_minus_multitask"]["win"] is None

    # The budget is what each arm ran: the core's rows are the distill jobs' own count, two rounds of 5 steps of
    # 32 rows (the specialists' batch), the second with as many replay rows; multitask got at least as many rows of
    # every skill.
    budget = report["budget"]
    assert budget["core"]["steps"] == 10
    assert sum(budget["core"]["rows_per_skill"].values()) == 5 * 32 * 3
    assert all(budget["multitask"]["rows_per_skill"][s] >= n for s, n in budget["core"]["rows_per_skill"].items())
    assert budget["specialist"]["rows_per_skill"] == {"vowels": 160, "echo": 160, "parity": 160}
    for arm in ("specialist", "core", "multitask"):
        assert "betas=(0.9, 0.95)" in budget[arm]["optimizer"] and "WarmupCosineLR" in budget[arm]["schedule"], arm
    # The ablations ran with their weights, as the distill jobs' manifests say.
    fleet = tmp_path / ".hive" / "bench" / "fleet" / "seed0"
    weights = {
        variant: json.loads((fleet / variant / "round2" / "manifest.json").read_text())["distill"]
        for variant in ("core", "core_kd_only", "core_ce_only")
    }
    assert [(w["kd_weight"], w["ce_weight"]) for w in weights.values()] == [(1.0, 1.0), (1.0, 0.0), (0.0, 1.0)]
    # --teacher latest: every round re-scored the learnings with the final specialists their claim checks name.
    assert {w["teacher"] for w in weights.values()} == {"latest"}
    first = json.loads((fleet / "core" / "round1" / "learnings.jsonl").read_text().splitlines()[0])
    assert first["adapter"]["uri"].startswith((fleet / "specialists").resolve().as_uri())
    for variant in ("core", "core_kd_only"):
        metrics = json.loads((fleet / variant / "round2" / "out" / "metrics.json").read_text())
        assert metrics["teacher_skipped"] == {}, variant
    assert budget["core_kd_only"]["loss"]["ce_weight"] == 0.0 and budget["core_ce_only"]["loss"]["kd_weight"] == 0.0
    assert report["base_pretraining"]["steps"] == 5
    for method, scores in report["accuracy"].items():
        assert set(scores) == {"vowels", "echo", "parity"}, method
        assert all(0.0 <= v <= 1.0 for v in scores.values())
    # Skills arrive over two rounds: the first takes two, the second adds the third.
    assert [r["new_skills"] for r in report["rounds"]] == [["vowels", "echo"], ["parity"]]
    assert set(report["rounds"][1]["eval"]) == {"vowels", "echo", "parity"}
    assert report["rounds"][1]["replay"] > 0
    assert out.with_suffix(".html").read_text().count("data:image/png;base64,") == 2
