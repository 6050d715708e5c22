"""INPO: Iterative Nash Policy Optimization (Zhang, Yu, Peng, Song, Tian, Huo, Jiang, Mi, Yu; arXiv 2407.00617,
ICLR 2025).

Objective. Online mirror descent (Hedge) on the KL-regularised preference game, with regularisation τ and prox
coefficient η (1/η is the step size):
    π_{t+1}(y) ∝ exp(P(y ≻ π_t)/η) · π_ref(y)^{τ/η} · π_t(y)^{1−τ/η}.
Each iteration fits it with a squared loss on pairs sampled from π_t (paper, Algorithm 1):
    h_t(π, y_w, y_l) = log π(y_w)/π(y_l) − (τ/η)·log π_ref(y_w)/π_ref(y_l) − ((η−τ)/η)·log π_t(y_w)/π_t(y_l)
    L_t(π) = E_{(y_w, y_l)} ( h_t − 1/(2η) )².
Proposition 6 of the paper: with y, y' ~ π_t, this equals (up to a constant) the regression onto
(P(y ≻ π_t) − P(y' ≻ π_t))/η, whose minimiser is the OMD iterate, so binary preferences suffice: no win-rate
estimates.

Data per iteration. K samples per prompt from π_t. ``pairs: iid`` (the default, the derivation's data): K/2
independent pairs (y_1, y_2), (y_3, y_4), … labelled by the judge, all in ONE row per prompt whose loss is the mean
over its pairs. L_t is one expectation, minimised once per iteration, and the paper's data hold one pair per
prompt, so the rows, and the optimizer steps at a given batch size, are one per prompt whatever K is: a larger K
lowers the variance of the estimate of L_t, never lengthens the step (K/2 rows per prompt did: K = 4 took twice
K = 2's steps). The paper's LLM recipe: one pair per prompt, best and worst by a reward judge, or a knock-out
tournament with a pairwise judge (``prefopt.judges.selection``; 11 queries for K = 8); prompts whose pair is not
strictly ordered are dropped (``pref/pairs_kept`` logs the fraction). log π_t comes from the rollout, log π_ref
from one no-grad pass (the disabled adapter under LoRA).

Symbols. η and τ are the paper's (paper defaults: η = 0.005, τ = η/3). In the tabular game this is EGPO's
"online IPO 1"/OMD with β ≡ τ and step ηβ ≡ τ/η (docs/algorithms/inpo.md).

Departures. None in the loss. The paper's ties in the tournament go to the first response; here a comparison is
a tie when P = ½ exactly and goes to the first, and a final the champion does not win drops the prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from prefopt.algorithms import Algorithm
from prefopt.batch import Batch, MiniBatch, PolicyLogps, pair_sequences
from prefopt.context import Context
from prefopt.errors import ConfigError


@dataclass
class INPOParams:
    """INPO hyperparameters (paper defaults, appendix B)."""

    eta: float = field(default=0.005, metadata={"help": "η, the OMD prox coefficient (1/η is the step)."})
    tau: float | None = field(default=None, metadata={"help": "τ, the KL-to-π_ref coefficient (None: η/3)."})
    num_samples: int = field(default=8, metadata={"help": "K, responses sampled per prompt from π_t."})
    pairs: Literal["iid", "auto", "best_worst", "tournament"] = field(
        default="iid",
        metadata={
            "help": "iid: K/2 independent pairs per prompt, labelled, in one row (the derivation's data); the "
            "paper's LLM recipe picks one pair of K: best_worst by reward, tournament with a pairwise judge, auto by "
            "the judge (a biased fixed point: see docs/algorithms/inpo.md)."
        },
    )
    labels: Literal["bernoulli", "soft"] = field(
        default="bernoulli",
        metadata={"help": "With pairs: iid, a binary preference drawn from Bernoulli(P), or P itself (soft)."},
    )

    @property
    def tau_value(self) -> float:
        return self.eta / 3 if self.tau is None else self.tau

    def validate(self) -> None:
        if self.eta <= 0:
            raise ConfigError(f"config key 'eta' must be > 0, got {self.eta}")
        if not 0 <= self.tau_value <= self.eta:
            raise ConfigError(f"config key 'tau' must be in [0, eta] (so that 1 − τ/η >= 0), got {self.tau}")
        if self.num_samples < 2:
            raise ConfigError(f"config key 'num_samples' must be >= 2, got {self.num_samples}")
        if self.pairs == "iid" and self.num_samples % 2:
            raise ConfigError(f"config key 'num_samples' must be even with pairs: iid, got {self.num_samples}")


def collect(ctx: Context, prompts) -> Batch:
    """Rows of S = 2m sequences, m pairs (y_1, y_2), (y_3, y_4), …, with row data ``anchor_logps`` (π_t, from the
    rollout) and ``ref_logps`` [R, S] and the pairs' labels ``label`` [R, m] ([R] when m = 1). pairs: iid: one row per
    prompt holding its K/2 pairs (m = K/2), each labelled ℓ = P(y ≻ y′) or its Bernoulli draw; under ``game_exact``
    one row per pair of actions. Otherwise one row per prompt kept: its selected (y_w, y_l) with ℓ = 1."""
    cfg: INPOParams = ctx.algo_cfg
    weights, per_row = None, 1
    if cfg.pairs == "iid":
        pairs, label, weights = ctx.sample_labelled_pairs(prompts, cfg.num_samples, cfg.labels)
        metrics = {"pref/label_mean": float(label.mean()) if len(label) else 0.0}
        if weights is None:  # sampled: a prompt's K/2 pairs in one row, so rows and steps do not grow with K
            per_row = cfg.num_samples // 2
            label = label.view(-1, per_row)
    else:
        pairs = ctx.sample_pairs(prompts, cfg.num_samples, cfg.pairs)
        label = torch.ones(len(pairs))
        metrics = {"pref/pairs_kept": len(pairs) / max(len(prompts), 1)}
    prompt_ids, response_ids, anchor = pair_sequences(pairs)
    seqs = 2 * per_row
    ref = ctx.anchors.logps(prompt_ids, response_ids, policy="reference").view(-1, seqs)
    return Batch(
        prompt_ids,
        response_ids,
        seqs_per_row=seqs,
        row_data={"anchor_logps": anchor.view(-1, seqs), "ref_logps": ref, "label": label},
        metrics=metrics,
        row_weights=weights,
    )


def loss(cfg: INPOParams, batch: MiniBatch, policy: PolicyLogps):
    """Per-row INPO loss: the mean over the row's pairs of (h_t − (2ℓ − 1)/(2η))², the paper's
    (h_t(y_w, y_l) − 1/(2η))² with the pair ordered by its label (ℓ = 1: the first won; ℓ = 0 is the same loss with
    the two swapped, h_t being antisymmetric), and its expectation over the label (up to a constant) for a soft
    ℓ = P(y ≻ y′).

    Shapes: policy.logps, batch.row["anchor_logps"] (π_t), batch.row["ref_logps"] (π_ref): [B, S], S = 2m, pair j
    the sequences (2j, 2j + 1); batch.row["label"]: [B, m] ([B] when m = 1). Returns loss [B].
    """
    eta, tau = cfg.eta, cfg.tau_value
    rows, seqs = policy.logps.shape

    def margin(logps: torch.Tensor) -> torch.Tensor:  # [B, S] → [B, m]
        pairs = logps.reshape(rows, seqs // 2, 2)
        return pairs[..., 0] - pairs[..., 1]

    h = margin(policy.logps) - (tau / eta) * margin(batch.row["ref_logps"])
    h = h - ((eta - tau) / eta) * margin(batch.row["anchor_logps"])
    label = batch.row["label"].reshape(rows, -1)
    losses = ((h - (2.0 * label - 1.0) / (2.0 * eta)) ** 2).mean(-1)
    metrics = {
        "loss/inpo": losses.detach(),
        "pref/h": h.detach().mean(-1),
        "kl/logratio_ref": (policy.logps - batch.row["ref_logps"]).detach().mean(-1),
    }
    return losses, metrics


INPO = Algorithm(
    stale_samples="current_anchor",
    name="inpo",
    paper=("Iterative Nash Policy Optimization", "2407.00617"),
    config_class=INPOParams,
    collect=collect,
    loss=loss,
    needs_ref=True,
    game_beta=lambda cfg: cfg.tau_value,  # τ regularises the game; 1/η is the step
    exact_expectation=lambda cfg: cfg.pairs == "iid",
)
