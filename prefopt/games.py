"""Tabular preference games: exact updates, equilibria and duality gaps for the Nash-learning algorithms.

A game over N actions is a preference matrix P [N, N] with P[i, j] = P(action i ≻ action j). It is a valid
preference game when P + Pᵀ = 1 (so the diagonal is ½): the matrix of the symmetric two-player constant-sum
game whose Nash equilibrium is the target of SPPO, Nash-MP, EGPO, INPO and friends. This module is the exact
(one context, N actions, exact expectations) setting in which those algorithms can be checked against their
theory, and a small research tool on its own (docs/games.md has an example and the conformance table).

Notation (ALGORITHMS.md, common notation). A policy is a probability vector π [N]; its logits θ [N] with
π = softmax(θ); logits are defined up to an additive constant and the update steps never renormalise them.
(Pπ)_i = P(i ≻ π). The β-regularised game is
    J_β(π, π') = πᵀPπ' − β·KL(π‖π_ref) + β·KL(π'‖π_ref),
whose unique Nash equilibrium π*_β solves θ = θ_ref + Pπ/β. Its duality gap is
    Gap(π) = J_β(BR(π), π) − J_β(π, BR(π)),   θ_BR = θ_ref + Pπ/β,
and for β = 0, Gap(π) = max_i (Pπ)_i − min_j (πᵀP)_j = 2·(max_i (Pπ)_i − ½).

Every ``*_step`` maps logits θ_t [N] to θ_{t+1} [N] by the closed form of one iteration of its algorithm with
exact preferences (ALGORITHMS.md sections 1–5); :func:`run` iterates one and :func:`average_policy` averages
the iterates. Everything is float64 torch; no solver dependency (the linear program is a small simplex here).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

# Tolerance for P + Pᵀ = 1: float64 round-off of 1 − p is far below it, a real asymmetry far above.
SYMMETRY_TOL = 1e-9
# Ties for the pure best response (β = 0): round-off in Pπ is ~1e-16, a real difference in a game is far larger.
TIE_TOL = 1e-12

Tensor = torch.Tensor


# ---------------------------------------------------------------------------------------------------- games


def rock_paper_scissors() -> Tensor:
    """Rock-paper-scissors as a preference game: a win is 1, a draw ½, a loss 0.

    Actions are (rock, paper, scissors); paper beats rock, scissors beat paper, rock beats scissors. The unique
    Nash equilibrium is uniform (⅓, ⅓, ⅓), and no action is best against every other: the simplest
    non-transitive preference.

    Returns:
        float64 tensor [3, 3], P = ½ + ½·A with A = [[0, −1, 1], [1, 0, −1], [−1, 1, 0]].
    """
    payoff = torch.tensor([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]], dtype=torch.float64)
    return 0.5 + 0.5 * payoff


def random_preference_matrix(n: int, seed: int) -> Tensor:
    """A random valid preference game, reproducible from ``seed``.

    For i > j, P[i, j] ~ U(0, 1) and P[j, i] = 1 − P[i, j]; the diagonal is ½. The draws come from a
    ``torch.Generator`` seeded with ``seed``, so the global RNG is left untouched.

    Args:
        n: number of actions, at least 1.
        seed: generator seed.

    Returns:
        float64 tensor [n, n].
    """
    if n < 1:
        raise ValueError(f"random_preference_matrix needs n >= 1, got {n}")
    generator = torch.Generator().manual_seed(seed)
    draws = torch.rand((n, n), generator=generator, dtype=torch.float64)
    lower = torch.tril(draws, diagonal=-1)
    # Upper triangle from the lower one makes P + Pᵀ = 1 hold exactly off the diagonal.
    upper = torch.triu(1.0 - lower.T, diagonal=1)
    return lower + upper + 0.5 * torch.eye(n, dtype=torch.float64)


def check_preference_matrix(matrix) -> Tensor:
    """Validate a preference game and return it as a float64 tensor.

    Args:
        matrix: a square matrix (nested lists or tensor) [N, N] with matrix[i, j] = P(i ≻ j).

    Returns:
        the matrix as a float64 tensor [N, N].

    Raises:
        ValueError: unless the matrix is square and non-empty, its entries are in [0, 1], and P + Pᵀ = 1 within
            1e-9 (which also forces the diagonal to ½).
    """
    try:
        P = torch.as_tensor(matrix, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"preference matrix must be a square matrix of numbers: {err}") from err
    if P.dim() != 2 or P.shape[0] != P.shape[1] or P.shape[0] == 0:
        raise ValueError(f"preference matrix must be square and non-empty, got shape {tuple(P.shape)}")
    if not bool(torch.isfinite(P).all()) or bool(((P < 0) | (P > 1)).any()):
        bad = (~torch.isfinite(P) | (P < 0) | (P > 1)).nonzero()[0].tolist()
        raise ValueError(f"preference matrix entries must be in [0, 1]; entry {tuple(bad)} is {P[tuple(bad)].item()}")
    error = (P + P.T - 1.0).abs()
    if bool((error > SYMMETRY_TOL).any()):
        i, j = divmod(int(error.argmax()), P.shape[0])
        raise ValueError(
            f"preference matrix must satisfy P + P^T = 1 (diagonal 1/2); "
            f"P[{i},{j}] + P[{j},{i}] = {(P[i, j] + P[j, i]).item()}"
        )
    return P


# ------------------------------------------------------------------------------ objective, best response, gap


def kl(p: Tensor, q: Tensor) -> Tensor:
    """KL(p‖q) = Σ_i p_i log(p_i/q_i) of two probability vectors [N], with 0·log 0 = 0; a scalar tensor."""
    return (torch.xlogy(p, p) - torch.xlogy(p, q)).sum()


def preference_against(P: Tensor, pi: Tensor) -> Tensor:
    """Win rates against a policy: (Pπ)_i = P(i ≻ π) = Σ_j P[i, j]·π_j.

    Args:
        P: preference matrix [N, N].
        pi: policy [N].

    Returns:
        [N] tensor of P(i ≻ π).
    """
    return P @ pi


def regularised_objective(P: Tensor, pi: Tensor, pi_prime: Tensor, beta: float, pi_ref: Tensor) -> Tensor:
    """J_β(π, π') = πᵀPπ' − β·KL(π‖π_ref) + β·KL(π'‖π_ref), the β-regularised game (scalar tensor).

    For a valid game J_β(π, π') + J_β(π', π) = 1: the KL terms cancel and πᵀPπ' + π'ᵀPπ = πᵀ(P + Pᵀ)π' = πᵀ11ᵀπ' = 1.
    """
    return pi @ P @ pi_prime - beta * kl(pi, pi_ref) + beta * kl(pi_prime, pi_ref)


def best_response(P: Tensor, pi: Tensor, beta: float = 0.0, pi_ref: Tensor | None = None) -> Tensor:
    """The best response to π in J_β: argmax_σ J_β(σ, π).

    For β > 0 it is unique, θ_BR = log π_ref + Pπ/β (ALGORITHMS.md, common notation). For β = 0 it is the pure
    best response, argmax_i (Pπ)_i, with the mass split evenly over ties (within ``TIE_TOL``).

    Args:
        P: preference matrix [N, N].
        pi: the opponent's policy [N].
        beta: KL coefficient β ≥ 0.
        pi_ref: reference policy [N] (needed when β > 0).

    Returns:
        the best-response policy [N].
    """
    wins = preference_against(P, pi)
    if beta > 0:
        return torch.softmax(torch.log(pi_ref) + wins / beta, dim=-1)
    best = (wins >= wins.max() - TIE_TOL).to(wins.dtype)
    return best / best.sum()


def duality_gap(P: Tensor, pi: Tensor, beta: float = 0.0, pi_ref: Tensor | None = None) -> float:
    """Duality (exploitability) gap of the symmetric strategy (π, π); ≥ 0 and 0 exactly at the NE.

    β > 0: Gap(π) = J_β(BR(π), π) − J_β(π, BR(π)) (EGPO repo, ``simulations/run.py``).
    β = 0: Gap(π) = max_i (Pπ)_i − min_j (πᵀP)_j, which equals 2·(max_i (Pπ)_i − ½) when P + Pᵀ = 1.

    Args:
        P: preference matrix [N, N].
        pi: policy [N].
        beta: KL coefficient β ≥ 0.
        pi_ref: reference policy [N] (needed when β > 0).

    Returns:
        the gap as a Python float.
    """
    if beta > 0:
        response = best_response(P, pi, beta, pi_ref)
        gap = regularised_objective(P, response, pi, beta, pi_ref) - regularised_objective(
            P, pi, response, beta, pi_ref
        )
    else:
        gap = preference_against(P, pi).max() - (pi @ P).min()
    return float(gap)


# ---------------------------------------------------------------------------------------------------- equilibria


def regularised_nash(P: Tensor, beta: float, pi_ref: Tensor, tol: float = 1e-12, max_iter: int = 200) -> Tensor:
    """The Nash equilibrium π*_β of J_β: the solution θ of F(θ) = θ − log π_ref − P·softmax(θ)/β = 0.

    Damped Newton on F. The Jacobian I − P·(diag π − ππᵀ)/β is always invertible: P·J_softmax = A·J_softmax with
    A = P − ½ antisymmetric, whose eigenvalues are imaginary, so I − A·J/β has eigenvalues 1 − iλ. Hence the
    Newton direction is a descent direction of ‖F‖² with no spurious stationary point, and backtracking on
    ‖F‖ converges from θ = log π_ref (ALGORITHMS.md section 12: a damped fixed-point iteration does not).

    Args:
        P: preference matrix [N, N].
        beta: KL coefficient β > 0.
        pi_ref: reference policy [N] with full support.
        tol: stop when max_i |F(θ)_i| < tol·(1 + 1/β + max|log π_ref|) (round-off in F scales with θ).
        max_iter: most Newton steps.

    Returns:
        π*_β [N].

    Raises:
        RuntimeError: when max|F| is still ≥ tol after ``max_iter`` steps.
    """
    if beta <= 0:
        raise ValueError(f"regularised_nash needs beta > 0, got {beta} (use nash_equilibrium for beta = 0)")
    theta_ref = torch.log(pi_ref)
    eye = torch.eye(P.shape[0], dtype=P.dtype)
    # θ is of size |θ_ref| + 1/β, and float64 round-off in F is relative to it.
    tol = tol * (1.0 + 1.0 / beta + float(theta_ref.abs().max()))

    def residual(theta: Tensor) -> Tensor:
        return theta - theta_ref - preference_against(P, torch.softmax(theta, dim=-1)) / beta

    theta = theta_ref.clone()
    res = residual(theta)
    for _ in range(max_iter):
        if res.abs().max() < tol:
            return torch.softmax(theta, dim=-1)
        pi = torch.softmax(theta, dim=-1)
        jacobian = eye - P @ (torch.diag(pi) - torch.outer(pi, pi)) / beta
        direction = torch.linalg.solve(jacobian, -res)
        step, norm = 1.0, res.norm()
        # Armijo backtracking on ‖F‖: accept the first step that decreases it by a fraction of the prediction.
        while step > 1e-10:
            candidate = residual(theta + step * direction)
            if candidate.norm() <= (1.0 - 1e-4 * step) * norm:
                break
            step *= 0.5
        theta, res = theta + step * direction, candidate
    if res.abs().max() < tol:
        return torch.softmax(theta, dim=-1)
    raise RuntimeError(f"regularised_nash: residual {res.abs().max().item():.3g} after {max_iter} Newton steps")


def nash_equilibrium(P: Tensor, tol: float = 1e-12) -> Tensor:
    """A Nash equilibrium of the unregularised game (value ½): the maximin policy, by an exact simplex method.

    The column player of the shifted game B = P + 1 (entries in [1, 2], value 3/2) solves
        max 1ᵀy  s.t.  B y ≤ 1, y ≥ 0,   q = y / 1ᵀy,
    and since A = P − ½ is antisymmetric, the column player's minimax strategy q is also the row player's
    maximin strategy: q is a symmetric NE. Bland's rule (smallest index enters and leaves) rules out cycling.

    Args:
        P: preference matrix [N, N] with P + Pᵀ = 1.
        tol: pivot tolerance.

    Returns:
        an equilibrium policy [N]; unique for generic random games; uniform for rock-paper-scissors.
    """
    n = P.shape[0]
    # Tableau rows: constraints [B | I | 1]; last row: reduced costs [−1 | 0 | 0] of the maximisation.
    tableau = torch.zeros(n + 1, 2 * n + 1, dtype=torch.float64)
    tableau[:n, :n] = P + 1.0
    tableau[:n, n : 2 * n] = torch.eye(n, dtype=torch.float64)
    tableau[:n, -1] = 1.0
    tableau[n, :n] = -1.0
    basis = list(range(n, 2 * n))
    for _ in range(50 * n * n + 100):
        entering = next((j for j in range(2 * n) if tableau[n, j] < -tol), None)
        if entering is None:
            break
        column = tableau[:n, entering]
        rows = [i for i in range(n) if column[i] > tol]
        ratios = {i: float(tableau[i, -1] / column[i]) for i in rows}
        best = min(ratios.values())
        leaving = min((i for i in rows if ratios[i] <= best + tol), key=lambda i: basis[i])
        pivot_row = tableau[leaving] / tableau[leaving, entering]
        tableau -= torch.outer(tableau[:, entering], pivot_row)
        tableau[leaving] = pivot_row
        basis[leaving] = entering
    else:
        raise RuntimeError("nash_equilibrium: simplex did not terminate")
    y = torch.zeros(n, dtype=torch.float64)
    for row, var in enumerate(basis):
        if var < n:
            y[var] = tableau[row, -1]
    return y.clamp_min(0.0) / y.clamp_min(0.0).sum()


# ------------------------------------------------------------------------------------------- exact updates
# Shared arguments of the steps: theta = θ_t [N] (logits), P [N, N], eta = step η > 0, beta = β ≥ 0 (KL to π_ref),
# theta_ref = θ_ref [N]. Each returns θ_{t+1} [N], unnormalised (logits are defined up to a constant).


def _omd_form(theta: Tensor, theta_ref: Tensor, wins: Tensor, eta: float, beta: float) -> Tensor:
    # The linearised-regulariser mirror step shared by OMD, EGPO and Nash-MD: (1 − ηβ)θ + ηβθ_ref + η·wins.
    return (1.0 - eta * beta) * theta + eta * beta * theta_ref + eta * wins


def _prox_form(theta: Tensor, theta_ref: Tensor, wins: Tensor, eta: float, beta: float) -> Tensor:
    # Nash-MP's implicit step: the KL to π_ref inside the prox gives (θ + ηβθ_ref + η·wins)/(1 + ηβ).
    return (theta + eta * beta * theta_ref + eta * wins) / (1.0 + eta * beta)


def _wins(P: Tensor, theta: Tensor) -> Tensor:
    return preference_against(P, torch.softmax(theta, dim=-1))


def sppo_step(theta: Tensor, P: Tensor, eta: float) -> Tensor:
    """SPPO's idealised update (arXiv 2405.00675; ALGORITHMS.md §1): Hedge on the unregularised game, β = 0.

    π_{t+1} ∝ π_t·exp(η·P(·≻π_t)), i.e. θ_{t+1} = θ_t + η·Pπ_t [N]. The practical loss regresses onto it with
    log Z replaced by η/2. The average iterate converges to the NE; the last iterate can cycle.
    """
    return theta + eta * _wins(P, theta)


def omd_step(theta: Tensor, P: Tensor, eta: float, beta: float, theta_ref: Tensor) -> Tensor:
    """Online mirror descent on J_β = INPO = EGPO's "online IPO 1" (ALGORITHMS.md §2 and §5).

    θ_{t+1} = (1 − ηβ)·θ_t + ηβ·θ_ref + η·Pπ_t [N], i.e. π_{t+1} ∝ π_t^{1−ηβ}·π_ref^{ηβ}·exp(η·P(·≻π_t)).
    In INPO's symbols η ≡ 1/η_INPO and β ≡ τ (:func:`inpo_step`).
    """
    return _omd_form(theta, theta_ref, _wins(P, theta), eta, beta)


def inpo_step(theta: Tensor, P: Tensor, eta_inpo: float, tau: float, theta_ref: Tensor) -> Tensor:
    """INPO's OMD step in the paper's symbols (arXiv 2407.00617, §3; ALGORITHMS.md §5).

    π_{t+1}(y) ∝ exp(P(y≻π_t)/η)·π_ref(y)^{τ/η}·π_t(y)^{1−τ/η}, i.e.
    θ_{t+1} = (1 − τ/η)·θ_t + (τ/η)·θ_ref + Pπ_t/η [N], with η = ``eta_inpo`` (1/η is the step) and τ = ``tau``:
    :func:`omd_step` with step 1/η_INPO and β = τ.
    """
    ratio = tau / eta_inpo
    return (1.0 - ratio) * theta + ratio * theta_ref + _wins(P, theta) / eta_inpo


def egpo_step(
    theta: Tensor, P: Tensor, eta: float, beta: float, theta_ref: Tensor, return_half: bool = False
) -> Tensor | tuple[Tensor, Tensor]:
    """EGPO: mirror-descent extragradient on J_β (arXiv 2503.08942; ALGORITHMS.md §2).

    half step: θ_{t+½} = (1 − ηβ)·θ_t + ηβ·θ_ref + η·Pπ_t
    full step: θ_{t+1} = (1 − ηβ)·θ_t + ηβ·θ_ref + η·Pπ_{t+½}
    Both start from θ_t; only the opponent changes (the repo restores θ_t before the second step).

    Returns:
        θ_{t+1} [N], or (θ_{t+1}, θ_{t+½}) when ``return_half``.
    """
    half = _omd_form(theta, theta_ref, _wins(P, theta), eta, beta)
    full = _omd_form(theta, theta_ref, _wins(P, half), eta, beta)
    return (full, half) if return_half else full


def nash_mp_step(
    theta: Tensor, P: Tensor, eta: float, beta: float, theta_ref: Tensor, return_half: bool = False
) -> Tensor | tuple[Tensor, Tensor]:
    """Nash-MP: mirror prox on J_β, the KL to π_ref inside the prox (arXiv 2505.19731; ALGORITHMS.md §3).

    π_{k+½} = argmax_π η[P(π≻π_k) − β·KL(π‖π_ref)] − KL(π‖π_k) ⇒ θ_{k+½} = [θ_k + ηβ·θ_ref + η·Pπ_k]/(1 + ηβ);
    π_{k+1}: the same from π_k against π_{k+½} ⇒ θ_{k+1} = [θ_k + ηβ·θ_ref + η·Pπ_{k+½}]/(1 + ηβ).
    The parametrisation is derived from the Mirror Prox template, not read in the paper [unconfirmed].

    Returns:
        θ_{k+1} [N], or (θ_{k+1}, θ_{k+½}) when ``return_half``.
    """
    half = _prox_form(theta, theta_ref, _wins(P, theta), eta, beta)
    full = _prox_form(theta, theta_ref, _wins(P, half), eta, beta)
    return (full, half) if return_half else full


def nash_md_step(
    theta: Tensor, P: Tensor, eta: float, beta: float, theta_ref: Tensor, mixture: float | None = None
) -> Tensor:
    """Nash-MD (Munos et al., "Nash Learning from Human Feedback", arXiv 2312.00886): OMD against a mixture.

    The opponent is the geometric mixture log π^μ = (1 − μ)·log π_t + μ·log π_ref + c, then
    θ_{t+1} = (1 − ηβ)·θ_t + ηβ·θ_ref + η·Pπ^μ [N]. ``mixture`` = μ ∈ [0, 1]; None ties it to the step, μ = ηβ,
    as in the paper and the EGPO repo's tabular baseline (``simulations/loss_funcs.py``: weight ``true_lr·beta``).
    EGPO's LLM baseline uses a fixed μ = 0.125 (ALGORITHMS.md §2): pass ``mixture=0.125``.
    """
    mu = eta * beta if mixture is None else mixture
    log_mixture = (1.0 - mu) * torch.log_softmax(theta, dim=-1) + mu * torch.log_softmax(theta_ref, dim=-1)
    return _omd_form(theta, theta_ref, _wins(P, log_mixture), eta, beta)


def iterative_dpo_step(theta: Tensor, r: Tensor, beta: float) -> Tensor:
    """Iterative DPO on a reward r [N] with the previous iterate as reference: θ_{t+1} = θ_t + r/β [N].

    With exact Bradley–Terry data the DPO optimum is π_{t+1} ∝ π_t·exp(r/β): a proximal-point step on the linear
    objective E_π[r] (ALGORITHMS.md §4, "Tabular test").
    """
    return theta + r / beta


def apo_step(
    theta: Tensor,
    theta_prev: Tensor,
    r_or_P: Tensor,
    beta: float,
    alpha: float,
    base: Literal["dpo", "sppo"] = "dpo",
) -> Tensor:
    """APO (arXiv 2410.06293; ALGORITHMS.md §4, §11): the base proximal step centred at the extrapolated iterate.

    θ̂_t = θ_t + α·(θ_t − θ_{t−1}) (π̂_t ∝ π_t·(π_t/π_{t−1})^α: logits and log-probs coincide in the tabular
    form), then θ_{t+1} = θ̂_t + r/β (``base="dpo"``) or θ̂_t + Pπ_t/β (``base="sppo"``, SPPO's η = 1/β; the
    opponent is π_t because §11 samples from π_t [unconfirmed choice]). θ_{t−1}, θ_t are the proximal iterates
    (not the extrapolated ones); start with θ_{−1} = θ_0. α = 0 is the base method exactly.

    Args:
        theta: θ_t [N].
        theta_prev: θ_{t−1} [N].
        r_or_P: rewards r [N] (``dpo``) or a preference matrix P [N, N] (``sppo``).
        beta: KL coefficient β > 0.
        alpha: momentum α ≥ 0 (the paper's value is recalled as 0.3 [unconfirmed]).
        base: ``dpo`` or ``sppo``.

    Returns:
        θ_{t+1} [N].
    """
    extrapolated = theta + alpha * (theta - theta_prev)
    if base == "dpo":
        return extrapolated + r_or_P / beta
    if base == "sppo":
        return extrapolated + _wins(r_or_P, theta) / beta
    raise ValueError(f"apo_step: base must be 'dpo' or 'sppo', got {base!r}")


# ------------------------------------------------------------------------------------------------- running


def run(update: Callable[..., Tensor], theta0: Tensor, iterations: int, needs_previous: bool = False) -> Tensor:
    """Iterate an update from θ_0 and return the whole trajectory of logits.

    Args:
        update: θ_t ↦ θ_{t+1}, e.g. ``lambda th: egpo_step(th, P, 2.0, 0.1, theta_ref)``; with ``needs_previous``
            it is called as update(θ_t, θ_{t−1}) with θ_{−1} = θ_0 (APO's momentum).
        theta0: initial logits θ_0 [N].
        iterations: number T of updates.
        needs_previous: pass the previous iterate as well.

    Returns:
        [T + 1, N] tensor with θ_0, …, θ_T as rows.
    """
    trajectory = [theta0]
    previous = theta0
    for _ in range(iterations):
        current = trajectory[-1]
        trajectory.append(update(current, previous) if needs_previous else update(current))
        previous = current
    return torch.stack(trajectory)


def average_policy(trajectory: Tensor) -> Tensor:
    """SPPO's average iterate: the mean of softmax(θ_t) over the rows of a trajectory [T + 1, N], θ_0 included.

    Returns:
        the average policy [N].
    """
    return torch.softmax(trajectory, dim=-1).mean(dim=0)
