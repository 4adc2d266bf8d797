"""The gate's test tasks: a secret seed of each round's own, unless a fixed one is set."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from agents.evaluation import held_out_tasks
from agents.skills import BUILTIN_SKILLS
from hive.config import GateSettings, HiveSettings
from hive.rounds.gate_seed import GateSecretError, round_eval_seed


def test_each_round_gets_its_own_secret_seed_kept_across_restarts(tmp_path: Path) -> None:
    settings = HiveSettings(home=tmp_path)
    first, second = round_eval_seed(settings, "r0001"), round_eval_seed(settings, "r0002")
    assert first != second and 0 <= first < 2**63
    assert round_eval_seed(HiveSettings(home=tmp_path), "r0001") == first  # the same hive, started again
    secret = tmp_path / "gate-secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    # Another hive (another secret) asks other tasks in its round r0001.
    assert round_eval_seed(HiveSettings(home=tmp_path / "other"), "r0001") != first
    add = BUILTIN_SKILLS["add"]
    assert held_out_tasks(add, 20, first) != held_out_tasks(add, 20, second)


def test_a_fixed_seed_is_used_as_is_and_makes_no_secret(tmp_path: Path) -> None:
    settings = HiveSettings(home=tmp_path, gate=GateSettings(eval_seed=7))
    assert round_eval_seed(settings, "r0001") == round_eval_seed(settings, "r0002") == 7
    assert not (tmp_path / "gate-secret").exists()
    assert settings.gate.inspect_seed == 7 and GateSettings().inspect_seed == 10_000


def test_a_damaged_secret_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "gate-secret").write_text("not hex\n")
    with pytest.raises(GateSecretError, match="delete it to make a new one"):
        round_eval_seed(HiveSettings(home=tmp_path), "r0001")
