"""Codecs: the byte codec keeps today's ids; a Hugging Face tokenizer goes through its chat template."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from agents.codec import BYTE_CODEC, HF_MAX_POSITIONS, HFCodec, check_fits, copy_tokenizer, load_codec
from agents.learner import Specialist
from agents.model import build_core, generate, load_core, make_batch, save_core, topk_signal
from agents.tokenizer import BOS_ID, EOS_ID, SEP_ID, ByteTokenizer

from tiny_hf import make_hf_core, make_tokenizer


def test_the_byte_codec_gives_todays_ids() -> None:
    assert isinstance(BYTE_CODEC, ByteTokenizer)
    assert BYTE_CODEC.prompt_ids("hi") == [BOS_ID, 104, 105, SEP_ID]
    assert BYTE_CODEC.answer_ids("ok") == [111, 107, EOS_ID]
    assert BYTE_CODEC.end_id == EOS_ID and BYTE_CODEC.stop_ids == {EOS_ID}
    assert (BYTE_CODEC.vocab_size, BYTE_CODEC.max_positions, BYTE_CODEC.fingerprint) == (260, 64, "byte-260")


def test_load_codec_picks_the_byte_codec_for_a_core_without_a_tokenizer(tmp_path: Path, hf_dir: Path) -> None:
    save_core(build_core(seed=0), tmp_path / "tiny")
    assert load_codec(tmp_path / "tiny") is BYTE_CODEC
    assert isinstance(load_codec(hf_dir), HFCodec)


def test_prompt_ids_are_the_chat_templates(hf: HFCodec) -> None:
    expected = hf.tokenizer.apply_chat_template(
        [{"role": "user", "content": "cap zorvia"}], add_generation_prompt=True, return_dict=False
    )
    assert hf.prompt_ids("cap zorvia") == list(expected)
    assert (
        hf.tokenizer.decode(hf.prompt_ids("cap zorvia"))
        == "<|im_start|>user\ncap zorvia<|im_end|>\n<|im_start|>assistant\n"
    )


# SmolLM2's template: a default system prompt unless the conversation opens with a system turn.
DEFAULT_SYSTEM = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant named Tiny<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
NO_SYSTEM = (
    "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def test_a_default_system_prompt_is_replaced_by_an_empty_system_turn() -> None:
    tokenizer = make_tokenizer()
    tokenizer.chat_template = DEFAULT_SYSTEM
    text = tokenizer.decode(HFCodec(tokenizer).prompt_ids("cap zorvia"))
    assert text == "<|im_start|>system\n<|im_end|>\n<|im_start|>user\ncap zorvia<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.parametrize("template", [NO_SYSTEM, None], ids=["refuses-system", "chatml-without-default"])
def test_a_template_without_a_default_system_prompt_keeps_its_opening(template: str | None) -> None:
    tokenizer = make_tokenizer()
    if template is not None:
        tokenizer.chat_template = template
    text = tokenizer.decode(HFCodec(tokenizer).prompt_ids("cap zorvia"))
    assert text.startswith("<|im_start|>user\ncap zorvia<|im_end|>")


def test_answer_ids_end_with_the_end_of_turn_and_decode_stops_there(hf: HFCodec) -> None:
    im_end = hf.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert hf.end_id == im_end
    ids = hf.answer_ids("belmar")
    assert ids[-1] == im_end and im_end not in ids[:-1]
    assert ids[:-1] == hf.tokenizer.encode("belmar", add_special_tokens=False)
    assert hf.decode(ids) == "belmar"
    assert hf.decode([*ids, *hf.answer_ids("zorvia")]) == "belmar"


def test_special_token_text_in_a_task_is_text(hf: HFCodec) -> None:
    # A prompt or answer must not end a turn early: only the template's own <|im_end|> tokens are specials.
    assert hf.prompt_ids("a <|im_end|> b").count(hf.end_id) == hf.prompt_ids("a b").count(hf.end_id) == 1
    ids = hf.answer_ids("x<|im_end|>y")
    assert ids.count(hf.end_id) == 1 and hf.decode(ids) == "x<|im_end|>y"


def test_a_tokenizer_without_a_chat_template_is_bos_prompt_and_answer_eos(tmp_path: Path) -> None:
    codec = load_codec(make_hf_core(tmp_path / "plain", chat=False))
    assert isinstance(codec, HFCodec) and not codec.chat
    eos, bos = codec.tokenizer.eos_token_id, codec.tokenizer.bos_token_id
    assert codec.prompt_ids("add 1 2") == [bos, *codec.tokenizer.encode("add 1 2", add_special_tokens=False)]
    assert codec.answer_ids("3")[-1] == codec.end_id == eos


def test_max_positions_is_the_configs_capped(tmp_path: Path, hf: HFCodec) -> None:
    assert hf.max_positions == 128
    assert load_codec(make_hf_core(tmp_path / "long", max_positions=8192)).max_positions == HF_MAX_POSITIONS


def test_fingerprints_are_stable_across_loads_and_differ_between_tokenizers(tmp_path: Path, hf_dir: Path) -> None:
    first, again = load_codec(hf_dir), load_codec(hf_dir)
    assert first.fingerprint == again.fingerprint and first.fingerprint.startswith("hf-sha256-")
    assert first.fingerprint == HFCodec(make_tokenizer()).fingerprint  # the same tokenizer made afresh
    other = load_codec(make_hf_core(tmp_path / "other", tokenizer=make_tokenizer(corpus=["other words entirely"])))
    plain = load_codec(make_hf_core(tmp_path / "plain", chat=False))
    assert len({first.fingerprint, other.fingerprint, plain.fingerprint, BYTE_CODEC.fingerprint}) == 4


def test_make_batch_labels_cover_only_the_answer_tokens(hf: HFCodec) -> None:
    batch = make_batch(["cap zorvia", "add 12 30 please"], ["belmar", "42"], hf)
    for row, (prompt, answer) in enumerate([("cap zorvia", "belmar"), ("add 12 30 please", "42")]):
        labels = [t for t in batch.labels[row].tolist() if t != -100]
        assert labels == hf.answer_ids(answer)
        width = len(hf.prompt_ids(prompt)) + len(labels)
        assert batch.attention_mask[row].sum().item() == width
        assert batch.input_ids[row, width:].eq(hf.pad_id).all()


def test_a_task_longer_than_the_cores_positions_is_refused(hf: HFCodec) -> None:
    with pytest.raises(ValueError, match="128 positions"):
        make_batch(["word " * 200], ["x"], hf)


def test_generate_returns_strings_and_padding_changes_nothing(hf_dir: Path, hf: HFCodec) -> None:
    model = load_core(hf_dir)
    prompts = ["cap zorvia", "the capital of zorvia is what, and add 12 30"]
    assert len(hf.prompt_ids(prompts[0])) < len(hf.prompt_ids(prompts[1]))
    together = generate(model, prompts, hf, max_new_tokens=6)
    alone = [generate(model, [p], hf, max_new_tokens=6)[0] for p in prompts]
    assert together == alone and all(isinstance(o, str) for o in together)


def test_topk_signal_has_a_row_per_answer_token_in_the_vocabulary(hf_dir: Path, hf: HFCodec) -> None:
    model = load_core(hf_dir)
    [(ids, lps)] = topk_signal(model, ["cap zorvia"], ["belmar"], 5, hf)
    assert len(ids) == len(lps) == len(hf.answer_ids("belmar"))
    assert all(len(row) == 5 and all(0 <= t < hf.vocab_size for t in row) for row in ids)
    assert all(row == sorted(row, reverse=True) and row[0] <= 0 for row in lps)


def test_a_specialist_learns_through_its_codec(hf_dir: Path, hf: HFCodec) -> None:
    torch.manual_seed(0)
    spec = Specialist(load_core(hf_dir), core_version=0, lr=1e-2, topk=3, codec=hf)
    losses = [spec.learn(["cap zorvia"], ["belmar"]) for _ in range(40)]
    assert losses[-1] < losses[0]
    assert spec.answer(["cap zorvia"]) == ["belmar"]
    [signal] = spec.teacher_signals(["cap zorvia"], ["belmar"], ["correction"])
    assert len(signal.token_ids) == len(hf.answer_ids("belmar"))
    assert signal.tokenizer == hf.fingerprint


def test_a_byte_core_specialists_signal_names_no_tokenizer() -> None:
    """The tiny core's signals stay as every client has always sent them: no tokenizer means the byte one."""
    spec = Specialist(build_core(seed=0), core_version=0, lr=1e-3, topk=2)
    [signal] = spec.teacher_signals(["x"], ["y"], ["completion"])
    assert signal.tokenizer is None


def test_a_swap_to_a_core_that_does_not_fit_leaves_the_specialist_as_it_was(hf_dir: Path, hf: HFCodec) -> None:
    spec = Specialist(build_core(seed=0), core_version=3, lr=1e-3, topk=2)
    model = spec.model
    with pytest.raises(ValueError, match="vocabulary"):
        spec.swap_core(load_core(hf_dir), 4)  # a pretrained core, but the byte codec kept
    assert (spec.model, spec.codec, spec.core_version) == (model, BYTE_CODEC, 3)
    spec.swap_core(load_core(hf_dir), 4, hf)
    assert (spec.codec, spec.core_version) == (hf, 4)


def test_a_core_trained_from_another_keeps_its_tokenizer(tmp_path: Path, hf_dir: Path, hf: HFCodec) -> None:
    trained = tmp_path / "trained"
    save_core(load_core(hf_dir), trained)
    assert load_codec(trained) is BYTE_CODEC  # the weights alone carry no tokenizer

    copied = copy_tokenizer(hf_dir, trained)

    assert "tokenizer.json" in copied and "tokenizer_config.json" in copied
    assert load_codec(trained).fingerprint == hf.fingerprint
    assert copy_tokenizer(tmp_path / "nothing", trained) == []


def test_a_codec_that_does_not_fit_the_model_is_refused(hf_dir: Path, hf: HFCodec) -> None:
    pretrained, tiny = load_core(hf_dir), build_core(seed=0)
    check_fits(hf, pretrained)
    check_fits(BYTE_CODEC, tiny)
    with pytest.raises(ValueError, match="byte-260"):
        generate(pretrained, ["x"], BYTE_CODEC)
    with pytest.raises(ValueError, match="hf-sha256-"):
        topk_signal(tiny, ["x"], ["y"], 2, hf)
    with pytest.raises(ValueError, match="vocabulary"):
        Specialist(pretrained, core_version=0, lr=1e-3, topk=2)


def test_a_tokenizer_that_cannot_load_names_its_directory(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match=str(broken)):
        load_codec(broken)
