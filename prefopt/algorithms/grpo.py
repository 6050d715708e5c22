"""GRPO: Group Relative Policy Optimization (Shao et al., "DeepSeekMath", arXiv 2402.03300, section 4.1, eq. 3).

Objective (maximised), per group of G responses o_1..o_G to a prompt q sampled from π_old:
    J(θ) = (1/G) Σ_i (1/|o_i|) Σ_t [ min(s_{i,t}·Â_i, clip(s_{i,t}, 1 − ε_low, 1 + ε_high)·Â_i) − β·D_{i,t} ],
    s_{i,t} = π_θ(o_{i,t} | q, o_{i,<t}) / π_old(o_{i,t} | ·),   Â_i = (r_i − mean(r)) / std(r)   (outcome reward),
    D_{i,t} = π_ref/π_θ − log(π_ref/π_θ) − 1   (the unbiased, non-negative "k3" estimate of KL(π_θ ‖ π_ref), eq. 4).
Loss per response: −(1/|o_i|) Σ_t [...]; the loop averages responses, giving (1/G) Σ_i over each group.

Data per iteration. G = ``num_samples`` responses per prompt (or GVM's variable group sizes, ``gvm.py``), their
rewards, π_old's per-token log-probs from the rollout (no extra pass), and π_ref's per-token log-probs from one
no-grad pass when β > 0. A group whose rewards are all equal has Â = 0 and is dropped (no gradient), as is a group of
one response (GVM may allocate that).

Symbols ↔ TRL/verl. β is TRL's ``beta`` (verl's ``kl_loss_coef``; GVM's runs: 0.001 with ``low_var_kl`` = k3);
ε_low/ε_high are TRL's ``epsilon``/``epsilon_high`` (verl's ``clip_ratio_low``/``clip_ratio_high``);
``scale_rewards`` false is Dr. GRPO's mean-only advantage. std is the population std over the group (DeepSeekMath
does not specify; verl and TRL use the sample std: the difference is a factor sqrt(G/(G−1)) in Â).
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
from prefopt.ops import group_advantages, masked_mean


@dataclass
class GRPOParams:
    """GRPO hyperparameters (the GVM paper's settings for its GRPO runs)."""

    num_samples: int = field(default=8, metadata={"help": "G, responses per prompt (GVM: the per-prompt average)."})
    beta: float = field(default=0.001, metadata={"help": "β, coefficient of the k3 KL(π_θ‖π_ref) penalty (0: off)."})
    clip_low: float = field(default=0.2, metadata={"help": "ε_low: the ratio is clipped below at 1 − ε_low."})
    clip_high: float = field(default=0.2, metadata={"help": "ε_high: clipped above at 1 + ε_high (DAPO: 0.28)."})
    scale_rewards: bool = field(default=True, metadata={"help": "Divide advantages by the group std (Dr. GRPO: off)."})
    std_epsilon: float = field(default=1e-6, metadata={"help": "Added to the group std before dividing."})

    def validate(self) -> None:
        if self.num_samples < 2:
            raise ConfigError(f"config key 'num_samples' must be >= 2 (a group), got {self.num_samples}")
        if self.beta < 0:
            raise ConfigError(f"config key 'beta' must be >= 0, got {self.beta}")
        if not 0 <= self.clip_low < 1 or self.clip_high < 0:
            raise ConfigError("config keys 'clip_low' (in [0, 1)) and 'clip_high' (>= 0) bound the ratio clip")


def collect(ctx: Context, prompts, counts=None) -> Batch:
    cfg: GRPOParams = ctx.algo_cfg
    groups, rewards = sample_groups(ctx, prompts, cfg.num_samples if counts is None else counts)
    kept, advantages = [], []
    for g, r in zip(groups, rewards):
        if len(g) < 2 or bool((r == r[0]).all()):
            continue  # Â = 0 for every response: no gradient
        kept.extend(g)
        advantages.append(group_advantages(r, cfg.scale_rewards, cfg.std_epsilon))
    prompt_ids, response_ids = [s.prompt_ids for s in kept], [s.response_ids for s in kept]
    token_data = {"old_logps": [s.token_logps for s in kept]}
    is_weight = importance_weights(ctx.cfg, kept)
    if is_weight is not None:
        token_data["is_weight"] = is_weight
    if cfg.beta > 0:
        token_data["ref_logps"] = ctx.anchors.token_logps(prompt_ids, response_ids, policy="reference")
    metrics, weights = reward_metrics(rewards)
    metrics["grpo/groups_kept"] = len(advantages) / max(len(groups), 1)
    adv = torch.cat(advantages).float().view(-1, 1) if advantages else torch.zeros(0, 1)
    return Batch(prompt_ids, response_ids, 1, {"advantage": adv}, token_data, metrics=metrics, metric_weights=weights)


def loss(cfg: GRPOParams, batch: MiniBatch, policy: PolicyLogps):
    """Per-response GRPO loss. Shapes: advantage [B, 1]; token old_logps/ref_logps (and is_weight, the
    importance-sampling correction's weights of the surrogate) [B, 1, L]. Returns loss [B]."""
    ratio = torch.exp(policy.token_logps - batch.token["old_logps"])
    objective = clipped_surrogate(ratio, batch.row["advantage"][..., None], cfg.clip_low, cfg.clip_high)
    metrics = {"clip/fraction": clip_fraction(ratio, cfg, policy.mask)}
    objective = weighted(objective, batch, metrics, policy.mask)
    if cfg.beta > 0:
        log_ref_ratio = batch.token["ref_logps"] - policy.token_logps
        kl = torch.exp(log_ref_ratio) - log_ref_ratio - 1
        objective = objective - cfg.beta * kl
        metrics["kl/k3"] = masked_mean(kl.detach(), policy.mask).squeeze(1)
    losses = -masked_mean(objective, policy.mask).squeeze(1)
    return losses, {"loss/grpo": losses.detach(), **metrics}


GRPO = Algorithm(
    stale_samples="behaviour_ratio",
    needs_reward_judge=True,
    name="grpo",
    paper=("DeepSeekMath (GRPO)", "2402.03300"),
    config_class=GRPOParams,
    collect=collect,
    loss=loss,
    needs_ref=lambda cfg: cfg.beta > 0,
)
