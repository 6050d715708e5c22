"""The DeepSpeed internals ``prefopt.backend`` relies on, in one place: the config's "auto" entries, ZeRO's fp32
master partitions and inner optimizer (exact snapshot and restore), and ZeRO-3's module hooks (removed while
generating from gathered weights). None of this is DeepSpeed's public API: pyproject bounds deepspeed to the tested
minor version and ``tests/test_deepspeed_internals.py`` checks that every name used here exists.
"""

from __future__ import annotations

import contextlib
import json

import torch

from prefopt.config import TrainConfig
from prefopt.errors import ConfigError


def fill_auto(ds: dict, cfg: TrainConfig) -> dict:
    """Replace DeepSpeed's "auto" values (and the batch and clipping keys left out) with the run config's, so
    DeepSpeed and the loop agree; a JSON file and a config built from an accelerate config's inline settings both
    go through here."""
    values = {
        "train_micro_batch_size_per_gpu": cfg.per_device_train_batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "gradient_clipping": cfg.max_grad_norm,
    }
    for key, value in values.items():
        if ds.get(key, "auto") == "auto":
            ds[key] = value
    ds.pop("train_batch_size", None)  # derived by DeepSpeed from the two above and the world size
    ds["bf16"] = {**ds.get("bf16", {}), "enabled": cfg.bf16}
    ds["fp16"] = {**ds.get("fp16", {}), "enabled": False}
    zero = ds.get("zero_optimization", {})
    for key in list(zero):
        if zero[key] == "auto":
            zero.pop(key)  # DeepSpeed's own defaults (bucket sizes need the model's hidden size otherwise)
    return ds


def load_deepspeed_config(path: str, cfg: TrainConfig) -> dict:
    """The DeepSpeed JSON file at ``path``, its "auto" values filled from ``cfg`` (``fill_auto``)."""
    try:
        ds = json.loads(open(path).read())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"deepspeed config '{path}' is not readable JSON: {err}") from err
    return fill_auto(ds, cfg)


def master_partitions(zero) -> list[torch.Tensor]:
    """This process's flat fp32 master partitions inside a ZeRO-2 or ZeRO-3 optimizer."""
    groups = getattr(zero, "single_partition_of_fp32_groups", None)  # ZeRO-1/2
    return list(groups if groups is not None else zero.fp32_partitioned_groups_flat)  # ZeRO-3


@contextlib.contextmanager
def inner_optimizer(zero):
    """The torch optimizer inside DeepSpeed's ZeRO optimizer, which works on flat fp32 partitions; ZeRO-3 attaches
    them to its param groups only around a step or a state_dict, so they are attached for the block."""
    attach = getattr(zero, "_set_fp32_optimizer_param_groups", None)
    if attach is not None:
        attach()
    try:
        yield zero.optimizer
    finally:
        if attach is not None:
            zero._clear_fp32_optimizer_param_groups()


@contextlib.contextmanager
def hooks_removed(engine):
    """The block runs without ZeRO-3's per-module hooks, re-registered after. They fetch and release shards around
    every forward; with the weights already gathered they are pure overhead at each generated token, and they are
    collectives (the root module's start-of-forward hook compares step counts across processes), which would tie
    each process's forwards to the others'. Before the engine exists there are none."""
    offload = getattr(getattr(engine, "optimizer", None), "parameter_offload", None)
    if offload is None:
        yield
        return
    for param in offload.module.parameters():
        param.ds_active_sub_modules.clear()
    for hook in offload.forward_hooks + offload.backward_hooks:
        hook.remove()
    offload.forward_hooks, offload.backward_hooks = [], []
    start_of_forward = offload.module._forward_pre_hooks.pop(offload.fwd_pre_hook.id)
    try:
        yield
    finally:
        offload.fwd_pre_hook = offload.module.register_forward_pre_hook(start_of_forward, prepend=True)
        offload._register_deepspeed_module(offload.module)
