"""A core's codec: the one object that turns a task's text into that core's token ids and back."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

from agents.tokenizer import ByteTokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# Files whose presence makes a core directory carry its own tokenizer; the tiny core writes none.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
# Positions a pretrained core may use here. Its config allows thousands (SmolLM2: 8,192), but every
# task is a short prompt and answer, and attention over long rows is what CPU time goes to.
HF_MAX_POSITIONS = 512
# Stands for an assistant's answer when the chat template is rendered to find what ends a turn.
_SENTINEL = "HIVEANSWERSENTINEL"


class Codec(Protocol):
    """Turns a task into a core's ids: ``prompt_ids(prompt) + answer_ids(answer)`` is one training row.

    ``answer_ids`` MUST end with ``end_id``, the token that ends an answer, and ``decode`` MUST stop at it,
    so a model that learned the row stops where the answer does. ``fingerprint`` names the tokenizer: two
    codecs with the same fingerprint give the same ids for the same text.
    """

    @property
    def pad_id(self) -> int: ...

    @property
    def end_id(self) -> int: ...

    @property
    def stop_ids(self) -> frozenset[int]: ...

    @property
    def vocab_size(self) -> int: ...

    @property
    def max_positions(self) -> int: ...

    @property
    def fingerprint(self) -> str: ...

    def prompt_ids(self, prompt: str) -> list[int]: ...

    def answer_ids(self, answer: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


# The tiny core's codec: ByteTokenizer already is one.
BYTE_CODEC: Codec = ByteTokenizer()


class HFCodec:
    """A Hugging Face fast tokenizer as a codec.

    With a chat template, a prompt is one user turn plus the assistant's opening
    (``apply_chat_template(..., add_generation_prompt=True)``), after an empty system turn where that is shorter
    than the template's default system prompt (see ``_opening``), and an answer is its text's tokens plus the
    token that ends the assistant's turn (``<|im_end|>`` for ChatML). Without one: ``BOS prompt`` and
    ``answer EOS``. Special-token text inside a prompt or answer is tokenized as text, so a task cannot
    end a turn early or open a new one.
    """

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, max_positions: int = HF_MAX_POSITIONS, source: str = ""
    ) -> None:
        where = source or type(tokenizer).__name__
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(f"{where}: a fast (tokenizers-backed) tokenizer is needed, got {type(tokenizer).__name__}")
        if max_positions < 2:
            raise ValueError(f"{where}: max_positions must be at least 2, got {max_positions}")
        self.tokenizer = tokenizer
        self.chat = bool(tokenizer.chat_template)
        self._opening = _opening(tokenizer) if self.chat else []
        eos = tokenizer.eos_token_id
        end = _end_of_turn(tokenizer, where) if self.chat else eos
        if end is None:
            raise ValueError(f"{where}: the tokenizer has no chat template and no eos_token: nothing ends an answer")
        self._end_id = int(end)
        self._stop_ids = frozenset({self._end_id} | ({int(eos)} if eos is not None else set()))
        pad = tokenizer.pad_token_id
        # Padding is masked out of attention and labels, so any id serves; the end token is always there.
        self._pad_id = int(pad) if pad is not None else self._end_id
        self._vocab_size = len(tokenizer)
        self._max_positions = max_positions
        self._fingerprint = tokenizer_fingerprint(tokenizer)

    @property
    def pad_id(self) -> int:
        return self._pad_id

    @property
    def end_id(self) -> int:
        return self._end_id

    @property
    def stop_ids(self) -> frozenset[int]:
        """The ids that end generation: the end of a turn, and the tokenizer's EOS should a model emit that."""
        return self._stop_ids

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def max_positions(self) -> int:
        return self._max_positions

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def prompt_ids(self, prompt: str) -> list[int]:
        if self.chat:
            ids = self.tokenizer.apply_chat_template(
                [*self._opening, {"role": "user", "content": prompt}],
                add_generation_prompt=True,
                tokenize=True,
                return_dict=False,
                # Control tokens in the task's text are text, not turns (transformers >= 5; older ones ignore it).
                sanitize_control_tokens=True,
            )
            return [int(i) for i in cast("list[int]", ids)]
        bos = self.tokenizer.bos_token_id
        return ([int(bos)] if bos is not None else []) + self._text_ids(prompt)

    def answer_ids(self, answer: str) -> list[int]:
        return [*self._text_ids(answer), self._end_id]

    def decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids`` up to the first stop id, without special tokens."""
        kept: list[int] = []
        for i in ids:
            if int(i) in self._stop_ids:
                break
            kept.append(int(i))
        return str(self.tokenizer.decode(kept, skip_special_tokens=True, clean_up_tokenization_spaces=False))

    def _text_ids(self, text: str) -> list[int]:
        ids = self.tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True)
        return [int(i) for i in ids]


def _opening(tokenizer: PreTrainedTokenizerBase) -> list[dict[str, str]]:
    """The turns before each task's user turn: an empty system turn where the template takes one and that is
    shorter than what it writes without one, else none.

    SmolLM2's template writes a 20-token default system prompt ("You are a helpful AI assistant named SmolLM...")
    into every conversation without a system turn: more than half of each training row, carrying nothing about the
    task. A template that refuses a system turn (it raises) or has no default keeps its own opening.
    """
    from jinja2 import TemplateError

    user = {"role": "user", "content": "x"}
    empty_system = {"role": "system", "content": ""}
    try:
        with_empty = str(tokenizer.apply_chat_template([empty_system, user], tokenize=False))
    except TemplateError:
        return []
    without = str(tokenizer.apply_chat_template([user], tokenize=False))
    return [empty_system] if len(with_empty) < len(without) else []


def _end_of_turn(tokenizer: PreTrainedTokenizerBase, where: str) -> int:
    """The token the chat template writes right after an assistant's answer: ``<|im_end|>``, ``<|eot_id|>``...

    Found by rendering a conversation whose answer is a sentinel and matching the text after it against the
    tokenizer's added tokens, so no template's token name is hard-coded here.
    """
    from jinja2 import TemplateError

    conversation = [{"role": "user", "content": "q"}, {"role": "assistant", "content": _SENTINEL}]
    try:
        text = str(tokenizer.apply_chat_template(conversation, tokenize=False))
    except TemplateError as err:
        raise ValueError(f"{where}: its chat template cannot render a user turn and an answer: {err}") from err
    if _SENTINEL not in text:
        raise ValueError(f"{where}: its chat template drops the assistant's answer; cannot find what ends a turn")
    after = text.split(_SENTINEL, 1)[1].lstrip(" ")
    added = {token.content: int(i) for i, token in tokenizer.added_tokens_decoder.items()}
    matches = [content for content in added if content and after.startswith(content)]
    if matches:
        return added[max(matches, key=len)]
    eos = tokenizer.eos_token
    if eos and eos in after and tokenizer.eos_token_id is not None:
        return int(tokenizer.eos_token_id)
    raise ValueError(
        f"{where}: its chat template ends an assistant turn with {after[:40]!r}, which starts with no special token"
    )


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """sha256 of the canonical tokenizer.json plus the chat template: equal for tokenizers that give equal ids."""
    spec: dict[str, Any] = json.loads(tokenizer.backend_tokenizer.to_str())
    # Truncation and padding are call-time settings, not part of what text maps to.
    spec.pop("truncation", None)
    spec.pop("padding", None)
    payload = {"tokenizer": spec, "chat_template": tokenizer.chat_template or ""}
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "hf-sha256-" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# Everything transformers may read to rebuild a core's tokenizer (a fast tokenizer needs only the first two).
TOKENIZER_FILE_SET = (
    *TOKENIZER_FILES,
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "vocab.json",
    "merges.txt",
)


def copy_tokenizer(source: Path, target: Path) -> list[str]:
    """Copies the tokenizer files of core ``source`` into core ``target`` (a core trained from it keeps its
    tokens); returns the names copied, none for a byte-tokenizer core."""
    copied = []
    for name in TOKENIZER_FILE_SET:
        path = source / name
        if path.is_file() and not path.is_symlink():
            shutil.copyfile(path, target / name)
            copied.append(name)
    return copied


def has_tokenizer(directory: Path) -> bool:
    return any((directory / name).is_file() for name in TOKENIZER_FILES)


def load_codec(directory: Path) -> Codec:
    """The codec of the core in ``directory``: its own tokenizer when it has one, else the byte codec.

    A tokenizer is loaded from local files only and never runs code from the directory.
    """
    if not has_tokenizer(directory):
        return BYTE_CODEC
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"{directory}: cannot load its tokenizer: {err}") from err
    return HFCodec(tokenizer, core_max_positions(directory), str(directory))


def core_max_positions(directory: Path) -> int:
    """The config's ``max_position_embeddings``, capped at ``HF_MAX_POSITIONS``; the cap without a config."""
    path = directory / "config.json"
    if not path.is_file():
        return HF_MAX_POSITIONS
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON: {err}") from err
    limit = config.get("max_position_embeddings") if isinstance(config, dict) else None
    if limit is None:
        return HF_MAX_POSITIONS
    if not isinstance(limit, int) or limit < 2:
        raise ValueError(f"{path}: max_position_embeddings must be an integer of at least 2, got {limit!r}")
    return min(limit, HF_MAX_POSITIONS)


def check_fits(codec: Codec, model: Any) -> None:
    """Refuses a model whose vocabulary does not match the codec's: the byte codec on a pretrained core, or a
    pretrained tokenizer on the tiny core. Either would train or decode garbage without an error."""
    config = getattr(model, "config", None)
    vocab = getattr(config, "vocab_size", None)
    if vocab is None:
        return
    # A pretrained embedding may have more rows than its tokenizer has tokens (padded for speed), never fewer;
    # the byte codec belongs to cores of exactly its size.
    exact = isinstance(codec, ByteTokenizer)
    if codec.vocab_size > vocab or (exact and codec.vocab_size != vocab):
        raise ValueError(
            f"the codec {codec.fingerprint} has {codec.vocab_size} tokens but the model's vocabulary has {vocab}: "
            "use the codec of the model's own core directory (agents.codec.load_codec)"
        )
