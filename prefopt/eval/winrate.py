"""Win rate of a model against a baseline from per-comparison preference probabilities.

Each comparison i gives p_i = P(model ≻ baseline | x_i) in [0, 1] (AlpacaEval's ``preference`` − 1: a hard
judgement is 0 or 1, a draw ½). The two win rates AlpacaEval reports:

- probability-weighted: WR = mean_i p_i;
- discrete: each p_i rounded to a win (p > ½), a loss (p < ½) or a draw (p = ½, counted half):
  (wins + draws / 2) / n.

Uncertainty of WR: the standard error SE = s / √n (s the sample standard deviation, ddof = 1, as
``pandas.Series.sem``), and a 95% bootstrap percentile interval: the 2.5% and 97.5% quantiles of the means of
``n_bootstrap`` resamples of the n comparisons with replacement (seeded, so a result file can be reproduced).
Unlike mean ± 1.96·SE, it stays inside [0, 1] and follows the skew of a win rate near 0 or 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class WinRate:
    """All values are fractions in [0, 1] except the counts."""

    win_rate: float
    se: float
    ci_low: float
    ci_high: float
    discrete_win_rate: float
    n_wins: int
    n_draws: int
    n_losses: int
    n: int

    def as_metrics(self, prefix: str = "eval/") -> dict[str, float]:
        return {f"{prefix}{k}": v for k, v in asdict(self).items()}

    def __str__(self) -> str:
        return f"{self.win_rate:.3f} (95% CI {self.ci_low:.3f}-{self.ci_high:.3f}, n={self.n})"


def bootstrap_interval(values: np.ndarray, n_bootstrap: int, seed: int, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the mean of ``values`` [n] over ``n_bootstrap`` resamples with replacement."""
    rng = np.random.default_rng(seed)
    means = np.empty(n_bootstrap)
    chunk = max(1, 2_000_000 // len(values))  # bounds the index matrix's memory for large eval sets
    for start in range(0, n_bootstrap, chunk):
        rows = min(chunk, n_bootstrap - start)
        means[start : start + rows] = values[rng.integers(0, len(values), (rows, len(values)))].mean(axis=1)
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def win_rate(probs: Sequence[float], n_bootstrap: int = 2000, seed: int = 0) -> WinRate:
    """Both win rates of ``probs`` [n] (each P(model ≻ baseline) in [0, 1]) with SE and bootstrap 95% interval."""
    values = np.asarray([float(p) for p in probs], dtype=np.float64)
    n = len(values)
    if n == 0:
        raise ValueError("win_rate needs at least one comparison")
    if not np.all((values >= 0) & (values <= 1)):
        raise ValueError("win_rate needs probabilities in [0, 1]")
    mean = float(values.mean())
    se = float(values.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0
    low, high = bootstrap_interval(values, n_bootstrap, seed)
    wins, draws = int((values > 0.5).sum()), int((values == 0.5).sum())
    losses = n - wins - draws
    return WinRate(mean, se, low, high, (wins + draws / 2) / n, wins, draws, losses, n)
