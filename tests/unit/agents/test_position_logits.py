"""Logits at answer positions, computed in length groups: the same numbers and gradients as one padded forward."""

import torch

from agents.codec import BYTE_CODEC
from agents.model import answer_logits, build_core, length_groups, lm_loss, make_batch, position_logits

# Short rows beside long ones, as a mixed-skill distill batch has them, in an order that is not sorted by length.
PROMPTS = ["capital of Peru?", "zorbish abcdefghijklmnopqrstuv", "next 12", "swap hello there general", "add 1 2"]
ANSWERS = ["Lima", "zyxwvutsrqponmlkjihgfedcba", "13", "general there hello", "3"]


def test_uniform_rows_stay_one_group() -> None:
    assert length_groups([10, 10, 10, 10]) == [[0, 1, 2, 3]]
    assert length_groups([]) == [[]]


def test_a_split_that_saves_little_is_not_made() -> None:
    # Cutting off the one short row saves 1 of 40 padded positions: not worth a second forward.
    assert length_groups([10, 10, 10, 9]) == [[0, 1, 2, 3]]


def test_mixed_rows_split_into_short_and_long_keeping_their_order() -> None:
    assert length_groups([40, 8, 9, 38, 7]) == [[1, 2, 4], [0, 3]]


def test_equals_one_padded_forward() -> None:
    model = build_core(seed=0)
    batch = make_batch(PROMPTS, ANSWERS, BYTE_CODEC)
    positions = batch.labels[:, 1:] != -100
    assert len(length_groups(batch.attention_mask.sum(1).tolist())) == 2  # the case under test
    with torch.no_grad():
        expected = answer_logits(model, batch)[positions]
        got = position_logits(model, batch, positions)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_gradients_equal_one_padded_forward() -> None:
    batch = make_batch(PROMPTS, ANSWERS, BYTE_CODEC)
    positions = batch.labels[:, 1:] != -100
    grads = []
    for logits_of in (lambda m: answer_logits(m, batch)[positions], lambda m: position_logits(m, batch, positions)):
        model = build_core(seed=0)
        torch.nn.functional.cross_entropy(logits_of(model), batch.labels[:, 1:][positions]).backward()
        grads.append([p.grad for p in model.parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_lm_loss_is_the_mean_over_answer_tokens() -> None:
    model = build_core(seed=2)
    batch = make_batch(PROMPTS, ANSWERS, BYTE_CODEC)
    with torch.no_grad():
        logits = answer_logits(model, batch)
        reference = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)), batch.labels[:, 1:].reshape(-1), ignore_index=-100
        )
        torch.testing.assert_close(lm_loss(model, batch), reference, rtol=1e-5, atol=1e-6)
