"""Tabular preference games: exact updates, equilibria and duality gaps for the Nash-learning algorithms.

A game over N actions is a preference matrix P [N, N] with P[i, j] = P(action i ≻ action j). It is a valid
preference game when P + Pᵀ = 1 (so the diagonal is ½): the matrix of the symmetric two-player constant-sum
game whose Nash equilibrium is the target of SPPO, Nash-MP, EGPO, INPO and friends. This module is the exact
(one context, N actions, exact expectations) setting in which those algorithms can be checked against their
theory, and a small research tool on its own (docs/games.md has an example and the conformance table).

Notation (docs/games.md, "Conventions"). A policy is a probability vector π [N]; its logits θ [N] with
π = softmax(θ); logits are defined up to an additive constant and the update steps never renormalise them.
(Pπ)_i = P(i ≻ π). The β-regularised game is
    J_β(π, π') = πᵀPπ' − β·KL(π‖π_ref) + β·KL(π'‖π_ref),
whose unique Nash equilibrium π*_β solves θ = θ_ref + Pπ/β. Its duality gap is
    Gap(π) = J_β(BR(π), π) − J_β(π, BR(π)),   θ_BR = θ_ref + Pπ/β,
and for β = 0, Gap(π) = max_i (Pπ)_i − min_j (πᵀP)_j = 2·(max_i (Pπ)_i − ½).

Every ``*_step`` maps logits θ_t [N] to θ_{t+1} [N] by the closed form of one iteration of its algorithm with
exact preferences (docs/games.md and each method's page in docs/algorithms/); :func:`run` iterates one and
:func:`average_policy` averages the iterates. Everything is float64 torch; no solver dependency (the linear program
is a small simplex here).
"""

from __future__ import annotations

from prefopt.games.equilibria import (
    SYMMETRY_TOL,
    TIE_TOL,
    best_response,
    check_preference_matrix,
    duality_gap,
    kl,
    nash_equilibrium,
    preference_against,
    random_preference_matrix,
    regularised_nash,
    regularised_objective,
    rock_paper_scissors,
)
from prefopt.games.updates import (
    apo_step,
    average_policy,
    egpo_step,
    inpo_step,
    iterative_dpo_step,
    nash_md_step,
    nash_mp_step,
    omd_step,
    run,
    sppo_step,
)

__all__ = [
    "SYMMETRY_TOL",
    "TIE_TOL",
    "rock_paper_scissors",
    "random_preference_matrix",
    "check_preference_matrix",
    "kl",
    "preference_against",
    "regularised_objective",
    "best_response",
    "duality_gap",
    "regularised_nash",
    "nash_equilibrium",
    "sppo_step",
    "omd_step",
    "inpo_step",
    "egpo_step",
    "nash_mp_step",
    "nash_md_step",
    "iterative_dpo_step",
    "apo_step",
    "run",
    "average_policy",
]
