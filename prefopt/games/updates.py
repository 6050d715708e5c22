"""Exact one-step updates of every Nash-learning method on a preference game, and running them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from prefopt.games.equilibria import preference_against

Tensor = torch.Tensor


# ------------------------------------------------------------------------------------------- exact updates
# Shared arguments of the steps: theta = θ_t [N] (logits), P [N, N], eta = step η > 0, beta = β ≥ 0 (KL to π_ref),
# theta_ref = θ_ref [N]. Each returns θ_{t+1} [N], unnormalised (logits are defined up to a constant).


def _omd_form(theta: Tensor, theta_ref: Tensor, wins: Tensor, eta: float, beta: float) -> Tensor:
    # The linearised-regulariser mirror step shared by OMD, EGPO and Nash-MD: (1 − ηβ)θ + ηβθ_ref + η·wins.
    return (1.0 - eta * beta) * theta + eta * beta * theta_ref + eta * wins


def _prox_form(theta: Tensor, theta_ref: Tensor, wins: Tensor, eta: float, beta: float) -> Tensor:
    # Nash-MP's implicit step, the paper's η: the KL to π_ref inside the prox gives (θ + ηθ_ref + (η/β)·wins)/(1 + η).
    return (theta + eta * theta_ref + (eta / beta) * wins) / (1.0 + eta)


def _wins(P: Tensor, theta: Tensor) -> Tensor:
    return preference_against(P, torch.softmax(theta, dim=-1))


def sppo_step(theta: Tensor, P: Tensor, eta: float) -> Tensor:
    """SPPO's idealised update (arXiv 2405.00675; docs/algorithms/sppo.md): Hedge on the unregularised game, β = 0.

    π_{t+1} ∝ π_t·exp(η·P(·≻π_t)), i.e. θ_{t+1} = θ_t + η·Pπ_t [N]. The practical loss regresses onto it with
    log Z replaced by η/2. The average iterate converges to the NE; the last iterate can cycle.
    """
    return theta + eta * _wins(P, theta)


def omd_step(theta: Tensor, P: Tensor, eta: float, beta: float, theta_ref: Tensor) -> Tensor:
    """Online mirror descent on J_β = INPO = EGPO's "online IPO 1" (docs/algorithms/online_ipo.md, inpo.md).

    θ_{t+1} = (1 − ηβ)·θ_t + ηβ·θ_ref + η·Pπ_t [N], i.e. π_{t+1} ∝ π_t^{1−ηβ}·π_ref^{ηβ}·exp(η·P(·≻π_t)).
    In INPO's symbols η ≡ 1/η_INPO and β ≡ τ (:func:`inpo_step`).
    """
    return _omd_form(theta, theta_ref, _wins(P, theta), eta, beta)


def inpo_step(theta: Tensor, P: Tensor, eta_inpo: float, tau: float, theta_ref: Tensor) -> Tensor:
    """INPO's OMD step in the paper's symbols (arXiv 2407.00617, §3; docs/algorithms/inpo.md).

    π_{t+1}(y) ∝ exp(P(y≻π_t)/η)·π_ref(y)^{τ/η}·π_t(y)^{1−τ/η}, i.e.
    θ_{t+1} = (1 − τ/η)·θ_t + (τ/η)·θ_ref + Pπ_t/η [N], with η = ``eta_inpo`` (1/η is the step) and τ = ``tau``:
    :func:`omd_step` with step 1/η_INPO and β = τ.
    """
    ratio = tau / eta_inpo
    return (1.0 - ratio) * theta + ratio * theta_ref + _wins(P, theta) / eta_inpo


def egpo_step(
    theta: Tensor, P: Tensor, eta: float, beta: float, theta_ref: Tensor, return_half: bool = False
) -> Tensor | tuple[Tensor, Tensor]:
    """EGPO: mirror-descent extragradient on J_β (arXiv 2503.08942; docs/algorithms/egpo.md).

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
    """Nash-MP: mirror prox on J_β, the KL to π_ref inside the prox (arXiv 2505.19731; docs/algorithms/nash_mp.md).

    In the paper's symbols (η its learning rate, β > 0; the prox objective from a secondary source quoting the paper):
    π_{k+½} = argmin_π (1/β)·P(π_k ≻ π) + KL(π‖π_ref) + (1/η)·KL(π‖π_k)
        ⇒ θ_{k+½} = [θ_k + η·θ_ref + (η/β)·Pπ_k]/(1 + η);
    π_{k+1}: the same from π_k against π_{k+½} ⇒ θ_{k+1} = [θ_k + η·θ_ref + (η/β)·Pπ_{k+½}]/(1 + η).

    Returns:
        θ_{k+1} [N], or (θ_{k+1}, θ_{k+½}) when ``return_half``.
    """
    if beta <= 0:
        raise ValueError(f"nash_mp_step needs beta > 0 (its prox objective has 1/β), got {beta}")
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
    EGPO's LLM baseline uses a fixed μ = 0.125 (docs/algorithms/nash_md.md): pass ``mixture=0.125``.
    """
    mu = eta * beta if mixture is None else mixture
    log_mixture = (1.0 - mu) * torch.log_softmax(theta, dim=-1) + mu * torch.log_softmax(theta_ref, dim=-1)
    return _omd_form(theta, theta_ref, _wins(P, log_mixture), eta, beta)


def iterative_dpo_step(theta: Tensor, r: Tensor, beta: float) -> Tensor:
    """Iterative DPO on a reward r [N] with the previous iterate as reference: θ_{t+1} = θ_t + r/β [N].

    With exact Bradley–Terry data the DPO optimum is π_{t+1} ∝ π_t·exp(r/β): a proximal-point step on the linear
    objective E_π[r] (docs/algorithms/dpo.md).
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
    """APO (arXiv 2410.06293; docs/algorithms/apo.md): the base proximal step centred at the extrapolated iterate.

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
