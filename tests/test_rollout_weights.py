"""The weights pushed to a separate rollout engine (vLLM): names and values equal the policy's effective weights.

Checked against the model itself: a fresh base model loaded with only the yielded tensors (the rest from disk, as
vLLM holds them) must compute the same logits as the training model (full fine-tuning, LoRA, LoRA-GA).
"""

from types import SimpleNamespace

import torch

from prefopt.adapters import DEFAULT, OFFSET, attach_adapter, lora_layers, set_lora_ga
from prefopt.rollout.weights import changed_weights

IDS = torch.tensor([[5, 17, 40, 99, 23, 61, 62, 63]])


def lora_cfg(adapter, targets=("all-linear",)):
    return SimpleNamespace(
        adapter=adapter,
        lora_r=4,
        lora_alpha=8.0,
        lora_dropout=0.0,
        lora_target_modules=list(targets),
        use_rslora=False,
    )


def load(model_dir):
    from prefopt.models import load_causal_lm

    torch.manual_seed(0)
    return load_causal_lm(model_dir).eval()


@torch.no_grad()
def logits(model):
    return model(input_ids=IDS).logits


@torch.no_grad()
def logits_of_fresh_base_with(model_dir, weights: dict[str, torch.Tensor]):
    """A fresh base model from disk with ``weights`` copied in by name: what vLLM computes after a sync."""
    fresh = load(model_dir)
    params = dict(fresh.named_parameters())
    assert set(weights) <= set(params), set(weights) - set(params)
    for name, tensor in weights.items():
        assert params[name].shape == tensor.shape, name
        params[name].copy_(tensor)
    return logits(fresh)


@torch.no_grad()
def randomise_lora(model, scale=0.3):
    g = torch.Generator().manual_seed(1)
    for layer in lora_layers(model).values():
        for module in (layer.lora_A[DEFAULT], layer.lora_B[DEFAULT]):
            module.weight.copy_(torch.randn(module.weight.shape, generator=g) * scale)


def test_full_fine_tuning_sends_the_trainable_parameters(tiny_model_dir):
    model = load(tiny_model_dir)
    for name, p in model.named_parameters():
        p.requires_grad_("layers.1." in name)  # a partly frozen model
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    weights = dict(changed_weights(model))
    assert set(weights) == {n for n, p in model.named_parameters() if p.requires_grad}
    assert torch.allclose(logits_of_fresh_base_with(tiny_model_dir, weights), logits(model), atol=1e-5)


def test_lora_sends_merged_weights_of_the_adapted_modules_only(tiny_model_dir):
    model = attach_adapter(load(tiny_model_dir), lora_cfg("lora"))
    randomise_lora(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    weights = dict(changed_weights(model))
    # One tensor per adapted linear, under the base model's own names (no peft prefix, no .base_layer).
    adapted = {f"{name.removeprefix('base_model.model.')}.weight" for name in lora_layers(model)}
    assert set(weights) == adapted and all("lora" not in n and "base_layer" not in n for n in weights)
    expected = logits(model)
    assert (expected - logits(load(tiny_model_dir))).abs().max() > 1e-2  # the adapter really changes the output
    assert torch.allclose(logits_of_fresh_base_with(tiny_model_dir, weights), expected, atol=1e-5)
    # The training model is left as it was (no merge left behind).
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_partial_lora_targets_send_their_fused_siblings_whole(tiny_model_dir):
    """vLLM reloads q/k/v as one fused layer: with only q and v adapted, k's (unchanged) weight goes along."""
    model = attach_adapter(load(tiny_model_dir), lora_cfg("lora", targets=["q_proj", "v_proj"]))
    randomise_lora(model)
    weights = dict(changed_weights(model))
    layers = {f"model.layers.{i}.self_attn.{p}_proj.weight" for i in range(2) for p in "qkvo"}
    assert set(weights) == layers  # the mlp has no adapter: nothing of it is sent
    assert torch.allclose(logits_of_fresh_base_with(tiny_model_dir, weights), logits(model), atol=1e-5)


def test_lora_weights_equal_peft_merge(tiny_model_dir):
    model = attach_adapter(load(tiny_model_dir), lora_cfg("lora"))
    randomise_lora(model)
    weights = dict(changed_weights(model))
    merged = model.merge_and_unload().state_dict()
    assert all(torch.allclose(weights[name], merged[name], atol=1e-6) for name in weights)


def test_lora_ga_offset_adapter_is_part_of_the_effective_weight(tiny_model_dir):
    model = attach_adapter(load(tiny_model_dir), lora_cfg("lora_ga"))
    g = torch.Generator().manual_seed(2)
    factors = {
        name: (
            torch.randn(layer.lora_A[DEFAULT].weight.shape, generator=g),
            torch.randn(layer.lora_B[DEFAULT].weight.shape, generator=g),
        )
        for name, layer in lora_layers(model).items()
    }
    set_lora_ga(model, factors)
    # At the LoRA-GA start the offset cancels the adapter: the effective weights are the base model's.
    for name, tensor in changed_weights(model):
        assert torch.allclose(tensor, load(tiny_model_dir).state_dict()[name], atol=1e-5), name
    randomise_lora(model)  # training moves A, B away from A_0, B_0; the offset (A_0, −B_0) stays
    assert all(OFFSET in layer.active_adapters for layer in lora_layers(model).values())
    weights = dict(changed_weights(model))
    assert torch.allclose(logits_of_fresh_base_with(tiny_model_dir, weights), logits(model), atol=1e-5)


def test_disabled_adapter_gives_the_base_weights(tiny_model_dir):
    model = attach_adapter(load(tiny_model_dir), lora_cfg("lora"))
    randomise_lora(model)
    base = load(tiny_model_dir).state_dict()
    with model.disable_adapter():
        assert all(torch.equal(t, base[n]) for n, t in changed_weights(model))


def test_merged_weight_keeps_the_model_dtype(tiny_model_dir):
    model = attach_adapter(load(tiny_model_dir).to(torch.bfloat16), lora_cfg("lora"))
    randomise_lora(model)
    assert {t.dtype for _, t in changed_weights(model)} == {torch.bfloat16}
