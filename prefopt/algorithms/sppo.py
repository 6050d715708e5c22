"""SPPO: Self-Play Preference Optimization (Wu, Sun, Yuan, Ji, Yang, Gu; arXiv 2405.00675, ICLR 2025).

Objective. SPPO runs multiplicative weights on the constant-sum preference game,
    π_{t+1}(y|x) ∝ π_t(y|x) · exp(η · P(y ≻ π_t | x))                                   (paper, eq. 4.1)
and, since log Z_t is intractable, replaces it by η/2 (the value of E_{y~π_t} P(y ≻ π_t) = ½). The update is
fitted by regressing each response's log-ratio against π_t onto its own absolute target (paper, eq. 4.6):
    ℓ(θ) = E_{(x, y, P̂)} ( log π_θ(y|x) − log π_t(y|x) − η·(P̂(y ≻ π_t | x) − ½) )².
So the chosen response's likelihood rises and the rejected one's falls, unlike DPO/IPO's relative targets.

Data per iteration. For each prompt, K samples from π_t; the judge's all-pairs matrix P(y_i ≻ y_j); the win-rate
estimate P̂(y_i ≻ π_t) = (1/K) Σ_j P(y_i ≻ y_j) *including* j = i (P = ½), as the official
``compute_prob.py`` does. Rows: the best and worst sample by P̂ (the official pipeline; ``train_on: best_worst``),
or every sample (``train_on: all``). log π_t(y|x) comes from the rollout's own log-probs: no extra pass.

Symbols ↔ official code. η here is the paper's η; the official trainer's ``beta`` is 1/η (η = 1000 ↔ beta
1e-3). The official row loss over a (w, l) pair is ½[(·)_w² + (·)_l²]: with ``best_worst`` our per-row loss,
the mean over the row's S = 2 sequences, is exactly that.

``sppo_hard`` (TRL's ``DPOConfig(loss_type="sppo_hard")``): targets ±1/(2β) instead of η(P̂ − ½), on pairs:
    ℓ(θ) = (log π_θ(y_w)/π_t(y_w) − 1/(2β))² + (log π_θ(y_l)/π_t(y_l) + 1/(2β))².
Its data columns: ``pairs_from: dataset`` reads ``chosen`` and ``rejected`` (TRL's preference formats, explicit
``prompt`` column or implicit in the conversations) and computes log π_t with one no-grad pass;
``pairs_from: rollout`` samples K responses and keeps the best and worst by P̂, like ``sppo``.

Departures. (1) TRL's sppo_hard uses a fixed reference model; here the reference is π_t, the policy at the start
of each iteration (identical in the first iteration, and the iterative form the SPPO paper uses). (2) The
official pipeline scores with PairRM (llm-blender), which transformers cannot load; any prefopt judge works, with
P̂ as the ranking score for best/worst. (3) Ties in P̂ pick the lowest index for both argmax and argmin, so a
prompt whose samples all tie yields a row with the same response twice (as argmax/argmin do in the official code).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from prefopt.algorithms import Algorithm
from prefopt.batch import Batch, MiniBatch, PolicyLogps
from prefopt.context import Context
from prefopt.errors import ConfigError


@dataclass
class SPPOParams:
    """SPPO hyperparameters (paper defaults; the released recipes use η = 1000, K = 5)."""

    eta: float = field(default=1000.0, metadata={"help": "η, the Hedge step (official code: beta = 1/η)."})
    num_samples: int = field(default=5, metadata={"help": "K, responses sampled per prompt from π_t."})
    train_on: Literal["best_worst", "all"] = field(
        default="best_worst", metadata={"help": "Rows: best and worst sample by P̂ (official), or all K samples."}
    )

    def validate(self) -> None:
        if self.eta <= 0:
            raise ConfigError(f"config key 'eta' must be > 0, got {self.eta}")
        if self.num_samples < 2:
            raise ConfigError(f"config key 'num_samples' must be >= 2, got {self.num_samples}")


@dataclass
class SPPOHardParams:
    """sppo_hard hyperparameters (TRL's β convention: targets ±1/(2β))."""

    beta: float = field(default=0.1, metadata={"help": "β; the log-ratio targets are ±1/(2β) (TRL default 0.1)."})
    pairs_from: Literal["dataset", "rollout"] = field(
        default="rollout", metadata={"help": "Pairs from the dataset's chosen/rejected, or best/worst of K samples."}
    )
    num_samples: int = field(default=5, metadata={"help": "K, samples per prompt when pairs_from=rollout."})

    def validate(self) -> None:
        if self.beta <= 0:
            raise ConfigError(f"config key 'beta' must be > 0, got {self.beta}")
        if self.pairs_from == "rollout" and self.num_samples < 2:
            raise ConfigError(f"config key 'num_samples' must be >= 2, got {self.num_samples}")


def estimate_win_rates(matrices: list[torch.Tensor]) -> list[torch.Tensor]:
    """P̂(y_i ≻ π_t) = (1/K) Σ_j P[i, j], the j = i term (½) included (official ``compute_prob.py``).

    Args:
        matrices: per prompt, [K, K] with [i, j] = P(y_i ≻ y_j).
    Returns:
        per prompt, [K].
    """
    return [m.mean(dim=1) for m in matrices]


def sample_and_score(ctx: Context, prompts, k: int):
    """K samples per prompt from π_t and their win-rate estimates P̂ [P, K]."""
    rollout = ctx.sample(prompts, k)
    groups = rollout.groups()
    texts = [[s.text for s in g] for g in groups]
    matrices = ctx.judge.preference_matrices([p.prompt for p in prompts], texts, ctx.references(prompts))
    return groups, torch.stack(estimate_win_rates(matrices))


def rows_from_groups(groups, chosen_idx: list[list[int]]) -> tuple[list, list, torch.Tensor]:
    """Flatten the selected samples of each prompt into (prompt_ids, response_ids, π_t logps [R, S])."""
    prompt_ids, response_ids, logps = [], [], []
    for group, idx in zip(groups, chosen_idx):
        for i in idx:
            prompt_ids.append(group[i].prompt_ids)
            response_ids.append(group[i].response_ids)
            logps.append(group[i].logp)
    return prompt_ids, response_ids, torch.tensor(logps, dtype=torch.float32).view(len(groups), -1)


def best_worst(win_rates: torch.Tensor) -> list[list[int]]:
    """Per prompt, the indices of its highest and lowest P̂ (ties: the first)."""
    return [[int(w.argmax()), int(w.argmin())] for w in win_rates]


def collect(ctx: Context, prompts) -> Batch:
    cfg: SPPOParams = ctx.algo_cfg
    groups, win_rates = sample_and_score(ctx, prompts, cfg.num_samples)
    if cfg.train_on == "best_worst":
        idx = best_worst(win_rates)
    else:
        idx = [list(range(cfg.num_samples)) for _ in prompts]
    prompt_ids, response_ids, anchor = rows_from_groups(groups, idx)
    targets = torch.stack([win_rates[p, i] for p, i in enumerate(idx)]).float()
    return Batch(
        prompt_ids, response_ids, seqs_per_row=len(idx[0]), row_data={"win_rates": targets, "anchor_logps": anchor}
    )


def loss(cfg: SPPOParams, batch: MiniBatch, policy: PolicyLogps):
    """Per-row SPPO loss: mean over the row's S responses of (log π_θ/π_t − η(P̂ − ½))².

    Shapes: policy.logps, batch.row["anchor_logps"], batch.row["win_rates"]: [B, S]. Returns loss [B].
    """
    return regression_loss(cfg.eta, batch, policy)


def regression_loss(eta: float, batch: MiniBatch, policy: PolicyLogps):
    """SPPO's regression with step η onto the anchor ``anchor_logps`` (π_t; APO's extrapolated π̂_t)."""
    logratios = policy.logps - batch.row["anchor_logps"]  # [B, S]
    targets = eta * (batch.row["win_rates"] - 0.5)  # [B, S]
    losses = ((logratios - targets) ** 2).mean(-1)  # [B]
    metrics = {
        "loss/sppo": losses.detach(),
        "kl/logratio": logratios.detach().mean(-1),
        "pref/win_rate_first": batch.row["win_rates"][:, 0],
        "pref/win_rate_last": batch.row["win_rates"][:, -1],
    }
    return losses, metrics


def collect_hard(ctx: Context, prompts) -> Batch:
    cfg: SPPOHardParams = ctx.algo_cfg
    if cfg.pairs_from == "rollout":
        groups, win_rates = sample_and_score(ctx, prompts, cfg.num_samples)
        prompt_ids, response_ids, anchor = rows_from_groups(groups, best_worst(win_rates))
        return Batch(prompt_ids, response_ids, seqs_per_row=2, row_data={"anchor_logps": anchor})
    prompt_ids = [p.prompt_ids for p in prompts for _ in range(2)]
    response_ids = [p.extra[k] for p in prompts for k in ("chosen_ids", "rejected_ids")]
    anchor = ctx.anchors.logps(prompt_ids, response_ids, policy="current").view(len(prompts), 2)
    return Batch(prompt_ids, response_ids, seqs_per_row=2, row_data={"anchor_logps": anchor})


def loss_hard(cfg: SPPOHardParams, batch: MiniBatch, policy: PolicyLogps):
    """Per-pair sppo_hard loss (TRL): (r_w − 1/(2β))² + (r_l + 1/(2β))², r = log π_θ/π_t.

    Shapes: policy.logps, batch.row["anchor_logps"]: [B, 2] (chosen, rejected). Returns loss [B].
    """
    logratios = policy.logps - batch.row["anchor_logps"]  # [B, 2]
    half_inv_beta = 0.5 / cfg.beta
    losses = (logratios[:, 0] - half_inv_beta) ** 2 + (logratios[:, 1] + half_inv_beta) ** 2
    metrics = {
        "loss/sppo_hard": losses.detach(),
        "kl/logratio_chosen": logratios[:, 0].detach(),
        "kl/logratio_rejected": logratios[:, 1].detach(),
        "pref/margin": (logratios[:, 0] - logratios[:, 1]).detach(),
    }
    return losses, metrics


SPPO = Algorithm(
    stale_samples="current_anchor",
    name="sppo",
    paper=("Self-Play Preference Optimization", "2405.00675"),
    config_class=SPPOParams,
    collect=collect,
    loss=loss,
)
SPPO_HARD = Algorithm(
    stale_samples=lambda cfg: "current_anchor" if cfg.pairs_from == "rollout" else "any",
    name="sppo_hard",
    paper=("Self-Play Preference Optimization", "2405.00675"),
    config_class=SPPOHardParams,
    collect=collect_hard,
    loss=loss_hard,
    reads_pairs=lambda cfg: cfg.pairs_from == "dataset",
)
