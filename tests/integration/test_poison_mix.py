"""A real ``hive serve`` with rounds on, started on a home a crash left behind (a torn round.json, learnings of a
skill it cannot load), fed every class of poison among 400 good signed learnings."""

from __future__ import annotations

import json
from pathlib import Path

from hive.bench.fuzz import run_fuzz
from hive.bench.poison import PoisonPlan

GOOD = 400


def test_poison_never_stops_the_hive_and_the_next_round_holds_every_good_learning(tmp_path: Path) -> None:
    # 13 classes of poison, 20 of each: the five of issue #9 (zone-less timestamps, an unknown skill, hostile
    # claim checks, unsigned, revoked and foreign-agent learnings, odd heartbeats) and the fuzzer's.
    report = run_fuzz(PoisonPlan(good=GOOD, poison=260, seed=9), tmp_path / "fuzz", print, timeout_s=600)
    print(json.dumps(report, indent=2))
    assert report["crashes"] == 0
    assert report["serve_exit_code"] == 0
    kinds = report["kinds"]
    for kind in (
        "unknown_skill",
        "unsigned",
        "unknown_agent_unsigned",
        "wrong_key",
        "zoneless_created_at",
        "bad_claim_check",
        "arbitrary_bytes",
        "arbitrary_json",
        "lone_surrogate",
        "duplicate",
    ):
        assert kinds[kind] == 20, kind
    reasons = report["dead_letters_by_reason"]
    # Each class went to the dead-letter topic for its own reason.
    assert reasons["unknown_skill"] == kinds["unknown_skill"]
    assert reasons["revoked"] == kinds["revoked"]
    assert reasons["timestamp"] >= kinds["zoneless_created_at"]
    # An agent without a key is refused as unsigned; a learning of an agent with a key, unsigned or signed
    # with another key, fails its signature.
    assert reasons["unsigned"] == kinds["unknown_agent_unsigned"]
    assert reasons["signature"] == kinds["wrong_key"] + kinds["unsigned"]
    malformed = sum(reasons.get(r, 0) for r in ("undecodable", "invalid_json", "schema", "unknown_version"))
    assert malformed >= kinds["arbitrary_bytes"] + kinds["arbitrary_json"] + kinds["lone_surrogate"]
    # No record made a check fail in a way nobody foresaw.
    assert "unprocessable" not in reasons
    # Every good learning, the duplicates' first copies and the learnings with hostile claim checks were
    # stored once, and the round after the poison released over all of them.
    assert report["round"]["state"] == "released"
    # The hostile claim checks were refused, each for its reason, and the round went on without them.
    skipped = report["round"]["distill"]["teacher_skipped"]
    assert sum(skipped.values()) == kinds["bad_claim_check"]
    assert {"adapter_outside_roots", "adapter_unsupported_uri", "adapter_shape_mismatch"} <= set(skipped)
    assert report["good_learnings_in_round"] == GOOD + kinds["bad_claim_check"]
    assert report["stored"] >= GOOD + kinds["bad_claim_check"]
    # The torn round read as failed with its reason (its bytes kept aside: run_fuzz checks them), and the round
    # that released quarantined the leftover learnings of the unknown skill, and only those.
    assert report["leftovers"]["torn_round"].startswith("unreadable round.json: ")
    assert report["leftovers"]["quarantined_unknown_skill"] == 2
    assert report["round"]["id"] == "r0002"
    # hive fleet's reader took the heartbeat poison too: only signed heartbeats of the keyed agents count.
    assert set(report["fleet"]["agents"]) <= {"agent-1", "agent-2", "agent-3"}
    assert "unprocessable" not in report["fleet"]["heartbeats_not_counted"]
    assert report["fleet"]["heartbeats_not_counted"]
