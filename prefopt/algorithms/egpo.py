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
1. collect y, y' (broadened sampler), y'' ~ π_t, judge, π_ref log-probs, on the half step's prompts;
2. snapshot the trainable tensors and the optimizer state (adapter tensors only under LoRA; never a deepcopy);
3. optimise on that data: θ_{t+½};
4. collect fresh y, y', y'' with the half-step model (as the repo's LLM trainer does), judge, π_ref log-probs, on the
   full step's prompts;
5. restore θ_t and the optimizer state, optimise on the new data: θ_{t+1}.

Prompts of the two steps (``full_step_prompts``). The repo's LLM trainer takes one optimizer step per batch of its
dataloader, so its odd (full) step samples on the next batch of prompts: an EG iteration consumes two batches. With
``split`` (the default, what the repo ran) the iteration's prompts are those two batches: the half step takes the
first ⌈n/2⌉ of the n prompts and the full step the rest, so ``prompts_per_iteration`` is 2 × the repo's per-step
batch. Under several processes each process samples its contiguous share of each batch (``step_prompts``), so the
two batches, gathered in rank order, are the same with any number of processes. ``reuse`` samples the full step on
the half step's prompts (fresh y, y', y'' from π_{t+½}), prefopt's earlier schedule. Under ``game_exact`` both steps
take the exact expectation on all the iteration's prompts (there is no draw to split).

Symbols ↔ official code. β and the sampler settings are the repo's (β = 0.1; y, y' at temperature 2, top-k 10;
length-normalised log-probs). The repo counts two optimizer steps per EG iteration (``num_train_epochs = 2 ×
epochs``); here ``phases = 2`` makes the LR schedule span both.

Departures. None in the update. Under DeepSpeed ZeRO the snapshot also holds each process's fp32 master partition,
so the restore is exact (``Backend.snapshot_optimizer``). ``reuse`` departs from the repo's data schedule (the full
step sees the half step's prompts again; docs/algorithms/egpo.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from prefopt.algorithms import Algorithm
from prefopt.algorithms.online_ipo import OnlineIPOParams, loss
from prefopt.algorithms.opponent import collect_against_opponent
from prefopt.batch import Batch
from prefopt.context import Context, shard_bounds
from prefopt.errors import ConfigError

SCHEDULES = ("split", "reuse")


@dataclass
class EGPOParams(OnlineIPOParams):
    """Online-IPO hyperparameters plus the prompts of the full step."""

    full_step_prompts: Literal["split", "reuse"] = field(
        default="split",
        metadata={
            "help": "split: the half step on the first half of the iteration's prompts, the full step on the rest "
            "(the EGPO repo: two batches per EG iteration); reuse: both steps on all of them."
        },
    )

    def validate(self) -> None:
        super().validate()
        if self.full_step_prompts not in SCHEDULES:
            choices = ", ".join(SCHEDULES)
            raise ConfigError(
                f"config key 'full_step_prompts' must be one of {choices}; got {self.full_step_prompts!r}"
            )


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
    """The full step's rows on the half step's prompts: fresh pairs and opponents, sampled by θ_{t+½} (Nash-MP's
    full step, and EGPO's with ``full_step_prompts: reuse``)."""
    return collect_against_opponent(ctx, ctx.prompts, stream="half_step")


def step_prompts(ctx: Context, step: int, block: list | None = None) -> list:
    """This process's prompts for the half step (``step`` 0) or the full step (1).

    ``split``: the iteration's prompts (``ctx.iteration_prompts``, every process's blocks in rank order) are cut into
    the half step's batch, the first ⌈n/2⌉, and the full step's, the rest; this process takes its contiguous share of
    the step's batch, so the shares in rank order are that batch whatever the number of processes. ``reuse`` and
    ``game_exact``: ``block``, this process's block of the iteration's prompts (default ``ctx.prompts``), for both.
    """
    if ctx.algo_cfg.full_step_prompts == "reuse" or ctx.cfg.game_exact:
        return ctx.prompts if block is None else block
    every, world = ctx.iteration_prompts, ctx.backend.world_size
    if len(every) < 2 * world:
        raise ConfigError(
            f"config key 'prompts_per_iteration': full_step_prompts: split gives the half and the full step half of "
            f"an iteration's prompts each, at least one per process, so {world} process(es) need at least "
            f"{2 * world}, got {len(every)}; raise it or set full_step_prompts: reuse"
        )
    cut = (len(every) + 1) // 2
    batch = every[:cut] if step == 0 else every[cut:]
    lo, hi = shard_bounds(len(batch), world, ctx.backend.rank)
    return batch[lo:hi]


def _collect_on(ctx: Context, prompts: list, stream: str) -> Batch:
    """Online IPO's rows on ``prompts``; the metrics weigh by those prompts when the processes' values combine."""
    batch = collect_against_opponent(ctx, prompts, stream=stream)
    batch.metric_weights.update({key: len(prompts) for key in batch.metrics})
    return batch


def collect(ctx: Context, prompts) -> Batch:
    """The half step's rows against π_t, on this process's share of the half step's prompts (``step_prompts``; with
    ``split`` a share of the iteration's first batch, not the block ``prompts``)."""
    return _collect_on(ctx, step_prompts(ctx, 0, prompts), "policy")


def train_step(ctx: Context, batch: Batch) -> dict:
    """The half step against π_t, then the full step against π_{t+½} on the full step's prompts, both from θ_t."""
    return two_phase_step(ctx, batch, lambda c: _collect_on(c, step_prompts(c, 1), "half_step"))


EGPO = Algorithm(
    name="egpo",
    paper=("Extragradient Preference Optimization", "2503.08942"),
    config_class=EGPOParams,
    collect=collect,
    loss=loss,
    train_step=train_step,
    phases=2,
    needs_ref=True,
    game_beta=lambda cfg: cfg.beta,
    exact_expectation=lambda cfg: True,
)
