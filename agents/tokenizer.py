"""A byte-level tokenizer: 256 byte ids plus four specials, so nothing is downloaded."""

from __future__ import annotations

from collections.abc import Sequence

PAD_ID = 256
BOS_ID = 257
EOS_ID = 258
SEP_ID = 259
VOCAB_SIZE = 260
# The tiny core's positions: BOS prompt SEP answer EOS of every built-in skill fits with room to spare.
MAX_POSITIONS = 64


class ByteTokenizer:
    """Maps UTF-8 bytes to ids 0..255; the specials live above them. It is the tiny core's codec.

    A task is laid out as ``BOS prompt SEP answer EOS``: SEP marks where the answer starts, so
    prompts may contain any text.
    """

    pad_id = PAD_ID
    bos_id = BOS_ID
    eos_id = EOS_ID
    sep_id = SEP_ID
    end_id = EOS_ID
    stop_ids = frozenset({EOS_ID})
    vocab_size = VOCAB_SIZE
    max_positions = MAX_POSITIONS
    fingerprint = f"byte-{VOCAB_SIZE}"

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        """Decodes byte ids, stopping at EOS and ignoring the other specials."""
        out = bytearray()
        for i in ids:
            if i == EOS_ID:
                break
            if i < 256:
                out.append(i)
        return out.decode("utf-8", errors="replace")

    def prompt_ids(self, prompt: str) -> list[int]:
        """The ids a model sees before it answers: ``BOS prompt SEP``."""
        return [BOS_ID, *self.encode(prompt), SEP_ID]

    def answer_ids(self, answer: str) -> list[int]:
        """The ids a model should produce: ``answer EOS``."""
        return [*self.encode(answer), EOS_ID]
