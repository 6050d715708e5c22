"""REBEL: Reinforcement Learning via Regressing Relative Rewards (Gao, Chang, Zhan, Oertell, Swamy, Brantley,
Joachims, Bagnell, Lee, Sun; arXiv 2404.16767, NeurIPS 2024; code: ZhaolinGao/REBEL).

Objective. Each iteration regresses the difference of log-ratios against the rollout policy π_t onto the reward
difference of two responses to the same prompt (the paper's regression objective, Algorithm 1):
    θ_{t+1} = argmin_θ Σ_{(x,y,y')} ( (1/η)·[log π_θ(y|x)/π_t(y|x) − log π_θ(y'|x)/π_t(y'|x)] − [r(x,y) − r(x,y')] )²,
whose exact minimiser (tabular, full support) is the natural-policy-gradient / mirror-descent step
π_{t+1} ∝ π_t·exp(η·r) (``prefopt.games``: Hedge on a reward, θ ← θ + η·r).

Data per iteration. K = ``num_samples`` responses per prompt from π_t (log π_t from the rollout, no extra pass);
with a reward judge, K = 2 is one random pair (the TL;DR setting) and K > 2 keeps the best and the worst by reward
(the UltraFeedback setting, 5 samples). Rewards may be replaced for responses cut at max_new_tokens
(``missing_eos_reward``, TL;DR's −1) and penalised by the sequence KL to π_ref, r − kl_coef·(log π_t − log π_ref)
(TL;DR, kl_coef 0.05; one no-grad π_ref pass, only when kl_coef > 0). With ``drop_truncated_completions`` a prompt
any of whose K responses was cut at max_new_tokens gives no row (the UltraFeedback large-batch pipeline's filter,
``filter_tokenize.py``: a response longer than the generation cap of 2048 tokens once its end-of-turn token is added,
i.e. one that stopped at the cap; ``pref/pairs_kept`` logs the fraction of prompts kept). Off by default, as in the
TL;DR code, which keeps such responses and gives them missing_eos_reward instead.
Preference variant (paper section 4, intransitive preferences): with a pairwise judge the reward is the win rate
against π_t, r_t(y) = P(y ≻ π_t); identifying the opponent with the other response of the pair gives the target
P(y ≻ y') − ½ (K = 2; for K > 2 the pair is a knock-out tournament's winner and loser).

Symbols ↔ official code. The code computes ``reg_diff = Δlogratio − eta·Δr`` and minimises its square, so its
minimiser is the paper's with ``eta`` = η: prefopt's ``eta`` is both (TL;DR 1.0; UltraFeedback large batch 1e6).
The code's loss is η² times the paper's (the same minimiser, gradients scaled by η²); prefopt minimises the
code's form so that the published learning rates carry over. The code's ``eta`` is easily read as 1/η_paper; the
two formulas above show the minimisers agree only with eta_code = η_paper (docs/algorithms/rebel.md).

Departures. log π_t is the policy's own log-probability at temperature 1 (the code divides logits by its sampling
temperature, 0.7 for TL;DR, in both the rollout and the training pass). The code's optional reward whitening is not
offered. Sequence log-probs are sums, as in the code. The UltraFeedback pipeline also drops prompts over 1024 tokens
and pairs of identical responses; prefopt keeps both (docs/algorithms/rebel.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from prefopt.algorithms import Algorithm
from prefopt.batch import Batch, MiniBatch, PolicyLogps, pair_sequences
from prefopt.context import Context
from prefopt.errors import ConfigError
from prefopt.judges.base import RewardJudge
from prefopt.judges.selection import knockout_pairs


@dataclass
class REBELParams:
    """REBEL hyperparameters (TL;DR defaults of the official code)."""

    eta: float = field(default=1.0, metadata={"help": "η: the step, Δ log-ratio target = η·Δr (code: eta)."})
    num_samples: int = field(default=2, metadata={"help": "K responses per prompt; K > 2: best/worst pair."})
    kl_coef: float = field(
        default=0.0, metadata={"help": "Reward penalty kl_coef·(log π_t − log π_ref) (TL;DR 0.05)."}
    )
    missing_eos_reward: float | None = field(
        default=None, metadata={"help": "Reward of a response cut at max_new_tokens (TL;DR: −1); None: unchanged."}
    )
    drop_truncated_completions: bool = field(
        default=False,
        metadata={
            "help": "Drop a prompt when any of its K responses was cut at max_new_tokens (UltraFeedback filter)."
        },
    )

    def validate(self) -> None:
        if self.eta <= 0:
            raise ConfigError(f"config key 'eta' must be > 0, got {self.eta}")
        if self.num_samples < 2:
            raise ConfigError(f"config key 'num_samples' must be >= 2, got {self.num_samples}")
        if self.kl_coef < 0:
            raise ConfigError(f"config key 'kl_coef' must be >= 0, got {self.kl_coef}")


def _reward_pairs(ctx: Context, prompts, groups) -> tuple[list, torch.Tensor, dict]:
    """(pairs of samples, Δr [R], metrics) from a reward judge: the first two samples, or best and worst."""
    cfg: REBELParams = ctx.algo_cfg
    texts = [[s.text for s in g] for g in groups]
    rewards = ctx.judge.grouped_rewards([p.prompt for p in prompts], texts, ctx.references(prompts))
    raw_mean = float(torch.cat(rewards).mean())
    if cfg.missing_eos_reward is not None:
        cut = [torch.tensor([s.finish_reason == "length" for s in g]) for g in groups]
        rewards = [torch.where(c, torch.full_like(r, cfg.missing_eos_reward), r) for r, c in zip(rewards, cut)]
    metrics = {"reward/mean": raw_mean}
    if cfg.kl_coef > 0:
        flat = [s for g in groups for s in g]
        ref = ctx.anchors.logps([s.prompt_ids for s in flat], [s.response_ids for s in flat], policy="reference")
        kl = torch.tensor([s.logp for s in flat], dtype=torch.float64) - ref.double()
        rewards = [r - cfg.kl_coef * k for r, k in zip(rewards, torch.split(kl, [len(g) for g in groups]))]
        metrics["kl/sequence"] = float(kl.mean())
    pairs, deltas = [], []
    for g, r in zip(groups, rewards):
        a, b = (0, 1) if len(g) == 2 else (int(r.argmax()), int(r.argmin()))
        pairs.append((g[a], g[b]))
        deltas.append(r[a] - r[b])
    return pairs, torch.stack(deltas).float(), metrics


def _preference_pairs(ctx: Context, prompts, groups) -> tuple[list, torch.Tensor, dict]:
    """(pairs, P(y ≻ y') − ½ [R], metrics) from a preference judge (the paper's intransitive variant)."""
    texts = [[s.text for s in g] for g in groups]
    raw, refs = [p.prompt for p in prompts], ctx.references(prompts)
    chosen = (
        [(0, 1)] * len(groups)
        if len(groups[0]) == 2
        else [(w, lo) for w, lo, _ in knockout_pairs(ctx.judge, raw, texts, refs)]
    )
    pairs = [(g[a], g[b]) for g, (a, b) in zip(groups, chosen)]
    probs = ctx.judge.preference(raw, [a.text for a, _ in pairs], [b.text for _, b in pairs], refs)
    return pairs, (probs - 0.5).float(), {"pref/first_wins": float(probs.mean())}


def collect(ctx: Context, prompts) -> Batch:
    """Rows (y, y') with π_t's log-probs [R, 2] and the target difference Δr [R]; with ``drop_truncated_completions``
    none for a prompt one of whose K responses was cut at max_new_tokens (``pref/pairs_kept``: the fraction kept).

    Every prompt is judged (and its π_ref pass run) before any is dropped, as the UltraFeedback pipeline ranks all
    responses before filter_tokenize.py drops prompts; so ``reward/mean`` is every response's, and under ZeRO-3 each
    process runs its anchor pass even when it keeps no row.
    """
    cfg: REBELParams = ctx.algo_cfg
    groups = ctx.sample(prompts, cfg.num_samples).groups()
    select = _reward_pairs if isinstance(ctx.judge, RewardJudge) else _preference_pairs
    pairs, delta, metrics = select(ctx, prompts, groups)
    if cfg.drop_truncated_completions:
        kept = [k for k, g in enumerate(groups) if all(s.finish_reason != "length" for s in g)]
        pairs, delta = [pairs[k] for k in kept], delta[kept]
        metrics["pref/pairs_kept"] = len(kept) / max(len(prompts), 1)
    prompt_ids, response_ids, anchor = pair_sequences(pairs)
    return Batch(
        prompt_ids, response_ids, seqs_per_row=2, row_data={"anchor_logps": anchor, "delta": delta}, metrics=metrics
    )


def loss(cfg: REBELParams, batch: MiniBatch, policy: PolicyLogps):
    """Per-pair REBEL loss (Δ log π_θ/π_t − η·Δr)² (the official code's scaling of the paper's objective).

    Shapes: policy.logps and batch.row["anchor_logps"] (π_t): [B, 2] as (y, y'); batch.row["delta"]: [B].
    Returns loss [B].
    """
    ratio = policy.logps - batch.row["anchor_logps"]
    h = ratio[:, 0] - ratio[:, 1]
    target = cfg.eta * batch.row["delta"]
    losses = (h - target) ** 2
    return losses, {"loss/rebel": losses.detach(), "pref/h": h.detach(), "pref/target": target}


REBEL = Algorithm(
    stale_samples="current_anchor",
    name="rebel",
    paper=("REBEL: Reinforcement Learning via Regressing Relative Rewards", "2404.16767"),
    config_class=REBELParams,
    collect=collect,
    loss=loss,
    needs_ref=lambda cfg: cfg.kl_coef > 0,
)
