"""``hive learnings count|ls``, ``hive dlq ls`` and ``hive serve``'s refusals, run as a user would."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hive.cli.app import app
from hive.config import HiveSettings
from hive.store.interface import DeadLetter, Quarantined
from hive.store.parquet import ParquetLearningStore
from streams.events import Learning

from factories import make_learning

runner = CliRunner()


# Markup and an escape code in every prompt: the table shows them as text, not interpreted.
MARKED = "[bold]prompt {}\x1b[31m"


def letter(offset: int, reason: str, payload: bytes | None) -> DeadLetter:
    body = payload or b""
    return DeadLetter(
        reason=reason,
        detail=f"what was wrong with {offset}",
        source_topic="hive.learnings",
        source_partition=1,
        source_offset=offset,
        size=-1 if payload is None else len(body),
        payload_sha256=hashlib.sha256(body).hexdigest(),
        payload_head=body[:4096],
        key="agent-x",
    )


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HIVE_HOME", str(tmp_path / "hive"))
    settings = HiveSettings()
    with ParquetLearningStore(settings.store_dir) as store:
        a = [make_learning("agent-a", "reverse", prompt=MARKED.format(i), completion=f"answer {i}") for i in range(5)]
        b = [make_learning("agent-b", "add", prompt=MARKED.format(i), completion=f"answer {i}") for i in range(3)]
        store.append(a, {})
        store.append(b, {("hive.learnings", 1): 4})
        store.append(
            [],
            {},
            [
                letter(0, "invalid_json", b'{"agent_id": [/bold]'),
                letter(1, "signature", b"{}"),
                letter(2, "signature", b"\xff\xfe"),
                letter(3, "undecodable", None),
            ],
        )
    return settings.home


def test_learnings_count(home: Path) -> None:
    result = runner.invoke(app, ["learnings", "count", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"count": 8, "unique_ids": 8, "agent": None, "skill": None}
    result = runner.invoke(app, ["learnings", "count", "--agent", "agent-b", "--json"])
    assert json.loads(result.stdout)["count"] == 3
    result = runner.invoke(app, ["learnings", "count", "--skill", "reverse", "--agent", "agent-b", "--json"])
    assert json.loads(result.stdout)["count"] == 0
    result = runner.invoke(app, ["learnings", "count", "--skill", "reverse"])
    assert result.exit_code == 0
    assert result.stdout.strip() == "5 learnings (5 unique ids) for skill reverse"


def test_learnings_ls_json_lists_the_newest_oldest_first(home: Path) -> None:
    result = runner.invoke(app, ["learnings", "ls", "--limit", "4", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["seq"] for r in rows] == [5, 6, 7, 8]
    assert [r["agent_id"] for r in rows] == ["agent-a", "agent-b", "agent-b", "agent-b"]
    assert Learning.model_validate({k: v for k, v in rows[0].items() if k != "seq"}).skill == "reverse"
    result = runner.invoke(app, ["learnings", "ls", "--agent", "agent-a", "--after-seq", "1", "--limit", "2", "--json"])
    assert [r["seq"] for r in json.loads(result.stdout)] == [2, 3]


def test_learnings_ls_table(home: Path) -> None:
    result = runner.invoke(app, ["learnings", "ls", "--skill", "add"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert result.stdout.count("agent-b") == 3 and "agent-a" not in result.stdout
    assert "[bold]prompt 0\\x1b[31m" in result.stdout
    result = runner.invoke(app, ["learnings", "ls", "--agent", "nobody"])
    assert result.exit_code == 0
    assert result.stdout == "" and "no learnings match" in result.stderr


def test_dlq_ls_json(home: Path) -> None:
    result = runner.invoke(app, ["dlq", "ls", "--json", "--limit", "3"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["total"] == 4
    assert report["by_reason"] == {"invalid_json": 1, "signature": 2, "undecodable": 1}
    assert [d["source_offset"] for d in report["latest"]] == [3, 2, 1]
    newest = report["latest"][0]
    assert (newest["size"], newest["payload_preview"]) == (-1, "(no value)")
    assert base64.b64decode(report["latest"][1]["payload_head_base64"]) == b"\xff\xfe"
    result = runner.invoke(app, ["dlq", "ls", "--json", "--reason", "signature"])
    assert [d["source_offset"] for d in json.loads(result.stdout)["latest"]] == [2, 1]


def test_dlq_ls_table(home: Path) -> None:
    result = runner.invoke(app, ["dlq", "ls"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "dead letters: 4" in result.stdout
    for reason in ("invalid_json", "signature", "undecodable"):
        assert reason in result.stdout
    assert "missing or does not match" in result.stdout  # each reason's meaning
    assert '{"agent_id": [/bold]' in result.stdout  # a payload that is not valid markup is shown as is


def test_dlq_ls_refuses_an_unknown_reason(home: Path) -> None:
    result = runner.invoke(app, ["dlq", "ls", "--reason", "nope"])
    assert result.exit_code == 2
    assert "unknown reason 'nope'" in result.stderr and "unknown_agent" in result.stderr


def test_commands_without_a_store_exit_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HIVE_HOME", str(tmp_path / "empty"))
    for args in (["learnings", "count"], ["learnings", "ls"], ["dlq", "ls"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 1, (args, result.output)
        assert "no learning store at" in result.stderr
        assert result.stdout == ""
    assert not (tmp_path / "empty").exists()  # reading creates nothing


def test_serve_without_a_broker_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HIVE_KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.setenv("HIVE_HOME", str(tmp_path / "hive"))
    result = runner.invoke(app, ["serve", "--no-rounds"])
    assert result.exit_code == 2, result.output
    assert "HIVE_KAFKA_BOOTSTRAP is not set" in result.stderr
    assert result.stdout == ""


def test_serve_refuses_a_malformed_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HIVE_KAFKA_BOOTSTRAP", "127.0.0.1:1")  # never dialled: the key is checked first
    monkeypatch.setenv("HIVE_HOME", str(tmp_path / "hive"))
    monkeypatch.setenv("HIVE_INGEST__AGENT_KEYS", '{"agent-a": "hex:xyz"}')
    result = runner.invoke(app, ["serve"])
    assert result.exit_code == 2, result.output
    assert "agent-a" in result.stderr and "invalid HIVE_" in result.stderr
    monkeypatch.setenv("HIVE_INGEST__AGENT_KEYS", "not json")
    result = runner.invoke(app, ["serve"])
    assert result.exit_code == 2, result.output
    assert 'field "ingest"' in result.stderr


def test_serve_refuses_a_plugin_skill_that_does_not_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HIVE_KAFKA_BOOTSTRAP", "127.0.0.1:1")  # never dialled: the skills are checked first
    monkeypatch.setenv("HIVE_HOME", str(tmp_path / "hive"))
    monkeypatch.setenv("HIVE_SKILLS", '["no_such_module_here:Skill"]')
    result = runner.invoke(app, ["serve"])
    assert result.exit_code == 2, result.output
    assert "invalid HIVE_SKILLS" in result.stderr and "no_such_module_here" in result.stderr
    assert not (tmp_path / "hive").exists()


def test_quarantined_learnings_are_listed_and_counted(home: Path) -> None:
    settings = HiveSettings()
    # Quarantined through a read-only store, as `hive round run` does beside a running `hive serve`.
    with (
        ParquetLearningStore(settings.store_dir) as writer,
        ParquetLearningStore(settings.store_dir, read_only=True) as reader,
    ):
        rows = reader.read_with_seq(after_seq=5)
        entries = [
            Quarantined(str(x.id), seq, x.agent_id, x.skill, "unknown_skill", "add it to HIVE_SKILLS", "r0001")
            for seq, x in rows[:2]
        ]
        assert reader.quarantine(entries) == 2
        assert reader.quarantine(entries) == 0  # the first entry of a learning stays
        assert writer.read(skip_quarantined=True, agent_id="agent-b") == [rows[2][1]]
        assert writer.count() == 8  # still stored
    listed = runner.invoke(app, ["learnings", "ls", "--quarantined", "--json"])
    assert listed.exit_code == 0, listed.output
    assert [(q["seq"], q["agent_id"], q["reason"], q["round_id"]) for q in json.loads(listed.stdout)] == [
        (7, "agent-b", "unknown_skill", "r0001"),
        (6, "agent-b", "unknown_skill", "r0001"),
    ]
    only_a = runner.invoke(app, ["learnings", "ls", "--quarantined", "--json", "--agent", "agent-a"])
    assert json.loads(only_a.stdout) == []
    table = runner.invoke(app, ["learnings", "ls", "--quarantined"], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "2 quarantined learnings (unknown_skill 2)" in table.stderr
    assert "add it to HIVE_SKILLS" in table.stdout
    dlq = json.loads(runner.invoke(app, ["dlq", "ls", "--json"]).stdout)
    assert dlq["quarantined"] == {"total": 2, "by_reason": {"unknown_skill": 2}}
    assert "quarantined learnings: 2" in runner.invoke(app, ["dlq", "ls"], env={"COLUMNS": "200"}).stdout
