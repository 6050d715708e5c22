"""Online IPO (OMD): the one-phase baseline of EGPO, and the loss EGPO and Nash-MD optimise.

Paper: the loss as EGPO (Zhou, Fazel, Du; arXiv 2503.08942) states it for the β-regularised game
J_β(π, π') = P(π ≻ π') − β KL(π‖π_ref) + β KL(π'‖π_ref), against an opponent π_s (docs/algorithms/online_ipo.md):
    L(θ; π_s) = E_{y, y' ~ μ} ( [log π_θ(y)/π_ref(y) − log π_θ(y')/π_ref(y')] − (P(y ≻ π_s) − P(y' ≻ π_s))/β )²,
with the unbiased estimate P(y ≻ y'') − P(y' ≻ y'') for y'' ~ π_s, and the opponent term detached (it is a
target computed at collect time). One gradient step from θ_t against π_s = π_t is one step of online mirror
descent on J_β ("Online IPO 1" in the EGPO repository; tabular: θ ← (1 − ηβ)θ + ηβθ_ref + ηPπ_t, which is INPO's
update with β ≡ τ).

Data per iteration. For each prompt: y, y' from a broadened sampler (the EGPO LLM code samples them from π_θ at
temperature 2.0, top-k 10, to widen the support of μ); y'' ~ π_s at the run's sampling settings (temperature 1
by default); the judge's P(y ≻ y''), P(y' ≻ y''); log π_ref(y), log π_ref(y') from one no-grad pass.

Symbols ↔ official code. β is the paper's and the repo's ``beta``. ``normalize_logprobs`` (the repo's default in
its LLM runs) uses length-normalised log-probs (1/|y|) log π(y) for both π_θ and π_ref; off, sums as in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prefopt.algorithms import Algorithm
from prefopt.algorithms.opponent import collect_against_opponent
from prefopt.batch import MiniBatch, PolicyLogps
from prefopt.errors import ConfigError


@dataclass
class OnlineIPOParams:
    """Online IPO / EGPO hyperparameters (EGPO repository defaults for its LLM runs)."""

    beta: float = field(default=0.1, metadata={"help": "β, the KL-to-π_ref coefficient of the regularised game."})
    pair_temperature: float = field(default=2.0, metadata={"help": "Temperature of the y, y' sampler (broadened)."})
    pair_top_k: int = field(default=10, metadata={"help": "Top-k of the y, y' sampler (0: off)."})
    normalize_logprobs: bool = field(default=True, metadata={"help": "Length-normalised log-probs (repo default)."})

    def validate(self) -> None:
        if self.beta <= 0:
            raise ConfigError(f"config key 'beta' must be > 0, got {self.beta}")
        if self.pair_temperature <= 0:
            raise ConfigError(f"config key 'pair_temperature' must be > 0, got {self.pair_temperature}")


def loss(cfg: OnlineIPOParams, batch: MiniBatch, policy: PolicyLogps):
    """Per-row online-IPO loss ([Δ log π_θ − Δ log π_ref] − (P(y≻y'') − P(y'≻y''))/β)².

    Shapes: policy log-probs and batch.row["ref_logps"]: [B, 2] for (y, y'); batch.row["pref_diff"]: [B].
    Returns loss [B].
    """
    logps = policy.mean_logps if cfg.normalize_logprobs else policy.logps
    h = (logps[:, 0] - logps[:, 1]) - (batch.row["ref_logps"][:, 0] - batch.row["ref_logps"][:, 1])
    targets = batch.row["pref_diff"] / cfg.beta
    losses = (h - targets) ** 2
    return losses, {"loss/online_ipo": losses.detach(), "pref/h": h.detach(), "pref/target": targets}


ONLINE_IPO = Algorithm(
    stale_samples="any",
    name="online_ipo",
    paper=("Online IPO (online mirror descent)", "2503.08942"),
    config_class=OnlineIPOParams,
    collect=collect_against_opponent,
    loss=loss,
    needs_ref=True,
    game_beta=lambda cfg: cfg.beta,
    exact_expectation=lambda cfg: True,
)
