"""LoRA and LoRA-GA adapters (peft) on the policy, and saving them so a fresh base model reproduces the policy.

With an adapter the trainable tensors are the adapter's, so every snapshot an algorithm keeps (π_t, APO's previous
iterate, EGPO's extragradient backup) is adapter-sized (``Backend.snapshot`` copies the tensors that require
grad), and π_ref is the same model with the adapter disabled: no second copy of the weights.

LoRA-GA (Wang, Yu, Li, arXiv 2407.05000, eq. 6-8) starts from A_0, B_0 ≠ 0 and keeps the initial output unchanged
by offsetting the base weight: W_init = W_0 − s·B_0A_0. The paper and peft write that offset into W. prefopt keeps
W_0 untouched and carries the offset as a second, frozen adapter ``lora_ga_offset`` (weights A_0 and −B_0, same
scaling s, no dropout) that is always active next to the trained one, so that

- the forward is W_0x + s·BAx − s·B_0A_0x, the paper's (W_0 − s·B_0A_0)x + s·BAx;
- disabling the adapters gives W_0, the initial policy: π_ref is the disabled adapter for LoRA-GA too;
- the frozen offset holds buffers, not parameters, so peft's enabling and disabling of adapters (which sets
  requires_grad on every active adapter) never makes it trainable, and no snapshot or optimizer sees it.

Saving (``save_adapter``) writes one standard LoRA adapter for the original base model: for LoRA-GA the two are
concatenated into rank 2r, B' = [B, −B_0], A' = [A; A_0], with lora_alpha chosen so the scaling stays s.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path

import torch

OFFSET = "lora_ga_offset"  # the frozen LoRA-GA offset adapter
DEFAULT = "default"  # peft's name for the trained adapter


def lora_config(cfg, dropout: float | None = None):
    """peft's LoraConfig from the run config's lora_* keys."""
    from peft import LoraConfig

    targets = cfg.lora_target_modules
    if targets == ["all-linear"]:
        targets = "all-linear"
    return LoraConfig(
        task_type="CAUSAL_LM",
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout if dropout is None else dropout,
        target_modules=targets,
        use_rslora=cfg.use_rslora,
        bias="none",
    )


def attach_adapter(model, cfg, peft_config=None):
    """The policy with its adapter: a peft model, or ``model`` itself for full fine-tuning (adapter none).

    The adapter is ``peft_config`` when a trainer was given one (its values are also in cfg's lora_* keys), else
    built from those keys. LoRA starts as peft's default (A Kaiming-uniform, B = 0); LoRA-GA gets the frozen offset
    adapter too, zero until :func:`set_lora_ga` fills both, so the output is the base model's either way.
    """
    if cfg.adapter == "none":
        return model
    from peft import get_peft_model

    config = peft_config if peft_config is not None else lora_config(cfg)
    try:
        model = get_peft_model(model, config)
    except ValueError as err:  # peft names the target modules it could not find
        from prefopt.errors import ConfigError, first_line

        raise ConfigError(f"config key 'lora_target_modules': {first_line(err)}") from err
    if cfg.adapter == "lora_ga":
        model.add_adapter(OFFSET, dataclasses.replace(config, lora_dropout=0.0))
        model.base_model.set_adapter([DEFAULT, OFFSET])
        for layer in lora_layers(model).values():
            for module in (layer.lora_A[OFFSET], layer.lora_B[OFFSET]):
                _freeze_as_buffer(module, zero=True)
    return model


def _freeze_as_buffer(linear: torch.nn.Linear, zero: bool = False) -> None:
    weight = linear.weight.detach()
    del linear.weight
    linear.register_buffer("weight", torch.zeros_like(weight) if zero else weight.clone())


def lora_layers(model) -> dict:
    """name → peft LoRA layer, for every adapted module (in module order)."""
    from peft.tuners.lora import LoraLayer

    return {name: m for name, m in model.named_modules() if isinstance(m, LoraLayer)}


def has_offset(model) -> bool:
    return any(OFFSET in layer.lora_A for layer in lora_layers(model).values())


@torch.no_grad()
def set_lora_ga(model, factors: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Start the trained adapter at (A_0, B_0) per layer and the offset at (A_0, −B_0)."""
    for name, layer in lora_layers(model).items():
        A, B = factors[name]
        layer.lora_A[DEFAULT].weight.copy_(A)
        layer.lora_B[DEFAULT].weight.copy_(B)
        layer.lora_A[OFFSET].weight.copy_(A)
        layer.lora_B[OFFSET].weight.copy_(-B)


def adapter_state(model, state_dict: dict | None = None) -> tuple[object, dict[str, torch.Tensor]]:
    """(LoraConfig, tensors) of one standard LoRA adapter equal to the model's adapters on the original base.

    ``state_dict``: the model's full state dict when it has to be gathered first (ZeRO-3); else read from ``model``.
    """
    from peft import get_peft_model_state_dict

    config = copy.deepcopy(model.peft_config[DEFAULT])
    trained = get_peft_model_state_dict(model, state_dict=state_dict, adapter_name=DEFAULT)
    if not has_offset(model):
        return config, trained
    if state_dict is None:
        state_dict = model.state_dict()  # the offset's tensors are buffers, which peft's helper leaves out
    offset = {
        key: state_dict[key.removesuffix(".weight") + f".{OFFSET}.weight"]
        for key in trained
        if ".lora_A." in key or ".lora_B." in key
    }
    merged = {}
    for key, value in trained.items():
        if key in offset:
            dim = 0 if ".lora_A." in key else 1  # A: [r, d_in] stacks rows; B: [d_out, r] stacks columns
            value = torch.cat([value, offset[key].to(value.dtype)], dim=dim)
        merged[key] = value.contiguous()
    # Rank 2r with the same scaling s: alpha/r → 2·alpha/(2r); alpha/sqrt(r) → sqrt(2)·alpha/sqrt(2r).
    config.lora_alpha = config.lora_alpha * (math.sqrt(2) if config.use_rslora else 2)
    config.r = 2 * config.r
    config.init_lora_weights = True
    return config, merged


def save_adapter(model, out_dir: str | Path, state_dict: dict | None = None) -> None:
    """Write ``adapter_config.json`` and ``adapter_model.safetensors``: ``PeftModel.from_pretrained(base, out_dir)``
    on the original base model gives the trained policy."""
    from safetensors.torch import save_file

    config, tensors = adapter_state(model, state_dict)
    out_dir = Path(out_dir)
    config.save_pretrained(str(out_dir))
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(out_dir / "adapter_model.safetensors")
    )
