"""Online IPO (OMD): the one-phase baseline of EGPO, and the loss and data EGPO's two phases share.

Paper: the loss as EGPO (Zhou, Fazel, Du; arXiv 2503.08942) states it for the β-regularised game
J_β(π, π') = P(π ≻ π') − β KL(π‖π_ref) + β KL(π'‖π_ref), against an opponent π_s (section 2 of ALGORITHMS.md):
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

import torch

from prefopt.algorithms import Algorithm
from prefopt.batch import Batch, MiniBatch, PolicyLogps
from prefopt.errors import ConfigError


@dataclass
class OnlineIPOConfig:
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


def sequence_logps(token_logps: list[torch.Tensor], cfg) -> torch.Tensor:
    """[N] sequence log-probs from per-token ones: means with ``normalize_logprobs``, else sums."""
    return torch.stack([t.mean() if cfg.normalize_logprobs else t.sum() for t in token_logps])


def collect_against_opponent(ctx, prompts, stream: str = "policy", mixture: float = 0.0) -> Batch:
    """Rows (y, y') with the target P(y ≻ y'') − P(y' ≻ y''), y'' drawn from the opponent: the current policy, or
    with ``mixture`` = μ > 0 its token-level geometric mixture with π_ref (Nash-MD). Under ``game_exact`` the rows
    are every pair of actions, weighted, with the target's expectation (``Context.pairs_against``).

    Row data: ``ref_logps`` and ``sample_logps`` (the sampling policy's) [R, 2] for (y, y'), ``pref_diff`` [R].
    """
    cfg = ctx.algo_cfg
    sampler = {"temperature": cfg.pair_temperature, "top_k": cfg.pair_top_k}
    pairs, pref_diff, weights = ctx.pairs_against(prompts, stream, sampler, mixture)
    prompt_ids = [s.prompt_ids for pair in pairs for s in pair]
    response_ids = [s.response_ids for pair in pairs for s in pair]
    ref = sequence_logps(ctx.anchors.token_logps(prompt_ids, response_ids, policy="reference"), cfg).view(-1, 2)
    # The rollout's log-probs are the sampling-time policy's own (temperature 1), whatever the sampler's settings.
    sampled = sequence_logps([s.token_logps for pair in pairs for s in pair], cfg).view(-1, 2)
    mean_abs = pref_diff.abs().mean() if weights is None else (weights * pref_diff.abs()).sum() / weights.sum()
    return Batch(
        prompt_ids,
        response_ids,
        seqs_per_row=2,
        row_data={"ref_logps": ref, "sample_logps": sampled, "pref_diff": pref_diff},
        metrics={f"pref/{stream}_abs_target": float(mean_abs)},
        row_weights=weights,
    )


def two_phase_step(ctx, batch: Batch, before_full_step=None) -> dict:
    """Extragradient / mirror prox: the half step from θ_t, then the full step again from θ_t, on fresh data
    sampled by the half-step policy; parameters and optimizer state are restored from snapshots in between.

    Args:
        before_full_step: called with the full step's batch once θ_t is back (e.g. to add π_t's log-probs).
    """
    theta_t, optimizer_t = ctx.backend.snapshot(), ctx.backend.snapshot_optimizer()
    half = ctx.optimise(batch)
    full_batch = collect_against_opponent(ctx, ctx.prompts, stream="half_step")  # sampled by θ_{t+½}
    ctx.backend.restore(theta_t)
    ctx.backend.restore_optimizer(optimizer_t)
    if before_full_step is not None:
        before_full_step(full_batch)
    full = ctx.optimise(full_batch)
    return {**{f"half/{k}": v for k, v in half.items()}, **full, **ctx.gather_metrics(full_batch)}


def loss(cfg: OnlineIPOConfig, batch: MiniBatch, policy: PolicyLogps):
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
    name="online_ipo",
    config_class=OnlineIPOConfig,
    collect=collect_against_opponent,
    loss=loss,
    needs_ref=True,
    game_beta=lambda cfg: cfg.beta,
    exact_expectation=lambda cfg: True,
)
