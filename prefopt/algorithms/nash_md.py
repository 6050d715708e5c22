"""Nash-MD: mirror descent against a geometric mixture with the reference (baseline of EGPO and Nash-MP).

Paper: Munos et al., "Nash Learning from Human Feedback" (arXiv 2312.00886, ICML 2024), section 5 (Nash-MD) and
section 7 (its deep-learning form). With the regularised policy π_t^μ ∝ π_t^{1−μ}·π_ref^μ, one step is
    π_{t+1} = argmax_π  η·P(π ≻ π_t^μ) − KL(π ‖ π_t^μ),
which in softmax logits is the mirror-descent step of the β-regularised game against the mixture:
    θ_{t+1} = (1 − ηβ)·θ_t + ηβ·θ_ref + η·P π_t^μ        (``prefopt.games.nash_md_step``),
the paper tying μ = ηβ. Its LLM form samples the opponent y'' from the token-level mixture
π^μ(y_t | x, y_<t) ∝ π_θ(y_t | ·)^{1−μ} π_ref(y_t | ·)^μ.

How the step is taken: the online-IPO loss of ``online_ipo.py`` with y'' ~ π_t^μ, whose gradient step from θ_t is
the mirror step against the mixture above (the same regression form as EGPO's tabular Nash-MD baseline):
    L(θ) = E_{y, y'} ( [Δ log π_θ − Δ log π_ref](y, y') − (P(y ≻ y'') − P(y' ≻ y''))/β )²,  y'' ~ π_t^μ.
Data per iteration: y, y' from the broadened sampler, y'' from the mixture (the rollout engine decodes π and π_ref
side by side; π_ref is the disabled adapter under LoRA, a frozen copy under full fine-tuning), the judge's
P(y ≻ y''), P(y' ≻ y''), and log π_ref(y), log π_ref(y').

Symbols ↔ official code. μ is ``mixture`` (0.125 in the EGPO repository's LLM baseline runs,
docs/algorithms/nash_md.md; its tabular baseline ties it to the step, ``true_lr·beta``). β is ``beta``. No official
Nash-MD code was released; whether EGPO's LLM baseline uses this regression loss or a policy gradient for the plain
Nash-MD variant is unconfirmed.

Departures. The step size η of the paper is not a parameter here (the optimizer's learning rate sets the step), so
μ is fixed rather than ηβ, as in the EGPO repository's LLM baseline. Nash-MD-PG (the policy-gradient form, section 7)
is not implemented; the regression form above has the same fixed point and is what EGPO compares against.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prefopt.algorithms import Algorithm
from prefopt.algorithms.online_ipo import OnlineIPOParams, loss
from prefopt.algorithms.opponent import collect_against_opponent
from prefopt.context import Context
from prefopt.errors import ConfigError


@dataclass
class NashMDParams(OnlineIPOParams):
    """Online-IPO hyperparameters plus the opponent's mixture weight on π_ref."""

    mixture: float = field(
        default=0.125, metadata={"help": "μ: the opponent y'' ~ π^{1−μ}·π_ref^μ per token (EGPO repo: 0.125)."}
    )

    def validate(self) -> None:
        super().validate()
        if not 0 <= self.mixture <= 1:
            raise ConfigError(f"config key 'mixture' must be in [0, 1], got {self.mixture}")


def collect(ctx: Context, prompts):
    """Online IPO's rows with the opponent y'' drawn from the geometric mixture π_t^μ."""
    return collect_against_opponent(ctx, prompts, mixture=ctx.algo_cfg.mixture)


NASH_MD = Algorithm(
    name="nash_md",
    paper=("Nash Learning from Human Feedback (Nash-MD)", "2312.00886"),
    config_class=NashMDParams,
    collect=collect,
    loss=loss,
    needs_ref=True,
    game_beta=lambda cfg: cfg.beta,
    mixes_reference=lambda cfg: cfg.mixture > 0,
    exact_expectation=lambda cfg: True,
)
