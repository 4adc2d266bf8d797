"""The whole loop on the real SmolLM2-135M weights: a LoRA agent learns on the job and publishes top-k signals, the
hive distills them with 2 DeepSpeed ranks, registers and releases the core, and the agent swaps to it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from agents.claim_check import parse_file_uri
from agents.codec import load_codec
from agents.config import AgentSettings
from agents.lora import ADAPTER_WEIGHTS
from agents.model import load_core
from agents.runtime import AgentRuntime
from hive.config import DistillSettings, GateSettings, HiveSettings, ModelSettings, ScheduleSettings
from hive.cores.pretrained import SMOLLM2, is_prepared, prepare, prepared_dir
from hive.service import Hive
from streams.config import KafkaSettings

LEARN_STEPS = 3
BATCH = 4
SMOLLM2_PARAMETERS = 134_515_008


def _until(condition: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)
    return value


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The cache `make setup` prepared SmolLM2 into, else one of the test's own."""
    cache = HiveSettings().model_cache_dir
    if not is_prepared(SMOLLM2, prepared_dir(cache, SMOLLM2)):
        cache = tmp_path_factory.mktemp("models")
        prepare(SMOLLM2, cache)
    return cache


def test_the_loop_runs_on_smollm2(fresh_broker: str, tmp_path: Path, agent_keys: Any, model_cache: Path) -> None:
    kafka = KafkaSettings(bootstrap=fresh_broker)
    learnings = LEARN_STEPS * BATCH
    settings = HiveSettings(
        home=tmp_path / "hive",
        kafka=kafka,
        ingest=agent_keys.ingest(),
        model=ModelSettings(path="smollm2-135m"),
        model_cache=model_cache,
        schedule=ScheduleSettings(manual=True),
        distill=DistillSettings(steps=2, batch_size=4, lr=1e-4, warmup_steps=1, replay_size=0, checkpoint_every=0),
        # The gate's verdict is not this test's question (3 tasks cannot show a regression); its running is.
        gate=GateSettings(eval_tasks=3, max_regression=1.0),
    )
    hive = Hive(settings)
    hive.start()
    stop = threading.Event()
    agent: threading.Thread | None = None
    try:
        v0 = hive.champion()
        hive.release(v0)
        runtime = AgentRuntime(
            AgentSettings(
                agent_id="agent-1",
                skill="codes",
                eval_skills=["codes"],
                eval_tasks=2,
                home=tmp_path / "agents",
                learn_steps=LEARN_STEPS,
                batch_size=BATCH,
                publish_per_step=BATCH,
                heartbeat_s=0.5,
                signing_key_file=agent_keys.agent_env("agent-1")["HIVE_AGENT_SIGNING_KEY_FILE"],
                hive_public_key_file=settings.release_public_key_path,
            ),
            kafka,
        )
        agent = threading.Thread(target=runtime.run, args=(stop,), name="agent-1")
        agent.start()
        _until(lambda: hive.store.count() >= learnings or hive.failure(), 240, "the agent's learnings to be stored")
        assert hive.failure() is None
        specialist = runtime.specialist
        assert specialist is not None and specialist.tuning == "lora" and specialist.steps == LEARN_STEPS

        # The claim check: the adapter as safetensors, bit-identical to what the agent trained.
        stored = [learning for _, learning in hive.store.read_with_seq()]
        claim = next(x.adapter for x in stored if x.adapter is not None)
        saved = load_file(parse_file_uri(claim.uri) / ADAPTER_WEIGHTS)
        trained = {k: v for k, v in specialist.model.state_dict().items() if "lora_" in k}
        assert len(saved) == len(trained) > 0
        for name, tensor in saved.items():
            (match,) = [v for k, v in trained.items() if k.replace(".default", "") == name]
            assert torch.equal(tensor, match), name

        # Top-k teacher signals in SmolLM2's own token ids, named by its tokenizer's fingerprint.
        codec = load_codec(v0.directory)
        signal = stored[0].teacher
        assert signal is not None and signal.tokenizer == codec.fingerprint
        assert all(len(row) == 16 and max(row) < codec.vocab_size for row in signal.token_ids)

        record = hive.open_and_run_now()
        assert record.state == "released", (record.error, record.gate_reasons)
        assert record.learnings == learnings
        assert record.candidate_version == 1
        # Registered as the champion, a complete model any transformers user loads, trained away from v0.
        champion = hive.champion()
        assert champion.version == 1
        released = load_core(champion.directory)
        assert sum(p.numel() for p in released.parameters()) == SMOLLM2_PARAMETERS
        base = load_core(v0.directory)
        assert not torch.equal(released.model.layers[0].mlp.down_proj.weight, base.model.layers[0].mlp.down_proj.weight)

        _until(lambda: runtime.specialist is not None and runtime.specialist.core_version == 1, 120, "the swap")
        assert runtime.specialist is not None and runtime.specialist.tuning == "lora"
    finally:
        stop.set()
        if agent is not None:
            agent.join(timeout=60)
        hive.stop()
