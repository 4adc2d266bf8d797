"""Built-in skills. capital, morse, add and mul are what the tiny core learns in a few minutes on a 2-core CPU;
codes and zorbish are made up, so that a pretrained model (SmolLM2-135M) scores near 0 on them before it learns.

``kind`` says what a held-out task tests: ``recall`` of a closed table, or ``generalize`` to tasks never seen
(``agents.skills.splits``). Half of them generalize, and the tiny core learns each of those in a few hundred steps.
"""

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
    kind: str = "recall"
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
    kind: str = "generalize"
    max_len: int = 2

    def sample(self, rng: random.Random) -> tuple[str, str]:
        word = random_word(rng, 1, self.max_len)
        return f"morse {word}", " ".join(MORSE[c] for c in word)


@dataclass(frozen=True)
class Add:
    """Add two single digits: ``add 7 5`` -> ``12``. A table of 100 sums: recall, not arithmetic."""

    name: str = "add"
    kind: str = "recall"

    def sample(self, rng: random.Random) -> tuple[str, str]:
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        return f"add {a} {b}", str(a + b)


@dataclass(frozen=True)
class Multiply:
    """Multiply two single digits: ``mul 7 5`` -> ``35``. The times table, 100 facts: recall."""

    name: str = "mul"
    kind: str = "recall"

    def sample(self, rng: random.Random) -> tuple[str, str]:
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        return f"mul {a} {b}", str(a * b)


CODE_LETTERS = "BCDFGHJKLMNPRSTVWXZ"


def _code_table(size: int, seed: int) -> dict[str, str]:
    """A fixed table of made-up product names and their codes; the same seed gives the same table."""
    rng = random.Random(seed)
    table: dict[str, str] = {}
    while len(table) < size:
        product = random_word(rng, 5, 8)
        code = f"{rng.choice(CODE_LETTERS)}{rng.choice(CODE_LETTERS)}-{rng.randint(100, 999)}"
        table.setdefault(product, code)
    return table


@dataclass(frozen=True)
class Codes:
    """Recall a company's product code from a fixed table: ``product code of vantrel`` -> ``KX-482``."""

    name: str = "codes"
    kind: str = "recall"
    size: int = 40
    seed: int = 11
    table: dict[str, str] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "table", _code_table(self.size, self.seed))

    def sample(self, rng: random.Random) -> tuple[str, str]:
        product = rng.choice(sorted(self.table))
        return f"product code of {product}", self.table[product]


ZORBISH_WORDS = [
    "red",
    "blue",
    "green",
    "old",
    "new",
    "big",
    "small",
    "dog",
    "cat",
    "bird",
    "fish",
    "tree",
    "house",
    "stone",
    "runs",
    "sleeps",
    "eats",
    "sees",
    "jumps",
    "sings",
]


def _lexicon(seed: int) -> dict[str, str]:
    """English word -> its made-up Zorbish word, one distinct word each; the same seed gives the same lexicon."""
    rng = random.Random(seed)
    lexicon: dict[str, str] = {}
    taken: set[str] = set()
    for word in ZORBISH_WORDS:
        made = random_word(rng, 3, 4)
        while made in taken or made in ZORBISH_WORDS:
            made = random_word(rng, 3, 4)
        taken.add(made)
        lexicon[word] = made
    return lexicon


@dataclass(frozen=True)
class Zorbish:
    """Translate three English words into Zorbish, a made-up language of 20 words, word by word:
    ``zorbish: red dog runs`` -> ``kel vom tas``. 8,000 phrases: a held-out phrase is mostly one never seen."""

    name: str = "zorbish"
    kind: str = "generalize"
    words: int = 3
    seed: int = 13
    lexicon: dict[str, str] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "lexicon", _lexicon(self.seed))

    def sample(self, rng: random.Random) -> tuple[str, str]:
        phrase = [rng.choice(ZORBISH_WORDS) for _ in range(self.words)]
        return "zorbish: " + " ".join(phrase), " ".join(self.lexicon[w] for w in phrase)


@dataclass(frozen=True)
class Swap:
    """Say three words in reverse order: ``swap: red dog runs`` -> ``runs dog red``. 8,000 phrases of the
    Zorbish vocabulary: the model must learn the reordering, not the phrases."""

    name: str = "swap"
    kind: str = "generalize"
    words: int = 3

    def sample(self, rng: random.Random) -> tuple[str, str]:
        phrase = [rng.choice(ZORBISH_WORDS) for _ in range(self.words)]
        return "swap: " + " ".join(phrase), " ".join(reversed(phrase))


@dataclass(frozen=True)
class NextDigits:
    """Step every digit of a four-digit string up by one, 9 wrapping to 0: ``next 4079`` -> ``5180``.
    10,000 strings: a held-out string is one never seen."""

    name: str = "next"
    kind: str = "generalize"
    digits: int = 4

    def sample(self, rng: random.Random) -> tuple[str, str]:
        digits = [rng.randint(0, 9) for _ in range(self.digits)]
        return "next " + "".join(map(str, digits)), "".join(str((d + 1) % 10) for d in digits)


BUILTIN_SKILLS: dict[str, object] = {
    skill.name: skill for skill in (Capital(), Morse(), Add(), Multiply(), Codes(), Zorbish(), Swap(), NextDigits())
}
