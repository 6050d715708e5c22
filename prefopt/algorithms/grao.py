"""GRAO: Group Relative Alignment Optimization (Wang et al., "Learning to Align, Aligning to Learn: A Unified
Approach for Self-Optimized Alignment", arXiv 2508.07750, eq. 3 and eq. 4). No official code.

Objective (maximised), per prompt q with a reference answer y from the dataset and G samples o_1..o_G ~ π_θ_old,
each scored by a reward that may see the reference, R(o, y):
    J = (1/G) Σ_i [ Â_{o_i}·ℓ(o_i)  +  β·Â_y·ℓ(y)  +  λ·Â_{o_i}·(ℓ(o_i) − ℓ(y)) ],
with ℓ(s) = (1/|s|) Σ_t log π_θ(s_t | q, s_<t) the length-normalised log-likelihood and group-normalised
advantages Â = (R − μ)/σ. The three terms are exploration (reinforce the better samples), imitation (move towards
the reference in proportion to how it ranks) and the alignment regulariser (the margin of each sample over the
reference). Loss = −J. There is no ratio, clipping or KL term.

Data per iteration. G = ``num_samples`` samples per prompt, the reference response (column ``reference_column``,
tokenised as the policy would emit it), the judge's reward of all G + 1 (given the ``answer_column`` references,
for judges that check against them). One row per prompt holds the G samples and the reference (S = G + 1).

Symbols are the paper's: β (imitation weight, 0.5), λ (alignment weight, 0.6), G (8).

Departures (docs/algorithms/grao.md):
1. Normalisation group. The paper's eq. 4 takes μ and σ over the G samples' rewards; prefopt's default
   (``advantage_group: samples_and_reference``) takes them over all G + 1 rewards {o_1..o_G, y} (population σ),
   so the advantages sum to zero and Â_y is at most √G. On o = (0,0,1,0,0,0,1,0), y = 1 a correct sample gets √2
   (eq. 4: √3). ``advantage_group: samples`` is eq. 4: y is scored against the samples' μ and σ, so Â_y grows
   without bound as σ → 0; where the G samples tie (σ = 0, eq. 4 is 0/0 for them and ±∞ for y) that prompt falls
   back to the G + 1 statistics, which are finite whenever R_y differs from them.
2. A prompt whose G + 1 rewards are all equal has Â = 0 under both groups and is dropped (no gradient).
3. Stale samples are refused (``stale_samples`` None): the loss has no importance ratio, so its exploration and
   alignment terms are a policy gradient only for samples of the current policy (π_θ_old = π_θ at the update).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from prefopt.algorithms import Algorithm
from prefopt.algorithms.outcome import reward_metrics, sample_groups
from prefopt.batch import Batch, MiniBatch, PolicyLogps
from prefopt.context import Context
from prefopt.data import encode_response, reference_text
from prefopt.errors import ConfigError, DataError
from prefopt.ops import group_advantages


@dataclass
class GRAOParams:
    """GRAO hyperparameters (paper defaults)."""

    num_samples: int = field(default=8, metadata={"help": "G, samples per prompt."})
    beta: float = field(default=0.5, metadata={"help": "β, weight of the imitation term Â_y·ℓ(y)."})
    lam: float = field(default=0.6, metadata={"help": "λ, weight of the alignment term Â_o·(ℓ(o) − ℓ(y))."})
    reference_column: str = field(default="completion", metadata={"help": "Dataset column of the reference answer."})
    std_epsilon: float = field(default=1e-6, metadata={"help": "Added to the group std before dividing."})
    advantage_group: Literal["samples_and_reference", "samples"] = field(
        default="samples_and_reference",
        metadata={"help": "Rewards giving Â's μ and σ: all G + 1 (prefopt), or the G samples' (the paper's eq. 4)."},
    )

    def validate(self) -> None:
        if self.num_samples < 1:
            raise ConfigError(f"config key 'num_samples' must be >= 1, got {self.num_samples}")
        if self.advantage_group not in ("samples_and_reference", "samples"):
            raise ConfigError(
                f"config key 'advantage_group' must be 'samples_and_reference' or 'samples', got "
                f"{self.advantage_group!r}"
            )


def grao_advantages(rewards: torch.Tensor, reference_reward: torch.Tensor, group: str, eps: float) -> torch.Tensor:
    """Â of the G samples, then of the reference y: (R − μ)/(σ + ε), population σ.

    ``samples_and_reference``: μ, σ over all G + 1 rewards. ``samples`` (the paper's eq. 4): μ, σ over the G
    samples' rewards, y scored against them; where the G samples tie (σ = 0, eq. 4 undefined) the G + 1 statistics
    are used instead.

    Args:
        rewards: [G], the samples' rewards.
        reference_reward: [] or [1], y's reward.

    Returns:
        [G + 1].
    """
    scores = torch.cat([rewards, reference_reward.reshape(1)])
    if group == "samples_and_reference" or bool((rewards == rewards[0]).all()):
        return group_advantages(scores, True, eps)
    return (scores - rewards.mean()) / (rewards.std(unbiased=False) + eps)


def reference_ids(ctx: Context, prompt) -> list[int]:
    sampling = ctx.sampling
    return _reference_ids(ctx.algo_cfg, prompt, ctx.tokenizer, sampling.allowed_token_ids, sampling.max_new_tokens)


def _reference_ids(cfg, prompt, tokenizer, allowed, max_new_tokens: int) -> list[int]:
    """The reference answer of ``prompt`` as the policy emits it; without the final EOS when responses are restricted
    to single tokens (``response_choices``), as the policy's own responses are."""
    text = reference_text(prompt, cfg.reference_column)
    ids = encode_response(tokenizer, prompt.prompt, text)
    if allowed is not None:
        ids = ids[:-1]
        if not ids or len(ids) > max_new_tokens or any(i not in allowed for i in ids):
            raise DataError(f"{prompt.where}: reference {text!r} is not one of the allowed responses")
    return ids


def check_examples(cfg, examples, tokenizer, allowed, max_new_tokens: int) -> None:
    """Every row's reference is a response the policy could emit (before any compute)."""
    for example in examples:
        _reference_ids(cfg, example, tokenizer, allowed, max_new_tokens)


def collect(ctx: Context, prompts) -> Batch:
    """Rows of G samples and the reference (S = G + 1) with advantages [R, G + 1]."""
    cfg: GRAOParams = ctx.algo_cfg
    groups, rewards = sample_groups(ctx, prompts, cfg.num_samples)
    refs = [reference_text(p, cfg.reference_column) for p in prompts]
    ref_rewards = ctx.judge.reward([p.prompt for p in prompts], refs, ctx.references(prompts)).float()
    prompt_ids, response_ids, advantages = [], [], []
    for p, g, r, r_y in zip(prompts, groups, rewards, ref_rewards):
        scores = torch.cat([r, r_y.view(1)])
        if bool((scores == scores[0]).all()):
            continue
        prompt_ids += [p.prompt_ids] * (len(g) + 1)
        response_ids += [s.response_ids for s in g] + [reference_ids(ctx, p)]
        advantages.append(grao_advantages(r, r_y, cfg.advantage_group, cfg.std_epsilon))
    metrics, weights = reward_metrics(rewards)
    metrics["reward/reference_mean"] = float(ref_rewards.mean()) if len(ref_rewards) else 0.0
    metrics["grao/groups_kept"] = len(advantages) / max(len(prompts), 1)
    adv = torch.stack(advantages) if advantages else torch.zeros(0, cfg.num_samples + 1)
    row_data = {"advantage": adv}
    return Batch(prompt_ids, response_ids, cfg.num_samples + 1, row_data, metrics=metrics, metric_weights=weights)


def loss(cfg: GRAOParams, batch: MiniBatch, policy: PolicyLogps):
    """−J_GRAO per prompt. Shapes: policy log-probs [B, G + 1] (samples, then the reference); advantage
    [B, G + 1]. Returns loss [B]."""
    ell = policy.mean_logps
    ell_o, ell_y = ell[:, :-1], ell[:, -1:]
    adv_o, adv_y = batch.row["advantage"][:, :-1], batch.row["advantage"][:, -1:]
    exploration = (adv_o * ell_o).mean(-1)
    imitation = cfg.beta * (adv_y * ell_y).squeeze(-1)
    alignment = cfg.lam * (adv_o * (ell_o - ell_y)).mean(-1)
    losses = -(exploration + imitation + alignment)
    metrics = {
        "loss/grao": losses.detach(),
        "grao/exploration": exploration.detach(),
        "grao/imitation": imitation.detach(),
        "grao/alignment": alignment.detach(),
    }
    return losses, metrics


GRAO = Algorithm(
    stale_samples=None,  # no ratio: a policy gradient only on samples of the current policy (docs/algorithms/grao.md)
    needs_reward_judge=True,
    name="grao",
    paper=("Group Relative Alignment Optimization", "2508.07750"),
    config_class=GRAOParams,
    collect=collect,
    loss=loss,
    required_columns=lambda cfg: (cfg.reference_column,),
    check_examples=check_examples,
)
