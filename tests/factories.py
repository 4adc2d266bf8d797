"""Test data shared by every tier: one way to make a Learning (``from factories import make_learning``), and
small core directories with or without a tokenizer (``make_core_dir``, ``save_word_tokenizer``).

``tests/`` is on ``sys.path`` because pytest puts the directory of ``tests/conftest.py`` there (no ``__init__.py``).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from streams.events import Feedback, Learning


def make_learning(
    agent: str = "a1",
    skill: str = "add",
    n: int = 0,
    *,
    prompt: str | None = None,
    completion: str = "x",
    reward: float = 1.0,
    correction: str | None = None,
    core_version: int = 0,
    **fields: Any,
) -> Learning:
    """A valid, unsigned Learning with a fresh id; ``n`` tells apart the prompts of one agent and skill
    (``"<skill> <n>"`` unless ``prompt`` is given). ``fields`` sets any other Learning field, ``id`` included
    (a seeded test draws its ids from its own random generator)."""
    fields.setdefault("id", uuid.uuid4())
    return Learning(
        agent_id=agent,
        skill=skill,
        core_version=core_version,
        prompt=f"{skill} {n}" if prompt is None else prompt,
        completion=completion,
        feedback=Feedback(reward=reward, correction=correction),
        **fields,
    )


def make_core_dir(directory: Path, seed: int = 0) -> Path:
    """A small tiny-architecture core (one layer, width 32, the byte vocabulary of 260) saved as safetensors."""
    from agents.model import CoreSize, build_core, save_core

    save_core(build_core(CoreSize(width=32, layers=1), seed=seed), directory)
    return directory


def save_word_tokenizer(directory: Path, words: int, special: dict[str, int] | None = None, added: int = 0) -> None:
    """Saves a word-level tokenizer of ``words`` tokens ``w0``..``w{words-1}``, plus ``special`` (an ``<eos>``
    at the id given) and ``added`` added tokens, as ``tokenizer.json`` and ``tokenizer_config.json``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    special = {"<eos>": words} if special is None else special
    vocab = {f"w{i}": i for i in range(words)} | special
    backend = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", unk_token="w0")
    tokenizer.add_tokens([f"added{i}" for i in range(added)])
    tokenizer.save_pretrained(directory)


class FakeEngine:
    """What ``distill.step.train_step`` and ``save_student`` use of a DeepSpeed engine (ZeRO-2), over a plain
    module: the forward call, backward, and a ``step()`` that only counts."""

    def __init__(self, module: Any) -> None:
        self.module = module
        self.steps = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)

    def backward(self, loss: Any) -> None:
        loss.backward()

    def step(self) -> None:
        self.steps += 1

    def zero_optimization_stage(self) -> int:
        return 2


class ReleaseSigner:
    """A hive's release key for tests that publish core releases by hand: it numbers and signs each release in
    turn, as the hive does. Agents pin ``public_key`` (``AgentSettings.hive_public_key``)."""

    def __init__(self) -> None:
        from streams.release_signing import generate_private_key

        self.key = generate_private_key()
        self.sequence = 0

    @property
    def public_key(self) -> str:
        from streams.release_signing import public_key_pem

        return public_key_pem(self.key.public_key()).decode("ascii")

    def sign(self, release: Any) -> Any:
        """``release`` (a CoreRelease) with the next sequence number, signed."""
        from streams.release_signing import sign_release

        self.sequence += 1
        return sign_release(release.model_copy(update={"sequence": self.sequence}), self.key)

    def pinned(self) -> Any:
        """The agents.release_trust.PinnedKeys of an agent that pins this key."""
        from agents.release_trust import PinnedKeys
        from streams.release_signing import parse_public_keys

        return PinnedKeys(inline=parse_public_keys(self.public_key))
