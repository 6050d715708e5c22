"""Judging generators against each other on one eval set, and the metrics of one comparison.

A comparison of a model M against a baseline B gives, per instruction x_i, p_i = P(M's output ≻ B's output | x_i):

- a preference judge (pairwise model, generative, Python preference function, synthetic) answers p_i directly
  (the model judges score both orders and symmetrise, so the position of an output does not matter);
- a reward judge scores each output once, r(x, y), and p_i = σ(r(x_i, y_M) − r(x_i, y_B)) (Bradley-Terry). With
  several generators every output is scored once, whatever the number of pairs.

Judges see each instruction as one user message, as the models were prompted. Empty outputs stay in the
comparison (the judge decides how bad they are) and are counted in the metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from prefopt.eval.length_control import LCData, length_controlled_win_rate
from prefopt.eval.winrate import win_rate
from prefopt.judges import PreferenceJudge, RewardJudge

LC_MIN_ROWS = 10  # the GLM's 5-fold cross-validation needs at least two rows per fold
# Instructions per preference call: small enough for a progress bar to move, large enough for a judge's own
# batching and an API judge's concurrent requests (8 in flight by default) to stay busy.
JUDGE_CHUNK = 64


@dataclass
class Generator:
    """One generator's outputs on the eval set (in eval-set order) and where they came from."""

    name: str
    outputs: list[str]
    source: dict


class PairJudge:
    """P(model ≻ baseline) per instruction for any pair of generators, each reward computed once."""

    def __init__(self, judge: PreferenceJudge, instructions: Sequence[str]):
        self.judge = judge
        self.instructions = list(instructions)
        self.prompts = [[{"role": "user", "content": x}] for x in instructions]
        self._rewards: dict[str, torch.Tensor] = {}

    def rewards(self, generator: Generator) -> torch.Tensor:
        if generator.name not in self._rewards:
            self._rewards[generator.name] = self.judge.reward(self.prompts, generator.outputs)
        return self._rewards[generator.name]

    def __call__(
        self, model: Generator, baseline: Generator, indices: Sequence[int] | None = None, bar=None
    ) -> list[float]:
        """P(model ≻ baseline) on the instructions ``indices`` (default: all), in that order; ``bar`` (a tqdm bar)
        advances as instructions are judged."""
        indices = list(range(len(self.prompts)) if indices is None else indices)
        if isinstance(self.judge, RewardJudge):
            probs = torch.sigmoid(self.rewards(model) - self.rewards(baseline)).tolist()
            if bar is not None:
                bar.update(len(indices))
            return [probs[i] for i in indices]
        probs = []
        for start in range(0, len(indices), JUDGE_CHUNK):
            chunk = indices[start : start + JUDGE_CHUNK]
            prompts = [self.prompts[i] for i in chunk]
            model_outputs, baseline_outputs = [model.outputs[i] for i in chunk], [baseline.outputs[i] for i in chunk]
            probs += self.judge.preference(prompts, model_outputs, baseline_outputs).tolist()
            if bar is not None:
                bar.update(len(chunk))
        return probs


def lc_variant_for(requested: str, data: LCData | None) -> str:
    """``auto``: AlpacaEval's full GLM when its precomputed data holds gamed annotations, else the minimal one."""
    if requested != "auto":
        return requested
    if data is not None and data.gamed_preference is not None:
        return "length_controlled_v1"
    return "length_controlled_minimal"


def comparison_metrics(
    probs: Sequence[float],
    model: Generator,
    baseline: Generator,
    lc_variant: str = "auto",
    lc_data: LCData | None = None,
    n_bootstrap: int = 2000,
    seed: int = 0,
) -> dict:
    """Win rates (fractions), SE, bootstrap interval, LC win rate, lengths (characters) and empty-output counts."""
    result = win_rate(probs, n_bootstrap, seed)
    model_len = np.array([len(y) for y in model.outputs], dtype=np.float64)
    base_len = np.array([len(y) for y in baseline.outputs], dtype=np.float64)
    metrics = {
        "model": model.name,
        "baseline": baseline.name,
        **vars(result),
        "avg_length": float(model_len.mean()),
        "baseline_avg_length": float(base_len.mean()),
        "n_empty": int((model_len == 0).sum()),
        "baseline_n_empty": int((base_len == 0).sum()),
    }
    variant = lc_variant_for(lc_variant, lc_data)
    if model.name == baseline.name:  # AlpacaEval's convention: a generator against itself is exactly ½
        lc = {"lc_win_rate": 0.5, "lc_se": 0.0}
    elif result.n < LC_MIN_ROWS:
        lc, variant = {"lc_win_rate": None, "lc_se": None}, None
    else:
        fit = length_controlled_win_rate(probs, model_len, base_len, variant, lc_data)
        lc = {"lc_win_rate": fit.win_rate, "lc_se": fit.se, "lc_coefficients": fit.coefficients, "lc_C": fit.C}
    return {**metrics, **lc, "lc_variant": variant}
