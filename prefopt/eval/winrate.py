"""Win rate of a model against a baseline from per-comparison preference probabilities.

Each comparison i gives p_i = P(model ≻ baseline | x_i) in [0, 1] (a hard judgement is 0 or 1, a draw ½: draws
count half, as in AlpacaEval). The win rate is the mean of p_i; its standard error is the sample standard
deviation over √n, and the 95% interval is the normal one, mean ± 1.96·SE, clipped to [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class WinRate:
    win_rate: float
    se: float
    ci_low: float
    ci_high: float
    n: int

    def as_metrics(self, prefix: str = "eval/") -> dict[str, float]:
        return {f"{prefix}{k}": v for k, v in asdict(self).items()}

    def __str__(self) -> str:
        return f"{self.win_rate:.3f} (95% CI {self.ci_low:.3f}-{self.ci_high:.3f}, n={self.n})"


def win_rate(probs: Sequence[float]) -> WinRate:
    """Mean preference probability with its standard error and normal 95% interval."""
    values = [float(p) for p in probs]
    n = len(values)
    if n == 0:
        raise ValueError("win_rate needs at least one comparison")
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    se = math.sqrt(var / n)
    return WinRate(mean, se, max(0.0, mean - 1.96 * se), min(1.0, mean + 1.96 * se), n)
