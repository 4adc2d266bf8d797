"""Running a round with a hand-written distill job: the gate compares the job's two sets of figures (the
candidate's ``eval`` and its base core's ``base_eval``), and the hive loads no model to gate it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import distill.launch
from agents.model import WEIGHTS_FILE
from hive.config import GateSettings, HiveSettings
from hive.rounds.book import RoundBook, RoundFailed, RoundRecord
from hive.rounds.run import run_round


class RecordingRegistry:
    """What a round asks of the registry: the versions it has, and a place to register the candidate."""

    def __init__(self) -> None:
        self.logged: list[dict[str, Any]] = []

    def list_versions(self) -> list[dict[str, Any]]:
        return [{"core_version": 0}, *({"core_version": row["version"]} for row in self.logged)]

    def has_version(self, version: int) -> bool:
        return any(row["version"] == version for row in self.logged)

    def log_core(self, directory: Path, version: int, sha256: str, **fields: Any) -> None:
        self.logged.append({"version": version, "sha256": sha256, **fields})


def fake_job(metrics: dict[str, Any]) -> Any:
    """A distill job that writes a candidate core and reports ``metrics``."""

    def launch_job(manifest: Path, **kwargs: Any) -> dict[str, Any]:
        core = Path(manifest).parent / "out" / "core"
        core.mkdir(parents=True, exist_ok=True)
        (core / WEIGHTS_FILE).write_bytes(b"candidate weights")
        (core.parent / "metrics.json").write_text(json.dumps(metrics))
        return metrics

    return launch_job


@pytest.fixture
def settings(tmp_path: Path) -> HiveSettings:
    return HiveSettings(home=tmp_path / "hive", gate=GateSettings(max_regression=0.02))


def open_record(book: RoundBook) -> RoundRecord:
    record = RoundRecord(
        id="r0001",
        state="open",
        base_version=0,
        after_seq=0,
        upto_seq=4,
        learnings=4,
        per_agent={"a1": 4},
        skills=["add", "capital"],
    )
    book.save(record)
    return record


def test_a_candidate_that_holds_up_against_the_base_eval_is_registered_and_released(
    settings: HiveSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    metrics = {
        "steps": 5,
        "final_loss": 0.5,
        "eval": {"add": 0.9, "capital": 0.79},
        "base_eval": {"add": 0.5, "capital": 0.8},
    }
    monkeypatch.setattr(distill.launch, "launch_job", fake_job(metrics))
    book, registry = RoundBook(settings.rounds_dir), RecordingRegistry()
    released: list[tuple[int, str]] = []

    record = run_round(
        settings, book, registry, open_record(book), release=lambda version, r: released.append((version, r.id))
    )  # type: ignore[arg-type]

    assert (record.state, record.error, record.gate_reasons) == ("released", None, [])
    assert record.champion_eval == {"add": 0.5, "capital": 0.8}
    assert record.eval == {"add": 0.9, "capital": 0.79}
    job_s = record.distill.pop("job_s")
    assert job_s >= 0  # the distill job as the hive waited for it
    assert record.distill == {"steps": 5, "final_loss": 0.5}
    assert record.candidate_version == 1 and released == [(1, "r0001")]
    assert [row["version"] for row in registry.logged] == [1]
    assert registry.logged[0]["metrics"] == {"eval_add": 0.9, "eval_capital": 0.79}
    assert (settings.cores_dir / "v1" / WEIGHTS_FILE).read_bytes() == b"candidate weights"


def test_a_candidate_that_falls_behind_the_base_eval_is_rejected(
    settings: HiveSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    metrics = {"steps": 5, "eval": {"add": 0.9, "capital": 0.5}, "base_eval": {"add": 0.5, "capital": 0.8}}
    monkeypatch.setattr(distill.launch, "launch_job", fake_job(metrics))
    book, registry = RoundBook(settings.rounds_dir), RecordingRegistry()

    record = run_round(settings, book, registry, open_record(book))  # type: ignore[arg-type]

    assert record.state == "rejected"
    assert record.champion_eval == {"add": 0.5, "capital": 0.8}
    assert [reason.split(":")[0] for reason in record.gate_reasons] == ["capital"]
    assert record.candidate_version is None and registry.logged == []
    saved = book.get("r0001")
    assert saved is not None and saved.state == "rejected" and saved.gate_reasons == record.gate_reasons


def test_a_job_that_reports_no_base_eval_fails_the_round(
    settings: HiveSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(distill.launch, "launch_job", fake_job({"steps": 5, "eval": {"add": 0.9, "capital": 0.9}}))
    book, registry = RoundBook(settings.rounds_dir), RecordingRegistry()

    with pytest.raises(RoundFailed, match="the distill job reported no base_eval"):
        run_round(settings, book, registry, open_record(book))  # type: ignore[arg-type]

    saved = book.get("r0001")
    assert saved is not None and saved.state == "failed"
    assert (saved.error or "").startswith("the distill job reported no base_eval")
    assert saved.candidate_version is None and registry.logged == []
