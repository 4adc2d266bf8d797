"""String skills, shipped as plugins: the tiny core needs ~1,000 steps for these, so they are not built-ins.

Name them as ``agents.skills.text:Reverse`` and so on, like any plugin.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from agents.skills.builtin import LETTERS, random_word


@dataclass(frozen=True)
class Reverse:
    """Reverse a short lowercase word: ``rev abcd`` -> ``dcba``."""

    name: str = "reverse"
    min_len: int = 3
    max_len: int = 5

    def sample(self, rng: random.Random) -> tuple[str, str]:
        word = random_word(rng, self.min_len, self.max_len)
        return f"rev {word}", word[::-1]


@dataclass(frozen=True)
class Upper:
    """Upper-case a short lowercase word: ``up abcd`` -> ``ABCD``."""

    name: str = "upper"
    min_len: int = 3
    max_len: int = 6

    def sample(self, rng: random.Random) -> tuple[str, str]:
        word = random_word(rng, self.min_len, self.max_len)
        return f"up {word}", word.upper()


@dataclass(frozen=True)
class Shift:
    """Shift every letter one place on (z wraps to a): ``shift abz`` -> ``bca``."""

    name: str = "shift"
    min_len: int = 3
    max_len: int = 6

    def sample(self, rng: random.Random) -> tuple[str, str]:
        word = random_word(rng, self.min_len, self.max_len)
        shifted = "".join(LETTERS[(LETTERS.index(c) + 1) % 26] for c in word)
        return f"shift {word}", shifted


@dataclass(frozen=True)
class Double:
    """Write every letter twice: ``dbl abc`` -> ``aabbcc``."""

    name: str = "double"
    min_len: int = 2
    max_len: int = 4

    def sample(self, rng: random.Random) -> tuple[str, str]:
        word = random_word(rng, self.min_len, self.max_len)
        return f"dbl {word}", "".join(c * 2 for c in word)
