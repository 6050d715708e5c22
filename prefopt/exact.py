"""Exact expectations over a single-token action set: the variance-free mode of matrix-game runs (``game_exact``).

In a single-token game (a matrix-game judge, or ``response_choices``) every distribution the trainer samples from is
a vector over the N actions, so each Monte-Carlo estimate a collect makes has an exact value. The Context's
estimators (:meth:`prefopt.context.Context.sample_labelled_pairs`, :meth:`~prefopt.context.Context.pairs_against`)
answer with it under ``game_exact``: instead of sampled rows, every ordered pair of actions (a, b), weighted by the
probability q(a)·q(b) that the sampler draws it, with the target's conditional expectation given the pair (a soft
label P(a ≻ b) for a Bernoulli one, P(a ≻ π_s) − P(b ≻ π_s) for an opponent's sampled y″). The losses these targets
enter are quadratic in them, so the weighted loss has the sampled loss's expected gradient with no variance: one
optimizer step over the whole batch is the expected step. The loop weights each row by ``Batch.row_weights``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from prefopt.data import PromptExample
from prefopt.errors import ConfigError
from prefopt.rollout.engine import RolloutBatch, Sample, SamplingParams
from prefopt.rollout.hf import filter_logits

if TYPE_CHECKING:
    from prefopt.context import Context


def sampler_probs(logps: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """q [P, N]: the probability that the sampler with ``params`` draws each action, from the sampled
    distribution's log-probs [P, N] (the policy's, or the reference mixture's): temperature, top-k and top-p as the
    rollout engine applies them; temperature 0 is the argmax."""
    if params.temperature == 0:
        return torch.nn.functional.one_hot(logps.argmax(-1), logps.shape[-1]).to(logps.dtype)
    return torch.softmax(filter_logits(logps, params), dim=-1)


def action_logps(ctx: Context, prompts: list[PromptExample], policy: str = "current") -> torch.Tensor:
    """log π(a | x) [P, N] float64 of ``policy`` (an anchor: current, reference) over the action set, at each prompt
    (one no-grad pass)."""
    actions = list(ctx.sampling.allowed_token_ids)
    prompt_ids = [p.prompt_ids for p in prompts for _ in actions]
    response_ids = [[a] for _ in prompts for a in actions]
    return ctx.anchors.logps(prompt_ids, response_ids, policy=policy).double().view(len(prompts), len(actions))


def enumerate_actions(ctx: Context, prompts, stream: str, params: SamplingParams, logps: torch.Tensor):
    """Every action at each prompt as a Sample (its log-prob that of the distribution drawn from, as a rollout's),
    and the sampler's probability of each, q [P, N] float64, from the policy's ``logps`` [P, N]; recorded in
    ``ctx.rollouts`` as the stream's data."""
    actions = list(params.allowed_token_ids)
    n = len(actions)
    if params.ref_mixture > 0:  # the token-level geometric mixture π^{1−μ} π_ref^μ, normalised over the actions
        ref = action_logps(ctx, prompts, policy="reference")
        logps = torch.log_softmax((1 - params.ref_mixture) * logps + params.ref_mixture * ref, dim=-1)
    texts = [ctx.tokenizer.decode([a], skip_special_tokens=True) for a in actions]
    samples = [
        Sample(i, j, p.prompt_ids, [a], texts[j], logps[i, j : j + 1].float(), "length")
        for i, p in enumerate(prompts)
        for j, a in enumerate(actions)
    ]
    ctx.rollouts.append((stream, prompts, RolloutBatch(samples, len(prompts), policy_iteration=ctx.iteration)))
    return [samples[i * n : (i + 1) * n] for i in range(len(prompts))], sampler_probs(logps, params)


def preference_table(ctx: Context, prompts: list[PromptExample], groups: list[list[Sample]]) -> torch.Tensor:
    """P [P, N, N]: the judge's P(a ≻ b) for every ordered pair of actions at each prompt (one call)."""
    n = len(groups[0]) if groups else 0
    owner = [p for p in prompts for _ in range(n * n)]
    refs = ctx.references(owner)
    first = [a.text for g in groups for a in g for _ in g]
    second = [b.text for g in groups for _ in g for b in g]
    probs = ctx.judge.preference([p.prompt for p in owner], first, second, refs)
    return probs.double().view(len(prompts), n, n)


def all_pairs(groups: list[list[Sample]], q: torch.Tensor):
    """Every ordered pair (a, b) of each prompt's actions, row-major per prompt, and its probability q(a)·q(b)
    [P·N²] (pairs of the same action included: the sampler draws them too)."""
    pairs = [(a, b) for g in groups for a in g for b in g]
    return pairs, (q[:, :, None] * q[:, None, :]).flatten()


def labelled_pairs(ctx: Context, prompts: list[PromptExample]):
    """Two independent samples of the current policy with the label's expectation P(a ≻ b), exactly."""
    groups, q = enumerate_actions(ctx, prompts, "policy", ctx.sampling, action_logps(ctx, prompts))
    pairs, weights = all_pairs(groups, q)
    return pairs, preference_table(ctx, prompts, groups).flatten().float(), weights


def pairs_against(ctx: Context, prompts: list[PromptExample], stream: str, pair_params, opponent_params):
    """(y, y′) from the pair sampler, target P(y ≻ π_s) − P(y′ ≻ π_s) for the opponent's distribution π_s, exactly
    (the expectation of P(y ≻ y″) − P(y′ ≻ y″) over y″ ~ π_s)."""
    logps = action_logps(ctx, prompts)  # one pass serves both samplers
    groups, q = enumerate_actions(ctx, prompts, f"{stream}/pair", pair_params, logps)
    _, opponent = enumerate_actions(ctx, prompts, f"{stream}/opponent", opponent_params, logps)
    wins = (preference_table(ctx, prompts, groups) * opponent[:, None, :]).sum(-1)  # [P, N]: P(a ≻ π_s)
    pairs, weights = all_pairs(groups, q)
    return pairs, (wins[:, :, None] - wins[:, None, :]).flatten().float(), weights


def check_supported(algorithm, algo_cfg, allowed) -> None:
    """``game_exact`` needs an action set (responses are then one token) and an algorithm whose collect reads its
    data through the Context's estimators alone (``Algorithm.exact_expectation``)."""
    from prefopt.algorithms import ALGORITHMS, get_algorithm

    if allowed is None:
        raise ConfigError(
            "config key 'game_exact' needs single-token actions: a matrix_game judge, or response_choices"
        )
    if algorithm.exact_expectation is None or not algorithm.exact_expectation(algo_cfg):
        raise ConfigError(
            f"config key 'game_exact': {algorithm.name} with these settings does not take its data from exact "
            f"expectations (supported: {', '.join(n for n in ALGORITHMS if get_algorithm(n).exact_expectation)})"
        )
