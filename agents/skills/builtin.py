"""Built-in skills, each small enough for the tiny core to learn in a few minutes on a CPU."""

from __future__ import annotations

import random
import string
from dataclasses import dataclass, field

LETTERS = string.ascii_lowercase


def _word(rng: random.Random, lo: int, hi: int) -> str:
    return "".join(rng.choice(LETTERS) for _ in range(rng.randint(lo, hi)))


@dataclass(frozen=True)
class Reverse:
    """Reverse a short lowercase word: ``rev abcd`` -> ``dcba``."""

    name: str = "reverse"
    min_len: int = 3
    max_len: int = 5

    def sample(self, rng: random.Random) -> tuple[str, str]:
        word = _word(rng, self.min_len, self.max_len)
        return f"rev {word}", word[::-1]


@dataclass(frozen=True)
class Upper:
    """Upper-case a short lowercase word: ``up abcd`` -> ``ABCD``."""

    name: str = "upper"
    min_len: int = 3
    max_len: int = 6

    def sample(self, rng: random.Random) -> tuple[str, str]:
        word = _word(rng, self.min_len, self.max_len)
        return f"up {word}", word.upper()


@dataclass(frozen=True)
class Shift:
    """Shift every letter one place on (z wraps to a): ``shift abz`` -> ``bca``."""

    name: str = "shift"
    min_len: int = 3
    max_len: int = 6

    def sample(self, rng: random.Random) -> tuple[str, str]:
        word = _word(rng, self.min_len, self.max_len)
        shifted = "".join(LETTERS[(LETTERS.index(c) + 1) % 26] for c in word)
        return f"shift {word}", shifted


def _fact_table(size: int, seed: int) -> dict[str, str]:
    """A fixed table of made-up countries and capitals; the same seed gives the same table."""
    rng = random.Random(seed)
    table: dict[str, str] = {}
    while len(table) < size:
        country = _word(rng, 4, 7)
        if country not in table:
            table[country] = _word(rng, 4, 7)
    return table


@dataclass(frozen=True)
class Capital:
    """Recall the capital of a made-up country from a fixed table: ``cap zorvia`` -> ``belmar``."""

    name: str = "capital"
    size: int = 40
    seed: int = 7
    table: dict[str, str] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "table", _fact_table(self.size, self.seed))

    def sample(self, rng: random.Random) -> tuple[str, str]:
        country = rng.choice(sorted(self.table))
        return f"cap {country}", self.table[country]


@dataclass(frozen=True)
class Double:
    """Write every letter twice: ``dbl abc`` -> ``aabbcc``."""

    name: str = "double"
    min_len: int = 2
    max_len: int = 4

    def sample(self, rng: random.Random) -> tuple[str, str]:
        word = _word(rng, self.min_len, self.max_len)
        return f"dbl {word}", "".join(c * 2 for c in word)


MORSE_CODES = [
    ".-",
    "-...",
    "-.-.",
    "-..",
    ".",
    "..-.",
    "--.",
    "....",
    "..",
    ".---",
    "-.-",
    ".-..",
    "--",
    "-.",
    "---",
    ".--.",
    "--.-",
    ".-.",
    "...",
    "-",
    "..-",
    "...-",
    ".--",
    "-..-",
    "-.--",
    "--..",
]
MORSE = dict(zip(LETTERS, MORSE_CODES, strict=True))


@dataclass(frozen=True)
class Morse:
    """Spell one or two letters in Morse code, letters split by a space: ``morse ab`` -> ``.- -...``."""

    name: str = "morse"
    max_len: int = 2

    def sample(self, rng: random.Random) -> tuple[str, str]:
        word = _word(rng, 1, self.max_len)
        return f"morse {word}", " ".join(MORSE[c] for c in word)


@dataclass(frozen=True)
class Add:
    """Add two single digits: ``add 7 5`` -> ``12``."""

    name: str = "add"

    def sample(self, rng: random.Random) -> tuple[str, str]:
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        return f"add {a} {b}", str(a + b)


BUILTIN_SKILLS: dict[str, object] = {
    skill.name: skill for skill in (Capital(), Morse(), Add(), Reverse(), Upper(), Shift(), Double())
}
