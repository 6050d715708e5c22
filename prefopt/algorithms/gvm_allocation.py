"""GVM-RAFT's per-prompt sample budgets: spend a fixed number of samples where they cut gradient variance most.

Yao et al., "Optimizing Chain-of-Thought Reasoners via Gradient Variance Minimization in Rejection Sampling and
RL" (arXiv 2505.02391), Proposition 1 and Algorithm 2 (the numbering as recalled [unconfirmed]); official code:
RLHFlow/GVM, ``em/stage_2_calc_sample_size.py``.

For prompt i with acceptance rate p_i (fraction of correct samples in a pre-sampling stage) and gradient norm
G_i, the unbiased rejection-sampling gradient estimator with n_i draws has variance at most Σ_i G_i²/(n_i·p_i).
GVM minimises the regularised bound Σ_i G_i²/(p_i·n_i) · 1/(1 + α/p_i^β) subject to Σ_i n_i = N, which gives

    n_i = N · w_i / Σ_l w_l,    w_i = G_i / sqrt(p_i + α / p_i^(β−1)),

and n_i = 0 where G_i = 0 or p_i = 0. Without the regulariser (α = 0) n_i ∝ G_i/√p_i, the exact minimiser of
Σ_i G_i²/(n_i·p_i). The regulariser sends w_i → 0 as p_i → 0: at β = 2, w = G/sqrt(p + α/p) increases in p below
p = √α and decreases above it (in general the turning point is p = (α·(β − 1))^(1/β)), so near-impossible prompts,
whose acceptance rate is barely estimated, get few samples.

Symbols ↔ official code: p_i ↔ ``accept_rates`` (``ps``), G_i ↔ ``all_grads`` (``Gs``), N ↔ ``stage_2_samples``,
α ↔ ``--alpha`` (default 1e-3), β ↔ ``--beta`` (default 2.0); w_i is ``calc_sample_ratio``'s per-prompt value.
The official integer step ``float_to_int_preserve_sum`` rounds N·w_i/Σw to nearest and fixes the total by the
residuals, which is largest-remainder rounding up to the order of ties (``np.argsort`` is not stable; here ties go
to the lower index). Not reproduced: its ``filter_threshold`` / ``filter_insufficient`` filters and the clip of N
to (#prompts × stage-1 samples). Its per-prompt cap (``stage_2_samples_max`` in ``em/stage_2_sample.py``) is a
plain min that loses the excess; :func:`allocate`'s ``max_samples`` redistributes it. Its ``em/chunk.py`` rounds
each n_i up to whole chunks; :func:`allocate`'s ``multiple_of`` pads the total instead.
"""

from __future__ import annotations

import math
import numbers

import torch

Tensor = torch.Tensor


# ------------------------------------------------------------------------------------------------- validation


def _vector(x: Tensor, name: str) -> Tensor:
    t = torch.as_tensor(x, dtype=torch.float64)
    if t.dim() != 1:
        raise ValueError(f"{name} must be a vector [N], got shape {list(t.shape)}")
    return t


def _checked(p: Tensor, G: Tensor) -> tuple[Tensor, Tensor]:
    # p [N] in [0, 1] and G [N] finite and >= 0, as float64; NaN fails both range checks.
    p, G = _vector(p, "p"), _vector(G, "G")
    if p.shape != G.shape:
        raise ValueError(f"p and G must have the same shape, got {list(p.shape)} and {list(G.shape)}")
    if not bool(((p >= 0) & (p <= 1)).all()):
        raise ValueError("p must lie in [0, 1] (acceptance rates), got a value outside it or NaN")
    if not bool(((G >= 0) & torch.isfinite(G)).all()):
        raise ValueError("G must be finite and >= 0 (gradient norms), got a negative, infinite or NaN value")
    return p, G


def _check_int(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _checked_options(budget: int, min_samples: int, max_samples: int | None, multiple_of: int) -> tuple:
    # (budget, floor, cap, multiple_of) with the cap as a float (inf: none).
    budget = _check_int(budget, "budget", 0)
    lo = _check_int(min_samples, "min_samples", 0)
    hi = math.inf if max_samples is None else float(_check_int(max_samples, "max_samples", 1))
    if lo > hi:
        raise ValueError(f"min_samples ({lo}) must be <= max_samples ({max_samples})")
    return budget, lo, hi, _check_int(multiple_of, "multiple_of", 1)


# ------------------------------------------------------------------------------------------------- weights


def allocation_weights(p: Tensor, G: Tensor, alpha: float = 1e-3, beta: float = 2.0) -> Tensor:
    """GVM's unnormalised allocation weights w_i = G_i / sqrt(p_i + α / p_i^(β−1)) [N] (float64).

    At the default β = 2, w_i = G_i / sqrt(p_i + α/p_i); α = 0 gives G_i/√p_i. w_i is exactly 0 where p_i = 0 or
    G_i = 0 (the division is guarded: no NaN or inf), and 0 where α/p_i^(β−1) overflows.

    Args:
        p: acceptance rates p_i ∈ [0, 1] [N].
        G: gradient norms G_i ≥ 0 [N].
        alpha: regulariser α ≥ 0 (official ``--alpha``, default 1e-3).
        beta: regulariser exponent β (official ``--beta``, default 2.0).

    Raises:
        ValueError: shapes differ, p outside [0, 1], G negative or not finite, alpha negative, beta not finite.
    """
    p, G = _checked(p, G)
    if not (math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"alpha must be finite and >= 0, got {alpha!r}")
    if not math.isfinite(beta):
        raise ValueError(f"beta must be finite, got {beta!r}")
    live = (p > 0) & (G > 0)
    safe_p = torch.where(live, p, torch.ones_like(p))
    w = G / torch.sqrt(safe_p + alpha / safe_p.pow(beta - 1.0))
    return torch.where(live, w, torch.zeros_like(w))


# ------------------------------------------------------------------------------------------------- allocation


def _water_fill(w: Tensor, budget: int, lo: int, hi: float) -> Tensor:
    # Continuous n_i = clip(λ·w_i, lo, hi) [M] with Σ n_i = budget, for w > 0 [M] and lo·M <= budget <= hi·M: the
    # minimiser of Σ w_i²/n_i under the box (KKT). Capped prompts' excess goes to the others ∝ w, floored prompts
    # take from them. λ by bisection on the monotone Σ clip(λ·w), then solved exactly on the unclipped set.
    if lo == 0 and math.isinf(hi):
        return budget * w / w.sum()
    upper = budget / float(w.sum())
    if math.isfinite(hi):
        upper = max(upper, hi / float(w.min()))
    a, b = 0.0, upper
    for _ in range(200):
        mid = 0.5 * (a + b)
        if float((mid * w).clamp(lo, hi).sum()) < budget:
            a = mid
        else:
            b = mid
    x = (b * w).clamp(lo, hi)
    free = (x > lo) & (x < hi)
    if bool(free.any()):
        fixed = lo * int((x <= lo).sum()) + (hi * int((x >= hi).sum()) if math.isfinite(hi) else 0)
        x = torch.where(free, (budget - fixed) / w[free].sum() * w, x).clamp(lo, hi)
    return x


def _round_preserving_sum(x: Tensor, budget: int, room: Tensor) -> Tensor:
    # Largest remainder: floor x [N], then one more unit to each of the largest fractional parts (stable sort: ties
    # to the lower index) until the total is `budget`; only prompts where `room` [N] is true can take a unit (an
    # integral x only if float rounding left more units than positive fractional parts).
    n = torch.floor(x)
    frac = torch.where(room, x - n, torch.full_like(x, -1.0))
    order = torch.sort(frac, descending=True, stable=True).indices
    leftover = budget - int(n.sum())
    n = n.long()
    n[order[:leftover]] += 1
    return n


def _pad_to_multiple(n: Tensor, w: Tensor, multiple_of: int, hi: float) -> Tensor:
    # Pad Σn up to a multiple of `multiple_of`: one unit at a time to the prompts with w > 0 in order of decreasing
    # weight (ties to the lower index), round-robin, skipping prompts at the cap hi.
    extra = -int(n.sum()) % multiple_of
    order = torch.sort(w, descending=True, stable=True).indices[: int((w > 0).sum())]
    room = torch.full((len(order),), float(extra)) if math.isinf(hi) else (hi - n[order]).double()
    if float(room.clamp(min=0).sum()) < extra:
        raise ValueError(f"multiple_of={multiple_of}: max_samples leaves no room to pad the total")
    n = n.clone()
    while extra > 0:
        takers = (room > 0).nonzero().flatten()[:extra]
        n[order[takers]] += 1
        room[takers] -= 1
        extra -= len(takers)
    return n


def allocate(
    p: Tensor,
    G: Tensor,
    budget: int,
    alpha: float = 1e-3,
    beta: float = 2.0,
    min_samples: int = 0,
    max_samples: int | None = None,
    multiple_of: int = 1,
) -> Tensor:
    """GVM's integer sample budgets n_i ≥ 0 [N] (int64): n_i ∝ w_i (:func:`allocation_weights`), Σ n_i = budget.

    The continuous target is n_i = clip(λ·w_i, m, M) with Σ n_i = budget (m = ``min_samples``, M = ``max_samples``),
    the minimiser of the regularised bound under those bounds; without bounds n_i = budget·w_i/Σw. Prompts capped
    at M hand their excess to the uncapped ones ∝ w (the redistribution iterated until stable). It is rounded by
    largest remainder: floor, then one unit each to the largest fractional parts, ties to the lower index
    (deterministic). Prompts with w_i = 0 (p_i = 0 or G_i = 0) get 0.

    Project decisions:
        * every w_i = 0 (no prompt has a correct sample, or every gradient is zero): nothing to estimate, so the
          budget is spread uniformly over all prompts (like uniform best-of-N): ``budget // N`` each, the remainder
          to the lowest indices; ``min_samples`` / ``max_samples`` then apply to every prompt.
        * ``min_samples`` when budget < min_samples·K (K prompts with w > 0): the floor drops to ``budget // K``.
        * ``multiple_of`` > 1: the total is padded UP to the next multiple (official chunking pads likewise), one
          unit at a time to the prompts of largest weight, round-robin, within ``max_samples``; the only case where
          Σ n_i > budget.

    Args:
        p: acceptance rates p_i ∈ [0, 1] [N].
        G: gradient norms G_i ≥ 0 [N].
        budget: total number of samples N ≥ 0.
        alpha, beta: the regulariser (:func:`allocation_weights`).
        min_samples: floor per prompt with w_i > 0.
        max_samples: cap per prompt (None: no cap); must be ≥ ``min_samples`` and leave room for the budget.
        multiple_of: pad the total up to a multiple of this (e.g. the number of GPUs); 1 = no padding.

    Raises:
        ValueError: invalid p / G / alpha / beta, a negative budget, ``min_samples`` > ``max_samples``, caps that
            cannot hold the budget (or the padding), ``multiple_of`` < 1, budget > 0 with no prompt.
    """
    w = allocation_weights(p, G, alpha, beta)
    budget, lo, hi, multiple_of = _checked_options(budget, min_samples, max_samples, multiple_of)
    if budget > 0 and len(w) == 0:
        raise ValueError(f"budget ({budget}) > 0 needs at least one prompt")
    if len(w) > 0 and not bool((w > 0).any()):
        w = torch.ones_like(w)  # the uniform fallback
    active = w > 0
    k = int(active.sum())
    if math.isfinite(hi) and hi * k < budget:
        raise ValueError(f"max_samples ({max_samples}) × {k} prompts with positive weight < budget ({budget})")
    x = torch.zeros_like(w)
    if budget > 0:
        x[active] = _water_fill(w[active], budget, min(lo, budget // k), hi)
    n = _round_preserving_sum(x, budget, active & (x < hi))
    return _pad_to_multiple(n, w, multiple_of, hi) if multiple_of > 1 else n


# ------------------------------------------------------------------------------------------------- diagnostics


def estimator_variance_bound(p: Tensor, G: Tensor, n: Tensor) -> float:
    """The variance bound Σ_i G_i²/(n_i·p_i) of an allocation n [N], to compare allocations.

    Sums over the prompts with n_i > 0 and p_i > 0 (p_i = 0: no correct sample, nothing to estimate); it is inf
    when a prompt with G_i > 0 and p_i > 0 gets n_i = 0 (its gradient is then not estimated at all).

    Raises:
        ValueError: invalid p / G (:func:`allocation_weights`), or n not a vector of the same shape with n_i ≥ 0.
    """
    p, G = _checked(p, G)
    n = _vector(n, "n")
    if n.shape != p.shape:
        raise ValueError(f"n must have the shape of p, got {list(n.shape)} and {list(p.shape)}")
    if not bool((n >= 0).all()):
        raise ValueError("n must be >= 0 (sample counts)")
    if bool(((G > 0) & (p > 0) & (n == 0)).any()):
        return math.inf
    used = (p > 0) & (n > 0)
    return float((G[used] ** 2 / (n[used] * p[used])).sum())
