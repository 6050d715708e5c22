"""APO: Accelerated Preference Optimization (He, Yuan, Gu; arXiv 2410.06293). Not TRL's "Anchored" APO
(`apo_zero`, `apo_down` loss types), a different method.

Objective. Iterative DPO and SPPO are proximal point methods in policy space: each round solves a KL-proximal
problem centred on the previous policy. APO adds Nesterov-style extrapolation between rounds:
    π̂_t ∝ π_t · (π_t / π_{t−1})^α,      π_{t+1} = argmin_π L(π; D_t, reference = π̂_t),
with L the DPO loss (``base: dpo``) or the SPPO loss (``base: sppo``); α = 0 is the base iterative method.

How π̂_t is used (the project's decision, docs/algorithms/apo.md; ``momentum: logprob``, the default): exactly,
in log-prob space, on the iteration's responses: log π̂_t(y) = (1+α)·log π_t(y) − α·log π_{t−1}(y) (− log Z).
log π_t comes from the rollout; log π_{t−1} from one no-grad pass with the previous iterate's weights (a snapshot
of trainable tensors kept in ``ctx.algo_state``; adapter tensors only under LoRA). The DPO step is a difference of
log-ratios, so log Z cancels; the SPPO step regresses absolute log-ratios, so a per-prompt estimate from the K
samples of π_t is subtracted: log Z ≈ log mean_k exp(α·(log π_t(y_k) − log π_{t−1}(y_k))). Samples come from π_t
and training starts each round from π_t. ``momentum: params`` is the heuristic alternative, Nesterov's
extrapolation in parameter space (adapter parameters under LoRA): after each round, θ̂_{t+1} = θ_{t+1} + α(θ_{t+1} −
θ_t), θ_t and θ_{t+1} the *proximal* iterates (the weights right after a round's optimisation, θ_0 the initial ones;
never an extrapolated θ̂, which would only scale each step by 1 + α); the next round samples from θ̂_{t+1}, takes it as
its reference and starts from it. The two modes give the same proximal iterates only for exact tabular DPO steps
on softmax logits (``prefopt.games.apo_step``): there logits, parameters and log-probs extrapolate alike and the
step's optimum π̂_t·exp(r/β) does not depend on the sampler; otherwise they differ (SGD's inexact steps, a
network's nonlinear logits, SPPO's win rates against π̂_t instead of π_t).

Symbols. α is the paper's momentum (0.3 here: the recalled value, unconfirmed); β (DPO) and η, K (SPPO) keep
their base methods' meanings.

Departures. The paper is believed to extrapolate in parameter space for LLMs [unconfirmed]; the default here is
the exact log-prob form, with the parameter form one switch away.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch

from prefopt.algorithms import Algorithm
from prefopt.algorithms.dpo import collect_pairs, dpo_loss
from prefopt.algorithms.sppo import best_worst, regression_loss, rows_from_groups, sample_and_score
from prefopt.batch import Batch, MiniBatch, PolicyLogps
from prefopt.context import Context
from prefopt.errors import ConfigError


@dataclass
class APOParams:
    """APO hyperparameters: α and the base method's own."""

    alpha: float = field(default=0.3, metadata={"help": "α, the extrapolation (momentum) weight; 0 = base method."})
    base: Literal["dpo", "sppo"] = field(default="dpo", metadata={"help": "The proximal step: DPO or SPPO loss."})
    momentum: Literal["logprob", "params"] = field(
        default="logprob", metadata={"help": "Exact log-prob extrapolation, or θ + α(θ_{t+1} − θ_t) in parameters."}
    )
    beta: float = field(default=0.1, metadata={"help": "β of the DPO step (base: dpo)."})
    eta: float = field(default=1000.0, metadata={"help": "η of the SPPO step (base: sppo)."})
    num_samples: int = field(default=8, metadata={"help": "K, samples per prompt from π_t."})
    pairs: Literal["auto", "best_worst", "tournament"] = field(
        default="auto", metadata={"help": "DPO pairs: best_worst by reward, tournament by preference; auto picks."}
    )

    def validate(self) -> None:
        if self.alpha < 0:
            raise ConfigError(f"config key 'alpha' must be >= 0, got {self.alpha}")
        if self.beta <= 0 or self.eta <= 0:
            raise ConfigError("config keys 'beta' and 'eta' must be > 0")
        if self.num_samples < 2:
            raise ConfigError(f"config key 'num_samples' must be >= 2, got {self.num_samples}")


def _extrapolated(ctx: Context, prompt_ids, response_ids, current: torch.Tensor) -> torch.Tensor:
    """(1+α)·log π_t − α·log π_{t−1} on the given sequences, shaped as ``current`` (log π_t of the sequences in
    order); π_{t−1} = π_t in the first iteration."""
    alpha, previous = ctx.algo_cfg.alpha, ctx.algo_state.get("previous")
    if ctx.algo_cfg.momentum == "params" or previous is None or alpha == 0:
        return current
    previous_logps = ctx.anchors.logps(prompt_ids, response_ids, policy=previous).view_as(current)
    return (1 + alpha) * current - alpha * previous_logps


def _collect_dpo(ctx: Context, prompts) -> Batch:
    """DPO's pairs with the extrapolated reference π̂_t."""
    return collect_pairs(ctx, prompts, lambda ids, responses, current: _extrapolated(ctx, ids, responses, current))


def _collect_sppo(ctx: Context, prompts) -> Batch:
    """SPPO's data (K samples, P̂, best and worst rows) with the extrapolated anchor π̂_t in place of π_t."""
    k = ctx.algo_cfg.num_samples
    groups, win_rates = sample_and_score(ctx, prompts, k)
    prompt_ids, response_ids, current = rows_from_groups(groups, [list(range(k))] * len(groups))  # [P, K]
    extrapolated = _extrapolated(ctx, prompt_ids, response_ids, current.flatten()).view_as(current)
    # log Z of π̂_t ∝ π_t (π_t/π_{t−1})^α, estimated with π_t's own samples: log mean_k exp(α·Δ_k). Without
    # extrapolation (α = 0, the first iteration) π̂_t = π_t exactly and Z = 1: skip the estimate's round-off.
    anchor = current
    if not torch.equal(extrapolated, current):
        anchor = extrapolated - (torch.logsumexp(extrapolated - current, 1, keepdim=True) - math.log(k))
    idx = best_worst(win_rates)
    prompt_ids, response_ids, _ = rows_from_groups(groups, idx)
    rows, pick = torch.tensor(idx), torch.arange(len(groups))[:, None]
    row_data = {"anchor_logps": anchor[pick, rows], "win_rates": win_rates[pick, rows].float()}
    return Batch(prompt_ids, response_ids, seqs_per_row=2, row_data=row_data)


def collect(ctx: Context, prompts) -> Batch:
    batch = _collect_dpo(ctx, prompts) if ctx.algo_cfg.base == "dpo" else _collect_sppo(ctx, prompts)
    # logprob: π_t (never extrapolated), the next iteration's π_{t−1}. params: only θ_0 here; the weights now are the
    # extrapolated θ̂_t, so end_iteration keeps each proximal iterate θ_{t+1} itself.
    if ctx.algo_cfg.momentum == "logprob" or "previous" not in ctx.algo_state:
        ctx.algo_state["previous"] = ctx.backend.snapshot()
    return batch


def loss(cfg: APOParams, batch: MiniBatch, policy: PolicyLogps):
    """The base method's per-row loss with the extrapolated reference π̂_t. Returns loss [B]."""
    if cfg.base == "sppo":
        return regression_loss(cfg.eta, batch, policy)
    losses, _, margin = dpo_loss(cfg.beta, policy.logps, batch.row["ref_logps"])
    return losses, {"loss/apo_dpo": losses.detach(), "reward/margin": margin.detach()}


def end_iteration(ctx: Context) -> None:
    """``momentum: params``: θ̂_{t+1} = θ_{t+1} + α(θ_{t+1} − θ_t), both proximal iterates (the weights after a round's
    optimisation, θ_0 the initial ones); θ_{t+1} is kept in ``algo_state`` (saved with checkpoints) for the next."""
    cfg: APOParams = ctx.algo_cfg
    if cfg.momentum != "params" or cfg.alpha == 0:
        return
    previous, now = ctx.algo_state["previous"], ctx.backend.snapshot()
    ctx.backend.restore({k: v + cfg.alpha * (v - previous[k]) for k, v in now.items()})
    ctx.algo_state["previous"] = now


APO = Algorithm(
    stale_samples="current_anchor",
    name="apo",
    paper=("Accelerated Preference Optimization", "2410.06293"),
    config_class=APOParams,
    collect=collect,
    loss=loss,
    end_iteration=end_iteration,
)
