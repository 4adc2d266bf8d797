"""``hive ui`` in headless Debian chromium (Playwright): every page loads, its numbers equal the CLI's JSON,
the learnings filters work, hostile text stays text, and each page is saved as a screenshot."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agents.model import CoreSize, build_core, save_core
from hive.config import HiveSettings
from hive.cores.registry import CHAMPION, CoreRegistry
from hive.ingest.history import HISTORY_FILE, IngestHistory
from hive.rounds.book import RoundBook, RoundRecord
from hive.store.interface import PAYLOAD_HEAD_BYTES, DeadLetter
from hive.store.parquet import ParquetLearningStore
from streams import topics
from streams.broker import EmbeddedBroker
from streams.codec import encode
from streams.config import KafkaSettings
from streams.events import Heartbeat, Learning
from streams.kafka import create_topics, make_producer, send_and_wait

from factories import make_learning

CHROMIUM = Path("/usr/bin/chromium")
# Headless, and quiet: the machine (and CI) has no internet, and without the background-networking flags
# chromium keeps trying to reach Google's services.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--no-first-run",
    "--mute-audio",
]
HOSTILE_PROMPT = "<script>window.__pwned = 1</script><b>bold?</b>"
# Where the knowledge and fleet screenshots are copied, for a person to look at after the run.
SCREENSHOTS = Path(os.environ.get("HIVE_UI_SCREENSHOTS", Path(tempfile.gettempdir()) / "hive-ui-screenshots"))


# -- the hive under test ---------------------------------------------------------------------------------


def _learning(agent: str, skill: str, n: int, prompt: str | None = None) -> Learning:
    """A learning the pages show: rewards of 0 to 0.75 by ``n``, each with its correction."""
    return make_learning(
        agent, skill, n, prompt=prompt, completion=f"out {n}", reward=(n % 4) / 4, correction=f"fix {n}"
    )


def _dead_letter(reason: str, offset: int, payload: bytes) -> DeadLetter:
    return DeadLetter(
        reason=reason,
        detail=f"refused record {offset}",
        source_topic=topics.LEARNINGS,
        source_partition=0,
        source_offset=offset,
        size=len(payload),
        payload_sha256=hashlib.sha256(payload).hexdigest(),
        payload_head=payload[:PAYLOAD_HEAD_BYTES],
        key="agent-1",
    )


def _fill_store(settings: HiveSettings) -> None:
    with ParquetLearningStore(settings.store_dir) as store:
        store.append([_learning("agent-1", "reverse", n) for n in range(12)], {})
        store.append([_learning("agent-2", "sort", n) for n in range(8)], {})
        store.append([_learning("agent-2", "sort", 99, prompt=HOSTILE_PROMPT)], {})
        dead = [
            _dead_letter("invalid_json", 1, b"{not json"),
            _dead_letter("invalid_json", 2, b"]["),
            _dead_letter("schema", 3, b'{"agent_id": "<script>alert(1)</script>"}'),
        ]
        store.append([], {}, dead)


def _record_rounds(settings: HiveSettings) -> None:
    book = RoundBook(settings.rounds_dir)
    common = {"per_agent": {"agent-1": 12}, "skills": ["reverse", "sort"]}
    book.save(
        RoundRecord(
            id="r0001",
            state="released",
            base_version=0,
            after_seq=0,
            upto_seq=12,
            learnings=12,
            candidate_version=1,
            eval={"reverse": 0.84, "sort": 0.31},
            champion_eval={"reverse": 0.02, "sort": 0.0},
            distill={"steps": 40, "first_loss": 4.25, "final_loss": 0.6171875, "wall_s": 12.5},
            wall_s=20.25,
            **common,
        )
    )
    book.save(
        RoundRecord(
            id="r0002",
            state="rejected",
            base_version=1,
            after_seq=12,
            upto_seq=20,
            learnings=8,
            eval={"reverse": 0.5, "sort": 0.62},
            champion_eval={"reverse": 0.84, "sort": 0.31},
            gate_reasons=["reverse dropped by 0.340 (0.840 -> 0.500), more than the limit 0.020"],
            distill={"steps": 40, "first_loss": 2.0, "final_loss": 0.75},
            wall_s=18.0,
            per_agent={"agent-2": 8},
            skills=["reverse", "sort"],
        )
    )
    book.save(
        RoundRecord(
            id="r0003",
            state="failed",
            base_version=1,
            after_seq=12,
            upto_seq=21,
            learnings=9,
            error="distill job exited with code 1\n<b>Traceback</b> ...",
            per_agent={"agent-2": 9},
            skills=["reverse", "sort"],
        )
    )


LOSSES = [4.25 / (1 + 0.1 * step) for step in range(40)]


def _write_losses_and_ingest(settings: HiveSettings) -> None:
    """r0001's distill job's losses, and three minutes of ingest as `hive serve` records them."""
    out = settings.rounds_dir / "r0001" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps({"losses": LOSSES}))
    history = IngestHistory(settings.home / HISTORY_FILE)
    now = datetime.now(UTC).replace(second=30, microsecond=0)
    for minutes_ago, stored, dead, lag_s in ((3, 12, 0, 0.5), (2, 9, 3, 2.0), (1, 0, 1, None)):
        at = now - timedelta(minutes=minutes_ago)
        created = [] if lag_s is None else [at - timedelta(seconds=lag_s)] * stored
        history.record(stored, 0, dead, created, now=at)
    history.flush()


def _register_cores(settings: HiveSettings) -> None:
    registry = CoreRegistry.from_settings(settings)
    evals = {0: {"reverse": 0.02, "sort": 0.0}, 1: {"reverse": 0.84, "sort": 0.31}}
    for version in (0, 1):
        directory = settings.cores_dir / f"v{version}"
        sha = save_core(build_core(CoreSize(width=32, layers=1), seed=version), directory)
        registry.log_core(
            directory,
            version,
            sha,
            metrics={f"eval_{k}": v for k, v in evals[version].items()},
            round_id="r0001" if version == 1 else None,
        )
    registry.set_alias("previous", 0)
    registry.set_alias(CHAMPION, 1)


def _publish_heartbeats(bootstrap: str, agent_keys: Any) -> None:
    kafka = KafkaSettings(bootstrap=bootstrap)
    create_topics(kafka)
    producer = make_producer(kafka)
    try:
        now = datetime.now(UTC).replace(microsecond=0)
        # agent-1 ran v0 a minute ago and v1 now: the fleet timeline shows both runs.
        beats = [
            ("agent-1", "reverse", 0, now - timedelta(seconds=60)),
            ("agent-1", "reverse", 1, now),
            ("agent-2", "sort", 0, now),
        ]
        for agent, skill, version, sent_at in beats:
            beat = Heartbeat(agent_id=agent, skill=skill, core_version=version, sent_at=sent_at, state="serving")
            # Signed: the dashboard, as `hive fleet`, counts a heartbeat only once it verifies.
            send_and_wait(producer, topics.FLEET, agent.encode(), encode(agent_keys.sign(beat)))
    finally:
        producer.close()


# -- processes -------------------------------------------------------------------------------------------


def _env(home: Path, bootstrap: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIVE_")}
    return env | {"HIVE_HOME": str(home), "HIVE_KAFKA_BOOTSTRAP": bootstrap, "PYTHONUNBUFFERED": "1"}


def _cli_json(env: dict[str, str], *args: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "hive", *args, "--json"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"hive {' '.join(args)} --json exited {done.returncode}:\n{done.stderr}"
    return json.loads(done.stdout)


def _stop(proc: subprocess.Popen[bytes], timeout_s: float = 15.0) -> int:
    """SIGTERM by pid, and SIGKILL (which fails the caller's check) if it does not stop in time."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        return proc.wait(timeout=timeout_s)


def _wait_for_url(proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 60.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = re.search(r"http://127\.0\.0\.1:\d+/", log.read_text(errors="replace"))
        if found:
            return found.group(0)
        assert proc.poll() is None, f"hive ui exited {proc.returncode}:\n{log.read_text(errors='replace')}"
        time.sleep(0.1)
    pytest.fail(f"hive ui printed no URL within {timeout_s} s:\n{log.read_text(errors='replace')}")


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def _wait_for_fleet(base: str, agents: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    seen: Any = None
    while time.monotonic() < deadline:
        try:
            seen = _get_json(base + "api/fleet")
        except urllib.error.HTTPError as err:
            seen = err.read().decode(errors="replace")
        if isinstance(seen, dict) and len(seen["agents"]) >= agents:
            return
        time.sleep(0.2)
    pytest.fail(f"the dashboard's fleet did not show {agents} agents within {timeout_s} s: {seen}")


@pytest.fixture
def hive_ui(tmp_path: Path, agent_keys: Any) -> Iterator[tuple[str, dict[str, str]]]:
    """A hive with learnings, dead letters, rounds, two cores and two agents' heartbeats, and ``hive ui``
    serving it; yields the dashboard's URL and the environment the CLI reads the same hive with."""
    home = tmp_path / ".hive"
    broker = EmbeddedBroker(log_path=tmp_path / "tansu.log")
    broker.start()
    ui: subprocess.Popen[bytes] | None = None
    try:
        settings = HiveSettings(home=home, kafka=KafkaSettings(bootstrap=broker.bootstrap))
        _fill_store(settings)
        _record_rounds(settings)
        _register_cores(settings)
        _write_losses_and_ingest(settings)
        _publish_heartbeats(broker.bootstrap, agent_keys)
        env = _env(home, broker.bootstrap) | agent_keys.env
        log = tmp_path / "ui.log"
        with open(log, "wb") as out:
            ui = subprocess.Popen(
                [sys.executable, "-m", "hive", "ui", "--port", "0"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        base = _wait_for_url(ui, log)
        _wait_for_fleet(base, agents=2)
        yield base, env
    finally:
        try:
            if ui is not None:
                code, log_text = _stop(ui), (tmp_path / "ui.log").read_text(errors="replace")
                # uvicorn shuts down cleanly on SIGTERM, then re-raises it so that its exit status tells why.
                assert code in (0, -signal.SIGTERM), log_text
                assert "Traceback" not in log_text, log_text
        finally:
            broker.stop()


# -- the test --------------------------------------------------------------------------------------------


def _naive(moment: str) -> str:
    """A JSON time as the charts label it: UTC, without the zone."""
    return datetime.fromisoformat(moment).astimezone(UTC).replace(tzinfo=None).isoformat()


def _points(page: Any, chart: str) -> list[tuple[str, float]]:
    """Every drawn point of a chart: the numbers its SVG says it stands for, and its height on the page."""
    return page.locator(f"{chart} g.dots").evaluate_all(
        "gs => gs.map(g => [g.querySelector('desc.value').textContent, g.querySelector('circle').cy.baseVal.value])"
    )


def _drawn_in_order(points: list[tuple[float, float]]) -> bool:
    """A larger value is drawn higher (a smaller y) than a smaller one: the dots sit where their numbers say."""
    ranked = sorted(points)
    return all(a[1] > b[1] for a, b in itertools.pairwise(ranked) if a[0] < b[0])


def _float(value: str | None) -> float | None:
    return None if value in (None, "") else float(value)  # type: ignore[arg-type]


def test_dashboard_pages_match_the_cli(
    hive_ui: tuple[str, dict[str, str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Not a skip: `make setup` installs Debian's chromium, and a missing browser must fail, not pass quietly.
    assert CHROMIUM.is_file(), f"{CHROMIUM} is missing: run `make setup` (apt-get install chromium)"
    from playwright.sync_api import sync_playwright

    base, env = hive_ui
    # Each CLI command is its own process importing MLflow or Kafka; run them side by side.
    commands = {
        "rounds": ("round", "list"),
        "cores": ("core", "list"),
        "fleet": ("fleet",),
        "learnings": ("learnings", "ls", "--limit", "50"),
        "learnings_a2": ("learnings", "ls", "--agent", "agent-2", "--limit", "50"),
        "learnings_reverse": ("learnings", "ls", "--skill", "reverse", "--limit", "5"),
        "dlq": ("dlq", "ls"),
    }
    with ThreadPoolExecutor(len(commands)) as pool:
        futures = {name: pool.submit(_cli_json, env, *args) for name, args in commands.items()}
        cli = {name: future.result() for name, future in futures.items()}

    shots = tmp_path / "screenshots"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})

            def visit(path: str, heading: str, shot: str) -> None:
                response = page.goto(base + path.lstrip("/"))
                assert response is not None and response.status == 200, path
                assert page.inner_text("h1") == heading
                page.screenshot(path=str(shots / f"{shot}.png"), full_page=True)

            visit("/", "Overview", "overview")
            assert page.get_attribute('[data-part="learnings"] .value', "data-value") == "21"
            assert page.get_attribute('[data-part="dlq"] .value', "data-value") == "3"
            assert page.get_attribute('[data-part="rounds"] .value', "data-value") == str(len(cli["rounds"]))

            # The fleet: each agent's running core, skill and heartbeat, the versions and the champion.
            visit("/fleet", "Fleet", "fleet")
            fleet = cli["fleet"]
            assert len(fleet["agents"]) == 2
            assert fleet["max_skew"] == 1  # agent-2 still runs v0 under champion v1
            assert page.locator("tr.agent").count() == len(fleet["agents"])
            for agent in fleet["agents"]:
                row = page.locator(f'tr.agent[data-agent="{agent["agent_id"]}"]')
                assert row.get_attribute("data-core-version") == str(agent["core_version"])
                assert row.get_attribute("data-skill") == agent["skill"]
                assert row.get_attribute("data-state") == agent["state"]
                assert row.get_attribute("data-last-heartbeat") == str(agent["last_heartbeat"])
                assert _float(row.get_attribute("data-skew")) == agent["skew"]
                assert _float(row.get_attribute("data-lag")) == agent["lag"]
                assert row.get_attribute("data-active") == str(agent["active"]).lower()
            for version, count in fleet["versions"].items():
                assert page.get_attribute(f'#versions tr[data-version="{version}"]', "data-count") == str(count)
            assert page.get_attribute("#champion", "data-value") == str(fleet["champion"])
            assert _float(page.get_attribute("#max-skew", "data-value")) == fleet["max_skew"]
            # The timeline: one bar (two points) per core run of each agent, where `hive fleet --json` has them.
            timeline = fleet["timeline"]
            assert [run["core_version"] for run in timeline["agent-1"]] == [0, 1]
            drawn = sorted(text for text, _ in _points(page, "#timeline-chart"))
            expected_runs = sorted(
                f"{_naive(run[end])}: {agent}"
                for agent, runs in timeline.items()
                for run in runs
                for end in ("from", "to")
            )
            assert drawn == expected_runs
            rows = {text.split(": ")[1]: y for text, y in _points(page, "#timeline-chart")}
            assert rows["agent-1"] < rows["agent-2"]  # the first agent's row on top

            # The rounds timeline, newest first, with each round's state and per-skill metrics.
            visit("/rounds", "Rounds", "rounds")
            rounds = cli["rounds"]
            assert [r["state"] for r in rounds] == ["released", "rejected", "failed"]
            items = page.locator("li.round")
            assert [items.nth(i).get_attribute("data-round") for i in range(items.count())] == [
                r["id"] for r in reversed(rounds)
            ]
            for r in rounds:
                item = page.locator(f'li.round[data-round="{r["id"]}"]')
                assert item.get_attribute("data-state") == r["state"]
                assert item.get_attribute("data-display-state") == r["display_state"]
                assert item.get_attribute("data-learnings") == str(r["learnings"])
                cells = item.locator("tr.skill-eval")
                assert cells.count() == len(r["eval"])
                for skill, value in r["eval"].items():
                    cell = item.locator(f'tr.skill-eval[data-skill="{skill}"]')
                    assert _float(cell.get_attribute("data-value")) == value
                    assert _float(cell.get_attribute("data-champion")) == r["champion_eval"].get(skill)
            assert "more than the limit" in page.inner_text('li.round[data-round="r0002"] .gate-reasons')

            for r in rounds:
                visit(f"/rounds/{r['id']}", f"Round {r['id']}", f"round-{r['id']}")
                assert page.get_attribute("#round", "data-state") == r["state"]
                for agent, n in r["per_agent"].items():
                    assert page.get_attribute(f'#per-agent tr[data-agent="{agent}"]', "data-count") == str(n)
                for key, value in r["distill"].items():
                    assert _float(page.get_attribute(f'#distill tr[data-key="{key}"]', "data-value")) == value
            # r0001's loss curve: one point per step, at the losses the API serves.
            visit("/rounds/r0001", "Round r0001", "round-r0001-loss")
            losses = _get_json(base + "api/rounds/r0001")["losses"]
            assert losses == LOSSES
            drawn_losses = _points(page, "#loss-chart")
            assert [text for text, _ in drawn_losses] == [f"{i + 1}: {loss!r}" for i, loss in enumerate(losses)]
            assert _drawn_in_order([(float(text.split(": ")[1]), y) for text, y in drawn_losses])
            visit("/rounds/r0003", "Round r0003", "round-r0003")
            # The failed round's error is shown whole, as text.
            assert "<b>Traceback</b>" in page.inner_text("pre.error")

            # The knowledge matrix: skills × core versions, every cell equal to `hive core list --json`.
            visit("/knowledge", "Knowledge", "knowledge")
            cores = cli["cores"]
            assert [c["core_version"] for c in cores] == [0, 1]
            expected = {(s, c["core_version"]): v for c in cores for s, v in (c["eval"] or {}).items()}
            assert expected, "the cores carry no per-skill evaluation to show"
            assert page.locator("td.cell[data-value]").count() == len(expected)
            for (skill, version), value in expected.items():
                cell = page.locator(f'td.cell[data-skill="{skill}"][data-version="{version}"]')
                assert _float(cell.get_attribute("data-value")) == value
            champion = [c["core_version"] for c in cores if CHAMPION in c["aliases"]]
            assert champion == [fleet["champion"]]
            # The accuracy chart: one point per evaluated cell, skill by skill, version by version.
            knowledge = _get_json(base + "api/knowledge")
            drawn_cells = _points(page, "#accuracy-chart")
            assert [float(text) for text, _ in drawn_cells] == [
                knowledge["matrix"][skill][str(v)]
                for skill in knowledge["skills"]
                for v in knowledge["versions"]
                if str(v) in knowledge["matrix"][skill]
            ]
            assert sorted(float(text) for text, _ in drawn_cells) == sorted(expected.values())
            assert _drawn_in_order([(float(text), y) for text, y in drawn_cells])

            # Ingest: stored per minute and the lag, as /api/ingest serves them.
            visit("/ingest", "Ingest", "ingest")
            ingest = _get_json(base + "api/ingest")
            assert [m["stored"] for m in ingest["minutes"]] == [12, 9, 0]
            assert page.get_attribute("#stored", "data-value") == "21"
            rate = [text for text, _ in _points(page, "#rate-chart")]
            for key in ("stored", "duplicates", "dead_lettered"):
                for m in ingest["minutes"]:
                    assert f"{_naive(m['minute'])}: {m[key]!r}" in rate
            assert len(rate) == 3 * len(ingest["minutes"])
            lag = [text for text, _ in _points(page, "#lag-chart")]
            assert lag == [
                f"{_naive(m['minute'])}: {m[key]!r}"
                for key in ("lag_p50_s", "lag_max_s")
                for m in ingest["minutes"]
                if m[key] is not None
            ]
            assert page.locator("main script").count() == 0

            # The learnings browser: the newest first, then filtered by agent and by skill through the form.
            visit("/learnings", "Learnings", "learnings")
            seqs = [int(x) for x in page.locator("tr.learning").evaluate_all("rows => rows.map(r => r.dataset.seq)")]
            assert seqs == [row["seq"] for row in reversed(cli["learnings"])]
            hostile = page.locator("td.prompt", has_text="window.__pwned")
            assert hostile.inner_text() == HOSTILE_PROMPT
            assert page.locator("main script, main b").count() == 0
            assert page.evaluate("typeof window.__pwned") == "undefined"

            page.fill("#agent", "agent-2")
            page.click("#apply")
            page.wait_for_url(re.compile(r".*agent=agent-2.*"))
            page.screenshot(path=str(shots / "learnings-agent-2.png"), full_page=True)
            rows = page.locator("tr.learning")
            assert {rows.nth(i).get_attribute("data-agent") for i in range(rows.count())} == {"agent-2"}
            seqs = [int(x) for x in rows.evaluate_all("rows => rows.map(r => r.dataset.seq)")]
            assert seqs == [row["seq"] for row in reversed(cli["learnings_a2"])]

            page.fill("#agent", "")
            page.fill("#skill", "reverse")
            page.fill("#limit", "5")
            page.click("#apply")
            page.wait_for_url(re.compile(r".*skill=reverse.*"))
            rows = page.locator("tr.learning")
            seqs = [int(x) for x in rows.evaluate_all("rows => rows.map(r => r.dataset.seq)")]
            assert seqs == [row["seq"] for row in reversed(cli["learnings_reverse"])]
            assert {rows.nth(i).get_attribute("data-skill") for i in range(rows.count())} == {"reverse"}

            # The dead letters: the counts per reason and the latest, equal to `hive dlq ls --json`.
            visit("/dlq", "Dead letters", "dlq")
            dlq = cli["dlq"]
            assert page.get_attribute("#dlq-total", "data-value") == str(dlq["total"])
            for reason, count in dlq["by_reason"].items():
                assert page.get_attribute(f'tr.reason[data-reason="{reason}"]', "data-count") == str(count)
            offsets = page.locator("tr.dead-letter").evaluate_all("rows => rows.map(r => Number(r.dataset.offset))")
            assert offsets == [d["source_offset"] for d in dlq["latest"]]
            assert "<script>alert(1)</script>" in page.inner_text('tr.dead-letter[data-reason="schema"] td.payload')
            page.select_option("#reason", "invalid_json")
            page.click("#apply")
            page.wait_for_url(re.compile(r".*reason=invalid_json.*"))
            assert page.locator("tr.dead-letter").count() == dlq["by_reason"]["invalid_json"]
        finally:
            browser.close()

    # pytest keeps only its last few temporary directories; the copies outlive them.
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for shot in sorted(shots.glob("*.png")):
        shutil.copy(shot, SCREENSHOTS / shot.name)
    with capsys.disabled():
        print(f"\nhive ui screenshots: {shots}, copied to {SCREENSHOTS} (knowledge.png, fleet.png, ...)")
