"""The committed JSON Schemas in docs/schemas match the event models, and the example learning is valid."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from agents.tokenizer import EOS_ID, ByteTokenizer
from hive.schemas import EXAMPLE_FILE, SCHEMA_FILES, example_learning, export_schemas
from streams.codec import decode, encode
from streams.config import KafkaSettings
from streams.events import Learning

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "schemas"
STALE = "is stale or missing: run `hive schemas export` and commit docs/schemas"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    directory = tmp_path_factory.mktemp("schemas")
    paths = export_schemas(directory)
    return {p.name: p.read_text(encoding="utf-8") for p in paths}


def test_export_writes_the_three_schemas_and_the_example(exported: dict[str, str]) -> None:
    assert set(exported) == {*SCHEMA_FILES, EXAMPLE_FILE}
    for name, model in SCHEMA_FILES.items():
        text = exported[name]
        assert text.endswith("}\n")
        assert json.loads(text) == model.model_json_schema()
        assert json.loads(text)["title"] == model.__name__


@pytest.mark.parametrize("name", [*SCHEMA_FILES, EXAMPLE_FILE])
def test_committed_file_equals_the_export(exported: dict[str, str], name: str) -> None:
    committed = COMMITTED / name
    assert committed.is_file(), f"docs/schemas/{name} {STALE}"
    assert committed.read_text(encoding="utf-8") == exported[name], f"docs/schemas/{name} {STALE}"


def test_no_stray_json_files_are_committed(exported: dict[str, str]) -> None:
    committed = {p.name for p in COMMITTED.glob("*.json")}
    assert committed == set(exported), (
        f"docs/schemas holds {sorted(committed - set(exported))}, which export no longer writes"
    )


def test_export_is_deterministic(exported: dict[str, str], tmp_path: Path) -> None:
    again = {p.name: p.read_text(encoding="utf-8") for p in export_schemas(tmp_path / "again")}
    assert again == exported


def test_committed_example_validates_as_a_learning() -> None:
    learning = Learning.model_validate_json((COMMITTED / EXAMPLE_FILE).read_text(encoding="utf-8"))
    assert str(learning.id) == "6f1c2a9e-3b7d-4c5e-9a1f-2d8e4b6c0a17"
    assert learning.agent_id == "agent-7"
    assert learning.skill == "capital"


def test_committed_example_decodes_on_the_wire() -> None:
    raw = (COMMITTED / EXAMPLE_FILE).read_bytes()
    learning = decode(raw, Learning, KafkaSettings().max_message_bytes)
    assert learning == example_learning()
    # What the hive would re-encode is the same event, field for field.
    assert json.loads(encode(learning)) == json.loads(raw)


def test_example_teacher_signal_follows_the_answer_bytes_and_eos() -> None:
    learning = example_learning()
    teacher = learning.teacher
    assert teacher is not None
    assert teacher.k == 4
    targets = [*ByteTokenizer().encode(learning.learned_answer()), EOS_ID]
    assert [row[0] for row in teacher.token_ids] == targets
    for lps in teacher.logprobs:
        assert lps == sorted(lps, reverse=True)
        assert sum(math.exp(lp) for lp in lps) < 1.0
