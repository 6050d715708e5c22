"""The algorithm registry: an explicit map from name to the object that defines it.

An algorithm is the part that is really its own (docs/architecture.md, "What an algorithm provides"): a config
dataclass, ``collect(ctx, prompts) -> Batch``, a pure ``loss(cfg, batch, policy) -> (per-row loss, metrics)``,
and optionally ``end_iteration(ctx)`` and ``train_step(ctx, batch)``. Capabilities are declared here and the loop
asks for them; it never branches on an algorithm's name.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prefopt.errors import ConfigError


@dataclass(frozen=True)
class Algorithm:
    """One trainable method.

    Attributes:
        name: the CLI name (``prefopt train NAME``).
        paper: (title, arXiv id) of the method's paper, cited by the exported model card.
        config_class: dataclass of the method's own hyperparameters (paper defaults).
        collect: builds the iteration's :class:`prefopt.batch.Batch` from prompts via ``ctx``.
        loss: ``(cfg, MiniBatch, PolicyLogps) -> (loss [B], metrics: dict[str, Tensor])``; pure tensors.
        end_iteration: optional hook after each iteration's optimisation (e.g. APO's extrapolation).
        train_step: optional replacement of the default optimisation of one iteration (two-phase methods).
        phases: how many times an iteration optimises its data (2 for extragradient and mirror prox), so that the
            LR schedule spans every optimizer step.
        needs_ref: whether collect asks for π_ref log-probs (the loop keeps π_ref available only then); a bool, or
            ``(cfg) -> bool`` when a hyperparameter decides (REBEL's KL penalty).
        required_columns: ``(cfg) -> tuple[str, ...]``, dataset columns collect reads besides the prompt (checked
            on every row before any compute).
        check_examples: ``(cfg, examples, tokenizer, allowed_token_ids, max_new_tokens) -> None``, raising a
            DataError for the first row collect could not use (GRAO's reference answers), before any compute.
        game_beta: ``(cfg) -> float``, the KL coefficient of the regularised game the method solves, for the
            ``game/*`` metrics under a matrix-game judge (None: the unregularised game, β = 0).
        reads_pairs: ``(cfg) -> bool``, whether collect trains on the dataset's chosen/rejected pairs (TRL's
            preference formats, explicit or implicit prompt); each prompt's ``extra`` then holds ``chosen_ids``
            and ``rejected_ids``, tokenised as the policy would emit them.
        mixes_reference: ``(cfg) -> bool``, whether collect decodes from the token-level mixture with π_ref
            (Nash-MD's opponent), which only the transformers rollout engine can do (checked before any compute).
        needs_reward_judge: whether collect reads a scalar reward r(x, y) (outcome-reward methods): a preference-only
            judge is refused before any compute.
        exact_expectation: ``(cfg) -> bool``, whether collect takes all its data from the Context's estimators
            (``sample_labelled_pairs``, ``pairs_against``), so that ``game_exact`` can answer them with exact
            expectations over a single-token game's actions (``prefopt.exact``).
        stale_samples: how the method takes samples drawn by an earlier iteration's policy (asynchronous
            rollouts, ``max_staleness`` > 0), from its derivation (docs/async.md); a value, or ``(cfg) -> value``:
            ``"behaviour_ratio"``: its loss weighs each token by π_θ/π_behaviour against the sampling policy's own
            log-probs (clipped), which corrects for the older policy as it is; ``"current_anchor"``: its loss is
            anchored at π_t's log-probs of the samples (a regression's target, DPO's reference), which must be the
            current policy's (``anchor_logps: recompute``), the samples' policy only weighting the loss; ``"any"``:
            its loss reads no sampling-policy log-probs (``tests/test_capabilities.py`` checks both claims); None:
            refused (the derivation needs samples of the current iterate).
    """

    name: str
    config_class: type
    collect: Callable[..., Any]
    loss: Callable[..., Any]
    paper: tuple[str, str] | None = None
    end_iteration: Callable[..., Any] | None = None
    train_step: Callable[..., Any] | None = None
    phases: int = 1
    needs_ref: bool | Callable[[Any], bool] = False
    required_columns: Callable[[Any], tuple[str, ...]] | None = None
    reads_pairs: Callable[[Any], bool] | None = None
    mixes_reference: Callable[[Any], bool] | None = None
    game_beta: Callable[[Any], float] | None = None
    check_examples: Callable[..., None] | None = None
    exact_expectation: Callable[[Any], bool] | None = None
    needs_reward_judge: bool = False
    stale_samples: str | Callable[[Any], str | None] | None = None


def stale_samples(algorithm: Algorithm, cfg) -> str | None:
    """How this run of the algorithm takes stale samples (``Algorithm.stale_samples``, resolved against its config)."""
    value = algorithm.stale_samples
    return value(cfg) if callable(value) else value


def uses_reference(algorithm: Algorithm, cfg) -> bool:
    """Whether this run of the algorithm reads π_ref (``needs_ref``, resolved against its config)."""
    return algorithm.needs_ref(cfg) if callable(algorithm.needs_ref) else bool(algorithm.needs_ref)


ALGORITHMS: dict[str, str] = {
    "sppo": "prefopt.algorithms.sppo:SPPO",
    "sppo_hard": "prefopt.algorithms.sppo:SPPO_HARD",
    "inpo": "prefopt.algorithms.inpo:INPO",
    "online_ipo": "prefopt.algorithms.online_ipo:ONLINE_IPO",
    "egpo": "prefopt.algorithms.egpo:EGPO",
    "dpo": "prefopt.algorithms.dpo:DPO",
    "apo": "prefopt.algorithms.apo:APO",
    "nash_mp": "prefopt.algorithms.nash_mp:NASH_MP",
    "nash_md": "prefopt.algorithms.nash_md:NASH_MD",
    "rebel": "prefopt.algorithms.rebel:REBEL",
    "grpo": "prefopt.algorithms.grpo:GRPO",
    "grao": "prefopt.algorithms.grao:GRAO",
    "raft": "prefopt.algorithms.raft:RAFT",
    "raftpp": "prefopt.algorithms.raft:RAFT_PP",
    "gvm_raft": "prefopt.algorithms.gvm:GVM_RAFT",
    "gvm_raftpp": "prefopt.algorithms.gvm:GVM_RAFT_PP",
    "gvm_grpo": "prefopt.algorithms.gvm:GVM_GRPO",
}


def get_algorithm(name: str) -> Algorithm:
    """Import and return the algorithm registered under ``name``."""
    if name not in ALGORITHMS:
        raise ConfigError(f"unknown algorithm '{name}'; available: {', '.join(sorted(ALGORITHMS))}")
    module, attr = ALGORITHMS[name].split(":")
    return getattr(importlib.import_module(module), attr)
