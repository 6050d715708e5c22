"""GVM: gradient-variance-minimising sample allocation for RAFT, RAFT++ and GRPO (``gvm_raft``, ``gvm_raftpp``,
``gvm_grpo``).

Paper: Yao, Hao, Zhang, Dong, Xiong, Jiang, Zhang, "Optimizing Chain-of-Thought Reasoners via Gradient Variance
Minimization in Rejection Sampling and RL" (arXiv 2505.02391); code RLHFlow/GVM. docs/algorithms/gvm.md.

Each iteration is one GVM window:
1. probe: N′ = ``probe_samples`` responses per prompt from π_t; the acceptance rate p̂_i = (#reward > 0)/N′ and the
   gradient norm Ĝ_i = mean over the accepted probes of ‖∇_φ log π(y|x)‖ (summed log-prob; φ the parameters whose
   names contain ``grad_params``, default the input embeddings as in the official code; frozen ones included);
2. allocate the budget N = ``num_samples`` × #prompts (the same total as uniform sampling) with
   n_i ∝ Ĝ_i / sqrt(p̂_i + α/p̂_i^{β−1}) (``gvm_allocation.allocate``; n_i = 0 where p̂_i = 0 or Ĝ_i = 0);
3. sample n_i fresh responses per prompt and build the base method's rows from them (RAFT's accepted responses,
   GRPO's variable-size groups);
4. the loop's optimizer steps on those rows are the window's M-steps (the official code re-estimates every 10
   steps: set the batch size and epochs so that an iteration takes that many steps).
Allocation statistics are logged under ``gvm/``, including the variance bound Σ G²/(n·p) of the allocation
relative to uniform allocation of the same budget.

Several processes: each probes its block of the iteration's prompts; the estimates are gathered and the whole
budget is allocated at once, as the official code does; the prompts are then cut again into contiguous blocks of
near-equal sample counts for the final sampling. The probe samples are used for estimation only, as in the
official pipeline, and are drawn from their own random stream (``gvm_probe``), so the final samples are fresh.
Under ZeRO-3 the gradient norms run on the gathered model.

Departures (the full list in docs/algorithms/gvm.md):
- Row weighting, as in the official code but not as in the analysis. The allocation minimises the variance bound
  Σ G_i²/(n_i p_i) of the per-prompt estimator (1/(n_i p_i)) Σ_{accepted} ∇log π(y|x_i), which weighs every prompt
  alike. The loop weighs rows alike (each row 1/rows of its step), so a prompt's weight in an iteration's gradient is
  proportional to its rows: its a_i ~ Binomial(n_i, p_i) accepted responses under RAFT/RAFT++ (n_i p_i on average),
  its n_i group members under GRPO. The trained estimator is therefore not the one whose variance is minimised (the
  official code's token mean likewise weighs a prompt by its rows' tokens).
- Rounding ties, the cap ``max_samples`` (redistributed, not cut), no ``filter_threshold``/``filter_insufficient``
  filters, no per-chunk rounding of n_i, every tensor matching ``grad_params`` (the official code: the first).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, make_dataclass

import torch

from prefopt.algorithms import Algorithm, grpo, raft
from prefopt.algorithms.gvm_allocation import allocate, estimator_variance_bound
from prefopt.algorithms.outcome import sample_groups
from prefopt.context import Context
from prefopt.errors import ConfigError


@dataclass
class GVMOptions:
    """GVM's own hyperparameters (official defaults), added to the base method's."""

    probe_samples: int = field(default=8, metadata={"help": "N′, responses per prompt to estimate p_i and G_i."})
    gvm_alpha: float = field(default=1e-3, metadata={"help": "α, the regulariser against near-impossible prompts."})
    gvm_beta: float = field(default=2.0, metadata={"help": "β, the regulariser's exponent."})
    grad_params: str = field(
        default="embed_tokens", metadata={"help": "Parameters (name substring) whose gradient norm estimates G_i."}
    )
    max_samples: int | None = field(default=None, metadata={"help": "Cap on n_i (None: no cap)."})

    def validate_gvm(self) -> None:
        if self.probe_samples < 1:
            raise ConfigError(f"config key 'probe_samples' must be >= 1, got {self.probe_samples}")
        if self.gvm_alpha < 0:
            raise ConfigError(f"config key 'gvm_alpha' must be >= 0, got {self.gvm_alpha}")


def _config_class(base: type) -> type:
    """The base config's fields followed by GVM's, validated by both."""

    def validate(self) -> None:
        base.validate(self)
        GVMOptions.validate_gvm(self)

    extra = [(f.name, f.type, f) for f in fields(GVMOptions)]
    return make_dataclass(f"GVM{base.__name__}", extra, bases=(base,), namespace={"validate": validate})


def gradient_norms(ctx: Context, samples) -> list[float]:
    """‖∇_φ log π(y|x)‖ of each sample (one forward and backward each), φ = parameters matching ``grad_params``.

    Outside the optimizer: the gradients are taken with ``torch.autograd.grad`` on the unwrapped model (under
    ZeRO-3 with its weights gathered once for all samples), so nothing is accumulated or synchronised."""
    backend, pattern = ctx.backend, ctx.algo_cfg.grad_params
    with backend.inference_model(gather=True) as model:
        params = [p for name, p in model.named_parameters() if pattern in name]
        if not params:
            raise ConfigError(f"config key 'grad_params': no parameter name contains {pattern!r}")
        flags = [p.requires_grad for p in params]
        was_training = model.training
        model.eval()
        norms = []
        try:
            for p in params:
                p.requires_grad_(True)
            for s in samples:
                logp = ctx.scorer.token_logps(model, [s.prompt_ids], [s.response_ids]).sum()
                grads = torch.autograd.grad(logp, params, allow_unused=True)
                norms.append(float(sum(g.float().pow(2).sum() for g in grads if g is not None) ** 0.5))
        finally:
            for p, flag in zip(params, flags):
                p.requires_grad_(flag)
            model.train(was_training)
    return norms


def probe_and_allocate(ctx: Context, prompts) -> tuple[list[int], dict[str, float]]:
    """GVM's estimation stage on this process's prompts, allocated over every process's: (n_i for each prompt of
    the iteration in rank order, allocation metrics)."""
    cfg = ctx.algo_cfg
    groups, rewards = sample_groups(ctx, prompts, cfg.probe_samples, stream="gvm_probe")
    accepted = [[s for s, r in zip(g, rs.tolist()) if r > 0] for g, rs in zip(groups, rewards)]
    norms = iter(gradient_norms(ctx, [s for group in accepted for s in group]))
    local_G = [sum(next(norms) for _ in a) / len(a) if a else 0.0 for a in accepted]
    p = torch.tensor(ctx.gather([float((r > 0).float().mean()) for r in rewards]), dtype=torch.float64)
    G = torch.tensor(ctx.gather(local_G), dtype=torch.float64)
    budget = cfg.num_samples * len(p)
    n = allocate(p, G, budget, cfg.gvm_alpha, cfg.gvm_beta, max_samples=cfg.max_samples)
    uniform = torch.full_like(n, cfg.num_samples)
    metrics = {
        "gvm/probe_accept_rate": float(p.mean()),
        "gvm/grad_norm_mean": float(G[G > 0].mean()) if bool((G > 0).any()) else 0.0,
        "gvm/zero_prompts": float((n == 0).float().mean()),
        "gvm/n_max": float(n.max()) if len(n) else 0.0,
        "gvm/n_std": float(n.double().std()) if len(n) > 1 else 0.0,
    }
    # Rounding can leave a solvable prompt of tiny weight without samples, which makes its bound infinite.
    metrics["gvm/unsampled_solvable"] = float(((n == 0) & (p > 0) & (G > 0)).sum())
    bound, uniform_bound = estimator_variance_bound(p, G, n), estimator_variance_bound(p, G, uniform)
    if uniform_bound > 0 and math.isfinite(bound):
        metrics["gvm/variance_bound_ratio"] = bound / uniform_bound
    return n.tolist(), metrics


def _with_allocation(base_collect):
    def collect(ctx: Context, prompts):
        counts, metrics = probe_and_allocate(ctx, prompts)
        # The budgets are uneven: the iteration's prompts are cut again into blocks of near-equal sample counts.
        everyone = ctx.iteration_prompts
        lo, hi = ctx.shard(everyone, weights=counts)
        batch = base_collect(ctx, everyone[lo:hi], counts=counts[lo:hi])
        batch.metric_weights = {k: batch.metric_weights.get(k, hi - lo) for k in batch.metrics}
        batch.metrics.update(metrics)
        batch.metric_weights.update(dict.fromkeys(metrics, 1.0))  # allocated together: the same on every process
        return batch

    return collect


def _gvm(base: Algorithm, name: str, config_class: type) -> Algorithm:
    return Algorithm(
        name=name,
        paper=("Optimizing Chain-of-Thought Reasoners via Gradient Variance Minimization", "2505.02391"),
        config_class=config_class,
        collect=_with_allocation(base.collect),
        loss=base.loss,
        needs_ref=base.needs_ref,
        needs_reward_judge=True,
        stale_samples=base.stale_samples,  # the probe's calls are predicted; the allocated ones are sampled fresh
    )


GVMRAFTParams = _config_class(raft.RAFTParams)
GVMGRPOParams = _config_class(grpo.GRPOParams)
GVM_RAFT = _gvm(raft.RAFT, "gvm_raft", GVMRAFTParams)
GVM_RAFT_PP = _gvm(raft.RAFT_PP, "gvm_raftpp", GVMRAFTParams)
GVM_GRPO = _gvm(grpo.GRPO, "gvm_grpo", GVMGRPOParams)
