"""The tiny core: batching, padding-independent decoding, teacher-signal alignment, save and load."""

import torch

from agents.codec import BYTE_CODEC
from agents.learner import Specialist
from agents.model import build_core, file_sha256, generate, load_core, make_batch, save_core, topk_signal
from agents.tokenizer import EOS_ID, VOCAB_SIZE


def test_core_is_a_small_llama_built_without_downloads() -> None:
    model = build_core(seed=0)
    assert model.config.model_type == "llama"
    assert model.config.vocab_size == VOCAB_SIZE
    assert 0.5e6 < sum(p.numel() for p in model.parameters()) < 2e6


def test_same_seed_same_weights() -> None:
    a, b = build_core(seed=3), build_core(seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_batch_labels_cover_only_answer_and_eos() -> None:
    batch = make_batch(["ab", "abcd"], ["x", "yz"], BYTE_CODEC)
    labels = batch.labels.tolist()
    assert [t for t in labels[0] if t != -100] == [ord("x"), EOS_ID]
    assert [t for t in labels[1] if t != -100] == [ord("y"), ord("z"), EOS_ID]
    assert batch.attention_mask.sum().item() == (1 + 2 + 1 + 2) + (1 + 4 + 1 + 3)


def test_greedy_decoding_does_not_depend_on_batch_padding() -> None:
    model = build_core(seed=1)
    prompts = ["a", "a much longer prompt"]
    together = generate(model, prompts, BYTE_CODEC, max_new_tokens=6)
    alone = [generate(model, [p], BYTE_CODEC, max_new_tokens=6)[0] for p in prompts]
    assert together == alone


def _greedy_without_cache(model, prompt: str, steps: int) -> list[int]:
    """The reference: re-encodes the whole row for every new token."""
    ids = BYTE_CODEC.prompt_ids(prompt)
    produced = []
    for _ in range(steps):
        nxt = int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
        produced.append(nxt)
        if nxt in BYTE_CODEC.stop_ids:
            break
        ids.append(nxt)
    return produced


def test_cached_decoding_gives_the_tokens_of_decoding_from_scratch() -> None:
    model = build_core(seed=4)
    prompts = ["cap zorvia", "x", "a longer prompt than the others"]
    with torch.no_grad():
        expected = [BYTE_CODEC.decode(_greedy_without_cache(model, p, 12)) for p in prompts]
    assert generate(model, prompts, BYTE_CODEC, max_new_tokens=12) == expected


def test_teacher_signal_has_one_row_per_answer_byte_plus_eos() -> None:
    model = build_core(seed=1)
    [(ids, lps)] = topk_signal(model, ["add 1 2"], ["12"], k=5, codec=BYTE_CODEC)
    assert len(ids) == len(lps) == 3
    assert all(len(row) == 5 for row in ids)
    assert all(row == sorted(row, reverse=True) and row[0] <= 0 for row in lps)


def test_learning_a_task_raises_its_teacher_probability() -> None:
    spec = Specialist(build_core(seed=2), core_version=0, lr=3e-3, topk=4)
    before = topk_signal(spec.model, ["cap x"], ["yz"], k=VOCAB_SIZE, codec=BYTE_CODEC)[0]
    for _ in range(30):
        spec.learn(["cap x"], ["yz"])
    after = topk_signal(spec.model, ["cap x"], ["yz"], k=VOCAB_SIZE, codec=BYTE_CODEC)[0]

    def logprob_of(signal, position, token):
        ids, lps = signal
        return lps[position][ids[position].index(token)]

    assert logprob_of(after, 0, ord("y")) > logprob_of(before, 0, ord("y")) + 1.0
    assert generate(spec.model, ["cap x"], BYTE_CODEC) == ["yz"]


def test_save_and_load_round_trip(tmp_path) -> None:
    model = build_core(seed=4)
    sha = save_core(model, tmp_path / "core")
    assert sha == file_sha256(tmp_path / "core" / "model.safetensors")
    loaded = load_core(tmp_path / "core")
    assert all(
        torch.equal(x, y) for x, y in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True)
    )
