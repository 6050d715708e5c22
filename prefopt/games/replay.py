"""Exact tabular replay of a trainer's pair data: the fixed point its regression drives to, with no sampling noise.

A pairwise trainer (INPO, online IPO and its extragradient relatives) regresses h(π; y, y′), a function of the
policy's log-ratio difference between the two responses, onto a target m(y, y′) over the pairs its collect builds.
In the tabular game the log-probs are the logits θ (up to a constant), so one iteration's population problem is a
weighted least squares over the differences g_a − g_b:

    min_g Σ_{a,b} D(a, b) · (g_a − g_b − m(a, b))²,

where D(a, b) is the probability that a training row is the ordered pair (a, b) and m(a, b) the row's expected
target given the pair. Its solution (the weighted graph Laplacian's pseudo-inverse) is what the trainer's loss is
minimised by in expectation, so iterating it shows where the trainer's data lead: to the method's theoretical
update when the data are as its derivation assumes, elsewhere when they are not. D is computed by running the
trainer's own selection code (``prefopt.judges.selection``) on every K-tuple of actions with its probability.
SPPO regresses each response's own log-ratio instead (:func:`sppo_replay_step`).
"""

from __future__ import annotations

import itertools

import torch

from prefopt.games.equilibria import preference_against
from prefopt.judges.selection import knockout_pairs

Tensor = torch.Tensor


class _TableJudge:
    """A judge on action names "0" … "N−1" with the preference matrix P: what the selection code queries."""

    def __init__(self, P: Tensor):
        self.P = P

    def preference(self, prompts, a, b, references=None) -> Tensor:
        return self.P[[int(x) for x in a], [int(y) for y in b]]


def selected_pairs(pi: Tensor, P: Tensor, k: int, pairs: str, rewards: Tensor | None = None) -> Tensor:
    """D [N, N]: the probability that one prompt's K samples from π give the training row (winner a, loser b), for
    the one-pair-per-prompt selections: ``tournament`` (the knock-out tournament on P) or ``best_worst`` (by
    ``rewards`` [N]). The mass of dropped prompts is missing, so D sums to the fraction kept."""
    tuples, winner, loser, keep = _selection(P, k, pairs, rewards)
    weight = pi[tuples].prod(-1) * keep  # [T]: each K-tuple's probability, 0 where the prompt is dropped
    D = torch.zeros(len(pi), len(pi), dtype=pi.dtype)
    return D.index_put_((winner, loser), weight, accumulate=True)


_SELECTIONS: dict = {}


def _selection(P: Tensor, k: int, pairs: str, rewards: Tensor | None):
    """Every K-tuple of actions [T, K] with the actions it selects as winner and loser [T] and whether it is kept
    [T]: the trainer's selection code run once per game (the outcome does not depend on π)."""
    key = (P.numpy().tobytes(), k, pairs, None if rewards is None else rewards.numpy().tobytes())
    if key not in _SELECTIONS:
        if len(_SELECTIONS) >= 64:  # a small cache: games here are small and few
            _SELECTIONS.clear()
        tuples = torch.tensor(list(itertools.product(range(len(P)), repeat=k)))
        if pairs == "tournament":
            groups = [[str(a) for a in t] for t in tuples.tolist()]
            w, lo, keep = map(torch.tensor, zip(*knockout_pairs(_TableJudge(P), [""] * len(groups), groups)))
        elif pairs == "best_worst":
            r = rewards[tuples]  # [T, K]
            w, lo = r.argmax(-1), r.argmin(-1)  # ties pick the lowest index, as best_worst_by_reward does
            keep = r.gather(1, w[:, None])[:, 0] > r.gather(1, lo[:, None])[:, 0]
        else:
            raise ValueError(f"pairs must be tournament or best_worst, got {pairs!r}")
        rows = torch.arange(len(tuples))
        _SELECTIONS[key] = (tuples, tuples[rows, w], tuples[rows, lo], keep.to(P.dtype))
    return _SELECTIONS[key]


def fit_differences(D: Tensor, m: Tensor) -> Tensor:
    """g [N] minimising Σ D(a, b)(g_a − g_b − m(a, b))² (the minimum-norm one: g is defined up to a constant and on
    the actions the pairs reach)."""
    S = D + D.T
    laplacian = torch.diag(S.sum(1)) - S
    rhs = (D * m).sum(1) - (D * m).sum(0)  # Σ_b D(a,b) m(a,b) − Σ_b D(b,a) m(b,a)
    return torch.linalg.pinv(laplacian) @ rhs


def inpo_replay_step(
    theta: Tensor, P: Tensor, eta: float, tau: float, theta_ref: Tensor, pairs: str = "iid", k: int = 2
) -> Tensor:
    """θ_{t+1} [N] that INPO's loss (h_t − (2ℓ − 1)/(2η))² is minimised by, in expectation over its data:
    ``iid`` pairs of π_t with labels ℓ ~ Bernoulli(P) or ℓ = P (the same expectation), or the pair ``tournament``
    selects among K samples (ℓ = 1). h_t = g_a − g_b with g = θ − (τ/η)θ_ref − (1 − τ/η)θ_t, so
    θ_{t+1} = g + (τ/η)θ_ref + (1 − τ/η)θ_t. With iid pairs this is the OMD step ``inpo_step`` (the paper's
    Prop. 6)."""
    pi = torch.softmax(theta, -1)
    if pairs == "iid":
        D, m = torch.outer(pi, pi), (2 * P - 1) / (2 * eta)
    else:
        D, m = selected_pairs(pi, P, k, pairs), torch.full_like(P, 1 / (2 * eta))
    ratio = tau / eta
    return fit_differences(D, m) + ratio * theta_ref + (1 - ratio) * theta


def online_ipo_replay_target(theta: Tensor, P: Tensor, beta: float, theta_ref: Tensor) -> Tensor:
    """θ [N] that online IPO's loss (shared by EGPO, Nash-MP and Nash-MD) is minimised by, in expectation over its
    data: y, y′ ~ π_t (the conformance sampler: temperature 1, no top-k), y″ ~ π_t, target (P(y≻y″) − P(y′≻y″))/β
    on the log-ratio difference to π_ref. The solution is θ_ref + Pπ_t/β, the regularised best response; one SGD
    step from θ_t moves part of the way to it, which is the OMD step ``omd_step``."""
    pi = torch.softmax(theta, -1)
    wins = preference_against(P, pi)
    m = (wins[:, None] - wins[None, :]) / beta  # E over y″ of the target, given (y, y′)
    return fit_differences(torch.outer(pi, pi), m) + theta_ref


def sppo_replay_step(theta: Tensor, P: Tensor, eta: float, k: int, train_on: str = "all") -> Tensor:
    """θ_{t+1} [N] that SPPO's loss (log π_θ(y) − log π_t(y) − η(P̂(y) − ½))² is minimised by, in expectation over
    its data: K samples of π_t, P̂(y_i) = (1/K) Σ_j P(y_i ≻ y_j) with the j = i term (as the trainer computes it), and
    every sample as a row (``all``) or the best and worst by P̂ (``best_worst``, ties to the lowest index). The
    population loss is Σ_a W_a (log π_θ(a) − log π_t(a) − T_a)² (W_a: expected rows of action a, T_a: their mean
    target), minimised over the logits (the log-probs are normalised, so this is not a per-action mean)."""
    pi = torch.softmax(theta, -1)
    n = len(pi)
    tuples = torch.tensor(list(itertools.product(range(n), repeat=k)))
    weight = pi[tuples].prod(-1)  # [T]
    estimate = P[tuples[:, :, None], tuples[:, None, :]].mean(-1)  # [T, K]: P̂ of each sample of the tuple
    if train_on == "all":
        rows = [torch.arange(k).expand(len(tuples), k)]
    elif train_on == "best_worst":
        rows = [estimate.argmax(-1, keepdim=True), estimate.argmin(-1, keepdim=True)]
    else:
        raise ValueError(f"train_on must be all or best_worst, got {train_on!r}")
    count, total = torch.zeros(n, dtype=pi.dtype), torch.zeros(n, dtype=pi.dtype)
    for idx in rows:
        actions = tuples.gather(1, idx).flatten()
        mass = weight[:, None].expand_as(idx).flatten()
        count.index_add_(0, actions, mass)
        total.index_add_(0, actions, mass * eta * (estimate.gather(1, idx).flatten() - 0.5))
    target = torch.where(count > 0, total / count.clamp_min(torch.finfo(pi.dtype).tiny), 0.0)
    anchor = torch.log_softmax(theta, -1)
    logits = theta.detach().clone().requires_grad_(True)
    solver = torch.optim.LBFGS([logits], max_iter=200, tolerance_grad=1e-14, tolerance_change=1e-16,
                               line_search_fn="strong_wolfe")  # fmt: skip

    def closure():
        solver.zero_grad()
        value = (count * (torch.log_softmax(logits, -1) - anchor - target) ** 2).sum()
        value.backward()
        return value

    solver.step(closure)
    return logits.detach()


def rebel_replay_step(
    theta: Tensor, eta: float, k: int, rewards: Tensor | None = None, P: Tensor | None = None
) -> Tensor:
    """θ_{t+1} [N] that REBEL's loss (Δ log π_θ/π_t − η·Δr)² is minimised by, in expectation over its data: with
    ``rewards`` [N], the pair of K = 2 samples or the best and worst of K > 2, target η(r_a − r_b); with a preference
    matrix ``P``, the pair of K = 2 or a knock-out tournament's winner and loser, target η(P(a ≻ b) − ½). The fit is
    on log π_θ − log π_t, so θ_{t+1} = θ_t + g."""
    pi = torch.softmax(theta, -1)
    if rewards is not None:
        m = eta * (rewards[:, None] - rewards[None, :])
        dummy = torch.full((len(pi), len(pi)), 0.5, dtype=pi.dtype)
        D = torch.outer(pi, pi) if k == 2 else selected_pairs(pi, dummy, k, "best_worst", rewards)
    else:
        m = eta * (P - 0.5)
        D = torch.outer(pi, pi) if k == 2 else selected_pairs(pi, P, k, "tournament")
    return theta + fit_differences(D, m)
