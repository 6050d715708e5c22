"""The weights a rollout engine with its own copy of the model (vLLM) must receive after the policy changes.

``changed_weights(model)`` yields (name, tensor) pairs in the base model's Hugging Face parameter names (what
``model.load_weights`` of a vLLM model, or ``from_pretrained``, expects), holding the weights the training model
actually computes with:

- **no adapter**: every trainable parameter as it is (frozen ones never change, so they are not sent);
- **peft LoRA**: for each LoRA-wrapped module, the effective weight W + Σ_a s_a·B_a A_a over its active adapters,
  computed one module at a time (never a merged copy of the whole model, and the training model is not touched:
  no merge/unmerge round trip that would leave rounding in W). LoRA-GA is the same formula: its frozen
  ``lora_ga_offset`` adapter (s·(−B_0)A_0, see :mod:`prefopt.adapters`) is one more active adapter. Names drop
  peft's ``base_model.model.`` prefix (we walk the base model) and the wrapper's ``.base_layer``.
  vLLM fuses sibling projections (q/k/v into qkv_proj, gate/up into gate_up_proj) and reloads a fused layer only
  whole, so when LoRA adapts some siblings and not others (``lora_target_modules: [q_proj, v_proj]``) the
  others' unchanged weights are sent too: every weight under the parent (``self_attn``, ``mlp``) of an adapted
  module. With ``all-linear`` targets that adds nothing.
  Trainable parameters outside the LoRA modules (peft's ``bias``/``modules_to_save`` options, which prefopt does
  not use) are sent too, so nothing that changes is missed.

Under ZeRO-3 the caller either iterates inside ``Backend.gathered()`` (the whole model gathered at once), or passes
``gather=Backend.gather_parameters``: each module's parameters are then gathered only while its weight is computed and
handed over (the consumer copies it before asking for the next), so the whole model is never on one rank at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

import torch

_LORA_PARTS = ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector")


def _lora_part(name: str) -> bool:
    """Whether a parameter name is one of peft's LoRA tensors (A, B, magnitude), which the plain model lacks."""
    return any(f".{part}." in name for part in _LORA_PARTS)


def is_peft_model(model: torch.nn.Module) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def hf_name(name: str) -> str:
    """A parameter name of the peft-wrapped base model as the plain model names it."""
    return name.replace(".base_layer.", ".").replace(".modules_to_save.default.", ".")


@torch.no_grad()
def effective_lora_weight(layer) -> torch.Tensor:
    """W + Σ s·BA of one peft LoRA layer, over its active adapters, in W's dtype ([d_out, d_in] for Linear).

    A layer already merged (``merge_adapter``) holds those adapters in W: only unmerged active ones are added;
    with adapters disabled (peft's ``disable_adapter`` block) the weight is W itself.
    """
    base = layer.get_base_layer().weight
    if layer.disable_adapters:
        return base.detach().clone()
    weight = base.detach().float()
    for adapter in layer.active_adapters:
        if adapter in layer.lora_A or adapter in getattr(layer, "lora_embedding_A", {}):
            if adapter not in layer.merged_adapters:
                weight = weight + layer.get_delta_weight(adapter).float()
    return weight.to(base.dtype)


Gather = Callable[[Iterable[torch.nn.Parameter]], contextlib.AbstractContextManager]


def _no_gather(params) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext()


def changed_weights(model: torch.nn.Module, gather: Gather = _no_gather) -> Iterator[tuple[str, torch.Tensor]]:
    """(HF parameter name, tensor) for every weight that training can have changed; see the module docstring.

    Tensors are detached; each LoRA module's merged weight is a fresh tensor, the others are the parameters
    themselves (the consumer copies them before asking for the next: ``gather`` may release them then).
    """
    if not is_peft_model(model):
        for name, param in model.named_parameters():
            if param.requires_grad:
                with gather([param]):
                    yield name, param.detach()
        return
    from peft.tuners.lora import LoraLayer

    base_model = model.get_base_model()
    lora_modules = {name: m for name, m in base_model.named_modules() if isinstance(m, LoraLayer)}
    parents = {name.rpartition(".")[0] for name in lora_modules}
    sent = set()
    for name, layer in lora_modules.items():
        sent.add(f"{name}.weight")
        with gather(layer.parameters()):
            yield f"{name}.weight", effective_lora_weight(layer)
    for name, param in base_model.named_parameters():
        plain = hf_name(name)
        if _lora_part(name) or plain in sent:
            continue
        fused_partner = plain.rpartition(".")[0].rpartition(".")[0] in parents  # parent.sibling.weight (or .bias)
        if param.requires_grad or fused_partner:
            with gather([param]):
                yield plain, param.detach()


def full_weights(model: torch.nn.Module, gather: Gather = _no_gather) -> Iterator[tuple[str, torch.Tensor]]:
    """Every weight of the model as the plain (un-adapted) model names it, LoRA merged as in ``changed_weights``:
    what a copy built from the model's config needs to compute as the training model does."""
    sent = set()
    for name, tensor in changed_weights(model, gather):
        sent.add(name)
        yield name, tensor
    base = model.get_base_model() if is_peft_model(model) else model
    for name, param in base.named_parameters():
        plain = hf_name(name)
        if plain not in sent and not _lora_part(name):
            with gather([param]):
                yield plain, param.detach()
