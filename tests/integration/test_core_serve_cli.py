"""``hive core serve`` as a process: it serves a released core until SIGTERM, and refuses a bad address."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.error import URLError
from urllib.request import urlopen

from agents.core_manifest import build_manifest
from hive.config import HiveSettings
from hive.cores.files import core_dir
from hive.cores.transport import record_manifest
from streams.broker import free_port

from factories import make_core_dir


def env_for(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIVE_")}
    return env | {"HIVE_HOME": str(home)}


def test_it_serves_released_cores_until_sigterm(tmp_path: Path) -> None:
    settings = HiveSettings(home=tmp_path / "hive")
    make_core_dir(core_dir(settings, 0))
    record_manifest(settings, build_manifest(core_dir(settings, 0), 0))
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "hive", "core", "serve", "--listen", f"127.0.0.1:{port}"],
        env=env_for(settings.home),
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urlopen(f"http://127.0.0.1:{port}/cores/v0/manifest.json", timeout=5) as response:
                    assert response.read() == (settings.manifests_dir / "v0.json").read_bytes()
                break
            except URLError:
                assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
                time.sleep(0.2)
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()
    assert "HIVE_CORES__BASE_URL is not set" in (tmp_path / "serve.log").read_text()


def test_a_bad_listen_address_is_a_usage_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hive", "core", "serve", "--listen", "nowhere"],
        env=env_for(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "expected host:port" in result.stderr
