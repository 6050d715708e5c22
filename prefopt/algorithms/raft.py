"""RAFT and RAFT++: rejection sampling, then fine-tuning on the accepted responses.

Papers: RAFT, Dong et al., "RAFT: Reward rAnked FineTuning for Generative Foundation Model Alignment" (arXiv
2304.06767); RAFT++ and its reading as EM on a latent chain of thought: Yao, Hao, Zhang, Dong, Xiong, Jiang, Zhang,
"Optimizing Chain-of-Thought Reasoners via Gradient Variance Minimization in Rejection Sampling and RL" (arXiv
2505.02391, section 2; code RLHFlow/GVM). docs/algorithms/raft.md.

Objective. E-step: draw n responses per prompt from π_old = π_t and accept those with a positive outcome reward
(a correct final answer); M-step: maximise their likelihood. With the official code's advantage A = max(r, 0)
(1 for an accepted 0/1-reward response, 0 otherwise), per response:
    RAFT:    ℓ(θ) = −A · (1/|y|) Σ_t log π_θ(y_t | x, y_<t)
    RAFT++:  ℓ(θ) = −A · (1/|y|) Σ_t min(s_t, clip(s_t, 1 − ε_low, 1 + ε_high)),  s_t = π_θ(y_t | ·)/π_old(y_t | ·)
RAFT++ adds PPO's importance ratio and clipping, so that several minibatch steps on one batch of samples stay close
to the sampling policy (its gradient at θ = θ_old equals RAFT's).

Data per iteration. ``num_samples`` responses per prompt (or GVM's allocation, ``gvm.py``), the reward of each,
π_old's per-token log-probs from the rollout. Only accepted responses become rows: the others have A = 0 and no
gradient.

Symbols ↔ official code. ε_low, ε_high are ``clip_ratio_low``/``clip_ratio_high`` (0.2 and 0.2: the GVM fork's
verl defaults, which its RAFT++ scripts leave unset).

Departures. The code's "token-mean" aggregation averages over every token of a minibatch, rejected responses'
included; prefopt averages per response over accepted rows only, which rescales the step by the acceptance rate
and gives every accepted response the same weight whatever its length (as GRPO's original sequence mean).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from prefopt.algorithms import Algorithm
from prefopt.algorithms.outcome import (
    clip_fraction,
    clipped_surrogate,
    importance_weights,
    reward_metrics,
    sample_groups,
    weighted,
)
from prefopt.batch import Batch, MiniBatch, PolicyLogps
from prefopt.context import Context
from prefopt.errors import ConfigError
from prefopt.ops import masked_mean


@dataclass
class RAFTParams:
    """RAFT / RAFT++ hyperparameters (GVM repository defaults)."""

    num_samples: int = field(default=8, metadata={"help": "n, responses per prompt (GVM: the per-prompt average)."})
    clip_low: float = field(default=0.2, metadata={"help": "RAFT++: ε_low, ratio clipped below at 1 − ε_low."})
    clip_high: float = field(default=0.2, metadata={"help": "RAFT++: ε_high, ratio clipped above at 1 + ε_high."})

    def validate(self) -> None:
        if self.num_samples < 1:
            raise ConfigError(f"config key 'num_samples' must be >= 1, got {self.num_samples}")
        if not 0 <= self.clip_low < 1 or self.clip_high < 0:
            raise ConfigError("config keys 'clip_low' (in [0, 1)) and 'clip_high' (>= 0) bound the ratio clip")


def accepted_rows(groups, rewards: list[torch.Tensor], train_cfg) -> Batch:
    """One row per response with A = max(r, 0) > 0; per-token π_old log-probs from the rollout (and, with the
    importance-sampling correction of ``train_cfg``, its weights)."""
    kept = [(s, float(r)) for g, rs in zip(groups, rewards) for s, r in zip(g, rs.tolist()) if r > 0]
    total = sum(len(g) for g in groups)
    metrics, weights = reward_metrics(rewards)
    token_data = {"old_logps": [s.token_logps for s, _ in kept]}
    is_weight = importance_weights(train_cfg, [s for s, _ in kept])
    if is_weight is not None:
        token_data["is_weight"] = is_weight
    return Batch(
        [s.prompt_ids for s, _ in kept],
        [s.response_ids for s, _ in kept],
        seqs_per_row=1,
        row_data={"advantage": torch.tensor([a for _, a in kept], dtype=torch.float32).view(-1, 1)},
        token_data=token_data,
        metrics={**metrics, "raft/accepted_fraction": len(kept) / max(total, 1)},
        metric_weights={**weights, "raft/accepted_fraction": total},
    )


def collect(ctx: Context, prompts, counts=None) -> Batch:
    groups, rewards = sample_groups(ctx, prompts, ctx.algo_cfg.num_samples if counts is None else counts)
    return accepted_rows(groups, rewards, ctx.cfg)


def raft_loss(cfg: RAFTParams, batch: MiniBatch, policy: PolicyLogps):
    """−A·(mean token log-likelihood) per accepted response. Shapes: advantage [B, 1]; returns loss [B]."""
    nll = -masked_mean(policy.token_logps, policy.mask)
    losses = (batch.row["advantage"] * nll).squeeze(1)
    return losses, {"loss/raft": losses.detach()}


def raftpp_loss(cfg: RAFTParams, batch: MiniBatch, policy: PolicyLogps):
    """−A·mean_t min(s_t, clip(s_t)) per accepted response. Shapes: token["old_logps"] [B, 1, L]; loss [B]."""
    ratio = torch.exp(policy.token_logps - batch.token["old_logps"])
    surrogate = clipped_surrogate(ratio, batch.row["advantage"][..., None], cfg.clip_low, cfg.clip_high)
    metrics = {"clip/fraction": clip_fraction(ratio, cfg, policy.mask)}
    surrogate = weighted(surrogate, batch, metrics, policy.mask)
    losses = -masked_mean(surrogate, policy.mask).squeeze(1)
    return losses, {"loss/raftpp": losses.detach(), **metrics}


RAFT = Algorithm(
    stale_samples="any",
    needs_reward_judge=True,
    name="raft",
    paper=("RAFT: Reward rAnked FineTuning", "2304.06767"),
    config_class=RAFTParams,
    collect=collect,
    loss=raft_loss,
)
RAFT_PP = Algorithm(
    stale_samples="behaviour_ratio",
    needs_reward_judge=True,
    name="raftpp",
    paper=("Optimizing Chain-of-Thought Reasoners via Gradient Variance Minimization (RAFT++)", "2505.02391"),
    config_class=RAFTParams,
    collect=collect,
    loss=raftpp_loss,
)
