"""Tabular preference games: the exact setting in which the Nash-learning algorithms can be checked.

A game over N actions is a preference matrix P [N, N] with P[i, j] = P(action i ≻ action j). It is a valid
preference game when P + Pᵀ = 1 (so the diagonal is ½): the matrix of the symmetric two-player constant-sum
game whose Nash equilibrium is the target of SPPO, Nash-MP, EGPO, INPO and friends.

For now this module holds the games themselves and their validation; exact updates, equilibrium solvers and the
duality gap build on these.
"""

from __future__ import annotations

import torch

# Tolerance for P + Pᵀ = 1: float64 round-off of 1 − p is far below it, a real asymmetry far above.
SYMMETRY_TOL = 1e-9


def rock_paper_scissors() -> torch.Tensor:
    """Rock-paper-scissors as a preference game: a win is 1, a draw ½, a loss 0.

    Actions are (rock, paper, scissors); paper beats rock, scissors beat paper, rock beats scissors. The unique
    Nash equilibrium is uniform (⅓, ⅓, ⅓), and no action is best against every other: the simplest
    non-transitive preference.

    Returns:
        float64 tensor [3, 3], P = ½ + ½·A with A = [[0, −1, 1], [1, 0, −1], [−1, 1, 0]].
    """
    payoff = torch.tensor([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]], dtype=torch.float64)
    return 0.5 + 0.5 * payoff


def random_preference_matrix(n: int, seed: int) -> torch.Tensor:
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


def check_preference_matrix(matrix) -> torch.Tensor:
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
