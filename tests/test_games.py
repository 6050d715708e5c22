"""Tabular game module: gaps, equilibria, the closed-form updates and the matrix-game conformance table.

Expected values are computed here independently of prefopt.games (loops, closed forms, first-order conditions).
"""

import math

import pytest
import torch

from prefopt.games import (
    apo_step,
    average_policy,
    best_response,
    duality_gap,
    egpo_step,
    inpo_step,
    iterative_dpo_step,
    kl,
    nash_equilibrium,
    nash_md_step,
    nash_mp_step,
    omd_step,
    preference_against,
    random_preference_matrix,
    regularised_nash,
    regularised_objective,
    rock_paper_scissors,
    run,
    sppo_step,
)

RPS = rock_paper_scissors()


def _randn(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _random_policy(n: int, seed: int) -> torch.Tensor:
    return torch.softmax(_randn(n, seed), dim=-1)


def _gap_by_hand(P, pi, beta, pi_ref):
    # max_σ σᵀPπ − βKL(σ‖π_ref) = β·log Σ_i π_ref,i·exp((Pπ)_i/β); with J(π, σ) = 1 − J(σ, π) the gap is
    # 2·[that max − ½ + β·KL(π‖π_ref)].
    wins = [sum(P[i, j].item() * pi[j].item() for j in range(len(pi))) for i in range(len(pi))]
    soft_max = beta * math.log(sum(r.item() * math.exp(w / beta) for r, w in zip(pi_ref, wins)))
    kl_pi = sum(p.item() * math.log(p.item() / r.item()) for p, r in zip(pi, pi_ref))
    return 2.0 * (soft_max - 0.5 + beta * kl_pi)


# ---------------------------------------------------------------- objective, best response, duality gap


@pytest.mark.parametrize("n, seed", [(3, 0), (5, 1), (8, 2)])
def test_objective_identity_and_unregularised_gap(n, seed):
    P = RPS if n == 3 else random_preference_matrix(n, seed)
    pi, pi_prime, pi_ref = (_random_policy(n, seed + k) for k in (10, 20, 30))
    # πᵀPπ' + π'ᵀPπ = πᵀ(P + Pᵀ)π' = 1, and the KL terms cancel: J_β − ½ is antisymmetric.
    total = regularised_objective(P, pi, pi_prime, 0.3, pi_ref) + regularised_objective(P, pi_prime, pi, 0.3, pi_ref)
    assert total.item() == pytest.approx(1.0, abs=1e-14)
    # β = 0: max_i (Pπ)_i − min_j (πᵀP)_j = 2·(max_i (Pπ)_i − ½) for a symmetric game.
    wins = [sum(P[i, j].item() * pi[j].item() for j in range(n)) for i in range(n)]
    assert duality_gap(P, pi) == pytest.approx(2.0 * (max(wins) - 0.5), abs=1e-14)
    assert duality_gap(P, pi) > 0


def test_regularised_gap_matches_closed_form_and_best_response_is_best():
    P, beta = random_preference_matrix(5, 3), 0.2
    pi, pi_ref = _random_policy(5, 4), _random_policy(5, 5)
    assert duality_gap(P, pi, beta, pi_ref) == pytest.approx(_gap_by_hand(P, pi, beta, pi_ref), abs=1e-13)
    response = best_response(P, pi, beta, pi_ref)
    best = regularised_objective(P, response, pi, beta, pi_ref)
    for seed in range(20):
        assert regularised_objective(P, _random_policy(5, 100 + seed), pi, beta, pi_ref) < best


def test_pure_best_response_splits_ties():
    uniform = torch.full((3,), 1 / 3, dtype=torch.float64)
    assert torch.allclose(best_response(RPS, uniform), uniform)
    rock = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    assert torch.equal(best_response(RPS, rock), torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    assert duality_gap(RPS, uniform) == 0.0 and duality_gap(RPS, rock) == 1.0


# ---------------------------------------------------------------- equilibria


def _fixed_point_residual(P, pi, beta, pi_ref):
    # θ = θ_ref + Pπ/β up to an additive constant: the spread of log π − log π_ref − Pπ/β.
    spread = torch.log(pi) - torch.log(pi_ref) - preference_against(P, pi) / beta
    return (spread.max() - spread.min()).item()


@pytest.mark.parametrize("game", ["rps", 11, 12, 13])
@pytest.mark.parametrize("beta", [0.01, 0.1, 1.0])
def test_regularised_nash_solves_the_fixed_point(game, beta):
    P = RPS if game == "rps" else random_preference_matrix(5, game)
    pi_ref = _random_policy(P.shape[0], 7)
    pi_star = regularised_nash(P, beta, pi_ref)
    assert _fixed_point_residual(P, pi_star, beta, pi_ref) < 1e-10
    assert abs(duality_gap(P, pi_star, beta, pi_ref)) < 1e-10
    assert duality_gap(P, _random_policy(P.shape[0], 8), beta, pi_ref) > 1e-3


@pytest.mark.parametrize("beta", [0.001, 0.1, 10.0])
def test_rps_uniform_reference_gives_uniform_equilibrium(beta):
    uniform = torch.full((3,), 1 / 3, dtype=torch.float64)
    assert torch.allclose(regularised_nash(RPS, beta, uniform), uniform, atol=1e-14)


def test_unregularised_nash_equilibrium():
    assert torch.allclose(nash_equilibrium(RPS), torch.full((3,), 1 / 3, dtype=torch.float64), atol=1e-15)
    for n, seed in [(4, 0), (5, 1), (7, 2), (10, 3), (25, 4)]:
        P = random_preference_matrix(n, seed)
        pi = nash_equilibrium(P)
        assert bool((pi >= 0).all()) and pi.sum().item() == pytest.approx(1.0, abs=1e-14)
        assert duality_gap(P, pi) < 1e-8
    # A Condorcet winner (action 2 beats everything) is the pure equilibrium.
    P = torch.full((3, 3), 0.5, dtype=torch.float64)
    P[2, :2], P[:2, 2], P[0, 1], P[1, 0] = 0.8, 0.2, 0.7, 0.3
    assert torch.allclose(nash_equilibrium(P), torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))


# ---------------------------------------------------------------- closed forms


def _setup(n=4, seed=21):
    P = random_preference_matrix(n, seed)
    return P, _randn(n, seed + 1), _randn(n, seed + 2)


def test_omd_step_by_hand_and_inpo_symbols():
    P, theta, theta_ref = _setup()
    eta, beta = 0.7, 0.3
    pi = [math.exp(t) for t in theta.tolist()]
    pi = [p / sum(pi) for p in pi]
    expected = [
        (1 - eta * beta) * theta[i].item()
        + eta * beta * theta_ref[i].item()
        + eta * sum(P[i, j].item() * pi[j] for j in range(4))
        for i in range(4)
    ]
    assert omd_step(theta, P, eta, beta, theta_ref).tolist() == pytest.approx(expected, abs=1e-14)
    # INPO's (η_INPO, τ) is OMD's step 1/η_INPO with β = τ.
    got = inpo_step(theta, P, eta_inpo=0.5, tau=0.1, theta_ref=theta_ref)
    assert torch.allclose(got, omd_step(theta, P, eta=2.0, beta=0.1, theta_ref=theta_ref), atol=1e-14)


def test_nash_mp_steps_satisfy_the_first_order_conditions():
    P, theta, theta_ref = _setup()
    eta, beta = 0.3, 0.2  # the paper's η (docs/algorithms/nash_mp.md)
    pi_k, pi_ref = torch.softmax(theta, -1), torch.softmax(theta_ref, -1)
    full, half = nash_mp_step(theta, P, eta, beta, theta_ref, return_half=True)
    for new, opponent in [(half, pi_k), (full, torch.softmax(half, -1))]:
        # ∇_π {(1/β)·P(π_opp ≻ π) + KL(π‖π_ref) + (1/η)·KL(π‖π_k)}, P(π_opp ≻ π) = π_oppᵀPπ, is constant on the
        # simplex at the interior minimiser (the paper's prox step).
        pi = torch.softmax(new, -1)
        grad = P.T @ opponent / beta + (torch.log(pi / pi_ref) + 1) + (torch.log(pi / pi_k) + 1) / eta
        assert (grad.max() - grad.min()).item() < 1e-13


def test_egpo_both_phases_start_from_theta_t():
    P, theta, theta_ref = _setup()
    eta, beta = 0.8, 0.1
    full, half = egpo_step(theta, P, eta, beta, theta_ref, return_half=True)
    assert torch.allclose(half, omd_step(theta, P, eta, beta, theta_ref), atol=1e-15)
    opponent_wins = P @ torch.softmax(half, -1)
    from_theta_t = (1 - eta * beta) * theta + eta * beta * theta_ref + eta * opponent_wins
    from_half = (1 - eta * beta) * half + eta * beta * theta_ref + eta * opponent_wins
    assert torch.allclose(full, from_theta_t, atol=1e-15)
    assert not torch.allclose(full, from_half, atol=1e-3)


def test_nash_md_opponent_is_the_geometric_mixture():
    P, theta, theta_ref = _setup()
    eta, beta = 0.5, 0.4
    pi, pi_ref = torch.softmax(theta, -1), torch.softmax(theta_ref, -1)
    mixture = pi ** (1 - 0.125) * pi_ref**0.125
    mixture = mixture / mixture.sum()
    expected = (1 - eta * beta) * theta + eta * beta * theta_ref + eta * (P @ mixture)
    assert torch.allclose(nash_md_step(theta, P, eta, beta, theta_ref, mixture=0.125), expected, atol=1e-14)
    assert torch.allclose(
        nash_md_step(theta, P, eta, beta, theta_ref, mixture=0.0), omd_step(theta, P, eta, beta, theta_ref)
    )
    assert torch.allclose(
        nash_md_step(theta, P, eta, beta, theta_ref), nash_md_step(theta, P, eta, beta, theta_ref, mixture=eta * beta)
    )


def test_run_and_average_policy():
    P, theta, _ = _setup()
    trajectory = run(lambda th: sppo_step(th, P, 0.5), theta, 3)
    assert trajectory.shape == (4, 4) and torch.equal(trajectory[0], theta)
    assert torch.allclose(
        trajectory[2], theta + 0.5 * P @ torch.softmax(theta, -1) + 0.5 * P @ torch.softmax(trajectory[1], -1)
    )
    expected = sum(torch.softmax(row, -1) for row in trajectory) / 4
    assert torch.allclose(average_policy(trajectory), expected, atol=1e-15)


# ---------------------------------------------------------------- conformance (docs/conformance.md)


def _final_gap(step, eta, iterations, beta, theta_ref):
    trajectory = run(lambda th: step(th, RPS, eta, beta, theta_ref), theta_ref.clone(), iterations)
    return duality_gap(RPS, torch.softmax(trajectory[-1], -1), beta, torch.softmax(theta_ref, -1))


def test_rock_paper_scissors_conformance_table():
    # β = 0.1, θ_ref ~ N(0, 1) (seed 1), π_0 = π_ref; 100 preference evaluations per method. η is the step of the
    # linearised methods; Nash-MP's row takes the same prox step, the paper's η = ηβ (docs/games.md).
    beta, theta_ref = 0.1, _randn(3, 1)
    gaps = {
        eta: {
            "omd": _final_gap(omd_step, eta, 100, beta, theta_ref),
            "egpo": _final_gap(egpo_step, eta, 50, beta, theta_ref),
            "nash_mp": _final_gap(nash_mp_step, eta * beta, 50, beta, theta_ref),
        }
        for eta in (2.0, 5.0, 10.0)
    }
    assert gaps[2.0]["egpo"] < 1e-10 and gaps[2.0]["nash_mp"] < 1e-10 and gaps[2.0]["omd"] > 1e-4
    assert gaps[5.0]["omd"] > 0.1 and gaps[5.0]["nash_mp"] < 1e-10
    assert gaps[10.0]["nash_mp"] < gaps[10.0]["egpo"]


def test_sppo_last_iterate_cycles_average_converges():
    theta0 = torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64)
    trajectory = run(lambda th: sppo_step(th, RPS, 0.1), theta0, 2000)
    last_gaps = [duality_gap(RPS, pi) for pi in torch.softmax(trajectory, -1)]
    assert min(last_gaps) > 0.25
    uniform = torch.full((3,), 1 / 3, dtype=torch.float64)
    # Hedge moves away from the interior NE: KL(NE‖π_t) grows instead of shrinking.
    assert kl(uniform, torch.softmax(trajectory[-1], -1)) > kl(uniform, torch.softmax(theta0, -1))
    assert duality_gap(RPS, average_policy(trajectory)) < 0.05


# ---------------------------------------------------------------- APO on a tabular reward


def _suboptimality(r, theta):
    return (r.max() - torch.softmax(theta, -1) @ r).item()


def test_apo_accelerates_iterative_dpo_and_alpha_zero_is_dpo():
    n, beta = 20, 5.0
    r = torch.rand(n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    theta0 = torch.zeros(n, dtype=torch.float64)
    dpo = run(lambda th: iterative_dpo_step(th, r, beta), theta0, 30)
    assert torch.allclose(dpo[-1], 30 * r / beta, atol=1e-12)
    plain = run(lambda th, prev: apo_step(th, prev, r, beta, alpha=0.0), theta0, 30, needs_previous=True)
    assert torch.equal(plain, dpo)

    target = _suboptimality(r, dpo[-1])
    apo = run(lambda th, prev: apo_step(th, prev, r, beta, alpha=0.3), theta0, 30, needs_previous=True)
    first_hit = next(t for t, th in enumerate(apo) if _suboptimality(r, th) <= target)
    assert first_hit < 30 and _suboptimality(r, apo[-1]) < target


def test_apo_sppo_base_alpha_zero_is_sppo():
    P, theta, _ = _setup()
    got = run(lambda th, prev: apo_step(th, prev, P, 0.5, 0.0, base="sppo"), theta, 5, needs_previous=True)
    assert torch.allclose(got, run(lambda th: sppo_step(th, P, 2.0), theta, 5), atol=1e-13)
    with pytest.raises(ValueError, match="base must be"):
        apo_step(theta, theta, P, 0.5, 0.3, base="ipo")
