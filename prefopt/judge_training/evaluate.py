"""Held-out metrics of a trained judge folder, scored through the prefopt judge that loads it.

Scoring through :class:`~prefopt.judges.RewardModelJudge` / :class:`~prefopt.judges.PairwiseModelJudge` (rather
than the trainer's forward) means the reported numbers are those of the judge a ``prefopt train`` run will use:
its tokenisation, truncation, padding and (pairwise) symmetrisation.
"""

from __future__ import annotations

import torch

from prefopt.judge_training.data import Pair
from prefopt.judge_training.metrics import antisymmetry_violation, preference_metrics
from prefopt.judges.pairwise import PairwiseModelJudge, symmetrise
from prefopt.judges.reward_model import classifier_logits


def pairwise_probs(judge: PairwiseModelJudge, pairs: list[Pair]) -> tuple[torch.Tensor, torch.Tensor]:
    """The raw classifier's p(x, y⁺, y⁻) and p(x, y⁻, y⁺), [n] each, in one batched pass (as the judge runs it)."""
    forward = [judge.encode(p.prompt, p.chosen, p.rejected) for p in pairs]
    swapped = [judge.encode(p.prompt, p.rejected, p.chosen) for p in pairs]
    logits = classifier_logits(judge.model, judge.tokenizer, forward + swapped, judge.batch_size)
    probs = judge.first_wins(logits.double())  # float64 before the sigmoid, as the judge's own preference()
    return probs[: len(pairs)], probs[len(pairs) :]


def judge_metrics(judge, pairs: list[Pair], bins: int) -> dict:
    """accuracy, its Wilson interval, ECE, held-out loss, and for a pairwise judge the antisymmetry violation of
    its un-symmetrised classifier (see :mod:`prefopt.judge_training.metrics`), over ``pairs``."""
    if isinstance(judge, PairwiseModelJudge):
        p_forward, p_swapped = pairwise_probs(judge, pairs)
        metrics = preference_metrics(symmetrise(p_forward, p_swapped), bins)
        metrics["antisymmetry_violation"] = antisymmetry_violation(p_forward, p_swapped)
        return metrics
    prompts = [p.prompt for p in pairs]
    probs = judge.preference(prompts, [p.chosen for p in pairs], [p.rejected for p in pairs])
    return preference_metrics(probs, bins)
