"""A run's inputs, validated before any model weights load: tokenizer, every data row, the judge and what they need
of each other.

Each input comes from the run config (a path or a Hub id, as ``prefopt train`` reads it) or from an object a Python
caller handed to a trainer class (:class:`Given`): a loaded model, a ``datasets.Dataset``, a judge object or reward
functions, a ``peft.LoraConfig``, an explicit reference model. Both go through the same checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from prefopt import exact
from prefopt.algorithms import Algorithm, stale_samples
from prefopt.config import TrainConfig
from prefopt.data import GivenDataset, PromptExample, holdout_split, load_preferences, load_prompts
from prefopt.data.prompts import encode_row_prompt
from prefopt.errors import ConfigError
from prefopt.eval.formats import align_outputs, read_outputs
from prefopt.eval.generation import as_prompt
from prefopt.judges import build_judge
from prefopt.judges.base import PreferenceJudge, RewardJudge
from prefopt.models import check_source, load_model_config, load_tokenizer, position_limit, prepare_tokenizer
from prefopt.rollout.engine import SamplingParams


@dataclass
class Given:
    """Objects a Python caller passed instead of config paths (None: loaded from the config as the CLI does).

    Attributes:
        model: the policy, a ``PreTrainedModel`` (``cfg.model_name_or_path`` then records its ``name_or_path``).
        tokenizer: the trainer's ``processing_class``.
        train_dataset, eval_dataset: :class:`prefopt.data.GivenDataset` wrappers of ``datasets`` objects.
        judge: a built judge (a prefopt judge object, or reward functions already wrapped).
        peft_config: a ``peft.LoraConfig`` used as given (``cfg``'s lora_* keys record its values).
        ref_model: π_ref as its own model, for the algorithms that read π_ref.
    """

    model: torch.nn.Module | None = None
    tokenizer: Any = None
    train_dataset: GivenDataset | None = None
    eval_dataset: GivenDataset | None = None
    judge: PreferenceJudge | None = None
    peft_config: Any = None
    ref_model: torch.nn.Module | None = None


@dataclass
class Inputs:
    """The validated inputs: the tokenizer, every example, the training and held-out prompts, the fixed baseline
    outputs (``eval_baseline_outputs``; else empty), then (:func:`check_judge`) the judge and the action set's
    token ids (None: free text)."""

    tokenizer: Any
    examples: list[PromptExample]
    train_prompts: list[PromptExample]
    eval_prompts: list[PromptExample]
    baseline_outputs: list[str]
    judge: PreferenceJudge | None = None
    allowed: tuple[int, ...] | None = None


def load_data(algorithm: Algorithm, cfg: TrainConfig, algo_cfg, given: Given) -> Inputs:
    """Tokenizer and data, every row checked, before any model weights load."""
    if given.model is None:
        check_source(cfg.model_name_or_path, "model")  # name the model, not its tokenizer, when the path is wrong
    if given.tokenizer is not None:
        tokenizer = prepare_tokenizer(given.tokenizer, "processing_class")
    else:
        tokenizer = load_tokenizer(cfg.tokenizer_name_or_path or cfg.model_name_or_path, cfg.trust_remote_code)
    examples = _load_examples(algorithm, cfg, algo_cfg, tokenizer, given.train_dataset or cfg.dataset_name)
    train_prompts, eval_prompts = holdout_split(examples, cfg.eval_num_prompts, cfg.seed)
    baseline_outputs = []
    if given.eval_dataset is not None or cfg.eval_dataset_name:
        source = given.eval_dataset or cfg.eval_dataset_name
        eval_prompts = load_prompts(source, tokenizer, **_prompt_options(algorithm, cfg, algo_cfg, eval_only=True))
    if cfg.eval_baseline_outputs:
        eval_prompts, baseline_outputs = _baseline_eval_prompts(cfg, tokenizer)
    model_config = given.model.config if given.model is not None else None
    _check_fits(cfg, examples, eval_prompts, train_prompts, model_config)
    return Inputs(tokenizer, examples, train_prompts, eval_prompts, baseline_outputs)


def check_judge(inputs: Inputs, algorithm: Algorithm, cfg: TrainConfig, algo_cfg, judge, device) -> None:
    """The judge (``judge``, else built from the config on ``device``) and what it, the action set and the
    algorithm need of each other, set on ``inputs``; still before the policy loads."""
    inputs.judge = judge if judge is not None else _build_judge(cfg, device)
    inputs.allowed = _check_judge_and_actions(
        cfg, algorithm, algo_cfg, inputs.judge, inputs.tokenizer, inputs.examples
    )


def allowed_token_ids(judge, tokenizer, choices: list[str] | None = None) -> tuple[int, ...] | None:
    """Token ids of a game judge's actions, or of ``response_choices``; each must be one token of the policy's
    tokenizer."""
    actions, what = judge.allowed_responses(), "game action"
    if actions is None and choices:
        actions, what = choices, "response_choices entry"
    if actions is None:
        return None
    ids = []
    for action in actions:
        encoded = tokenizer(action, add_special_tokens=False)["input_ids"]
        if len(encoded) != 1:
            raise ConfigError(f"{what} {action!r} is {len(encoded)} tokens for this tokenizer; each must be one")
        ids.append(encoded[0])
    return tuple(ids)


def _build_judge(cfg: TrainConfig, device) -> PreferenceJudge:
    return build_judge(
        cfg.judge,
        model_name_or_path=cfg.judge_model_name_or_path,
        function=cfg.judge_function,
        batch_size=cfg.judge_batch_size,
        max_length=cfg.judge_max_length,
        dtype=cfg.judge_dtype,
        device=device,
        trust_remote_code=cfg.trust_remote_code,
        template=cfg.judge_template,
        game=cfg.game,
        game_size=cfg.game_size,
        game_seed=cfg.game_seed,
        game_matrix=cfg.game_matrix,
        game_actions=cfg.game_actions,
        api=cfg.api_options() if cfg.judge == "openai" else None,
        pairrm_matrix=cfg.judge_pairrm_matrix,
    )


def _prompt_options(algorithm: Algorithm, cfg: TrainConfig, algo_cfg, eval_only: bool = False) -> dict:
    """load_prompts' options: the split, the prompt encoding and the columns collect (or the judge) reads."""
    columns = () if eval_only or not algorithm.required_columns else algorithm.required_columns(algo_cfg)
    columns = (*columns, cfg.answer_column) if cfg.answer_column else columns
    if cfg.adapter == "lora_ga" and cfg.lora_ga_objective == "sft" and not eval_only:
        columns = (*columns, cfg.lora_ga_response_column)
    return dict(_source_options(cfg), prompt_column=cfg.prompt_column, require_columns=columns)


def _source_options(cfg: TrainConfig) -> dict:
    return dict(
        split=cfg.dataset_train_split,
        config_name=cfg.dataset_config,
        max_prompt_length=cfg.max_prompt_length,
        truncation_mode=cfg.truncation_mode,
        text_prompts_as_chat=cfg.text_prompts_as_chat,
    )


def _load_examples(algorithm: Algorithm, cfg, algo_cfg, tokenizer, source) -> list[PromptExample]:
    """The training prompts (or preference pairs, when the algorithm reads them), every row validated."""
    if algorithm.reads_pairs and algorithm.reads_pairs(algo_cfg):
        pairs = load_preferences(source, tokenizer, **_source_options(cfg), completion_end=cfg.completion_end)
        return [
            PromptExample(
                p.index,
                p.prompt,
                p.prompt_ids,
                {
                    "chosen": p.chosen,
                    "rejected": p.rejected,
                    "chosen_ids": p.chosen_ids,
                    "rejected_ids": p.rejected_ids,
                },
            )
            for p in pairs
        ]
    return load_prompts(source, tokenizer, **_prompt_options(algorithm, cfg, algo_cfg))


def _check_judge_and_actions(cfg, algorithm: Algorithm, algo_cfg, judge, tokenizer, examples) -> tuple | None:
    """What the judge, the action set and the algorithm need of each other, before the policy loads; returns the
    action set's token ids (None: free text)."""
    if algorithm.needs_reward_judge and not isinstance(judge, RewardJudge):
        raise ConfigError(
            f"judge '{judge.name}' is a preference judge, but {algorithm.name} needs a reward r(x, y): use a "
            "reward judge (exact_match, math, reward_model, python_reward or reward functions)"
        )
    if judge.needs_references and not cfg.answer_column:
        raise ConfigError(f"judge '{judge.name}' checks responses against reference answers: set answer_column")
    if judge.needs_references and cfg.eval_baseline_outputs:
        raise ConfigError(
            f"judge '{judge.name}' needs reference answers, which eval_baseline_outputs lacks; use eval_num_prompts"
        )
    allowed = allowed_token_ids(judge, tokenizer, cfg.response_choices)
    if algorithm.check_examples:
        algorithm.check_examples(algo_cfg, examples, tokenizer, allowed, cfg.max_new_tokens)
    if cfg.use_vllm:
        if str(cfg.model_name_or_path).lower().endswith(".gguf"):
            raise ConfigError(
                "use_vllm loads model_name_or_path in vLLM, which does not take prefopt's dequantised .gguf route: "
                "pass a converted folder (prefopt real-model, or the model saved with save_pretrained)"
            )
        _check_vllm(algorithm, algo_cfg, allowed)
    _check_rollouts(algorithm, algo_cfg, cfg)
    if cfg.game_exact:
        exact.check_supported(algorithm, algo_cfg, allowed)
    return allowed


def _check_fits(cfg, examples, eval_prompts, train_prompts, model_config=None) -> None:
    """Before the policy loads: an iteration's prompts come from the training set without repeats, and the longest
    prompt and response fit the model's positions (config.json alone is read, or the given model's config)."""
    per_iteration, available = cfg.prompts_per_iteration, len(train_prompts)
    if per_iteration is not None and per_iteration > available:
        held = f" ({cfg.eval_num_prompts} held out for eval)" if cfg.eval_num_prompts else ""
        raise ConfigError(
            f"config key 'prompts_per_iteration' is {per_iteration}, but the training set has {available} prompts"
            f"{held}: each would be used about {per_iteration / available:.0f} times per iteration; set at most "
            f"{available}"
        )
    if model_config is None:
        model_config = load_model_config(cfg.model_name_or_path, "model", cfg.trust_remote_code)
    limit = position_limit(model_config)
    if limit is None:
        return
    longest = max(
        len(e.prompt_ids) + max(cfg.max_new_tokens, *(len(e.extra.get(k, ())) for k in ("chosen_ids", "rejected_ids")))
        for e in [*examples, *eval_prompts]
    )
    if longest > limit:
        raise ConfigError(
            f"a prompt and its response take up to {longest} tokens (max_new_tokens {cfg.max_new_tokens}), more than "
            f"the {limit} positions of model '{cfg.model_name_or_path}' (max_position_embeddings); lower "
            f"max_new_tokens or max_prompt_length"
        )


def _check_rollouts(algorithm: Algorithm, algo_cfg, cfg) -> None:
    """Stale samples (async_rollouts with max_staleness > 0) and the importance-sampling correction need an algorithm
    whose derivation takes them (``Algorithm.stale_samples``, docs/async.md), whether Ray is installed or not;
    rollout workers need Ray."""
    mode = stale_samples(algorithm, algo_cfg)
    if cfg.async_rollouts and cfg.max_staleness > 0:
        if mode is None:
            raise ConfigError(
                f"{algorithm.name} needs samples of the current iterate (docs/async.md): set max_staleness: 0 or "
                "async_rollouts: false"
            )
        if mode == "current_anchor" and cfg.anchor_logps != "recompute":
            raise ConfigError(
                f"{algorithm.name}'s loss is anchored at π_t, whose log-probs stale samples do not carry: set "
                "anchor_logps: recompute (or max_staleness: 0)"
            )
    if cfg.vllm_importance_sampling_correction and mode != "behaviour_ratio":
        raise ConfigError(
            f"vllm_importance_sampling_correction weighs a ratio to the sampling policy, which {algorithm.name}'s "
            "loss has none of: drop it"
        )
    if cfg.rollout_workers:
        from prefopt.rollout.workers import require_ray

        require_ray()
        if algorithm.mixes_reference is not None and algorithm.mixes_reference(algo_cfg):
            raise ConfigError(
                f"{algorithm.name} decodes from the mixture with π_ref, which rollout workers do not hold: set "
                "rollout_workers: 0"
            )


def _check_vllm(algorithm: Algorithm, algo_cfg, allowed) -> None:
    """What the vLLM engine cannot sample exactly stops the run before the model is loaded."""
    from prefopt.rollout.vllm import check_supported

    mixture = 0.5 if algorithm.mixes_reference and algorithm.mixes_reference(algo_cfg) else 0.0
    check_supported(SamplingParams(allowed_token_ids=allowed, ref_mixture=mixture))


def _baseline_eval_prompts(cfg, tokenizer) -> tuple[list[PromptExample], list[str]]:
    """The held-out prompts and their fixed baseline outputs, from an AlpacaEval outputs file."""
    path = cfg.eval_baseline_outputs
    _, outputs, order = read_outputs(path)
    instructions = list(dict.fromkeys(order))
    baseline = align_outputs(instructions, outputs, order, path)  # refuses duplicated instructions
    prompts = []
    for i, instruction in enumerate(instructions):
        prompt = as_prompt(tokenizer, instruction)
        where = f"{path}: instruction {i} (counting from 0)"
        ids, _ = encode_row_prompt(where, prompt, tokenizer, cfg.max_prompt_length, cfg.truncation_mode)
        prompts.append(PromptExample(i, prompt, ids, {}))
    return prompts, baseline
