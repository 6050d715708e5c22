"""EGPO: Extragradient Preference Optimization (Zhou, Fazel, Du; arXiv 2503.08942, COLM 2025).

Objective. Extragradient (mirror-descent form) on the β-regularised preference game J_β; in the tabular case,
with step η and softmax logits θ:
    half step:  θ_{t+½} = (1 − ηβ)·θ_t + ηβ·θ_ref + η·P π_t
    full step:  θ_{t+1} = (1 − ηβ)·θ_t + ηβ·θ_ref + η·P π_{t+½}
Both steps start from θ_t; only the opponent changes. The paper proves last-iterate linear convergence to the
NE of J_β, where one-step online mirror descent (online IPO) needs small steps.

How each step is taken. One gradient step of the online-IPO squared loss (``online_ipo.py``) from θ_t against an
opponent π_s is one mirror-descent step against π_s (ALGORITHMS.md section 2: with the N²-normalised tabular
loss, SGD with learning rate lr is the step ηβ = 4·lr/N). An iteration:
1. collect y, y' (broadened sampler), y'' ~ π_t, judge, π_ref log-probs;
2. snapshot the trainable tensors and the optimizer state (adapter tensors only under LoRA; never a deepcopy);
3. optimise on that data: θ_{t+½};
4. collect fresh y, y', y'' with the half-step model (as the repo's LLM trainer does), judge, π_ref log-probs;
5. restore θ_t and the optimizer state, optimise on the new data: θ_{t+1}.

Symbols ↔ official code. β and the sampler settings are the repo's (β = 0.1; y, y' at temperature 2, top-k 10;
length-normalised log-probs). The repo counts two optimizer steps per EG iteration (``num_train_epochs = 2 ×
epochs``); here ``phases = 2`` makes the LR schedule span both.

Departures. None in the update. Under DeepSpeed ZeRO the snapshot also holds each process's fp32 master partition,
so the restore is exact (``Backend.snapshot_optimizer``).
"""

from __future__ import annotations

from prefopt.algorithms import Algorithm
from prefopt.algorithms.online_ipo import OnlineIPOConfig, collect_against_opponent, loss, two_phase_step

EGPO = Algorithm(
    name="egpo",
    config_class=OnlineIPOConfig,
    collect=collect_against_opponent,
    loss=loss,
    train_step=two_phase_step,  # half step against π_t, full step against π_{t+½}, both from θ_t
    phases=2,
    needs_ref=True,
    game_beta=lambda cfg: cfg.beta,
    exact_expectation=lambda cfg: True,
)
