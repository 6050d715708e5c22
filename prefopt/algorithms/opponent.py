"""Pairs judged against an opponent: the data the online-IPO family shares (online IPO, EGPO, Nash-MD, Nash-MP).

For each prompt a pair (y, y') from a (possibly broadened) sampler, an opponent y'' from the current policy or its
geometric mixture with π_ref, and the target P(y ≻ y'') − P(y' ≻ y''), an unbiased estimate of
P(y ≻ π_s) − P(y' ≻ π_s) (under ``game_exact``, that expectation itself: ``Context.pairs_against``). The loss each
method fits to it is in its own module; the derivation is in docs/algorithms/online_ipo.md.
"""

from __future__ import annotations

import torch

from prefopt.batch import Batch
from prefopt.context import Context


def sequence_logps(token_logps: list[torch.Tensor], cfg) -> torch.Tensor:
    """[N] sequence log-probs from per-token ones: means with ``normalize_logprobs``, else sums."""
    return torch.stack([t.mean() if cfg.normalize_logprobs else t.sum() for t in token_logps])


def collect_against_opponent(ctx: Context, prompts, stream: str = "policy", mixture: float = 0.0) -> Batch:
    """Rows (y, y') with the target P(y ≻ y'') − P(y' ≻ y''), y'' drawn from the opponent: the current policy, or
    with ``mixture`` = μ > 0 its token-level geometric mixture with π_ref (Nash-MD). Under ``game_exact`` the rows
    are every pair of actions, weighted, with the target's expectation (``Context.pairs_against``).

    Row data: ``ref_logps`` and ``sample_logps`` (the sampling policy's) [R, 2] for (y, y'), ``pref_diff`` [R].
    """
    cfg = ctx.algo_cfg
    sampler = {"temperature": cfg.pair_temperature, "top_k": cfg.pair_top_k}
    pairs, pref_diff, weights = ctx.pairs_against(prompts, stream, sampler, mixture)
    prompt_ids = [s.prompt_ids for pair in pairs for s in pair]
    response_ids = [s.response_ids for pair in pairs for s in pair]
    ref = sequence_logps(ctx.anchors.token_logps(prompt_ids, response_ids, policy="reference"), cfg).view(-1, 2)
    # The rollout's log-probs are the sampling-time policy's own (temperature 1), whatever the sampler's settings.
    sampled = sequence_logps([s.token_logps for pair in pairs for s in pair], cfg).view(-1, 2)
    mean_abs = pref_diff.abs().mean() if weights is None else (weights * pref_diff.abs()).sum() / weights.sum()
    return Batch(
        prompt_ids,
        response_ids,
        seqs_per_row=2,
        row_data={"ref_logps": ref, "sample_logps": sampled, "pref_diff": pref_diff},
        metrics={f"pref/{stream}_abs_target": float(mean_abs)},
        row_weights=weights,
    )
