"""The launcher unlinks the /dev/shm buffers DeepSpeed's CPU allreduce leaves behind, for its own port only."""

from __future__ import annotations

import uuid

from distill.launch import SHM_DIR, master_ports, remove_shm_buffers


def test_only_the_jobs_own_buffers_are_removed() -> None:
    # Ports above 65535 never belong to a real job, so the test cannot touch one.
    tag = uuid.uuid4().hex[:6]
    ours = [SHM_DIR / f"deepspeed_allreduce_buffer_{tag}_127.0.0.1_70001_{rank}" for rank in (0, 1)]
    theirs = SHM_DIR / f"deepspeed_allreduce_buffer_{tag}_127.0.0.1_70002_0"
    try:
        for path in [*ours, theirs]:
            path.write_bytes(b"x")
        assert sorted(remove_shm_buffers(70001)) == sorted(ours)
        assert not any(path.exists() for path in ours)
        assert theirs.exists()
    finally:
        for path in [*ours, theirs]:
            path.unlink(missing_ok=True)


def test_master_ports_are_read_from_launcher_and_rank_arguments() -> None:
    assert master_ports(["python", "-m", "deepspeed.launcher.runner", "--master_port", "4242"]) == [4242]
    assert master_ports(["python", "-u", "-m", "deepspeed.launcher.launch", "--master_port=4343"]) == [4343]
    assert master_ports(["python", "-m", "distill.train", "--manifest", "m.json"]) == []
