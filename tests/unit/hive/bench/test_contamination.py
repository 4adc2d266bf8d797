"""The contamination count: held-out prompts found in any training stream, per skill and per stream."""

from __future__ import annotations

import random

from agents.skills import BUILTIN_SKILLS
from agents.skills.splits import sample_task
from hive.bench.contamination import count_contamination, held_out_prompts


def test_a_planted_leak_is_counted_in_the_stream_that_holds_it() -> None:
    zorbish, capital = BUILTIN_SKILLS["zorbish"], BUILTIN_SKILLS["capital"]
    held = {s.name: held_out_prompts(s, 50, 20) for s in (zorbish, capital)}
    leaked = sorted(held["zorbish"]["test"])[:3]
    leaked_val = sorted(held["zorbish"]["validation"])[:2]
    streams = {
        "specialists": {
            "zorbish": [sample_task(zorbish, random.Random(0), "train")[0], *leaked],
            "capital": [f"cap {c}" for c in capital.table],
        },
        "replay": {"zorbish": leaked[:1] + leaked_val},
    }
    report = count_contamination([zorbish, capital], held, streams)
    assert report["zorbish"]["kind"] == "generalize"
    assert report["zorbish"]["overlap"] == 3
    assert report["zorbish"]["by_stream"]["test"] == {"specialists": 3, "replay": 1}
    assert report["zorbish"]["by_stream"]["validation"] == {"specialists": 0, "replay": 2}
    assert report["zorbish"]["validation_in_test"] == 0
    # A recall skill is tested on its table, which training holds: all of it overlaps, by design.
    assert report["capital"]["kind"] == "recall"
    assert report["capital"]["overlap"] == report["capital"]["test_prompts"] > 20


def test_a_clean_run_counts_zero() -> None:
    zorbish = BUILTIN_SKILLS["zorbish"]
    held = {"zorbish": held_out_prompts(zorbish, 50, 20)}
    assert count_contamination([zorbish], held, {"specialists": {"zorbish": ["zorbish: x"]}})["zorbish"]["overlap"] == 0
