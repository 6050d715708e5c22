"""Iterative (online) DPO: the baseline APO accelerates and INPO compares against.

Paper: DPO (Rafailov et al., arXiv 2305.18290, eq. 7) applied round by round on fresh pairs from the current
policy, as in the iterative/online DPO pipelines (RLHFlow's Online-RLHF) INPO and APO compare with:
    ℓ(θ) = − log σ( β · [ log π_θ(y_w)/π_ref'(y_w) − log π_θ(y_l)/π_ref'(y_l) ] ),
where the reference π_ref' is the iterate π_t (``reference: iterate``, the proximal-point form APO analyses:
He, Yuan, Gu, arXiv 2410.06293) or the initial policy (``reference: initial``).

Data per iteration. K samples per prompt from π_t; one pair per prompt, best and worst by a reward judge or by a
knock-out tournament with a pairwise judge (``prefopt.judges.selection``); prompts without a strict pair are
dropped. log π_t comes from the rollout; log π_ref from one no-grad pass when ``reference: initial``.

Tabular form (docs/algorithms/dpo.md): for a Bradley-Terry reward r, the exact proximal step with reference π_t
is θ_{t+1} = θ_t + r/β (``prefopt.games.iterative_dpo_step``).

Stale samples (asynchronous rollouts). With ``reference: iterate`` the loss reads the sampling policy's log-probs
as π_t's, so stale samples need ``anchor_logps: recompute``; else a round would be centred on π_{t−j}
(θ_{t+1} = θ_{t−j} + r/β). With ``reference: initial`` it reads none and takes stale pairs as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

from prefopt.algorithms import Algorithm
from prefopt.batch import Batch, MiniBatch, PolicyLogps, pair_sequences
from prefopt.context import Context
from prefopt.errors import ConfigError


@dataclass
class DPOParams:
    """Iterative DPO hyperparameters."""

    beta: float = field(default=0.1, metadata={"help": "β, DPO's inverse temperature (TRL default 0.1)."})
    num_samples: int = field(default=8, metadata={"help": "K, samples per prompt (RLHFlow's best-of-8 pairs)."})
    pairs: Literal["auto", "best_worst", "tournament"] = field(
        default="auto", metadata={"help": "best_worst by reward, tournament with a pairwise judge; auto picks."}
    )
    reference: Literal["iterate", "initial"] = field(
        default="iterate", metadata={"help": "DPO's reference: π_t (proximal point) or the initial policy."}
    )

    def validate(self) -> None:
        if self.beta <= 0:
            raise ConfigError(f"config key 'beta' must be > 0, got {self.beta}")
        if self.num_samples < 2:
            raise ConfigError(f"config key 'num_samples' must be >= 2, got {self.num_samples}")


def collect(ctx: Context, prompts) -> Batch:
    """One (winner, loser) pair per prompt with its reference log-probs: π_t's from the rollout (``iterate``) or
    π_ref's from one no-grad pass (``initial``)."""
    if ctx.algo_cfg.reference == "iterate":
        return collect_pairs(ctx, prompts, lambda prompt_ids, response_ids, sampled: sampled)
    return collect_pairs(
        ctx, prompts, lambda ids, responses, _: ctx.anchors.logps(ids, responses, policy="reference").view(-1, 2)
    )


def collect_pairs(ctx: Context, prompts, reference: Callable[[list, list, torch.Tensor], torch.Tensor]) -> Batch:
    """K samples per prompt reduced to one (winner, loser) pair (``num_samples``, ``pairs``), with ``ref_logps``
    [R, 2] = reference(prompt_ids, response_ids, the sampling policy's log-probs [R, 2]) (APO's: the extrapolated
    π̂_t)."""
    pairs = ctx.sample_pairs(prompts, ctx.algo_cfg.num_samples, ctx.algo_cfg.pairs)
    prompt_ids, response_ids, sampled = pair_sequences(pairs)
    return Batch(
        prompt_ids,
        response_ids,
        seqs_per_row=2,
        row_data={"ref_logps": reference(prompt_ids, response_ids, sampled)},
        metrics={"pref/pairs_kept": len(pairs) / max(len(prompts), 1)},
    )


def dpo_loss(beta: float, policy_logps: torch.Tensor, ref_logps: torch.Tensor):
    """−log σ(β·[(lp_w − ref_w) − (lp_l − ref_l)]) per pair; inputs [B, 2] as (winner, loser)."""
    logratios = policy_logps - ref_logps  # [B, 2]
    margin = beta * (logratios[:, 0] - logratios[:, 1])  # [B]
    return -F.logsigmoid(margin), logratios, margin


def loss(cfg: DPOParams, batch: MiniBatch, policy: PolicyLogps):
    """Per-pair DPO loss. Shapes: policy.logps, batch.row["ref_logps"]: [B, 2]. Returns loss [B]."""
    losses, logratios, margin = dpo_loss(cfg.beta, policy.logps, batch.row["ref_logps"])
    metrics = {
        "loss/dpo": losses.detach(),
        "reward/margin": margin.detach(),
        "reward/accuracy": (margin > 0).float().detach(),
        "kl/logratio_chosen": logratios[:, 0].detach(),
    }
    return losses, metrics


DPO = Algorithm(
    # The iterate's log-probs are the rollout's own: stale samples would anchor at the sampling policy π_{t−j}.
    stale_samples=lambda cfg: "current_anchor" if cfg.reference == "iterate" else "any",
    name="dpo",
    paper=("Direct Preference Optimization (iterative)", "2305.18290"),
    config_class=DPOParams,
    collect=collect,
    loss=loss,
    needs_ref=lambda cfg: cfg.reference == "initial",
)
