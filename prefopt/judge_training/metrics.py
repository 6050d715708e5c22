"""Held-out metrics of a trained judge: accuracy, calibration, antisymmetry, each a pure function of probabilities.

For held-out pairs i = 1..n with p_i = P(chosen_i ≻ rejected_i | x_i) as the judge answers it (σ(r⁺ − r⁻) for a
reward model, the symmetrised P for a pairwise model):

- accuracy = (1/n) Σ 1[p_i > ½]; a tie (p = ½) counts as wrong, as TRL's reward accuracy (r⁺ > r⁻) counts it. Its
  95% Wilson score interval is reported beside it.
- ECE (expected calibration error): every pair is scored in both orders, (p_i, label 1) and (1 − p_i, label 0),
  since a preference judge's outputs satisfy P(b ≻ a) = 1 − P(a ≻ b) and a set of only label-1 rows cannot be
  calibrated against. The 2n predictions go into M equal-width bins [0, 1/M), [1/M, 2/M), ..., [(M−1)/M, 1], and

      ECE = Σ_m (|B_m| / 2n) · |mean_{k ∈ B_m} pred_k − mean_{k ∈ B_m} label_k|.

  With M even this equals the usual confidence form (Guo et al. 2017) over M/2 bins of [½, 1]: confidence
  max(p, 1 − p) against the rate at which the more likely response is the chosen one.
- antisymmetry violation (pairwise model only), of the UN-symmetrised classifier p(x, a, b):
  (1/n) Σ |p(x_i, y⁺_i, y⁻_i) + p(x_i, y⁻_i, y⁺_i) − 1|; 0 for a classifier that is consistent in both orders, up
  to 1 for one that always prefers the first (or the second) response shown.
"""

from __future__ import annotations

import math

import torch


def accuracy(probs: torch.Tensor) -> float:
    """Fraction of the pairs with P(chosen ≻ rejected) > ½, from ``probs`` [n]."""
    return float((probs > 0.5).double().mean())


def wilson_interval(successes: float, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion successes / n (95% for the default z).

    centre = (p̂ + z²/2n) / (1 + z²/n), half-width = z·sqrt(p̂(1 − p̂)/n + z²/4n²) / (1 + z²/n). Unlike p̂ ± z·SE it
    stays inside [0, 1] and is not empty at p̂ = 0 or 1.
    """
    if n <= 0:
        raise ValueError("wilson_interval needs n >= 1")
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def expected_calibration_error(probs: torch.Tensor, bins: int = 10) -> float:
    """ECE of ``probs`` [n] (each P(chosen ≻ rejected)), both orders, ``bins`` equal-width bins over [0, 1]."""
    probs = probs.double().reshape(-1)
    preds = torch.cat([probs, 1.0 - probs])
    labels = torch.cat([torch.ones_like(probs), torch.zeros_like(probs)])
    # Bin m holds [m/M, (m+1)/M); the last also holds 1.0.
    index = torch.clamp((preds * bins).floor().long(), 0, bins - 1)
    total = 0.0
    for m in range(bins):
        members = index == m
        count = int(members.sum())
        if count:
            total += count * abs(float(preds[members].mean()) - float(labels[members].mean()))
    return total / len(preds)


def antisymmetry_violation(p_forward: torch.Tensor, p_swapped: torch.Tensor) -> float:
    """mean |p(x, a, b) + p(x, b, a) − 1| over pairs, from the raw classifier's [n] and [n]."""
    return float((p_forward.double() + p_swapped.double() - 1.0).abs().mean())


def preference_metrics(probs: torch.Tensor, bins: int) -> dict:
    """accuracy (with its Wilson interval), ECE and the held-out loss −log P of ``probs`` [n]."""
    n = len(probs)
    acc = accuracy(probs)
    low, high = wilson_interval(acc * n, n)
    loss = float(-torch.log(probs.double().clamp_min(1e-300)).mean())
    return {
        "n": n,
        "accuracy": acc,
        "accuracy_ci95": [low, high],
        "ece": expected_calibration_error(probs, bins),
        "ece_bins": bins,
        "loss": loss,
    }
