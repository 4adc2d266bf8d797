"""Math properties of the merging baselines on small tensors, plus one round trip through a tiny real core."""

from __future__ import annotations

import pytest
import torch

from agents.model import CoreSize, build_core
from distill.merge import (
    merge,
    task_arithmetic,
    task_vectors,
    ties_merge,
    tune_scale,
    weight_average,
)


def _sd(seed: int, shapes: dict[str, tuple[int, ...]] | None = None) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    shapes = shapes or {"w": (4, 5), "b": (5,)}
    return {key: torch.randn(shape, generator=gen) for key, shape in shapes.items()}


def _clone(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in sd.items()}


def _assert_sd_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=atol, rtol=0)


# --- weight_average -------------------------------------------------------------------------------


def test_weight_average_of_identical_dicts_is_that_dict() -> None:
    sd = _sd(0)
    _assert_sd_close(weight_average([sd, _clone(sd), _clone(sd)]), sd)


def test_weight_average_of_two_is_the_midpoint() -> None:
    a, b = _sd(1), _sd(2)
    avg = weight_average([a, b])
    for key in a:
        torch.testing.assert_close(avg[key], (a[key] + b[key]) / 2)


# --- task vectors and task arithmetic ---------------------------------------------------------------


def test_task_vectors_are_differences_from_base() -> None:
    base, ft = _sd(0), [_sd(1), _sd(2)]
    taus = task_vectors(base, ft)
    assert len(taus) == 2
    for tau, theta in zip(taus, ft, strict=True):
        for key in base:
            torch.testing.assert_close(tau[key], theta[key] - base[key])


def test_task_arithmetic_scale_zero_returns_base() -> None:
    base = _sd(0)
    _assert_sd_close(task_arithmetic(base, [_sd(1), _sd(2)], scale=0.0), base)


def test_task_arithmetic_one_model_scale_one_returns_it() -> None:
    base, ft = _sd(0), _sd(1)
    _assert_sd_close(task_arithmetic(base, [ft], scale=1.0), ft, atol=1e-5)


def test_task_arithmetic_sums_scaled_task_vectors() -> None:
    base, a, b = _sd(0), _sd(1), _sd(2)
    out = task_arithmetic(base, [a, b], scale=0.3)
    for key in base:
        torch.testing.assert_close(out[key], base[key] + 0.3 * ((a[key] - base[key]) + (b[key] - base[key])))


# --- TIES ------------------------------------------------------------------------------------------


def test_ties_full_density_same_signs_is_mean_task_vector() -> None:
    base = _sd(0)
    gen = torch.Generator().manual_seed(3)
    # Every task vector strictly positive, so no sign conflicts and the disjoint mean is the plain mean.
    taus = [{k: torch.rand(v.shape, generator=gen) + 0.1 for k, v in base.items()} for _ in range(3)]
    ft = [{k: base[k] + tau[k] for k in base} for tau in taus]
    out = ties_merge(base, ft, density=1.0, scale=0.5)
    for key in base:
        mean_tau = torch.stack([tau[key] for tau in taus]).mean(dim=0)
        torch.testing.assert_close(out[key], base[key] + 0.5 * mean_tau)


def test_ties_conflicting_signs_keep_only_the_elected_sign() -> None:
    base = {"w": torch.zeros(4)}
    # Parameter 0: +3, +1 vs -2 -> total +2, elected +, mean of {3, 1} = 2.
    # Parameter 1: +1 vs -2, -4 -> total -5, elected -, mean of {-2, -4} = -3.
    # Parameter 2: +2 vs -2 -> total 0, no sign wins, stays at base.
    # Parameter 3: +1, +1 vs -5 -> total -3: the larger mass wins, not the majority of models, so -5.
    ft = [
        {"w": torch.tensor([3.0, 1.0, 2.0, 1.0])},
        {"w": torch.tensor([1.0, -2.0, -2.0, 1.0])},
        {"w": torch.tensor([-2.0, -4.0, 0.0, -5.0])},
    ]
    out = ties_merge(base, ft, density=1.0, scale=1.0)
    torch.testing.assert_close(out["w"], torch.tensor([2.0, -3.0, 0.0, -5.0]))


def test_ties_zero_entries_do_not_dilute_the_mean() -> None:
    base = {"w": torch.zeros(1)}
    ft = [{"w": torch.tensor([4.0])}, {"w": torch.tensor([0.0])}]
    # Disjoint mean: the model that did not move the parameter does not count, so 4 rather than 2.
    torch.testing.assert_close(ties_merge(base, ft, density=1.0)["w"], torch.tensor([4.0]))


@pytest.mark.parametrize(("density", "kept"), [(0.0, 0), (0.2, 4), (0.5, 10), (1.0, 20)])
def test_ties_density_keeps_exactly_the_largest_entries(density: float, kept: int) -> None:
    base = {"w": torch.zeros(4, 5), "b": torch.zeros(10)}
    # Distinct magnitudes with alternating signs; one model, so the sign election never removes anything.
    w = torch.arange(1.0, 21.0) * torch.tensor([1.0, -1.0]).repeat(10)
    ft = {"w": w.reshape(4, 5), "b": torch.arange(1.0, 11.0)}
    out = ties_merge(base, [ft], density=density, scale=1.0)
    assert int((out["w"] != 0).sum()) == kept
    assert int((out["b"] != 0).sum()) == round(density * 10)
    survivors = out["w"].flatten()[out["w"].flatten() != 0]
    # The survivors are exactly the `kept` largest magnitudes, unchanged.
    assert sorted(survivors.abs().tolist()) == [float(v) for v in range(21 - kept, 21)]
    torch.testing.assert_close(out["w"].flatten()[w.abs() > 20 - kept], w[w.abs() > 20 - kept])


def test_ties_trims_each_task_vector_separately() -> None:
    base = {"w": torch.zeros(4)}
    a = {"w": torch.tensor([10.0, 1.0, 0.5, 0.1])}
    b = {"w": torch.tensor([0.1, 0.5, 1.0, 10.0])}
    # density 0.25 keeps one entry of each: a's first and b's last.
    torch.testing.assert_close(ties_merge(base, [a, b], density=0.25)["w"], torch.tensor([10.0, 0.0, 0.0, 10.0]))


def test_ties_rejects_density_outside_unit_interval() -> None:
    with pytest.raises(ValueError, match="density"):
        ties_merge(_sd(0), [_sd(1)], density=1.5)


# --- contracts shared by every method -------------------------------------------------------------


def _with_buffer(sd: dict[str, torch.Tensor], value: int) -> dict[str, torch.Tensor]:
    return {**sd, "steps": torch.tensor([value, value + 1], dtype=torch.long)}


ALL_METHODS = [
    ("weight_average", {}),
    ("task_arithmetic", {"scale": 0.7}),
    ("ties", {"density": 0.5, "scale": 0.7}),
]


@pytest.mark.parametrize(("method", "params"), ALL_METHODS)
def test_inputs_are_not_mutated(method: str, params: dict[str, float]) -> None:
    base, ft = _with_buffer(_sd(0), 1), [_with_buffer(_sd(1), 5), _with_buffer(_sd(2), 9)]
    base_before, ft_before = _clone(base), [_clone(sd) for sd in ft]
    out = merge(method, base, ft, **params)
    for key in out:
        out[key].add_(1)  # the result must not alias any input either
    _assert_sd_close(base, base_before, atol=0)
    for sd, before in zip(ft, ft_before, strict=True):
        _assert_sd_close(sd, before, atol=0)


def test_task_vectors_do_not_mutate_inputs() -> None:
    base, ft = _sd(0), [_sd(1)]
    base_before, ft_before = _clone(base), _clone(ft[0])
    for tau in task_vectors(base, ft):
        for v in tau.values():
            v.add_(1)
    _assert_sd_close(base, base_before, atol=0)
    _assert_sd_close(ft[0], ft_before, atol=0)


@pytest.mark.parametrize(("method", "params"), [m for m in ALL_METHODS if m[0] != "weight_average"])
def test_int_buffers_copied_from_base(method: str, params: dict[str, float]) -> None:
    base, ft = _with_buffer(_sd(0), 1), [_with_buffer(_sd(1), 5), _with_buffer(_sd(2), 9)]
    out = merge(method, base, ft, **params)
    assert out["steps"].dtype == torch.long
    assert out["steps"].tolist() == [1, 2]
    assert all(tau["steps"].tolist() == [1, 2] for tau in task_vectors(base, ft))


def test_weight_average_copies_int_buffers_from_first_model() -> None:
    out = weight_average([_with_buffer(_sd(1), 5), _with_buffer(_sd(2), 9)])
    assert out["steps"].dtype == torch.long
    assert out["steps"].tolist() == [5, 6]


def test_half_precision_keeps_dtype() -> None:
    base = {k: v.to(torch.bfloat16) for k, v in _sd(0).items()}
    ft = [{k: v.to(torch.bfloat16) for k, v in _sd(i).items()} for i in (1, 2)]
    for method, params in ALL_METHODS:
        assert all(v.dtype == torch.bfloat16 for v in merge(method, base, ft, **params).values())


def test_merge_unknown_method_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="fisher") as err:
        merge("fisher", _sd(0), [_sd(1)])
    for name in ("weight_average", "task_arithmetic", "ties"):
        assert name in str(err.value)


def test_mismatched_state_dicts_are_rejected() -> None:
    with pytest.raises(ValueError, match="missing"):
        task_arithmetic(_sd(0), [{"w": torch.zeros(4, 5)}], scale=1.0)
    with pytest.raises(ValueError, match="shape"):
        ties_merge(_sd(0), [_sd(1, {"w": (5, 4), "b": (5,)})])
    with pytest.raises(ValueError, match="at least one"):
        weight_average([])


# --- a tiny real core ------------------------------------------------------------------------------


def test_every_method_loads_into_a_real_core_strictly() -> None:
    size = CoreSize(width=32, layers=1)
    base_model = build_core(size, seed=0)
    base = base_model.state_dict()
    ft = [build_core(size, seed=s).state_dict() for s in (1, 2)]
    for method, params in ALL_METHODS:
        merged = merge(method, base, ft, **params)
        target = build_core(size, seed=0)
        target.load_state_dict(merged, strict=True)
        # Strict loading proves the keys; check the weights really moved too, so a no-op merge fails.
        assert any(not torch.equal(p, base[k]) for k, p in target.state_dict().items())


# --- tune_scale ------------------------------------------------------------------------------------


def test_tune_scale_picks_the_highest_score() -> None:
    base, ft = {"w": torch.zeros(3)}, [{"w": torch.ones(3)}]

    # Peaks where the merged weight equals 0.5 (task_arithmetic puts it at `scale`).
    def score(sd: dict[str, torch.Tensor]) -> float:
        return -float((sd["w"] - 0.5).abs().sum())

    best, state, scores = tune_scale("task_arithmetic", base, ft, [0.0, 0.25, 0.5, 1.0], score)
    assert best == 0.5
    torch.testing.assert_close(state["w"], torch.full((3,), 0.5))
    assert scores == pytest.approx({0.0: -1.5, 0.25: -0.75, 0.5: 0.0, 1.0: -1.5})


def test_tune_scale_passes_params_and_skips_nan() -> None:
    base, ft = {"w": torch.zeros(4)}, [{"w": torch.tensor([4.0, 3.0, 2.0, 1.0])}]
    seen_nonzero: list[int] = []

    def score(sd: dict[str, torch.Tensor]) -> float:
        seen_nonzero.append(int((sd["w"] != 0).sum()))
        return float("nan") if sd["w"][0] > 5 else float(sd["w"].sum())

    best, _, scores = tune_scale("ties", base, ft, [1.0, 2.0], score, density=0.5)
    assert seen_nonzero == [2, 2]  # density reached ties_merge
    assert best == 1.0
    assert scores[1.0] == pytest.approx(7.0)


def test_tune_scale_rejects_weight_average_and_empty_scales() -> None:
    with pytest.raises(ValueError, match="no scale"):
        tune_scale("weight_average", _sd(0), [_sd(1)], [1.0], lambda sd: 0.0)
    with pytest.raises(ValueError, match="at least one scale"):
        tune_scale("task_arithmetic", _sd(0), [_sd(1)], [], lambda sd: 0.0)
