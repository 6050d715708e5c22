"""Preference games: matrices, the regularised objective, best responses, duality gaps and equilibria."""

from __future__ import annotations

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

    For β > 0 it is unique, θ_BR = log π_ref + Pπ/β (docs/games.md, "Conventions"). For β = 0 it is the pure
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
    ‖F‖ converges from θ = log π_ref (a damped fixed-point iteration does not: docs/conformance.md).

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
