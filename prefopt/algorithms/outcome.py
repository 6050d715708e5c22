"""What RAFT, RAFT++ and GRPO share: groups of responses scored by an outcome reward, one row per response.

``sample_groups`` draws n_i responses for prompt i (one n for every prompt, or GVM's allocation), scores them with
the judge's reward (``answer_column`` references included) and returns per-response rows whose per-token data hold
the sampling policy's log-probs (π_old, from the rollout: no extra pass). ``clipped_surrogate`` is PPO's clipped
objective, with separate lower and upper clip ranges (DAPO's clip-higher, used by RAFT++ and GVM).
"""

from __future__ import annotations

import math
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


def importance_weights(cfg, samples) -> list[torch.Tensor] | None:
    """Per-token weights of TRL's ``vllm_importance_sampling_correction`` (None when it is off): the ratio
    ρ = π_trainer/π_engine of each sampled token, exp(log π_trainer − log π_engine), or with a ``sequence_*`` mode
    the sequence's ρ = exp(Σ_t (log π_trainer − log π_engine)) on every token; ``*_truncate`` clips ρ into
    [C_min, C_max], ``*_mask`` sets it to 0 outside. The loss multiplies each token's objective by it (a constant:
    both log-probs are fixed at collect time). ``cfg``: the TrainConfig; each sample's ``token_logps`` are the
    trainer's and ``engine_logps`` the engine's (``Context.sample`` recomputes them when the correction is on).
    """
    if not cfg.vllm_importance_sampling_correction:
        return None
    mode = cfg.vllm_importance_sampling_mode
    low = -math.inf if cfg.vllm_importance_sampling_clip_min is None else cfg.vllm_importance_sampling_clip_min
    high = math.inf if cfg.vllm_importance_sampling_clip_max is None else cfg.vllm_importance_sampling_clip_max
    weights = []
    for s in samples:
        diff = s.token_logps.double() - s.engine_logps.double()
        ratio = diff.sum().exp().expand_as(diff) if mode.startswith("sequence") else diff.exp()
        if mode.endswith("truncate"):
            ratio = ratio.clamp(min=low, max=high)
        else:
            ratio = ratio.masked_fill((ratio < low) | (ratio > high), 0.0)
        weights.append(ratio.float())
    return weights


def weighted(objective: torch.Tensor, batch, metrics: dict, mask: torch.Tensor) -> torch.Tensor:
    """The per-token objective [B, S, L] times the importance weights the batch carries (``is_weight``), if any;
    their mean per row goes to ``metrics["is/weight"]``."""
    if "is_weight" not in batch.token:
        return objective
    metrics["is/weight"] = masked_mean(batch.token["is_weight"], mask).mean(-1)
    return objective * batch.token["is_weight"]
