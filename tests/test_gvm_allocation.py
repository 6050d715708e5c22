"""GVM-RAFT sample allocation (prefopt.algorithms.gvm_allocation): weights, integer budgets, caps, floors, padding
and the variance bound.

Expected values are computed by hand in the comments (w_i = G_i / sqrt(p_i + α/p_i^(β−1)), n_i = N·w_i/Σw).
"""

import math

import pytest
import torch

from prefopt.algorithms.gvm_allocation import allocate, allocation_weights, estimator_variance_bound


def _random_inputs(gen: torch.Generator, n: int, zero_fraction: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    # p in [0, 1] and G in [0, 2] [n], with some exact zeros (and some p = 1) mixed in.
    p = torch.rand(n, generator=gen, dtype=torch.float64)
    G = 2 * torch.rand(n, generator=gen, dtype=torch.float64)
    p[torch.rand(n, generator=gen) < zero_fraction] = 0.0
    p[torch.rand(n, generator=gen) < 0.1] = 1.0
    G[torch.rand(n, generator=gen) < zero_fraction] = 0.0
    return p, G


# ------------------------------------------------------------------------------------------------- weights


def test_weights_without_regulariser():
    # α = 0: w = G/√p = [1/√0.25, 1/√1] = [2, 1].
    w = allocation_weights(torch.tensor([0.25, 1.0]), torch.tensor([1.0, 1.0]), alpha=0.0)
    assert w.dtype == torch.float64
    assert torch.allclose(w, torch.tensor([2.0, 1.0], dtype=torch.float64), rtol=0, atol=1e-15)


def test_weights_default_regulariser_by_hand():
    # α = 1e-3, β = 2: w = G / sqrt(p + α/p).
    #   p = 0.25: 0.25 + 0.004 = 0.254,   sqrt = 0.503984126734166…,  w = 1/0.50398… = 1.984189475331363
    #   p = 1:    1 + 0.001 = 1.001,      sqrt = 1.000499875062461…,  w = 0.999500374687773
    #   p = 0.5, G = 2: 0.5 + 0.002 = 0.502, sqrt = 0.708519583356734…, w = 2/0.70851… = 2.822787184688183
    #   p = 0.01: 0.01 + 0.1 = 0.11,      sqrt = 0.331662479035540…,  w = 3.015113445777636
    p = torch.tensor([0.25, 1.0, 0.5, 0.01], dtype=torch.float64)  # float64: 0.01 in float32 is off by 2e-10
    w = allocation_weights(p, torch.tensor([1.0, 1.0, 2.0, 1.0]))
    expected = [1.984189475331363, 0.999500374687773, 2.822787184688183, 3.015113445777636]
    assert torch.allclose(w, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)


def test_weights_general_beta_by_hand():
    # β = 3: w = G / sqrt(p + α/p²); p = 0.25: 0.25 + 0.001/0.0625 = 0.266, w = 1/sqrt(0.266) = 1.938916835823703.
    w = allocation_weights(torch.tensor([0.25]), torch.tensor([1.0]), alpha=1e-3, beta=3.0)
    assert w.item() == pytest.approx(1.938916835823703, abs=1e-12)


def test_weights_zero_where_p_or_G_zero():
    for alpha in (0.0, 1e-3):
        w = allocation_weights(torch.tensor([0.0, 0.5, 0.0, 0.5]), torch.tensor([1.0, 0.0, 0.0, 1.0]), alpha=alpha)
        assert torch.isfinite(w).all()
        assert w[:3].tolist() == [0.0, 0.0, 0.0]
        assert w[3] > 0


def test_weights_monotone_in_p_on_both_sides_of_sqrt_alpha():
    # d/dp (p + α/p) = 1 − α/p²: w = G/sqrt(p + α/p) increases in p below √α and decreases above it (β = 2).
    alpha = 1e-3
    turn = math.sqrt(alpha)
    below = torch.linspace(1e-4, turn * 0.999, 100, dtype=torch.float64)
    above = torch.linspace(turn * 1.001, 1.0, 300, dtype=torch.float64)
    w_below = allocation_weights(below, torch.ones_like(below), alpha=alpha)
    w_above = allocation_weights(above, torch.ones_like(above), alpha=alpha)
    assert (w_below.diff() > 0).all()
    assert (w_above.diff() < 0).all()
    peak = allocation_weights(torch.tensor([turn]), torch.tensor([1.0]), alpha=alpha)
    assert peak.item() > max(w_below.max().item(), w_above.max().item())
    # without the regulariser w = G/√p is decreasing everywhere
    grid = torch.linspace(1e-4, 1.0, 300, dtype=torch.float64)
    assert (allocation_weights(grid, torch.ones_like(grid), alpha=0.0).diff() < 0).all()


# ------------------------------------------------------------------------------------------------- allocation


def test_allocate_hand_case():
    # α = 0: w = [2, 1] → 6·[2/3, 1/3] = [4, 2].
    n = allocate(torch.tensor([0.25, 1.0]), torch.tensor([1.0, 1.0]), 6, alpha=0.0)
    assert n.dtype == torch.int64
    assert n.tolist() == [4, 2]


def test_allocate_default_regulariser_by_hand():
    # α = 1e-3: w = [1.984189475331363, 0.999500374687773], Σ = 2.983689850019136;
    # 100·w/Σ = [66.501…, 33.498…] → floors [66, 33], one leftover unit to the larger fraction (0.501) → [67, 33].
    n = allocate(torch.tensor([0.25, 1.0]), torch.tensor([1.0, 1.0]), 100)
    assert n.tolist() == [67, 33]


def test_largest_remainder_by_hand():
    # p = 1, α = 0: w = G = [6, 3, 1], budget 7 → 7·[0.6, 0.3, 0.1] = [4.2, 2.1, 0.7]; floors [4, 2, 0] sum 6,
    # the one leftover unit goes to the largest fractional part, 0.7 (prompt 2), not to the largest weight.
    n = allocate(torch.ones(3), torch.tensor([6.0, 3.0, 1.0]), 7, alpha=0.0)
    assert n.tolist() == [4, 2, 1]
    # ties go to the lower index: [10/3, 10/3, 10/3] → floors [3, 3, 3], leftover 1 → prompt 0
    assert allocate(torch.ones(3), torch.ones(3), 10, alpha=0.0).tolist() == [4, 3, 3]
    # [11/3]·3 → floors [3, 3, 3], leftover 2 → prompts 0 and 1
    assert allocate(torch.ones(3), torch.ones(3), 11, alpha=0.0).tolist() == [4, 4, 3]


def test_zero_allocation_for_p_or_G_zero():
    p = torch.tensor([0.0, 0.5, 0.3, 1.0])
    G = torch.tensor([1.0, 0.0, 1.0, 1.0])
    for budget in (0, 1, 7, 1000):
        n = allocate(p, G, budget)
        assert n[:2].tolist() == [0, 0]
        assert int(n.sum()) == budget


def test_all_zero_weights_fall_back_to_uniform():
    # no correct sample anywhere (or all gradients zero): 7 over 3 prompts → [3, 2, 2] (remainder to low indices)
    assert allocate(torch.zeros(3), torch.ones(3), 7).tolist() == [3, 2, 2]
    assert allocate(torch.tensor([0.5, 0.2, 0.9]), torch.zeros(3), 7).tolist() == [3, 2, 2]
    assert allocate(torch.zeros(4), torch.zeros(4), 8).tolist() == [2, 2, 2, 2]
    # the bounds then apply to every prompt
    assert allocate(torch.zeros(3), torch.ones(3), 7, max_samples=3).tolist() == [3, 2, 2]


def test_max_samples_redistribution_by_hand():
    # w = [6, 3, 1], budget 10, cap 4: [6, 3, 1] → prompt 0 capped at 4, 6 left over w = [3, 1] → [4.5, 1.5];
    # prompt 1 now exceeds 4 → capped, 2 left for prompt 2 → [4, 4, 2].
    n = allocate(torch.ones(3), torch.tensor([6.0, 3.0, 1.0]), 10, alpha=0.0, max_samples=4)
    assert n.tolist() == [4, 4, 2]
    # one round: w = [8, 1, 1], cap 4 → 6 left split 3/3
    assert allocate(torch.ones(3), torch.tensor([8.0, 1.0, 1.0]), 10, alpha=0.0, max_samples=4).tolist() == [4, 3, 3]
    # a cap that does not bind changes nothing
    assert allocate(torch.ones(3), torch.tensor([6.0, 3.0, 1.0]), 10, alpha=0.0, max_samples=6).tolist() == [6, 3, 1]


def test_min_samples_by_hand():
    # w = [8, 1, 1], budget 10, floor 2: n = max(λw, 2) with 8λ + 2 + 2 = 10 → λ = 0.75 → [6, 2, 2].
    assert allocate(torch.ones(3), torch.tensor([8.0, 1.0, 1.0]), 10, alpha=0.0, min_samples=2).tolist() == [6, 2, 2]
    # the floor is only for prompts with positive weight: [8λ, max(λ, 2)] = 10 → λ = 1 → [8, 2, 0]
    p = torch.tensor([1.0, 1.0, 0.0])
    assert allocate(p, torch.tensor([8.0, 1.0, 1.0]), 10, alpha=0.0, min_samples=2).tolist() == [8, 2, 0]
    # budget 5 < 2·3: the floor drops to 5 // 3 = 1 → 8λ + 1 + 1 = 5 → λ = 3/8 → [3, 1, 1]
    assert allocate(torch.ones(3), torch.tensor([8.0, 1.0, 1.0]), 5, alpha=0.0, min_samples=2).tolist() == [3, 1, 1]


def test_multiple_of_padding():
    p, G = torch.tensor([0.25, 1.0]), torch.tensor([1.0, 1.0])
    # w = [2, 1]: budget 6 → [4, 2], padded to 8: the 2 extra units to the largest weights in turn → [5, 3]
    assert allocate(p, G, 6, alpha=0.0, multiple_of=4).tolist() == [5, 3]
    # budget 7 → [14/3, 7/3] → [5, 2], padded to 8 → [6, 2]
    assert allocate(p, G, 7, alpha=0.0, multiple_of=4).tolist() == [6, 2]
    # already a multiple: unchanged
    assert allocate(p, G, 8, alpha=0.0, multiple_of=4).tolist() == allocate(p, G, 8, alpha=0.0).tolist()
    # more extra units than prompts with positive weight: round-robin [2, 1, 0] + 5 → [5, 3, 0]
    assert allocate(torch.ones(3), torch.tensor([2.0, 1.0, 0.0]), 3, alpha=0.0, multiple_of=8).tolist() == [5, 3, 0]
    # the padding respects the cap: [4, 4, 2] → 12 with prompts 0 and 1 at the cap → [4, 4, 4]
    n = allocate(torch.ones(3), torch.tensor([6.0, 3.0, 1.0]), 10, alpha=0.0, max_samples=4, multiple_of=6)
    assert n.tolist() == [4, 4, 4]


def test_total_preserved_on_random_inputs():
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        size = int(torch.randint(1, 40, (1,), generator=gen))
        p, G = _random_inputs(gen, size)
        budget = int(torch.randint(0, 5000, (1,), generator=gen))
        n = allocate(p, G, budget)
        assert int(n.sum()) == budget
        assert (n >= 0).all()
        w = allocation_weights(p, G)
        if (w > 0).any():
            assert (n[w == 0] == 0).all()
        m = int(torch.randint(1, 9, (1,), generator=gen))
        padded = allocate(p, G, budget, multiple_of=m)
        assert int(padded.sum()) == -(-budget // m) * m
        assert (padded >= n).all()


def test_bounds_respected_on_random_inputs():
    gen = torch.Generator().manual_seed(1)
    for _ in range(200):
        size = int(torch.randint(1, 30, (1,), generator=gen))
        p, G = _random_inputs(gen, size)
        w = allocation_weights(p, G)
        active = w > 0 if (w > 0).any() else torch.ones(size, dtype=torch.bool)
        k = int(active.sum())
        budget = int(torch.randint(0, 50 * k, (1,), generator=gen))
        lo = int(torch.randint(0, 6, (1,), generator=gen))
        hi = max(lo, -(-budget // k)) + int(torch.randint(0, 20, (1,), generator=gen))
        n = allocate(p, G, budget, min_samples=lo, max_samples=hi)
        assert int(n.sum()) == budget
        assert (n <= hi).all()
        assert (n[active] >= min(lo, budget // k)).all()
        assert (n[~active] == 0).all()


def test_monotone_in_G():
    gen = torch.Generator().manual_seed(2)
    for _ in range(200):
        size = int(torch.randint(2, 20, (1,), generator=gen))
        p = 0.05 + 0.95 * torch.rand(size, generator=gen, dtype=torch.float64)
        G = 0.1 + torch.rand(size, generator=gen, dtype=torch.float64)
        budget = int(torch.randint(1, 500, (1,), generator=gen))
        i = int(torch.randint(0, size, (1,), generator=gen))
        bigger = G.clone()
        bigger[i] *= 1.1 + 2 * float(torch.rand(1, generator=gen))
        for alpha in (0.0, 1e-3):
            assert allocate(p, bigger, budget, alpha=alpha)[i] >= allocate(p, G, budget, alpha=alpha)[i]


# ------------------------------------------------------------------------------------------------- variance bound


def test_variance_bound_by_hand():
    # Σ G²/(n p): 1/(4·0.25) + 4/(2·1) = 1 + 2 = 3; the p = 0 prompt is skipped.
    p, G = torch.tensor([0.25, 1.0, 0.0]), torch.tensor([1.0, 2.0, 1.0])
    assert estimator_variance_bound(p, G, torch.tensor([4, 2, 0])) == pytest.approx(3.0, abs=1e-15)
    # a prompt with G > 0, p > 0 and no samples: inf; one with G = 0 and no samples: fine
    assert estimator_variance_bound(p, G, torch.tensor([4, 0, 3])) == math.inf
    assert estimator_variance_bound(p, torch.tensor([1.0, 0.0, 1.0]), torch.tensor([4, 0, 0])) == pytest.approx(1.0)


def test_gvm_bound_beats_uniform():
    # α = 0 makes GVM the continuous minimiser of Σ G²/(n p): its bound is (Σ G/√p)²/N ≤ the uniform one
    # (Cauchy–Schwarz); rounding to integers at N = 10000 costs well under 1%.
    gen = torch.Generator().manual_seed(3)
    budget = 10000
    for _ in range(100):
        size = int(torch.randint(2, 50, (1,), generator=gen))
        p = 0.05 + 0.95 * torch.rand(size, generator=gen, dtype=torch.float64)
        G = 0.1 + 0.9 * torch.rand(size, generator=gen, dtype=torch.float64)
        p[torch.rand(size, generator=gen) < 0.1] = 0.0  # uniform wastes samples on these
        gvm = estimator_variance_bound(p, G, allocate(p, G, budget, alpha=0.0))
        uniform = estimator_variance_bound(p, G, allocate(torch.zeros(size), G, budget))  # the uniform fallback
        optimum = float((G[p > 0] / p[p > 0].sqrt()).sum() ** 2 / budget)
        assert optimum <= uniform * (1 + 1e-12)
        assert gvm <= optimum * 1.01
        assert gvm <= uniform * 1.01


# ------------------------------------------------------------------------------------------------- invalid inputs


@pytest.mark.parametrize(
    "p, G, match",
    [
        ([0.5, 1.5], [1.0, 1.0], "^p must lie"),
        ([-0.1, 0.5], [1.0, 1.0], "^p must lie"),
        ([float("nan"), 0.5], [1.0, 1.0], "^p must lie"),
        ([0.5, 0.5], [1.0, -1.0], "^G must be"),
        ([0.5, 0.5], [1.0, float("inf")], "^G must be"),
        ([0.5, 0.5], [1.0], "^p and G must have the same shape"),
        ([[0.5]], [[1.0]], "^p must be a vector"),
    ],
)
def test_invalid_p_or_G(p, G, match):
    for call in (
        lambda: allocation_weights(torch.tensor(p), torch.tensor(G)),
        lambda: allocate(torch.tensor(p), torch.tensor(G), 4),
        lambda: estimator_variance_bound(torch.tensor(p), torch.tensor(G), torch.ones(len(p), dtype=torch.long)),
    ):
        with pytest.raises(ValueError, match=match):
            call()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"budget": -1}, "^budget must be"),
        ({"budget": 2.5}, "^budget must be"),
        ({"budget": 4, "min_samples": -1}, "^min_samples must be"),
        ({"budget": 4, "max_samples": 0}, "^max_samples must be"),
        ({"budget": 4, "min_samples": 3, "max_samples": 2}, "^min_samples .* must be <= max_samples"),
        ({"budget": 10, "max_samples": 4}, "^max_samples"),
        ({"budget": 4, "multiple_of": 0}, "^multiple_of must be"),
        ({"budget": 4, "max_samples": 2, "multiple_of": 5}, "^multiple_of"),
        ({"budget": 4, "alpha": -1.0}, "^alpha must be"),
        ({"budget": 4, "beta": float("nan")}, "^beta must be"),
    ],
)
def test_invalid_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        allocate(torch.tensor([0.5, 0.25]), torch.tensor([1.0, 1.0]), **kwargs)


def test_invalid_n_and_empty():
    p, G = torch.tensor([0.5, 0.25]), torch.tensor([1.0, 1.0])
    with pytest.raises(ValueError, match="^n must be >= 0"):
        estimator_variance_bound(p, G, torch.tensor([1, -1]))
    with pytest.raises(ValueError, match="^n must have the shape"):
        estimator_variance_bound(p, G, torch.tensor([1, 1, 1]))
    with pytest.raises(ValueError, match="^budget"):
        allocate(torch.zeros(0), torch.zeros(0), 3)
    assert allocate(torch.zeros(0), torch.zeros(0), 0).tolist() == []
