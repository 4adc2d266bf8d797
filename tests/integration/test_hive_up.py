"""``hive up`` as a newcomer runs it: everything comes up, says where, follows its agent, and stops on Ctrl-C
leaving no process behind; afterwards ``hive fleet`` still answers, from the hive's last-known view."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.error import URLError
from urllib.request import urlopen

from streams.broker import free_port


def processes_with(home: Path) -> list[int]:
    """Pids of processes whose environment names ``home`` as HIVE_HOME (everything `hive up` started)."""
    marker = f"HIVE_HOME={home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue  # gone meanwhile, or not ours to read
    return found


def get_json(url: str) -> dict:
    with urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def test_hive_up_runs_until_ctrl_c_and_leaves_a_fleet_view(tmp_path: Path) -> None:
    home = tmp_path / "hive"
    ui_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIVE_")} | {"HIVE_HOME": str(home)}
    log = (tmp_path / "up.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "hive", "up", "--skills", "add", "--ui-port", str(ui_port)],
        env=env,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        fleet: dict = {}
        while not [a for a in fleet.get("agents", []) if a["agent_id"] == "agent-1" and a["core_version"] == 0]:
            assert proc.poll() is None, (tmp_path / "up.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "up.log").read_text()
            time.sleep(1)
            try:
                fleet = get_json(f"http://127.0.0.1:{ui_port}/api/fleet")
            except (URLError, OSError):
                continue
        printed = (tmp_path / "up.log").read_text()
        assert "the hive is up" in printed and f"http://127.0.0.1:{ui_port}/" in printed
        cores = next(line.split()[1] for line in printed.splitlines() if line.strip().startswith("cores"))
        assert get_json(cores + "v0/manifest.json")["version"] == 0  # agents fetch their cores from here
        assert fleet["source"] == "broker"
        os.kill(proc.pid, signal.SIGINT)
        assert proc.wait(90) == 0, (tmp_path / "up.log").read_text()
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()
    assert processes_with(home) == []

    # The broker is gone with it; the fleet is still there to see, as of when the hive last heard it.
    result = subprocess.run(
        [sys.executable, "-m", "hive", "fleet", "--json"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "last-known fleet view" in result.stderr
    assert [a["agent_id"] for a in json.loads(result.stdout)["agents"]] == ["agent-1"]
