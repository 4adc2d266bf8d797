"""A real distill round: two DeepSpeed ranks on the CPU, MLflow on SQLite, a saved and evaluated core, a resume."""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from agents.evaluation import evaluate_skills
from agents.lora import LLAMA_LINEAR, linear_targets
from agents.model import WEIGHTS_FILE, CoreSize, build_core, file_sha256, load_core, save_core
from agents.skills import BUILTIN_SKILLS
from agents.tokenizer import ByteTokenizer
from distill.checkpoint import COMMITTED
from distill.data import UNUSABLE
from distill.launch import (
    LOG_HEADER,
    DistillError,
    build_command,
    launch_env,
    launch_job,
    launch_jobs,
    parse_progress,
    remove_shm_buffers,
)
from distill.manifest import MANIFEST_MARKER, resolve_ds_config, write_learnings
from streams.broker import free_port
from streams.events import ClaimCheck, Learning, TeacherSignal

from factories import make_learning

SKILLS = ["capital", "add"]
STEPS = 60
N_TEACHER, N_CORRECTIONS = 150, 50


def _good_teacher(answer: str, k: int = 4) -> TeacherSignal:
    """A confident, correct specialist: 0.9 on the right next token, the rest on three others."""
    ids, lps = [], []
    for target in ByteTokenizer().answer_ids(answer):
        others = [(target + j) % 256 for j in (1, 2, 3)]
        ids.append([target, *others][:k])
        lps.append([math.log(0.9), *[math.log(0.03)] * 3][:k])
    return TeacherSignal(k=k, token_ids=ids, logprobs=lps)


def _learnings(n_teacher: int, n_corrections: int) -> list[Learning]:
    """A chatty agent shipping teacher signals and a quiet one shipping corrections only."""
    rng = random.Random(0)
    capital = BUILTIN_SKILLS["capital"]
    items = []
    for _ in range(n_teacher):
        prompt, answer = capital.sample(rng)
        items.append(
            make_learning("agent-teacher", "capital", prompt=prompt, completion=answer, teacher=_good_teacher(answer))
        )
    for _ in range(n_corrections):
        prompt, answer = capital.sample(rng)
        items.append(
            make_learning(
                "agent-corrections", "capital", prompt=prompt, completion="zzz", reward=0.0, correction=answer
            )
        )
    return items


def _manifest(root: Path, **distill) -> Path:
    core = root / "core_v0"
    if not core.exists():
        save_core(build_core(seed=0), core)
    learnings = root / "learnings.jsonl"
    if not learnings.exists():
        write_learnings(learnings, _learnings(N_TEACHER, N_CORRECTIONS))
    manifest = {
        "round_id": "r0001",
        "base_core": str(core),
        "out_dir": str(root / "round" / "out"),
        "learnings": str(learnings),
        "replay": str(learnings),
        "skills": SKILLS,
        "distill": {
            "nproc": 2,
            "steps": STEPS,
            "batch_size": 32,
            "lr": 3e-3,
            "warmup_steps": 5,
            "temperature": 1.0,
            "retention_weight": 0.1,
            "ds_config": "zero2_cpu.yaml",
            "seed": 0,
            "timeout_s": 300,
            **distill,
        },
        "eval": {"tasks": 20, "seed": 10_000},
        "mlflow": {"tracking_uri": f"sqlite:///{root / 'mlflow.db'}", "experiment": "hive-rounds", "run_name": "r0001"},
        "lineage": {"after_seq": 40, "upto_seq": 40 + N_TEACHER + N_CORRECTIONS},
    }
    path = root / "manifest.json"
    path.write_text(json.dumps(manifest))
    return path


def _attempts(root: Path) -> list[str]:
    """distill.log split into one section per launch_job call."""
    return (root / "round" / "distill.log").read_text().split(LOG_HEADER)[1:]


@pytest.fixture(scope="module")
def first_round(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, list]:
    root = tmp_path_factory.mktemp("distill")
    progress: list[tuple[int, int, float]] = []
    metrics = launch_job(_manifest(root, checkpoint_every=30), on_progress=lambda *p: progress.append(p))
    return root, metrics, progress


def test_round_trains_saves_and_evaluates(first_round: tuple[Path, dict, list]) -> None:
    root, metrics, progress = first_round
    out = root / "round" / "out"
    assert metrics["world_size"] == 2
    assert metrics["steps"] == STEPS
    assert metrics["tuning"] == "full"
    assert metrics["trainable_parameters"] == sum(p.numel() for p in load_core(root / "core_v0").parameters())
    losses = metrics["losses"]
    assert len(losses) == STEPS
    assert all(math.isfinite(loss) for loss in losses)
    assert sum(losses[-10:]) / 10 < 0.5 * (sum(losses[:10]) / 10)
    assert metrics["first_loss"] == losses[0]
    assert metrics["final_loss"] == losses[-1]
    assert metrics["sha256"] == file_sha256(out / "core" / "model.safetensors")
    assert set(metrics["eval"]) == set(SKILLS)
    assert all(0.0 <= acc <= 1.0 for acc in metrics["eval"].values())
    # The base core on exactly the same held-out tasks, so the hive's gate needs no model of its own.
    assert set(metrics["base_eval"]) == set(metrics["eval"])
    skills = [BUILTIN_SKILLS[name] for name in SKILLS]
    assert metrics["base_eval"] == evaluate_skills(load_core(root / "core_v0"), skills, n=20, seed=10_000)
    assert metrics["tokens"] > 0
    assert metrics["tokens_per_s"] > 0
    # One progress line per 10 steps reached the callback, with the losses the job recorded.
    assert [p[0] for p in progress] == list(range(10, STEPS + 1, 10))
    assert all(total == STEPS for _, total, _ in progress)
    assert progress[-1][2] == pytest.approx(losses[-1], abs=1e-4)
    first_attempt = _attempts(root)[0]
    assert first_attempt.count("progress step=") == len(progress)


def _copy_manifest(source: Path, directory: Path, round_id: str) -> Path:
    """The same round, written to its own directory and tracked under its own name."""
    manifest = json.loads(source.read_text())
    manifest["round_id"] = round_id
    manifest["out_dir"] = str(directory / "out")
    manifest["mlflow"]["run_name"] = round_id
    directory.mkdir(parents=True)
    path = directory / "manifest.json"
    path.write_text(json.dumps(manifest))
    return path


def test_one_launch_trains_several_rounds_each_from_a_clean_slate(
    tmp_path: Path, first_round: tuple[Path, dict, list]
) -> None:
    """Two copies of the first round in one launch, one after the other in the same ranks: each loss equals the
    round run alone, so no optimizer, engine, generator or thread setting leaks from one round into the next."""
    root, alone, _ = first_round
    paths = [_copy_manifest(root / "manifest.json", tmp_path / name, name) for name in ("r-a", "r-b")]
    progress: list[tuple[int, int, float]] = []
    results = launch_jobs(paths, on_progress=lambda *p: progress.append(p))

    assert [m["round_id"] for m in results] == ["r-a", "r-b"]
    for path, metrics in zip(paths, results, strict=True):
        assert metrics["losses"] == pytest.approx(alone["losses"], rel=1e-6)
        assert metrics["eval"] == alone["eval"]
        assert metrics["sha256"] == file_sha256(path.parent / "out" / "core" / WEIGHTS_FILE)
        # Each round's output went to its own log: its marker, then its own ten progress lines.
        log = (path.parent / "distill.log").read_text()
        assert f"{MANIFEST_MARKER}{path}" in log
        assert log.count("progress step=") == STEPS // 10
    assert len(progress) == 2 * STEPS // 10


def test_round_is_tracked_in_mlflow(first_round: tuple[Path, dict, list]) -> None:
    from mlflow.tracking import MlflowClient

    root, metrics, _ = first_round
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    run = client.get_run(metrics["mlflow_run_id"])
    assert run.info.run_name == "r0001"
    assert run.data.params["world_size"] == "2"
    assert run.data.params["steps"] == str(STEPS)
    history = client.get_metric_history(run.info.run_id, "loss")
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(metrics["losses"])
    for skill in SKILLS:
        assert run.data.metrics[f"eval_{skill}"] == metrics["eval"][skill]
        assert run.data.metrics[f"base_eval_{skill}"] == metrics["base_eval"][skill]
    # Lineage: which learnings, from which agents and seqs, this core came from.
    assert run.data.params["learnings"] == str(N_TEACHER + N_CORRECTIONS)
    assert (run.data.params["after_seq"], run.data.params["upto_seq"]) == ("40", str(40 + N_TEACHER + N_CORRECTIONS))
    lineage = json.loads(Path(client.download_artifacts(run.info.run_id, "lineage.json", str(root))).read_text())
    assert lineage["agents"] == {
        "agent-corrections": {
            "count": N_CORRECTIONS,
            "first_seq": 41 + N_TEACHER,
            "last_seq": 40 + N_TEACHER + N_CORRECTIONS,
        },
        "agent-teacher": {"count": N_TEACHER, "first_seq": 41, "last_seq": 40 + N_TEACHER},
    }
    ids = Path(client.download_artifacts(run.info.run_id, "learning_ids.txt", str(root))).read_text().splitlines()
    written = [json.loads(line)["id"] for line in (root / "learnings.jsonl").read_text().splitlines()]
    assert ids == written
    assert run.data.params["learning_ids_sha256"] == lineage["learning_ids_sha256"]


def test_rerun_resumes_from_the_checkpoint_with_the_same_losses(first_round: tuple[Path, dict, list]) -> None:
    root, metrics, _ = first_round
    assert (root / "round" / "out" / "ckpt" / "latest").is_file()
    progress: list[tuple[int, int, float]] = []
    resumed = launch_job(root / "manifest.json", on_progress=lambda *p: progress.append(p))
    # Only the steps after the checkpoint at 30 ran again, and they retraced the first run exactly.
    assert [p[0] for p in progress] == [40, 50, 60]
    attempts = _attempts(root)
    assert len(attempts) == 2
    assert "resumed from" in attempts[1]
    assert resumed["losses"] == pytest.approx(metrics["losses"], rel=1e-5)


def test_a_killed_round_resumes_from_its_last_checkpoint(tmp_path: Path, first_round: tuple[Path, dict, list]) -> None:
    """SIGKILL the whole launcher group mid-training; the rerun resumes and retraces the uninterrupted run."""
    reference = first_round[1]["losses"]  # the same data and settings, never interrupted
    manifest = _manifest(tmp_path, checkpoint_every=10)
    ckpt = tmp_path / "round" / "out" / "ckpt"
    port = free_port()
    command = build_command([manifest], 2, port, resolve_ds_config("zero2_cpu.yaml"))
    env = launch_env()
    proc = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    killed_after = 0
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            progress = parse_progress(line)
            if progress is not None and progress[0] >= 25 and (ckpt / COMMITTED).is_file():
                os.killpg(proc.pid, signal.SIGKILL)
                killed_after = progress[0]
                break
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        remove_shm_buffers(port)  # this job ran outside launch_job, which would have removed them
    assert killed_after, "the job ended before it could be killed"
    # Read after the kill: a checkpoint may have been committed between the progress line and the signal.
    resume_step = int((ckpt / COMMITTED).read_text().removeprefix("global_step"))
    assert 20 <= resume_step < STEPS

    progress: list[tuple[int, int, float]] = []
    resumed = launch_job(manifest, on_progress=lambda *p: progress.append(p))
    (attempt,) = _attempts(tmp_path)
    assert f"resumed from {ckpt} at step {resume_step}" in attempt
    assert [p[0] for p in progress] == list(range(resume_step + 10, STEPS + 1, 10))
    assert resumed["steps"] == STEPS and len(resumed["losses"]) == STEPS
    # The steps after the resume point retrace the uninterrupted run.
    assert resumed["losses"][resume_step:] == pytest.approx(reference[resume_step:], rel=1e-5)
    assert resumed["losses"] == pytest.approx(reference, rel=1e-5)


def test_a_failing_job_raises_with_the_log_tail(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path)
    data = json.loads(manifest.read_text())
    data["skills"] = ["no-such-skill"]
    manifest.write_text(json.dumps(data))
    with pytest.raises(DistillError, match="no-such-skill") as info:
        launch_job(manifest, timeout_s=120)
    assert "exited with code" in str(info.value)


def test_a_timeout_kills_the_launcher_and_every_rank(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, steps=100_000)
    with pytest.raises(DistillError, match="timed out"):
        launch_job(manifest, timeout_s=25)
    pids = [int(p) for p in re.findall(r"process (\d+) spawned", (tmp_path / "round" / "distill.log").read_text())]
    assert len(pids) == 2, "the ranks had not started yet; raise the timeout"
    deadline = time.monotonic() + 10
    while pids and time.monotonic() < deadline:
        pids = [pid for pid in pids if _alive(pid)]
        time.sleep(0.2)
    assert not pids, f"ranks still running after the timeout: {pids}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purposes.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"


def _poisoned(agents: Path, outside: Path) -> dict[str, Learning]:
    """Learnings whose claim checks must not be followed, by the reason each gets; none ships a signal or a
    verified answer, so once its teacher is refused, nothing of it is trained on."""
    checks: dict[str, ClaimCheck] = {}
    wrong = agents / "agent-wrong-shape" / "specialist"
    sha = save_core(build_core(CoreSize(width=64, layers=1)), wrong)
    (wrong / "config.json").write_text("[]")
    checks["adapter_shape_mismatch"] = ClaimCheck(uri=wrong.as_uri(), sha256=sha)
    pickled = agents / "agent-pickle" / "specialist"
    pickled.mkdir(parents=True)
    (pickled / WEIGHTS_FILE).write_bytes(b"\x80\x04\x95" + b"\x00" * 64)
    checks["adapter_unreadable"] = ClaimCheck(uri=pickled.as_uri(), sha256=file_sha256(pickled / WEIGHTS_FILE))
    outside_sha = save_core(build_core(seed=5), outside)
    (agents / "agent-link").mkdir()
    (agents / "agent-link" / "specialist").symlink_to(outside, target_is_directory=True)
    checks["adapter_outside_roots"] = ClaimCheck(
        uri=(agents / "agent-link" / "specialist").as_uri(), sha256=outside_sha
    )
    checks["adapter_unsupported_uri"] = ClaimCheck(uri=f"{agents.as_uri()}/../outside", sha256=outside_sha)
    huge = agents / "agent-huge" / "specialist"
    huge.mkdir(parents=True)
    with (huge / WEIGHTS_FILE).open("wb") as fh:
        fh.truncate(1 << 40)  # sparse: a terabyte that takes no disk
    checks["adapter_too_large"] = ClaimCheck(uri=huge.as_uri(), sha256=outside_sha)
    moved = agents / "agent-moved-on" / "specialist"
    save_core(build_core(seed=9), moved)
    checks["adapter_sha_mismatch"] = ClaimCheck(uri=moved.as_uri(), sha256="0" * 64)
    checks["adapter_missing"] = ClaimCheck(uri=(agents / "agent-gone" / "specialist").as_uri(), sha256=outside_sha)
    return {
        reason: make_learning(
            f"agent-poison-{i}",
            "capital",
            prompt=f"capital of poison {i}?",
            completion="zzz",
            reward=0.0,
            adapter=check,
        )
        for i, (reason, check) in enumerate(checks.items())
    }


def test_a_second_run_in_one_home_discards_the_first_runs_checkpoint_and_skips_poisoned_teachers(
    tmp_path: Path, first_round: tuple[Path, dict, list]
) -> None:
    """Two bench-style runs in one home: the second holds the first's learnings plus poisoned claim checks.

    It must not resume the first run's checkpoint (same out dir, other learnings), must refuse every poisoned
    teacher without dying, and, since nothing poisoned is trained on, must retrace a fresh run of the first.
    """
    root, reference, _ = first_round
    shutil.copytree(root / "core_v0", tmp_path / "core_v0")
    shutil.copytree(root / "round" / "out" / "ckpt", tmp_path / "round" / "out" / "ckpt")
    assert (tmp_path / "round" / "out" / "ckpt" / COMMITTED).read_text() == "global_step30"
    agents = tmp_path / "agents"
    poisoned = _poisoned(agents, tmp_path / "outside")
    learnings = tmp_path / "learnings.jsonl"
    learnings.write_text(
        (root / "learnings.jsonl").read_text() + "".join(lr.model_dump_json() + "\n" for lr in poisoned.values())
    )
    manifest = json.loads((root / "manifest.json").read_text())
    manifest |= {
        "base_core": str(tmp_path / "core_v0"),
        "out_dir": str(tmp_path / "round" / "out"),
        "learnings": str(learnings),
        "adapters": {"roots": [str(agents)]},
        "lineage": {"after_seq": 40, "upto_seq": 40 + N_TEACHER + N_CORRECTIONS + len(poisoned)},
        "mlflow": None,
    }
    manifest["distill"]["checkpoint_every"] = 30
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(manifest))

    progress: list[tuple[int, int, float]] = []
    metrics = launch_job(path, on_progress=lambda *p: progress.append(p))
    (attempt,) = _attempts(tmp_path)
    assert "resumed from" not in attempt
    assert "distill: discarding checkpoint" in attempt and "learning_ids_sha256" in attempt
    assert [p[0] for p in progress] == list(range(10, STEPS + 1, 10))
    assert metrics["losses"] == pytest.approx(reference["losses"], rel=1e-5)
    assert metrics["teacher_skipped"] == {reason: 1 for reason in poisoned}
    for reason in poisoned:
        assert f"{reason}:" in attempt  # rank 0 logged each refused claim check with its reason
    unusable = [json.loads(line) for line in (tmp_path / "round" / "out" / UNUSABLE).read_text().splitlines()]
    assert {row["id"]: row["reason"] for row in unusable} == {
        str(lr.id): ("adapter_sha_mismatch" if reason == "adapter_sha_mismatch" else "no_signal")
        for reason, lr in poisoned.items()
    }
    assert metrics["unusable"] == len(poisoned)


# The LoRA arm (distill.manifest.DistillParams.tuning): a PEFT adapter on the frozen core, merged into the release.
# It runs on the tiny Hugging Face core (tests/tiny_hf.py): LoRA needs a core with its own tokenizer.
LORA_STEPS = 40
# lm_head too: a random core's logits span under a nat (its lm_head is initialised at std 0.02), and an adapter
# on the layers below alone barely moved this loss (11.0 to 10.7 in 40 steps); with lm_head it fell to 6.3.
LORA_TARGETS = [*LLAMA_LINEAR, "lm_head"]


def _hf_learnings(core: Path) -> list[Learning]:
    """As ``_learnings``, with the teachers' ids in the HF core's own tokenizer."""
    from agents.codec import load_codec

    codec = load_codec(core)
    rng = random.Random(0)
    capital = BUILTIN_SKILLS["capital"]
    items = []
    for i in range(N_TEACHER + N_CORRECTIONS):
        prompt, answer = capital.sample(rng)
        if i < N_TEACHER:
            ids, lps = [], []
            for target in codec.answer_ids(answer):
                ids.append([target, *((target + j) % codec.vocab_size for j in (1, 2, 3))])
                lps.append([math.log(0.9), *[math.log(0.03)] * 3])
            teacher = TeacherSignal(k=4, token_ids=ids, logprobs=lps, tokenizer=codec.fingerprint)
            items.append(make_learning("agent-teacher", "capital", prompt=prompt, completion=answer, teacher=teacher))
        else:
            items.append(
                make_learning(
                    "agent-corrections", "capital", prompt=prompt, completion="zzz", reward=0.0, correction=answer
                )
            )
    return items


def _lora_manifest(root: Path, **distill) -> Path:
    from tiny_hf import make_hf_core

    core = root / "core_v0"
    if not core.exists():
        make_hf_core(core, max_positions=256)
    learnings = root / "learnings.jsonl"
    if not learnings.exists():
        write_learnings(learnings, _hf_learnings(core))
    path = _manifest(
        root, tuning="lora", lora_r=8, lora_alpha=16, lora_targets=LORA_TARGETS, lr=1e-2, steps=LORA_STEPS, **distill
    )
    manifest = json.loads(path.read_text())
    manifest["mlflow"] = None
    manifest["lineage"] = None
    manifest["eval"]["tasks"] = 4
    path.write_text(json.dumps(manifest))
    return path


@pytest.fixture(scope="module")
def lora_round(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("distill-lora")
    return root, launch_job(_lora_manifest(root, checkpoint_every=20))


def test_a_lora_round_trains_and_releases_a_complete_merged_core(lora_round: tuple[Path, dict]) -> None:
    from safetensors.torch import load_file

    from agents.core_files import check_core_dir

    root, metrics = lora_round
    released = root / "round" / "out" / "core"
    assert metrics["tuning"] == "lora"
    # r x (in + out) per adapted linear layer: the adapter alone was trained.
    adapted = linear_targets(load_core(root / "core_v0"), LORA_TARGETS)
    assert metrics["trainable_parameters"] == sum(8 * (fan_in + fan_out) for fan_in, fan_out in adapted.values())
    losses = metrics["losses"]
    assert len(losses) == LORA_STEPS and all(math.isfinite(loss) for loss in losses)
    assert sum(losses[-10:]) / 10 < 0.8 * (sum(losses[:10]) / 10)
    # A complete plain transformers model, no adapter: safetensors, config and the base core's tokenizer.
    check_core_dir(released)
    names = {p.name for p in released.iterdir()}
    assert {WEIGHTS_FILE, "config.json", "tokenizer.json"} <= names
    assert not names & {"adapter_model.safetensors", "adapter_config.json"}
    assert metrics["sha256"] == file_sha256(released / WEIGHTS_FILE)
    base, trained = load_file(root / "core_v0" / WEIGHTS_FILE), load_file(released / WEIGHTS_FILE)
    assert trained.keys() == base.keys()  # the same tensors under the same names: no lora_A, no base_layer
    # The adapter moved every targeted linear layer; whatever LoRA does not target is the base core's, bit for bit.
    for name, tensor in base.items():
        if any(f"{target}.weight" in name for target in LORA_TARGETS):
            assert not torch.equal(trained[name], tensor), name
        else:
            assert torch.equal(trained[name], tensor), name
    load_core(released)
    assert set(metrics["eval"]) == set(SKILLS)


def test_a_lora_rerun_resumes_its_adapter_checkpoint_with_the_same_losses(lora_round: tuple[Path, dict]) -> None:
    root, metrics = lora_round
    ckpt = root / "round" / "out" / "ckpt"
    assert (ckpt / COMMITTED).read_text() == "global_step20"
    # The checkpoint holds the adapter and its optimizer state, not the frozen base (see save_checkpoint).
    model_states = sum(f.stat().st_size for f in (ckpt / "global_step20").glob("*model_states.pt"))
    assert model_states < (root / "core_v0" / WEIGHTS_FILE).stat().st_size
    progress: list[tuple[int, int, float]] = []
    resumed = launch_job(root / "manifest.json", on_progress=lambda *p: progress.append(p))
    assert [p[0] for p in progress] == [30, 40]
    assert "resumed from" in _attempts(root)[1]
    assert resumed["losses"] == pytest.approx(metrics["losses"], rel=1e-5)
    assert resumed["sha256"] == metrics["sha256"]
