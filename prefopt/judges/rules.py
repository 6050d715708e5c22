"""Rule rewards: 0/1 checkers of a response against each prompt's reference answer (verifiable rewards).

- ``exact_match``: 1 when the response, stripped of surrounding whitespace, equals the reference (the CPU
  arithmetic task and other tasks with one canonical answer string);
- ``math``: the final answer extracted from the response (the last ``\\boxed{}``, "the answer is", GSM8K's
  "####") compared with the reference by value (``prefopt.rewards.math``).

The reference is the dataset's ``answer_column``, which a run must set for these judges.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from prefopt.judges.base import Prompt, RewardJudge


def exact_match_reward(prompts: Sequence[Prompt], responses: Sequence[str], references: Sequence) -> list[float]:
    """1.0 where ``response.strip() == str(reference).strip()``, else 0.0."""
    return [float(r.strip() == str(ref).strip()) for r, ref in zip(responses, references)]


def _math_reward(prompts, responses, references):
    from prefopt.rewards.math import math_reward

    return math_reward(list(prompts), list(responses), [str(r) for r in references])


RULES = {"exact_match": exact_match_reward, "math": _math_reward}


class RuleRewardJudge(RewardJudge):
    """A rule reward named by ``kind`` (one of :data:`RULES`); needs each row's reference answer."""

    needs_references = True

    def __init__(self, kind: str):
        self.name = kind
        self.rule = RULES[kind]

    def _reward(self, prompts: Sequence[Prompt], responses: Sequence[str], references=None) -> torch.Tensor:
        return torch.tensor(self.rule(prompts, responses, references), dtype=torch.float64)
