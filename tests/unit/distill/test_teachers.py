"""Teacher signals from an adapter claim check: verified weights are scored, a sha256 mismatch is never trained on,
and a claim check that cannot be followed safely gives no teacher, never an error."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.claim_check import ClaimCheckError, adapter_path, parse_file_uri, resolve_adapter
from agents.codec import load_codec
from agents.learner import Specialist
from agents.lora import ADAPTER_CONFIG, ADAPTER_WEIGHTS, LoraSpec
from agents.model import WEIGHTS_FILE, CoreSize, build_core, file_sha256, load_core, save_core, topk_signal
from agents.tokenizer import ByteTokenizer
from distill.dataset import build_examples
from distill.teachers import AdapterTeachers, newest_claim_checks
from streams.events import ClaimCheck, Learning, TeacherSignal

from factories import make_learning
from tiny_hf import make_hf_core

TOK = ByteTokenizer()
K = 5
SIZE = CoreSize(width=32, layers=1)
REASONS = {"adapter_unsupported_uri", "adapter_outside_roots", "adapter_missing", "adapter_unreadable"}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The adapter root: where agents save their specialists."""
    return tmp_path_factory.mktemp("agents")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The round's base core, of the same size as the specialists: teachers are built from it."""
    directory = tmp_path_factory.mktemp("base") / "core"
    save_core(build_core(SIZE, seed=1), directory)
    return directory


def _teachers(base: Path, root: Path, **kw) -> AdapterTeachers:
    return AdapterTeachers(K, base, [root], **kw)


@pytest.fixture(scope="module")
def specialist(root: Path) -> tuple[Path, str]:
    directory = root / "agent-a" / "specialist"
    sha = save_core(build_core(SIZE, seed=3), directory)
    return directory, sha


def _learning(prompt: str, answer: str, adapter: ClaimCheck | None, correction: bool = True, **fields) -> Learning:
    """Agent-a's capital learning with its adapter's claim check: a wrong answer corrected to ``answer``, or
    ``answer`` itself when ``correction`` is off."""
    return make_learning(
        "agent-a",
        "capital",
        prompt=prompt,
        completion="zzz" if correction else answer,
        reward=0.0 if correction else 1.0,
        correction=answer if correction else None,
        adapter=adapter,
        **fields,
    )


def test_a_verified_adapter_gives_a_signal_over_the_learned_answer(
    specialist: tuple[Path, str], base: Path, root: Path
) -> None:
    directory, sha = specialist
    check = ClaimCheck(uri=directory.as_uri(), sha256=sha)
    learnings = [_learning("cap zorvia", "belmar", check), _learning("rev abc", "cba", check, correction=False)]
    result = _teachers(base, root).fill(learnings)
    assert not result.reasons and not result.dropped
    assert [lr.id for lr in result.learnings] == [lr.id for lr in learnings]
    first, second = result.learnings
    assert first.teacher is not None and second.teacher is not None
    # One row per answer byte plus EOS, k ids each, following the correction or the completion as the text does.
    assert len(first.teacher.token_ids) == len(b"belmar") + 1
    assert len(second.teacher.token_ids) == len(b"cba") + 1
    assert all(len(row) == K for row in first.teacher.token_ids)
    assert (first.teacher.over, second.teacher.over) == ("correction", "completion")
    assert first.learned_answer() == "belmar"
    # The rows are the specialist's own top-k.
    ((ids, lps),) = topk_signal(load_core(directory), ["cap zorvia"], ["belmar"], K, TOK)
    assert first.teacher.token_ids == ids
    assert [lp for row in first.teacher.logprobs for lp in row] == pytest.approx([lp for row in lps for lp in row])

    examples, report = build_examples(learnings, TOK, teachers=_teachers(base, root))
    assert report.kept == 2 and not report.skipped
    assert all(e.teacher_ids is not None and len(e.teacher_ids) == len(TOK.answer_ids(e.answer)) for e in examples)


def test_a_sha_mismatch_drops_the_learning_with_its_reason(
    specialist: tuple[Path, str], base: Path, root: Path
) -> None:
    directory, sha = specialist
    wrong = ClaimCheck(uri=directory.as_uri(), sha256=("0" if sha[0] != "0" else "1") + sha[1:])
    good = ClaimCheck(uri=directory.as_uri(), sha256=sha)
    learnings = [_learning("cap zorvia", "belmar", wrong), _learning("cap abc", "def", good)]
    # The mismatched learning carries a verified correction, yet it must not even get cross-entropy.
    examples, report = build_examples(learnings, TOK, teachers=_teachers(base, root))
    assert [e.prompt for e in examples] == ["cap abc"]
    assert report.skipped == Counter({"adapter_sha_mismatch": 1})
    assert report.teacher_skipped == Counter({"adapter_sha_mismatch": 1})
    assert [(d.id, d.reason) for d in report.dropped] == [(str(learnings[0].id), "adapter_sha_mismatch")]


def test_an_unusable_claim_check_drops_only_the_signal(specialist: tuple[Path, str], base: Path, root: Path) -> None:
    _, sha = specialist
    learnings = [
        _learning("cap a", "b", ClaimCheck(uri="s3://bucket/specialist", sha256=sha)),
        _learning("cap c", "d", ClaimCheck(uri=(root / "gone").as_uri(), sha256=sha)),
    ]
    examples, report = build_examples(learnings, TOK, teachers=_teachers(base, root))
    # Both corrections are verified, so they stay for cross-entropy without a teacher.
    assert [(e.prompt, e.teacher_ids) for e in examples] == [("cap a", None), ("cap c", None)]
    assert report.skipped == Counter({"adapter_unsupported_uri": 1, "adapter_missing": 1})


def test_a_shipped_signal_is_kept_and_each_uri_is_loaded_once(
    specialist: tuple[Path, str], base: Path, root: Path
) -> None:
    directory, sha = specialist
    check = ClaimCheck(uri=directory.as_uri(), sha256=sha)
    shipped = TeacherSignal(k=1, over="correction", token_ids=[[98], [2]], logprobs=[[-0.1], [-0.2]])
    learnings = [
        _learning("cap x", "b", check, teacher=shipped),
        *(_learning(f"cap {i}", "ok", check) for i in range(3)),
    ]
    teachers = _teachers(base, root)
    filled = teachers.fill(learnings).learnings
    assert filled[0].teacher == shipped
    assert all(lr.teacher is not None and lr.teacher.k == K for lr in filled[1:])
    assert teachers.loaded == [directory.as_uri()]


def test_latest_rescores_every_learning_of_an_agent_with_its_newest_claim_check(
    tmp_path: Path, base: Path, root: Path
) -> None:
    from datetime import UTC, datetime, timedelta

    directory = root / "agent-latest" / "specialist"
    old_sha = save_core(build_core(SIZE, seed=5), directory)
    old = ClaimCheck(uri=directory.as_uri(), sha256=old_sha)
    new_sha = save_core(build_core(SIZE, seed=6), directory)  # the agent saved over its old specialist
    new = ClaimCheck(uri=directory.as_uri(), sha256=new_sha)
    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    shipped = TeacherSignal(k=1, over="correction", token_ids=[[98], [2]], logprobs=[[-0.1], [-0.2]])
    learnings = [
        # The newest learning comes first in the file: created_at decides, not the order.
        _learning("cap new", "b", new, created_at=t0 + timedelta(seconds=2)),
        _learning("cap old", "b", old, created_at=t0, teacher=shipped),
        _learning("cap none", "cd", None, created_at=t0 + timedelta(seconds=1)),
        make_learning("agent-b", "capital", prompt="cap b", correction="x", reward=0.0, teacher=shipped),
    ]
    result = _teachers(base, root).latest(learnings)
    assert not result.reasons and not result.dropped
    newest = load_core(directory)
    for learning in result.learnings[:3]:
        ((ids, _),) = topk_signal(newest, [learning.prompt], [learning.learned_answer()], K, TOK)
        assert learning.teacher is not None and learning.teacher.token_ids == ids
    assert result.learnings[3] == learnings[3]  # agent-b names no adapter: its streamed signal stays

    # Through build_examples: the old claim check, which no longer matches, drops nothing under "latest".
    newest = newest_claim_checks(learnings)
    assert newest == {"agent-a": new}
    _, report = build_examples(learnings, TOK, teachers=_teachers(base, root), latest=newest)
    assert report.kept == 4 and not report.dropped and not report.skipped


def test_latest_keeps_an_agents_streamed_signals_when_its_newest_claim_check_fails(base: Path, root: Path) -> None:
    shipped = TeacherSignal(k=1, over="correction", token_ids=[[98], [2]], logprobs=[[-0.1], [-0.2]])
    gone = ClaimCheck(uri=(root / "gone-agent").as_uri(), sha256="0" * 64)
    learnings = [_learning("cap a", "b", gone, teacher=shipped), _learning("cap c", "b", gone, teacher=shipped)]
    result = _teachers(base, root).latest(learnings)
    assert result.learnings == learnings
    assert result.reasons == Counter({"latest_adapter_missing": 2})


def test_adapter_path_takes_only_local_files() -> None:
    assert adapter_path("file:///tmp/a%20b") == Path("/tmp/a b")
    assert adapter_path("file://localhost/tmp/x") == Path("/tmp/x")
    assert adapter_path("FILE:///tmp/x") == Path("/tmp/x")
    assert adapter_path("file://otherhost/tmp/x") is None
    assert adapter_path("https://example.com/x") is None


@pytest.mark.parametrize(
    "uri",
    [
        "file://evil.example/tmp/x",  # a host part
        "file://localhost:80/tmp/x",  # a port
        "file://user@localhost/tmp/x",  # user info
        "file:/tmp/x",  # not file:///
        "file:///tmp/a/../../etc",  # '..'
        "file:///tmp/a/%2e%2e/etc",  # '..', percent-encoded
        "file:///tmp/a%2f..%2fetc",  # an encoded separator
        "file:///tmp/a%00b",  # an encoded NUL
        "file:///tmp/a\x00b",  # a raw NUL
        "file:///tmp/a\\b",  # a backslash
        "file:///tmp/x?download=1",  # a query
        "file:///tmp/x#frag",  # a fragment
        "file:///tmp/%ff",  # not UTF-8 once decoded
        "file:///tmp/a\ud800b",  # a lone surrogate, as JSON can carry one
    ],
)
def test_a_uri_with_any_trick_is_refused(uri: str) -> None:
    assert adapter_path(uri) is None


def test_parse_file_uri_says_why() -> None:
    with pytest.raises(ClaimCheckError, match=r"'\.\.' segment") as info:
        parse_file_uri("file:///tmp/../etc")
    assert info.value.reason == "adapter_unsupported_uri"


def _poison(tmp_path: Path, root: Path, specialist: tuple[Path, str], base: Path) -> dict[str, tuple[str, str]]:
    """Claim checks that must give no teacher, by the reason expected: name -> (uri, sha256)."""
    good_dir, good_sha = specialist
    cases: dict[str, tuple[str, str]] = {}

    # config.json of [] over weights of the wrong shape: the config is never read, the shapes refuse it.
    wrong = root / "agent-wrong-shape" / "specialist"
    sha = save_core(build_core(CoreSize(width=64, layers=1), seed=0), wrong)
    (wrong / "config.json").write_text("[]")
    cases["adapter_shape_mismatch"] = (wrong.as_uri(), sha)

    # A config.json field of the wrong type beside good weights: the teacher is the base core's config.
    typed = root / "agent-bad-config" / "specialist"
    typed.mkdir(parents=True)
    (typed / WEIGHTS_FILE).write_bytes((good_dir / WEIGHTS_FILE).read_bytes())
    (typed / "config.json").write_text(json.dumps({"hidden_size": "wide", "num_hidden_layers": [1]}))
    cases["ok_bad_config"] = (typed.as_uri(), good_sha)

    # Not safetensors (a pickle's opening bytes), with a matching sha256.
    pickled = root / "agent-pickle" / "specialist"
    pickled.mkdir(parents=True)
    (pickled / WEIGHTS_FILE).write_bytes(b"\x80\x04\x95" + b"\x00" * 64)
    cases["adapter_unreadable"] = (pickled.as_uri(), file_sha256(pickled / WEIGHTS_FILE))

    # A symlink inside the root that points outside it, at a real specialist.
    outside = tmp_path / "outside" / "specialist"
    outside_sha = save_core(build_core(SIZE, seed=5), outside)
    link = root / "agent-link"
    link.mkdir()
    (link / "specialist").symlink_to(outside, target_is_directory=True)
    cases["adapter_outside_roots"] = ((link / "specialist").as_uri(), outside_sha)

    # A directory inside the root whose weights file is a symlink to one outside it.
    file_link = root / "agent-file-link" / "specialist"
    file_link.mkdir(parents=True)
    (file_link / WEIGHTS_FILE).symlink_to(outside / WEIGHTS_FILE)
    cases["file_link"] = (file_link.as_uri(), outside_sha)

    # '..' out of the root, and a host part.
    cases["dotdot"] = (f"{root.as_uri()}/../outside/specialist", outside_sha)
    cases["host"] = (f"file://evil.example{good_dir}", good_sha)

    # A huge sparse file: refused by its size, never read.
    huge = root / "agent-huge" / "specialist"
    huge.mkdir(parents=True)
    with (huge / WEIGHTS_FILE).open("wb") as fh:
        fh.truncate(1 << 40)
    cases["adapter_too_large"] = (huge.as_uri(), good_sha)

    cases["adapter_missing"] = ((root / "agent-gone" / "specialist").as_uri(), good_sha)
    # Outside the roots and missing: refused as outside, so a claim check cannot probe the disk.
    cases["probe"] = ((tmp_path / "nothing-here").as_uri(), good_sha)
    return cases


def test_a_poisoned_claim_check_gives_no_teacher_and_the_learning_keeps_its_answer(
    tmp_path: Path, specialist: tuple[Path, str], base: Path, root: Path
) -> None:
    cases = _poison(tmp_path, root, specialist, base)
    expected = {
        "adapter_shape_mismatch": "adapter_shape_mismatch",
        "adapter_unreadable": "adapter_unreadable",
        "adapter_outside_roots": "adapter_outside_roots",
        "file_link": "adapter_outside_roots",
        "dotdot": "adapter_unsupported_uri",
        "host": "adapter_unsupported_uri",
        "adapter_too_large": "adapter_too_large",
        "adapter_missing": "adapter_missing",
        "probe": "adapter_outside_roots",
    }
    shipped = TeacherSignal(k=1, over="correction", token_ids=[[98], [2]], logprobs=[[-0.1], [-0.2]])
    learnings = {
        name: _learning(f"cap {name}", "b", ClaimCheck(uri=uri, sha256=sha)) for name, (uri, sha) in cases.items()
    }
    # A shipped signal is kept whatever the claim check says: the adapter is not even followed.
    with_signal = _learning(
        "cap shipped", "b", ClaimCheck(uri=cases["adapter_too_large"][0], sha256="0" * 64), teacher=shipped
    )
    teachers = _teachers(base, root)
    examples, report = build_examples([*learnings.values(), with_signal], TOK, teachers=teachers)

    by_prompt = {e.prompt: e for e in examples}
    # Every learning stays for its verified correction; only the one with good weights got a teacher.
    assert set(by_prompt) == {f"cap {name}" for name in cases} | {"cap shipped"}
    assert by_prompt["cap ok_bad_config"].teacher_ids is not None
    assert all(by_prompt[f"cap {name}"].teacher_ids is None for name in expected)
    assert by_prompt["cap shipped"].teacher_ids == shipped.token_ids
    assert report.teacher_skipped == Counter(expected.values())
    assert not report.dropped
    failures = teachers.failures
    assert {uri: failures[uri].reason for uri, _ in (cases[name] for name in expected)} == {
        cases[name][0]: reason for name, reason in expected.items()
    }
    assert "outside the adapter roots" in failures[cases["file_link"][0]].detail
    # The teacher with the agent's bad config.json is the base core's architecture with the agent's weights.
    assert teachers.loaded == [cases["ok_bad_config"][0]]


def test_a_file_over_the_size_cap_is_never_read(specialist: tuple[Path, str], base: Path, root: Path) -> None:
    directory, sha = specialist
    size = (directory / WEIGHTS_FILE).stat().st_size
    learning = _learning("cap x", "b", ClaimCheck(uri=directory.as_uri(), sha256=sha))
    capped = _teachers(base, root, max_bytes=size - 1).fill([learning])
    assert capped.reasons == Counter({"adapter_too_large": 1})
    assert capped.learnings[0].teacher is None
    # The default cap is a few times the base core's weights file: the same specialist loads.
    assert _teachers(base, root).max_bytes == 4 * (base / WEIGHTS_FILE).stat().st_size
    assert _teachers(base, root).fill([learning]).learnings[0].teacher is not None


def test_no_root_follows_nothing(specialist: tuple[Path, str], base: Path) -> None:
    directory, sha = specialist
    learning = _learning("cap x", "b", ClaimCheck(uri=directory.as_uri(), sha256=sha))
    result = AdapterTeachers(K, base, []).fill([learning])
    assert result.reasons == Counter({"adapter_outside_roots": 1})


def test_the_hash_covers_the_bytes_loaded(tmp_path: Path, specialist: tuple[Path, str], base: Path, root: Path) -> None:
    """Weights swapped after the claim check was made fail its sha256 and are never loaded."""
    directory = root / "agent-swap" / "specialist"
    sha = save_core(build_core(SIZE, seed=7), directory)
    save_core(build_core(SIZE, seed=8), directory)
    learning = _learning("cap x", "b", ClaimCheck(uri=directory.as_uri(), sha256=sha))
    teachers = _teachers(base, root)
    result = teachers.fill([learning])
    assert result.learnings == [] and result.reasons == Counter({"adapter_sha_mismatch": 1})
    assert teachers.loaded == []
    assert os.path.isdir(directory)


@settings(max_examples=300, deadline=None)
@given(
    uri=st.one_of(
        st.text(),
        st.builds(lambda tail: "file:///" + tail, st.text()),
        st.builds(lambda tail: "file://localhost/" + tail, st.text(alphabet=st.characters(exclude_categories=()))),
    )
)
def test_any_uri_is_refused_with_a_reason_or_lands_under_a_root(uri: str) -> None:
    root = Path("/tmp")
    try:
        path = resolve_adapter(uri, [root])
    except ClaimCheckError as err:
        assert err.reason in REASONS
    else:
        assert path.is_relative_to(root.resolve()) and path.is_dir()


@pytest.fixture(scope="module")
def hf_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A round's base core with its own tokenizer: agents on it learn LoRA adapters."""
    return make_hf_core(tmp_path_factory.mktemp("hf") / "base")


@pytest.fixture(scope="module")
def lora_specialist(hf_base: Path, root: Path) -> tuple[Path, str, Specialist]:
    torch.manual_seed(0)
    spec = Specialist(load_core(hf_base), 0, lr=1e-3, topk=K, codec=load_codec(hf_base), lora=LoraSpec(r=4, lr=1e-2))
    for _ in range(3):
        spec.learn(["cap zorvia"], ["belmar"])
    directory = root / "agent-lora" / "specialist"
    return directory, spec.save(directory), spec


def test_a_lora_adapter_gives_signals_in_the_base_cores_tokenizer(
    hf_base: Path, root: Path, lora_specialist: tuple[Path, str, Specialist]
) -> None:
    directory, sha, spec = lora_specialist
    codec = load_codec(hf_base)
    check = ClaimCheck(uri=directory.as_uri(), sha256=sha)
    learnings = [_learning("cap zorvia", "belmar", check), _learning("add 12 30", "42", check, correction=False)]
    teachers = AdapterTeachers(K, hf_base, [root])
    examples, report = build_examples(learnings, codec, teachers=teachers)

    assert report.kept == 2 and not report.skipped and not report.teacher_skipped
    assert teachers.loaded == [directory.as_uri()]
    by_prompt = {e.prompt: e for e in examples}
    # The teacher is the core plus the adapter: the specialist's own top-k, in the base core's ids.
    [mine] = spec.teacher_signals(["cap zorvia"], ["belmar"], ["correction"])
    assert by_prompt["cap zorvia"].teacher_ids == mine.token_ids
    assert all(len(e.teacher_ids or []) == len(codec.answer_ids(e.answer)) for e in examples)
    filled = AdapterTeachers(K, hf_base, [root]).fill(learnings).learnings
    assert all(lr.teacher is not None and lr.teacher.tokenizer == codec.fingerprint for lr in filled)


def test_a_bad_lora_config_drops_only_the_signal(
    hf_base: Path, root: Path, lora_specialist: tuple[Path, str, Specialist]
) -> None:
    good, sha, _ = lora_specialist
    directory = root / "agent-lora-dora" / "specialist"
    directory.mkdir(parents=True)
    (directory / ADAPTER_WEIGHTS).write_bytes((good / ADAPTER_WEIGHTS).read_bytes())
    config = json.loads((good / ADAPTER_CONFIG).read_text())
    (directory / ADAPTER_CONFIG).write_text(json.dumps({**config, "use_dora": True}))
    learning = _learning("cap zorvia", "belmar", ClaimCheck(uri=directory.as_uri(), sha256=sha))
    examples, report = build_examples([learning], load_codec(hf_base), teachers=AdapterTeachers(K, hf_base, [root]))
    assert [(e.prompt, e.teacher_ids) for e in examples] == [("cap zorvia", None)]
    assert report.teacher_skipped == Counter({"adapter_bad_config": 1})


def test_the_jobs_teacher_setting_selects_latest(tmp_path: Path, base: Path, root: Path) -> None:
    from distill.data import load_data
    from distill.manifest import Manifest, write_learnings

    directory = root / "agent-job" / "specialist"
    sha = save_core(build_core(SIZE, seed=7), directory)
    shipped = TeacherSignal(k=1, over="correction", token_ids=[[98], [2]], logprobs=[[-0.1], [-0.2]])
    learning = _learning("cap q", "b", ClaimCheck(uri=directory.as_uri(), sha256=sha), teacher=shipped)
    write_learnings(tmp_path / "learnings.jsonl", [learning])
    # An earlier round's learning of the same agent, replayed: under "latest" it follows the newest claim check.
    write_learnings(tmp_path / "replay.jsonl", [_learning("cap q", "b", None, teacher=shipped)])
    given = {"round_id": "r1", "base_core": base, "out_dir": tmp_path / "out", "skills": ["capital"]}
    given |= {"learnings": tmp_path / "learnings.jsonl", "replay": tmp_path / "replay.jsonl"}
    given |= {"adapters": {"roots": [root]}}
    streamed_data = load_data(Manifest.model_validate(given), rank=0)
    streamed = streamed_data.examples[0]
    assert streamed_data.replay[0].teacher_ids is not None and streamed_data.replay[0].teacher_ids[0][0] == 98
    given_latest = given | {"distill": {"teacher": "latest", "topk": K}}
    latest_data = load_data(Manifest.model_validate(given_latest), rank=0)
    latest = latest_data.examples[0]
    assert streamed.teacher_ids is not None and streamed.teacher_ids[0][0] == 98
    ((ids, _),) = topk_signal(load_core(directory), ["cap q"], ["b"], K, TOK)
    assert latest.teacher_ids is not None and [list(map(int, row)) for row in latest.teacher_ids] == ids
    assert latest_data.replay[0].teacher_ids == latest.teacher_ids
