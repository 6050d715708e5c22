"""A trainer's constructor arguments turned into the run's config keys and the objects the run uses as given.

Each argument is a path or name (it becomes the config key ``prefopt train`` would read) or an object (kept in a
:class:`prefopt.inputs.Given`, with a description of it recorded in the key, so config.yaml says what was trained
and a resume with other inputs is refused). A wrong argument is a one-line :class:`ConfigError` before any compute.
"""

from __future__ import annotations

import dataclasses

import torch

from prefopt.data import GivenDataset
from prefopt.errors import ConfigError
from prefopt.inputs import Given
from prefopt.judges import JUDGE_KINDS
from prefopt.judges.base import PreferenceJudge
from prefopt.judges.functions import RewardFunctionsJudge

_DTYPES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


def resolve(args, model, train_dataset, eval_dataset, judge, processing_class, peft_config, ref_model) -> Given:
    """Fill ``args`` (a trainer config, changed in place) from the arguments; returns the objects given."""
    given = Given(tokenizer=processing_class, ref_model=ref_model)
    _model(args, given, model, peft_config)
    if processing_class is not None:
        args.tokenizer_name_or_path = getattr(processing_class, "name_or_path", None) or None
    given.train_dataset = _dataset(args, "dataset_name", "train_dataset", train_dataset)
    given.eval_dataset = _dataset(args, "eval_dataset_name", "eval_dataset", eval_dataset)
    given.judge = _judge(args, judge)
    if ref_model is not None and not isinstance(ref_model, torch.nn.Module):
        raise ConfigError(f"ref_model must be a model (torch.nn.Module); got {type(ref_model).__name__}")
    return given


def _model(args, given: Given, model, peft_config) -> None:
    if isinstance(model, str):
        if args.model_name_or_path not in (None, model):
            raise ConfigError(f"model is '{model}' but args.model_name_or_path is '{args.model_name_or_path}'")
        args.model_name_or_path = model
    elif model is not None:
        _check_model(model, args, peft_config)
        given.model = model
        args.model_name_or_path = getattr(model, "name_or_path", None) or f"<{type(model).__name__} instance>"
        args.dtype = _DTYPES.get(next(model.parameters()).dtype, "auto")
    if peft_config is not None:
        given.peft_config = _lora(args, peft_config)


def _check_model(model, args, peft_config) -> None:
    """A policy object: a causal LM that generates, without an adapter of its own (a quantised one trains through
    an adapter only)."""
    if not isinstance(model, torch.nn.Module) or not hasattr(model, "generate") or not hasattr(model, "config"):
        raise ConfigError(
            f"model must be a name, a path or a transformers PreTrainedModel (a causal LM); got {type(model).__name__}"
        )
    if hasattr(model, "peft_config"):
        raise ConfigError(
            "model already has a peft adapter: pass its base model with peft_config (a trained adapter: "
            "merge it first, model.merge_and_unload())"
        )
    quantised = getattr(model, "is_quantized", False) or getattr(model, "hf_quantizer", None) is not None
    if quantised and peft_config is None and args.adapter == "none":
        raise ConfigError("model is quantised: its weights cannot be trained directly; pass peft_config (LoRA)")


def _lora(args, peft_config):
    """The LoraConfig the adapter is built from (task type causal LM), its values recorded in the lora_* keys."""
    from peft import LoraConfig

    if not isinstance(peft_config, LoraConfig):
        raise ConfigError(f"peft_config must be a peft.LoraConfig; got {type(peft_config).__name__}")
    if peft_config.task_type is None:
        peft_config = dataclasses.replace(peft_config, task_type="CAUSAL_LM")
    if args.adapter == "none":
        args.adapter = "lora"  # lora_ga stays: LoRA-GA's initialisation of this LoraConfig's adapter
    targets = peft_config.target_modules
    args.lora_r, args.lora_alpha, args.lora_dropout = (
        peft_config.r,
        float(peft_config.lora_alpha),
        peft_config.lora_dropout,
    )
    args.lora_target_modules = None if targets is None else [targets] if isinstance(targets, str) else sorted(targets)
    args.use_rslora = peft_config.use_rslora
    return peft_config


def _dataset(args, key: str, name: str, dataset) -> GivenDataset | None:
    """A path sets ``key``; a datasets object is kept (``key`` records its digest)."""
    if dataset is None:
        return None
    if isinstance(dataset, str):
        setattr(args, key, dataset)
        return None
    given = GivenDataset(name, dataset)
    setattr(args, key, given.fingerprint())
    return given


def _judge(args, judge) -> PreferenceJudge | None:
    """A judge kind (a name), a judge object, or reward functions (one or a list), TRL's ``reward_funcs``."""
    if judge is None:
        if args.reward_weights is not None:
            raise ConfigError("config key 'reward_weights' weighs a list of reward functions: pass them as judge")
        return None
    if isinstance(judge, str):
        if judge not in JUDGE_KINDS:
            raise ConfigError(f"judge {judge!r} is not a judge kind; valid kinds: {', '.join(JUDGE_KINDS)}")
        args.judge = judge
        return None
    if isinstance(judge, PreferenceJudge):
        built = judge
    elif callable(judge) or isinstance(judge, (list, tuple)):
        built = RewardFunctionsJudge(judge, args.reward_weights, args.answer_column)
    else:
        raise ConfigError(
            f"judge must be a judge kind, a prefopt judge or reward functions; got {type(judge).__name__}"
        )
    args.judge = built.name
    return built
