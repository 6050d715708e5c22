"""What RAFT, RAFT++ and GRPO share: groups of responses scored by an outcome reward, one row per response.

``sample_groups`` draws n_i responses for prompt i (one n for every prompt, or GVM's allocation), scores them with
the judge's reward (``answer_column`` references included) and returns per-response rows whose per-token data hold
the sampling policy's log-probs (π_old, from the rollout: no extra pass). ``clipped_surrogate`` is PPO's clipped
objective, with separate lower and upper clip ranges (DAPO's clip-higher, used by RAFT++ and GVM).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from prefopt.context import Context
from prefopt.ops import masked_mean


def sample_groups(ctx: Context, prompts, counts: int | Sequence[int], stream: str = "policy"):
    """Sample and score (the algorithm declares ``needs_reward_judge``, so the judge is a RewardJudge). Returns
    (groups of rollout Samples, rewards: per prompt a float32 tensor [n_i])."""
    groups = ctx.sample(prompts, counts, stream).groups()
    texts = [[s.text for s in g] for g in groups]
    rewards = ctx.judge.grouped_rewards([p.prompt for p in prompts], texts, ctx.references(prompts))
    return groups, [r.float() for r in rewards]


def reward_metrics(rewards: list[torch.Tensor]) -> tuple[dict[str, float], dict[str, float]]:
    """(metrics, their weights): the mean reward over responses, and the fraction of prompts whose group has at
    least one positive reward (pass@n for 0/1) over the prompts with a group."""
    flat = torch.cat(rewards) if rewards else torch.zeros(0)
    solved = [bool((r > 0).any()) for r in rewards if len(r)]
    metrics = {
        "reward/mean": float(flat.mean()) if len(flat) else 0.0,
        "reward/solved_fraction": sum(solved) / max(len(solved), 1),
    }
    return metrics, {"reward/mean": len(flat), "reward/solved_fraction": len(solved)}


def clipped_surrogate(ratio: torch.Tensor, advantage: torch.Tensor, eps_low: float, eps_high: float) -> torch.Tensor:
    """min(s·A, clip(s, 1 − ε_low, 1 + ε_high)·A) per token (PPO, Schulman et al. 2017, eq. 7; DAPO's clip-higher).

    Shapes: ratio [..., L], advantage broadcastable to it.
    """
    return torch.minimum(ratio * advantage, ratio.clamp(1 - eps_low, 1 + eps_high) * advantage)


def clip_fraction(ratio: torch.Tensor, cfg, mask: torch.Tensor) -> torch.Tensor:
    """Per row, the fraction of response tokens whose ratio lies outside the clip range: [B, S, L] → [B]."""
    clipped = ((ratio < 1 - cfg.clip_low) | (ratio > 1 + cfg.clip_high)).float()
    return masked_mean(clipped.detach(), mask).mean(-1)
