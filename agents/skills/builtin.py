"""Built-in skills: each one the tiny core learns in a few minutes on a 2-core CPU."""

from __future__ import annotations

import random
import string
from dataclasses import dataclass, field

LETTERS = string.ascii_lowercase


def random_word(rng: random.Random, lo: int, hi: int) -> str:
    return "".join(rng.choice(LETTERS) for _ in range(rng.randint(lo, hi)))


def _fact_table(size: int, seed: int) -> dict[str, str]:
    """A fixed table of made-up countries and capitals; the same seed gives the same table."""
    rng = random.Random(seed)
    table: dict[str, str] = {}
    while len(table) < size:
        country = random_word(rng, 4, 7)
        if country not in table:
            table[country] = random_word(rng, 4, 7)
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
        word = random_word(rng, 1, self.max_len)
        return f"morse {word}", " ".join(MORSE[c] for c in word)


@dataclass(frozen=True)
class Add:
    """Add two single digits: ``add 7 5`` -> ``12``."""

    name: str = "add"

    def sample(self, rng: random.Random) -> tuple[str, str]:
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        return f"add {a} {b}", str(a + b)


@dataclass(frozen=True)
class Multiply:
    """Multiply two single digits: ``mul 7 5`` -> ``35``."""

    name: str = "mul"

    def sample(self, rng: random.Random) -> tuple[str, str]:
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        return f"mul {a} {b}", str(a * b)


BUILTIN_SKILLS: dict[str, object] = {skill.name: skill for skill in (Capital(), Morse(), Add(), Multiply())}
