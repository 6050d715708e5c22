"""Nash-MP: Nash Mirror Prox (Tiapkin, Calandriello, Belomestny, Moulines, Naumov, Rasul, Valko, Ménard;
arXiv 2505.19731, "Accelerating Nash Learning from Human Feedback via Mirror Prox").

Objective. Mirror prox on the β-regularised preference game J_β, with the KL-to-π_ref term handled proximally;
both steps start from π_k, the full step against the half step's policy (ALGORITHMS.md section 3):
    log π_{k+½} = [log π_k + ηβ log π_ref + η P(· ≻ π_k)] / (1 + ηβ) + c
    log π_{k+1} = [log π_k + ηβ log π_ref + η P(· ≻ π_{k+½})] / (1 + ηβ) + c
The paper states last-iterate linear convergence, KL(π*_β‖π_k) ≲ (1 + 2β)^{−N/2} in N preference queries
[abstract; this parametrisation is derived from the mirror-prox template, unconfirmed against the paper's text].

Proximal steps, ``prox_step: regression`` (the project's choice, ALGORITHMS.md section 11). Each step has a closed
form, so it is fitted by a squared loss on pairs (y, y') from a full-support sampler, with y'' from the opponent
π_s (π_k for the half step, π_{k+½} for the full step):
    h(θ) = [lp_θ(y) − lp_θ(y')] − (1/(1+ηβ))·[lp_k(y) − lp_k(y')] − (ηβ/(1+ηβ))·[lp_ref(y) − lp_ref(y')]
    target = (η/(1+ηβ))·[P(y ≻ y'') − P(y' ≻ y'')],        loss = (h(θ) − target)².
With full support its minimiser is exactly the mirror-prox iterate, so optimising it well (``num_train_epochs``)
solves the prox step. An iteration: collect (y, y' broadened, y'' ~ π_k, lp_k from the rollout, lp_ref from a
no-grad pass) → snapshot θ_k and the optimizer state → optimise (θ_{k+½}) → fresh y, y', y'' with the half-step
model → back to θ_k (lp_k of the new pairs from one pass) → optimise (θ_{k+1}).

Departures. The paper's practical variant replaces each prox step by stochastic policy-gradient steps with an EMA
prox centre (``pg``); it is not implemented yet, and the config accepts only ``regression``. Log-probs are
sums by default (the exact correspondence above); ``normalize_logprobs`` switches to per-token means.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from prefopt.algorithms import Algorithm
from prefopt.algorithms.online_ipo import collect_against_opponent, sequence_logps, two_phase_step
from prefopt.batch import Batch, MiniBatch, PolicyLogps
from prefopt.errors import ConfigError


@dataclass
class NashMPConfig:
    """Nash-MP hyperparameters (β, η in the paper's symbols; the sampler as EGPO's repository)."""

    beta: float = field(default=0.1, metadata={"help": "β, the KL-to-π_ref coefficient of the regularised game."})
    eta: float = field(default=1.0, metadata={"help": "η, the mirror-prox step; contraction 1/(1+ηβ) per step."})
    prox_step: Literal["regression"] = field(default="regression", metadata={"help": "How each prox step is fit."})
    pair_temperature: float = field(default=2.0, metadata={"help": "Temperature of the y, y' sampler (broadened)."})
    pair_top_k: int = field(default=10, metadata={"help": "Top-k of the y, y' sampler (0: off)."})
    normalize_logprobs: bool = field(default=False, metadata={"help": "Per-token means instead of sums."})

    def validate(self) -> None:
        if self.beta <= 0 or self.eta <= 0:
            raise ConfigError("config keys 'beta' and 'eta' must be > 0")
        if self.pair_temperature <= 0:
            raise ConfigError(f"config key 'pair_temperature' must be > 0, got {self.pair_temperature}")


def collect(ctx, prompts, stream: str = "policy") -> Batch:
    """Half-step data: the prox centre π_k is the sampling policy, so lp_k is the rollout's own."""
    batch = collect_against_opponent(ctx, prompts, stream)
    batch.row_data["centre_logps"] = batch.row_data["sample_logps"]
    return batch


def train_step(ctx, batch) -> dict:
    """The half step from θ_k against π_k, then the full step from θ_k against π_{k+½}."""

    def add_centre_logps(full_batch: Batch) -> None:  # θ_k is back: one pass gives lp_k of the new pairs
        tokens = ctx.anchors.token_logps(full_batch.prompt_ids, full_batch.response_ids, policy="current")
        full_batch.row_data["centre_logps"] = sequence_logps(tokens, ctx.algo_cfg).view(-1, 2)

    return two_phase_step(ctx, batch, add_centre_logps)


def loss(cfg: NashMPConfig, batch: MiniBatch, policy: PolicyLogps):
    """Per-row regression onto the mirror-prox step: (h(θ) − target)².

    Shapes: policy log-probs, batch.row["centre_logps"] (π_k), batch.row["ref_logps"]: [B, 2] for (y, y');
    batch.row["pref_diff"] = P(y ≻ y'') − P(y' ≻ y''): [B]. Returns loss [B].
    """
    step = cfg.eta * cfg.beta
    logps = policy.mean_logps if cfg.normalize_logprobs else policy.logps

    def diff(x):
        return x[:, 0] - x[:, 1]

    h = diff(logps) - diff(batch.row["centre_logps"]) / (1 + step) - step / (1 + step) * diff(batch.row["ref_logps"])
    targets = cfg.eta / (1 + step) * batch.row["pref_diff"]
    losses = (h - targets) ** 2
    return losses, {"loss/nash_mp": losses.detach(), "pref/h": h.detach(), "pref/target": targets}


NASH_MP = Algorithm(
    name="nash_mp",
    config_class=NashMPConfig,
    collect=collect,
    loss=loss,
    train_step=train_step,
    phases=2,
    needs_ref=True,
    game_beta=lambda cfg: cfg.beta,
)
