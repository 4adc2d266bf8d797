"""The event contract as JSON Schema files, plus an example Learning, for clients in any language."""

from __future__ import annotations

import json
import math
import random
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agents.skills.builtin import BUILTIN_SKILLS
from agents.tokenizer import EOS_ID, ByteTokenizer
from streams.events import CoreRelease, Event, Feedback, Heartbeat, Learning, TeacherSignal

SCHEMA_FILES: dict[str, type[Event]] = {
    "learning.schema.json": Learning,
    "heartbeat.schema.json": Heartbeat,
    "core-release.schema.json": CoreRelease,
}
EXAMPLE_FILE = "learning.example.json"

# Fixed, so that the committed example never changes unless the contract does.
EXAMPLE_ID = uuid.UUID("6f1c2a9e-3b7d-4c5e-9a1f-2d8e4b6c0a17")
EXAMPLE_AGENT = "agent-7"
EXAMPLE_SKILL = "capital"
EXAMPLE_TIME = datetime(2026, 11, 22, 9, 30, 0, tzinfo=UTC)
EXAMPLE_K = 4
EXAMPLE_SEED = 7


def _dump(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _teacher_signal(answer: str, rng: random.Random) -> TeacherSignal:
    """A confident specialist's top-k over ``answer`` + EOS: the right token first, then near misses.

    The top token gets 0.86-0.99 of the mass and the runners-up share part of the rest, so every row
    is sorted, its ids are distinct and its probabilities sum to less than 1, as a real top-k does.
    """
    targets = [*ByteTokenizer().encode(answer), EOS_ID]
    letters = list(range(ord("a"), ord("z") + 1))
    token_ids: list[list[int]] = []
    logprobs: list[list[float]] = []
    for target in targets:
        others = [t for t in [*letters, EOS_ID] if t != target]
        ids = [target, *rng.sample(others, EXAMPLE_K - 1)]
        top = rng.uniform(0.86, 0.99)
        rest = 1.0 - top
        probs = [top, rest * 0.55, rest * 0.2, rest * 0.08]
        token_ids.append(ids)
        logprobs.append([round(math.log(p), 4) for p in probs[:EXAMPLE_K]])
    return TeacherSignal(k=EXAMPLE_K, over="completion", token_ids=token_ids, logprobs=logprobs)


def example_learning() -> Learning:
    """A realistic learning: agent-7 answered a capital task right, with its k=4 teacher signal."""
    rng = random.Random(EXAMPLE_SEED)
    skill = BUILTIN_SKILLS[EXAMPLE_SKILL]
    prompt, answer = skill.sample(rng)  # type: ignore[attr-defined]
    return Learning(
        id=EXAMPLE_ID,
        agent_id=EXAMPLE_AGENT,
        skill=EXAMPLE_SKILL,
        core_version=0,
        created_at=EXAMPLE_TIME,
        prompt=prompt,
        completion=answer,
        # As the agent runtime sends it: the verified reference travels as the correction too.
        feedback=Feedback(reward=1.0, correction=answer),
        teacher=_teacher_signal(answer, rng),
    )


def render() -> dict[str, str]:
    """File name -> the exact text ``export_schemas`` writes for it."""
    files = {name: _dump(model.model_json_schema()) for name, model in SCHEMA_FILES.items()}
    files[EXAMPLE_FILE] = _dump(example_learning().model_dump(mode="json"))
    return files


def export_schemas(directory: Path) -> list[Path]:
    """Writes the JSON Schemas of the events and the example learning into ``directory``; returns the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
