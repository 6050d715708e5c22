"""Nash-MP: Nash Mirror Prox (Tiapkin, Calandriello, Belomestny, Moulines, Naumov, Rasul, Valko, Ménard;
arXiv 2505.19731, "Accelerating Nash Learning from Human Feedback via Mirror Prox").

Objective. Mirror prox on the β-regularised preference game J_β, with the KL-to-π_ref term handled proximally;
both steps start from π_k, the full step against the half step's policy. The paper's prox steps [secondary source:
a literature review quoting the paper; the paper's own text (Algorithm 1) was not read here]:
    π_{k+½} = argmin_π (1/β)·P(π_k ≻ π) + KL(π‖π_ref) + (1/η)·KL(π‖π_k)
    π_{k+1} = argmin_π (1/β)·P(π_{k+½} ≻ π) + KL(π‖π_ref) + (1/η)·KL(π‖π_k),        η > 0 the learning rate,
with closed forms (docs/algorithms/nash_mp.md; prefopt.games.nash_mp_step):
    log π_{k+½} = [log π_k + η log π_ref + (η/β) P(· ≻ π_k)] / (1 + η) + c
    log π_{k+1} = [log π_k + η log π_ref + (η/β) P(· ≻ π_{k+½})] / (1 + η) + c
The paper states last-iterate linear convergence, KL(π*_β‖π_k) ≲ (1 + 2β)^{−N/2} in N preference queries
[abstract]. The contraction is 1/(1 + η) per iteration (two queries), so η = 2β matches that rate [derived here,
unconfirmed against the paper's theorem].

Symbols. β and η (``beta``, ``eta``) are the paper's: a value from the paper is copied as is. Earlier versions of
this module took η/β as ``eta``: multiply an old config's ``eta`` by β (old 2 at β = 0.1 is 0.2). The default
η = 0.1 is the old default (1 at β = 0.1); the source read gives no value.

Proximal steps, ``prox_step: regression`` (the project's choice, docs/algorithms/nash_mp.md). Each step has a closed
form, so it is fitted by a squared loss on pairs (y, y') from a full-support sampler, with y'' from the opponent
π_s (π_k for the half step, π_{k+½} for the full step):
    h(θ) = [lp_θ(y) − lp_θ(y')] − (1/(1+η))·[lp_k(y) − lp_k(y')] − (η/(1+η))·[lp_ref(y) − lp_ref(y')]
    target = ((η/β)/(1+η))·[P(y ≻ y'') − P(y' ≻ y'')],        loss = (h(θ) − target)².
With full support its minimiser is exactly the mirror-prox iterate, so optimising it well (``num_train_epochs``)
solves the prox step. An iteration: collect (y, y' broadened, y'' ~ π_k, lp_k from the rollout, lp_ref from a
no-grad pass) → snapshot θ_k and the optimizer state → optimise (θ_{k+½}) → fresh y, y', y'' with the half-step
model → back to θ_k (lp_k of the new pairs from one pass) → optimise (θ_{k+1}).

``prox_step: pg`` is the paper's approximate version: each prox step is a policy-gradient step on the prox objective
times −β, E_{y~π_θ, y'~π_s}[P(y ≻ y')] − β·KL(π_θ‖π_ref) − (β/η)·KL(π_θ‖π_c), with the prox centre π_c = π_k or,
with ``ema > 0``, an exponential moving average of the iterates that starts at θ_0 (the practical variant's
stabiliser).

Departures. Log-probs are sums by default (the exact correspondence above); ``normalize_logprobs`` switches to
per-token means. In ``pg`` the advantages are computed at θ_k when the data is collected: exact for one gradient
step per phase (the default), off-policy for more.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Literal

import torch

from prefopt.algorithms import Algorithm
from prefopt.algorithms.egpo import resample_pairs, two_phase_step
from prefopt.algorithms.opponent import collect_against_opponent, sequence_logps
from prefopt.batch import Batch, MiniBatch, PolicyLogps
from prefopt.context import Context
from prefopt.errors import ConfigError


@dataclass
class NashMPParams:
    """Nash-MP hyperparameters (β, η the paper's, see the module docstring; the sampler as EGPO's repository)."""

    beta: float = field(default=0.1, metadata={"help": "β, the KL-to-π_ref coefficient of the regularised game."})
    eta: float = field(
        default=0.1,
        metadata={
            "help": "η, the paper's mirror-prox learning rate (prox term (1/η)·KL(π‖π_k)); contraction 1/(1+η) per "
            "iteration. Configs written for the old scale (η/β) convert by multiplying by β."
        },
    )
    prox_step: Literal["regression", "pg"] = field(
        default="regression", metadata={"help": "Fit each prox step by regression (exact) or policy gradient."}
    )
    num_samples: int = field(default=4, metadata={"help": "pg: samples y per prompt (the group baseline)."})
    ema: float = field(default=0.0, metadata={"help": "pg: EMA decay of the prox centre (0: the centre is θ_k)."})
    pair_temperature: float = field(default=2.0, metadata={"help": "Temperature of the y, y' sampler (broadened)."})
    pair_top_k: int = field(default=10, metadata={"help": "Top-k of the y, y' sampler (0: off)."})
    normalize_logprobs: bool = field(default=False, metadata={"help": "Per-token means instead of sums."})

    def validate(self) -> None:
        if self.beta <= 0 or self.eta <= 0:
            raise ConfigError("config keys 'beta' and 'eta' must be > 0")
        if not 0 <= self.ema < 1 or self.num_samples < 2:
            raise ConfigError("config keys: 'ema' must be in [0, 1) and 'num_samples' >= 2")
        if self.pair_temperature <= 0:
            raise ConfigError(f"config key 'pair_temperature' must be > 0, got {self.pair_temperature}")


def collect(ctx: Context, prompts, stream: str = "policy") -> Batch:
    """Half-step data: the prox centre π_k is the sampling policy, so lp_k is the rollout's own."""
    if ctx.algo_cfg.prox_step == "pg":
        return _collect_pg(ctx, prompts)
    batch = collect_against_opponent(ctx, prompts, stream)
    batch.row_data["centre_logps"] = batch.row_data["sample_logps"]
    return batch


def train_step(ctx: Context, batch) -> dict:
    """The half step from θ_k against π_k, then the full step from θ_k against π_{k+½}."""
    if ctx.algo_cfg.prox_step == "pg":
        if ctx.algo_cfg.ema > 0 and "centre" not in ctx.algo_state:  # before the first optimisation: the EMA
            ctx.algo_state["centre"] = ctx.backend.snapshot()  # starts at θ_0 (checkpointed with algo_state)
        return two_phase_step(ctx, batch, _opponents_at_half, functools.partial(_pg_full_batch, batch))
    return two_phase_step(ctx, batch, resample_pairs, _add_centre_logps)


def _add_centre_logps(ctx: Context, full_batch: Batch) -> Batch:
    """θ_k is back: one pass gives lp_k of the full step's pairs."""
    tokens = ctx.anchors.token_logps(full_batch.prompt_ids, full_batch.response_ids, policy="current")
    full_batch.row_data["centre_logps"] = sequence_logps(tokens, ctx.algo_cfg).view(-1, 2)
    return full_batch


# -- pg: the paper's approximate prox steps --------------------------------------------------------------------
# Each prox step maximises J(θ) = E_{y~π_θ, y'~π_s} P(y ≻ y') − β·KL(π_θ‖π_ref) − (β/η)·KL(π_θ‖π_c) (the paper's
# prox objective times −β) with policy gradient: ∇J = E_y[∇log π_θ(y) · A(y)],
# A(y) = P(y ≻ y') − β·log(π_θ/π_ref)(y) − (β/η)·log(π_θ/π_c)(y) − b
# (E ∇log π = 0 turns each KL's gradient into this form; b is the mean of the prompt's K samples). The K samples
# y ~ π_k serve both steps; only the opponents y' change (π_k, then π_{k+½}). π_c is θ_k, or an EMA of the iterates.


def _advantages(ctx: Context, prompts, samples: list, opponents: list, lp, lp_ref, lp_centre) -> torch.Tensor:
    """A [P, K] from P(y ≻ y') against one opponent per prompt, with the group mean as baseline."""
    cfg = ctx.algo_cfg
    k = cfg.num_samples
    refs = ctx.references(prompts)
    wins = (
        ctx.judge.preference(
            [p.prompt for p in prompts for _ in range(k)],
            [s.text for s in samples],
            [o for o in opponents for _ in range(k)],
            None if refs is None else [r for r in refs for _ in range(k)],
        )
        .float()
        .view(-1, k)
    )
    adv = wins - cfg.beta * (lp - lp_ref) - cfg.beta / cfg.eta * (lp - lp_centre)
    return adv - adv.mean(dim=1, keepdim=True)


def _collect_pg(ctx: Context, prompts) -> Batch:
    cfg = ctx.algo_cfg
    samples = [s for g in ctx.sample(prompts, cfg.num_samples).groups() for s in g]
    opponents = [g[0].text for g in ctx.sample(prompts, 1, stream="opponent").groups()]
    prompt_ids, response_ids = [s.prompt_ids for s in samples], [s.response_ids for s in samples]
    lp = sequence_logps([s.token_logps for s in samples], cfg).view(len(prompts), -1)
    lp_ref = sequence_logps(ctx.anchors.token_logps(prompt_ids, response_ids, "reference"), cfg).view_as(lp)
    centre = ctx.algo_state.get("centre") if cfg.ema > 0 else None  # None in the first iteration: π_c = π_0 = π_k
    lp_centre = (
        lp
        if centre is None
        else sequence_logps(ctx.anchors.token_logps(prompt_ids, response_ids, centre), cfg).view_as(lp)
    )
    row = {"sample_logps": lp, "ref_logps": lp_ref, "centre_logps": lp_centre}
    row["advantage"] = _advantages(ctx, prompts, samples, opponents, lp, lp_ref, lp_centre)
    return Batch(prompt_ids, response_ids, seqs_per_row=cfg.num_samples, row_data=row)


def _opponents_at_half(ctx: Context) -> list[str]:
    """pg: one opponent per prompt from π_{k+½}."""
    return [g[0].text for g in ctx.sample(ctx.prompts, 1, stream="half_step/opponent").groups()]


def _pg_full_batch(batch: Batch, ctx: Context, opponents: list[str]) -> Batch:
    """pg: the half step's samples y ~ π_k again, their advantages now against π_{k+½}'s opponents."""
    samples = [s for stream, _, rollout in ctx.rollouts if stream == "policy" for s in rollout.samples]
    r = batch.row_data
    advantage = _advantages(ctx, ctx.prompts, samples, opponents, r["sample_logps"], r["ref_logps"], r["centre_logps"])
    return Batch(batch.prompt_ids, batch.response_ids, batch.seqs_per_row, row_data={**r, "advantage": advantage})


def end_iteration(ctx: Context) -> None:
    """pg with ema > 0: the prox centre becomes ema·centre + (1 − ema)·θ_{k+1}; train_step stored θ_0 before the
    first optimisation, so after one iteration it is ema·θ_0 + (1 − ema)·θ_1."""
    cfg = ctx.algo_cfg
    if cfg.prox_step != "pg" or cfg.ema == 0:
        return
    now, centre = ctx.backend.snapshot(), ctx.algo_state["centre"]
    ctx.algo_state["centre"] = {k: cfg.ema * centre[k] + (1 - cfg.ema) * v for k, v in now.items()}


def pg_loss(cfg: NashMPParams, batch: MiniBatch, policy: PolicyLogps):
    """REINFORCE surrogate −A·log π_θ(y), mean over the prompt's K samples. Shapes: [B, K] → loss [B]."""
    logps = policy.mean_logps if cfg.normalize_logprobs else policy.logps
    losses = -(batch.row["advantage"] * logps).mean(-1)
    return losses, {"loss/nash_mp_pg": losses.detach(), "pref/abs_advantage": batch.row["advantage"].abs().mean(-1)}


def loss(cfg: NashMPParams, batch: MiniBatch, policy: PolicyLogps):
    """Per-row regression onto the mirror-prox step: (h(θ) − target)².

    Shapes: policy log-probs, batch.row["centre_logps"] (π_k), batch.row["ref_logps"]: [B, 2] for (y, y');
    batch.row["pref_diff"] = P(y ≻ y'') − P(y' ≻ y''): [B]. Returns loss [B].
    """
    if cfg.prox_step == "pg":
        return pg_loss(cfg, batch, policy)
    eta = cfg.eta  # the paper's η: log π = [log π_k + η log π_ref + (η/β)·P(· ≻ π_s)]/(1 + η) + c
    logps = policy.mean_logps if cfg.normalize_logprobs else policy.logps

    def diff(x):
        return x[:, 0] - x[:, 1]

    h = diff(logps) - diff(batch.row["centre_logps"]) / (1 + eta) - eta / (1 + eta) * diff(batch.row["ref_logps"])
    targets = eta / cfg.beta / (1 + eta) * batch.row["pref_diff"]
    losses = (h - targets) ** 2
    return losses, {"loss/nash_mp": losses.detach(), "pref/h": h.detach(), "pref/target": targets}


NASH_MP = Algorithm(
    name="nash_mp",
    paper=("Nash Mirror Prox", "2505.19731"),
    config_class=NashMPParams,
    collect=collect,
    loss=loss,
    train_step=train_step,
    end_iteration=end_iteration,
    phases=2,
    needs_ref=True,
    game_beta=lambda cfg: cfg.beta,
    exact_expectation=lambda cfg: cfg.prox_step == "regression",
)
