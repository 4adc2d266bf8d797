"""Math properties of the KD losses: zero on identical inputs, non-negative, top-k == full at k == V."""

from __future__ import annotations

import pytest
import torch

from distill.losses import distill_loss, full_kl, topk_forward_kl

V = 260


def _logits(n: int = 6, seed: int = 0, scale: float = 3.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, V, generator=gen) * scale


def _topk(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    logprobs, ids = torch.log_softmax(logits, dim=-1).topk(k, dim=-1)
    return ids, logprobs


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("k", [1, 8, V])
def test_identical_inputs_give_zero(k: int, temperature: float) -> None:
    logits = _logits()
    ids, logprobs = _topk(logits, k)
    assert topk_forward_kl(logits, ids, logprobs, temperature).item() == pytest.approx(0.0, abs=1e-6)
    assert full_kl(logits, logits, temperature).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [1, 4, 32, V])
def test_non_negative_on_random_inputs(seed: int, k: int) -> None:
    student, teacher = _logits(seed=seed), _logits(seed=seed + 100)
    ids, logprobs = _topk(teacher, k)
    for temperature in (0.5, 1.0, 3.0):
        assert topk_forward_kl(student, ids, logprobs, temperature).item() >= 0.0
        assert full_kl(student, teacher, temperature).item() >= 0.0


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0, 4.0])
def test_topk_equals_full_kl_when_k_is_the_vocabulary(temperature: float) -> None:
    student, teacher = _logits(seed=1), _logits(seed=2)
    ids, logprobs = _topk(teacher, V)
    topk = topk_forward_kl(student, ids, logprobs, temperature)
    full = full_kl(student, teacher, temperature)
    torch.testing.assert_close(topk, full, rtol=1e-5, atol=0.0)


def test_topk_is_unchanged_by_the_order_of_the_teacher_ids() -> None:
    student, teacher = _logits(seed=3), _logits(seed=4)
    ids, logprobs = _topk(teacher, 8)
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        topk_forward_kl(student, ids, logprobs), topk_forward_kl(student, ids[:, perm], logprobs[:, perm])
    )


def test_minus_inf_padding_holds_no_mass() -> None:
    """A teacher that sent k=4 padded to 8 with -inf must score like the plain k=4 signal."""
    student, teacher = _logits(seed=5), _logits(seed=6)
    ids, logprobs = _topk(teacher, 4)
    padded_ids = torch.cat([ids, torch.zeros_like(ids)], dim=1)
    padded_lps = torch.cat([logprobs, torch.full_like(logprobs, float("-inf"))], dim=1)
    torch.testing.assert_close(
        topk_forward_kl(student, padded_ids, padded_lps), topk_forward_kl(student, ids, logprobs)
    )


def test_full_kl_temperature_matches_the_definition() -> None:
    student, teacher = _logits(seed=7), _logits(seed=8)
    for temperature in (0.5, 2.0):
        p = torch.softmax(teacher / temperature, dim=-1)
        expected = (p * (p.log() - torch.log_softmax(student / temperature, dim=-1))).sum(-1).mean()
        torch.testing.assert_close(full_kl(student, teacher, temperature), expected * temperature**2, rtol=1e-4, atol=0)


def test_higher_temperature_softens_the_unscaled_divergence() -> None:
    """KL/T**2 falls as T grows (both distributions flatten towards uniform), while T**2 keeps it comparable."""
    student, teacher = _logits(seed=9), _logits(seed=10)
    ids, logprobs = _topk(teacher, 16)
    raw = [topk_forward_kl(student, ids, logprobs, t).item() / t**2 for t in (1.0, 2.0, 4.0, 8.0)]
    assert raw == sorted(raw, reverse=True)
    assert raw[-1] < raw[0] / 10


def test_gradients_are_finite_with_confident_teachers_and_padding() -> None:
    student = _logits(seed=11).requires_grad_(True)
    teacher = _logits(seed=12, scale=60.0)  # top-1 holds all the mass: the residual is rounding noise
    ids, logprobs = _topk(teacher, 8)
    logprobs[:, 6:] = float("-inf")
    loss = topk_forward_kl(student, ids, logprobs, temperature=2.0)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(student.grad).all()


def test_topk_loss_pulls_the_student_towards_the_teacher() -> None:
    student, teacher = _logits(seed=13).requires_grad_(True), _logits(seed=14)
    ids, logprobs = _topk(teacher, 8)
    optimizer = torch.optim.Adam([student], lr=0.1)
    before = topk_forward_kl(student, ids, logprobs).item()
    for _ in range(100):
        optimizer.zero_grad()
        topk_forward_kl(student, ids, logprobs).backward()
        optimizer.step()
    assert topk_forward_kl(student, ids, logprobs).item() < before / 10


def test_distill_loss_combines_the_parts_with_their_weights() -> None:
    kd_student, kd_teacher = _logits(4, seed=15), _logits(4, seed=16)
    ids, logprobs = _topk(kd_teacher, 8)
    ce_logits, ce_targets = _logits(5, seed=17), torch.tensor([1, 2, 3, 4, 5])
    replay_student, replay_previous = _logits(3, seed=18), _logits(3, seed=19)
    inputs = {
        "kd_logits": kd_student,
        "teacher_ids": ids,
        "teacher_logprobs": logprobs,
        "ce_logits": ce_logits,
        "ce_targets": ce_targets,
        "replay_logits": replay_student,
        "previous_logits": replay_previous,
    }
    total, parts = distill_loss(**inputs, temperature=2.0, kd_weight=0.5, ce_weight=2.0, retention_weight=0.25)
    kd = topk_forward_kl(kd_student, ids, logprobs, 2.0).item()
    ce = torch.nn.functional.cross_entropy(ce_logits, ce_targets).item()
    retention = full_kl(replay_student, replay_previous).item()
    assert parts["kd"] == pytest.approx(kd)
    assert parts["ce"] == pytest.approx(ce)
    assert parts["retention"] == pytest.approx(retention)
    assert total.item() == pytest.approx(0.5 * kd + 2.0 * ce + 0.25 * retention, rel=1e-6)
    assert parts["total"] == pytest.approx(total.item())


def test_distill_loss_skips_empty_and_zero_weight_parts() -> None:
    ce_logits, ce_targets = _logits(3, seed=20), torch.tensor([7, 8, 9])
    total, parts = distill_loss(
        kd_logits=torch.empty(0, V),
        teacher_ids=torch.empty(0, 8, dtype=torch.long),
        teacher_logprobs=torch.empty(0, 8),
        ce_logits=ce_logits,
        ce_targets=ce_targets,
        replay_logits=_logits(2, seed=21),
        previous_logits=_logits(2, seed=22),
        retention_weight=0.0,
    )
    assert parts["kd"] == 0.0
    assert parts["retention"] == 0.0
    assert total.item() == pytest.approx(torch.nn.functional.cross_entropy(ce_logits, ce_targets).item())
    with pytest.raises(ValueError, match="no positions"):
        distill_loss(ce_logits=torch.empty(0, V), ce_targets=torch.empty(0, dtype=torch.long))


def test_bad_temperature_is_refused() -> None:
    logits = _logits(2)
    ids, logprobs = _topk(logits, 4)
    with pytest.raises(ValueError, match="temperature"):
        topk_forward_kl(logits, ids, logprobs, temperature=0.0)
    with pytest.raises(ValueError, match="temperature"):
        full_kl(logits, logits, temperature=-1.0)


def test_renormalised_topk_is_the_kl_of_the_two_distributions_restricted_to_the_k_ids() -> None:
    student, teacher = _logits(seed=7), _logits(seed=8)
    ids, logprobs = _topk(teacher, 8)
    for temperature in (0.5, 1.0, 2.0):
        p = torch.log_softmax(logprobs.double() / temperature, dim=-1)
        q = torch.log_softmax(torch.log_softmax(student.double(), -1).gather(-1, ids) / temperature, dim=-1)
        expected = (p.exp() * (p - q)).sum(-1).mean() * temperature**2
        got = topk_forward_kl(student, ids, logprobs, temperature, residual=False)
        torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-7)
    # Without the bucket, a student that ranks the k ids like the teacher but puts its mass elsewhere scores 0.
    elsewhere = torch.full_like(student, 20.0)
    elsewhere.scatter_(-1, ids, logprobs)
    assert topk_forward_kl(elsewhere, ids, logprobs, residual=False).item() == pytest.approx(0.0, abs=1e-6)
    assert topk_forward_kl(elsewhere, ids, logprobs, residual=True).item() > 1.0


def test_renormalised_padding_holds_no_mass_and_k_equal_to_v_is_full_kl() -> None:
    student, teacher = _logits(seed=9), _logits(seed=10)
    ids, logprobs = _topk(teacher, 4)
    padded_ids = torch.cat([ids, torch.zeros_like(ids)], dim=1)
    padded_lps = torch.cat([logprobs, torch.full_like(logprobs, float("-inf"))], dim=1)
    torch.testing.assert_close(
        topk_forward_kl(student, padded_ids, padded_lps, residual=False),
        topk_forward_kl(student, ids, logprobs, residual=False),
    )
    all_ids, all_lps = _topk(teacher, V)
    torch.testing.assert_close(
        topk_forward_kl(student, all_ids, all_lps, 2.0, residual=False),
        full_kl(student, teacher, 2.0),
        rtol=1e-5,
        atol=0.0,
    )


def test_distill_loss_passes_the_kd_mode_through() -> None:
    student, teacher = _logits(seed=11), _logits(seed=12)
    ids, logprobs = _topk(teacher, 8)
    kw = dict(kd_logits=student, teacher_ids=ids, teacher_logprobs=logprobs, ce_weight=0.0)
    bucketed, _ = distill_loss(**kw)
    renormalised, _ = distill_loss(**kw, kd_residual=False)
    torch.testing.assert_close(renormalised, topk_forward_kl(student, ids, logprobs, residual=False))
    assert bucketed.item() != pytest.approx(renormalised.item())
