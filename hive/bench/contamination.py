"""How many held-out prompts of each skill appear in a training stream: the count that says a figure is fair."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from agents.evaluation import held_out_tasks
from agents.skills.splits import kind_of
from hive.bench.fleet_arms import VALIDATION_SEED

HELD_OUT = ("test", "validation")


def held_out_prompts(skill: object, tasks: int, val_tasks: int) -> dict[str, set[str]]:
    """The distinct prompts the bench evaluates (``test``) and tunes on (``validation``) for ``skill``."""
    return {
        "test": {p for p, _ in held_out_tasks(skill, tasks)},
        "validation": {p for p, _ in held_out_tasks(skill, val_tasks, seed=VALIDATION_SEED, split="validation")},
    }


def count_contamination(
    skills: Iterable[object],
    held_out: Mapping[str, Mapping[str, set[str]]],
    streams: Mapping[str, Mapping[str, Iterable[str]]],
) -> dict[str, dict[str, object]]:
    """Per skill: its kind, its distinct held-out prompts, and how many of them each training stream holds.

    ``held_out`` is skill -> split -> prompts; ``streams`` is stream name -> skill -> the prompts it trained on.
    ``overlap`` counts the distinct test prompts found in any stream. For a ``recall`` skill it is the table,
    by design; for a ``generalize`` skill anything above 0 is a leak.
    """
    report: dict[str, dict[str, object]] = {}
    for skill in skills:
        name = skill.name  # type: ignore[attr-defined]
        trained = {stream: set(by_skill.get(name, ())) for stream, by_skill in streams.items()}
        everything = set().union(*trained.values()) if trained else set()
        report[name] = {
            "kind": kind_of(skill),
            "test_prompts": len(held_out[name]["test"]),
            "validation_prompts": len(held_out[name]["validation"]),
            "validation_in_test": len(held_out[name]["validation"] & held_out[name]["test"]),
            "overlap": len(held_out[name]["test"] & everything),
            "by_stream": {
                split: {stream: len(held_out[name][split] & prompts) for stream, prompts in trained.items()}
                for split in HELD_OUT
            },
        }
    return report
