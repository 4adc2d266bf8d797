"""``hive inspect diff`` and ``probe`` on tiny cores registered in MLflow on SQLite under a tmp HIVE_HOME."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agents.codec import BYTE_CODEC, load_codec
from agents.evaluation import TaskOutput, skill_outputs
from agents.model import WEIGHTS_FILE, CoreSize, build_core, generate, load_core, save_core
from agents.skills import BUILTIN_SKILLS
from hive.cli.inspect import app
from hive.config import GateSettings, HiveSettings
from hive.cores.files import core_dir
from hive.cores.registry import CoreRegistry
from hive.inspect.common import InspectInputError
from hive.inspect.cores import check_prompt, compare_outputs, next_token_topk, probe_model, token_text, which_right
from hive.store.parquet import ParquetLearningStore
from streams.events import ClaimCheck

from factories import make_learning
from tiny_hf import make_hf_core

runner = CliRunner()
SIZE = CoreSize(width=32, layers=1)
TASKS = 6


@pytest.fixture(scope="module")
def hive_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Cores v0 and v1 on disk, v2 only in the registry, v3 tampered with; agents with and without adapters."""
    home = tmp_path_factory.mktemp("inspect") / "hive"
    settings = HiveSettings(home=home)
    registry = CoreRegistry.from_settings(settings)
    for version in range(4):
        sha = save_core(build_core(SIZE, seed=version), core_dir(settings, version))
        registry.log_core(core_dir(settings, version), version, sha)
    shutil.rmtree(core_dir(settings, 2))
    weights = core_dir(settings, 3) / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")

    specialist = home / "agents" / "agent-s" / "specialist"
    sha = save_core(build_core(SIZE, seed=7), specialist)
    good = ClaimCheck(uri=specialist.resolve().as_uri(), sha256=sha)
    bad = ClaimCheck(uri=specialist.resolve().as_uri(), sha256="0" * 64)
    # A whole, correctly hashed specialist, but outside HIVE_ADAPTERS__ROOTS (default HIVE_HOME/agents).
    elsewhere = home.parent / "elsewhere" / "specialist"
    outside = ClaimCheck(uri=elsewhere.resolve().as_uri(), sha256=save_core(build_core(SIZE, seed=8), elsewhere))
    with ParquetLearningStore(settings.store_dir) as store:
        # Learnings on core v1, the base each adapter is loaded onto.
        adapters = [("agent-s", None), ("agent-s", good), ("agent-s", None)]
        store.append([make_learning(agent, core_version=1, adapter=claim) for agent, claim in adapters], {})
        adapters = [("agent-n", None), ("agent-t", bad), ("agent-o", outside)]
        store.append([make_learning(agent, core_version=1, adapter=claim) for agent, claim in adapters], {})
    return home


@pytest.fixture
def home(hive_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("HIVE_HOME", str(hive_home))
    monkeypatch.setenv("HIVE_GATE__EVAL_TASKS", str(TASKS))
    yield hive_home


def _out(prompt: str, output: str, score: float) -> TaskOutput:
    return TaskOutput(prompt, "ref", output, score)


def test_compare_outputs_counts_accuracy_and_keeps_differing_examples() -> None:
    a = [_out("p1", "ref", 1.0), _out("p2", "x", 0.0), _out("p3", "y", 0.0), _out("p4", "ref", 1.0)]
    b = [_out("p1", "ref", 1.0), _out("p2", "ref", 1.0), _out("p3", "z", 0.0), _out("p4", "w", 0.0)]
    row = compare_outputs(a, b, examples=2)
    assert (row["a"], row["b"], row["delta"], row["tasks"], row["differing"]) == (0.5, 0.5, 0.0, 4, 3)
    assert [(e["prompt"], e["output_a"], e["output_b"], e["right"]) for e in row["examples"]] == [
        ("p2", "x", "ref", "B"),
        ("p3", "y", "z", "neither"),
    ]
    assert (which_right(1.0, 0.0), which_right(1.0, 1.0), which_right(0.5, 0.5)) == ("A", "both", "neither")
    with pytest.raises(ValueError, match="same tasks"):
        compare_outputs(a, b[::-1], 1)


def test_token_text_is_readable() -> None:
    assert [token_text(i) for i in (97, 32, 10, 258, 259, 200)] == ["'a'", "' '", "'\\n'", "<eos>", "<sep>", "0xc8"]


def test_probe_gives_the_greedy_output_and_sorted_top_k() -> None:
    model = build_core(SIZE, seed=4)
    probed = probe_model(model, "add 2 3", top_k=5, max_new_tokens=8)
    assert probed["output"] == generate(model, ["add 2 3"], BYTE_CODEC, max_new_tokens=8)[0]
    probs = [t["prob"] for t in probed["top_k"]]
    assert len(probs) == 5 and probs == sorted(probs, reverse=True)
    assert 0 < sum(probs) <= 1 + 1e-6
    # The first greedy token is the most likely next token.
    assert next_token_topk(model, "add 2 3", 1)[0]["id"] == probed["top_k"][0]["id"]


def test_probe_on_a_core_with_its_own_tokenizer_uses_its_codec(tmp_path: Path) -> None:
    directory = make_hf_core(tmp_path / "hf")
    model, codec = load_core(directory), load_codec(directory)
    probed = probe_model(model, "cap zorvia", top_k=3, max_new_tokens=4, codec=codec)
    assert probed["output"] == generate(model, ["cap zorvia"], codec, max_new_tokens=4)[0]
    assert [t["token"] for t in probed["top_k"]] == [repr(codec.tokenizer.decode([t["id"]])) for t in probed["top_k"]]
    with pytest.raises(InspectInputError, match="128 positions"):
        check_prompt("word " * 200, codec)
    with pytest.raises(ValueError, match="vocabulary"):
        probe_model(model, "cap zorvia")  # the byte codec does not fit this core


def test_diff_json_matches_each_cores_own_evaluation(home: Path) -> None:
    result = runner.invoke(
        app, ["diff", "v0", "1", "--skill", "add", "--skill", "capital", "--examples", "2", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["a"], report["b"], report["tasks"], report["seed"]) == (0, 1, TASKS, GateSettings().inspect_seed)
    assert sorted(report["skills"]) == ["add", "capital"]
    settings = HiveSettings(home=home)
    from agents.model import load_core

    core0 = load_core(core_dir(settings, 0))
    for name, row in report["skills"].items():
        expected = skill_outputs(core0, BUILTIN_SKILLS[name], TASKS, settings.gate.inspect_seed)
        assert row["a"] == sum(o.score for o in expected) / TASKS
        assert row["delta"] == pytest.approx(row["b"] - row["a"])
        assert len(row["examples"]) == min(2, row["differing"])
        for example in row["examples"]:
            assert example["output_a"] != example["output_b"]


def test_diff_downloads_a_core_missing_on_disk(home: Path) -> None:
    result = runner.invoke(app, ["diff", "1", "2", "--skill", "add", "--tasks", "2"])
    assert result.exit_code == 0, result.output
    assert "v1" in result.stdout and "v2" in result.stdout
    assert not core_dir(HiveSettings(home=home), 2).exists()  # downloaded into a temporary folder only


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["diff", "0", "9", "--skill", "add"], 2, "core v9 is not registered"),
        (["diff", "0", "x1", "--skill", "add"], 2, "bad core version"),
        (["diff", "0", "1", "--skill", "nope"], 2, "unknown skill nope"),
        (["diff", "0", "3", "--skill", "add"], 1, "tampered"),
        (["probe", "add 1 2"], 2, "name at least one model"),
        (["probe", "add 1 2", "--agent", "agent-n"], 2, "agent 'agent-n' has no learning with an adapter"),
        (["probe", "add 1 2", "--agent", "agent-x"], 2, "agent 'agent-x' has no learnings"),
        (["probe", "add 1 2", "--agent", "agent-t"], 1, "adapter_sha_mismatch"),
        (["probe", "add 1 2", "--agent", "agent-o"], 1, "adapter_outside_roots"),
        (["probe", "x" * 80, "--core", "0"], 2, "positions"),
    ],
)
def test_refusals(home: Path, args: list[str], code: int, message: str) -> None:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == code, result.output
    assert message in result.stderr and result.stdout == ""


def test_probe_puts_cores_and_a_specialist_side_by_side(home: Path) -> None:
    result = runner.invoke(
        app, ["probe", "add 1 2", "--core", "0", "--core", "v1", "--agent", "agent-s", "--top-k", "3", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [m["label"] for m in report["models"]] == ["core v0", "core v1", "agent-s (on v1)"]
    specialist = report["models"][2]
    assert specialist["kind"] == "specialist" and specialist["adapter"].endswith("agent-s/specialist")
    for model in report["models"]:
        probs = [t["prob"] for t in model["top_k"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
    # Different weights answer differently: the columns are not one model repeated.
    assert len({tuple(t["id"] for t in m["top_k"]) for m in report["models"]}) > 1

    table = runner.invoke(app, ["probe", "add 1 2", "--core", "0", "--agent", "agent-s"])
    assert table.exit_code == 0 and "core v0" in table.stdout and "top 5" in table.stdout
