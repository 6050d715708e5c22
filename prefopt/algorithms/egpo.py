"""EGPO: Extragradient Preference Optimization (Zhou, Fazel, Du; arXiv 2503.08942, COLM 2025).

Objective. Extragradient (mirror-descent form) on the β-regularised preference game J_β; in the tabular case,
with step η and softmax logits θ:
    half step:  θ_{t+½} = (1 − ηβ)·θ_t + ηβ·θ_ref + η·P π_t
    full step:  θ_{t+1} = (1 − ηβ)·θ_t + ηβ·θ_ref + η·P π_{t+½}
Both steps start from θ_t; only the opponent changes. The paper proves last-iterate linear convergence to the
NE of J_β, where one-step online mirror descent (online IPO) needs small steps.

How each step is taken. One gradient step of the online-IPO squared loss (``online_ipo.py``, on the data of
``opponent.py``) from θ_t against an opponent π_s is one mirror-descent step against π_s (with the N²-normalised
tabular loss, SGD with learning rate lr is the step ηβ = 4·lr/N: docs/games.md). An iteration:
1. collect y, y' (broadened sampler), y'' ~ π_t, judge, π_ref log-probs;
2. snapshot the trainable tensors and the optimizer state (adapter tensors only under LoRA; never a deepcopy);
3. optimise on that data: θ_{t+½};
4. collect fresh y, y', y'' with the half-step model (as the repo's LLM trainer does), judge, π_ref log-probs;
5. restore θ_t and the optimizer state, optimise on the new data: θ_{t+1}.

Symbols ↔ official code. β and the sampler settings are the repo's (β = 0.1; y, y' at temperature 2, top-k 10;
length-normalised log-probs). The repo counts two optimizer steps per EG iteration (``num_train_epochs = 2 ×
epochs``); here ``phases = 2`` makes the LR schedule span both.

Departures. None in the update. Under DeepSpeed ZeRO the snapshot also holds each process's fp32 master partition,
so the restore is exact (``Backend.snapshot_optimizer``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefopt.algorithms import Algorithm
from prefopt.algorithms.online_ipo import OnlineIPOParams, loss
from prefopt.algorithms.opponent import collect_against_opponent
from prefopt.batch import Batch
from prefopt.context import Context


def two_phase_step(
    ctx: Context,
    batch: Batch,
    sample_at_half: Callable[[Context], Any],
    build_full: Callable[[Context, Any], Batch] | None = None,
) -> dict:
    """Extragradient / mirror prox: the half step from θ_t, then the full step again from θ_t, on data drawn with
    the half-step policy; parameters and optimizer state are restored from snapshots in between.

    Args:
        sample_at_half: draws what the full step needs while θ_{t+½} is in place (fresh pairs and opponents).
        build_full: turns that into the full step's batch once θ_t is back (e.g. adding π_t's log-probs); by
            default it is the batch itself.
    """
    theta_t, optimizer_t = ctx.backend.snapshot(), ctx.backend.snapshot_optimizer()
    half = ctx.optimise(batch)
    drawn = sample_at_half(ctx)
    ctx.backend.restore(theta_t)
    ctx.backend.restore_optimizer(optimizer_t)
    full_batch = drawn if build_full is None else build_full(ctx, drawn)
    full = ctx.optimise(full_batch)
    return {**{f"half/{k}": v for k, v in half.items()}, **full, **ctx.gather_metrics(full_batch)}


def resample_pairs(ctx: Context) -> Batch:
    """The full step's rows: fresh pairs and opponents, sampled by θ_{t+½} (as the EGPO repository's trainer)."""
    return collect_against_opponent(ctx, ctx.prompts, stream="half_step")


def train_step(ctx: Context, batch: Batch) -> dict:
    """The half step against π_t, then the full step against π_{t+½}, both from θ_t."""
    return two_phase_step(ctx, batch, resample_pairs)


EGPO = Algorithm(
    name="egpo",
    paper=("Extragradient Preference Optimization", "2503.08942"),
    config_class=OnlineIPOParams,
    collect=collect_against_opponent,
    loss=loss,
    train_step=train_step,
    phases=2,
    needs_ref=True,
    game_beta=lambda cfg: cfg.beta,
    exact_expectation=lambda cfg: True,
)
