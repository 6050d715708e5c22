"""LoRA and LoRA-GA on the tiny policy: the gradient estimate, the initial output, the first step's direction, peft's
variant, and the saved adapter on a fresh base model (and merged)."""

from types import SimpleNamespace

import pytest
import torch

from prefopt.adapters import DEFAULT, OFFSET, attach_adapter, lora_layers, save_adapter, set_lora_ga
from prefopt.lora_ga import svd_factors, weight_gradients

PROMPT = [[5, 17, 40, 99, 23], [7, 8, 9]]
RESPONSE = [[61, 62, 63, 2], [70, 71, 2]]


def adapter_cfg(adapter="lora_ga", **kw):
    values = dict(
        adapter=adapter,
        lora_r=4,
        lora_alpha=8.0,
        lora_dropout=0.0,
        lora_target_modules=["all-linear"],
        use_rslora=False,
        lora_ga_variant="paper",
        lora_ga_direction="ArB2r",
        lora_ga_gamma=16.0,
    )
    return SimpleNamespace(**{**values, **kw})


def load(model_dir):
    from prefopt.models import load_causal_lm

    torch.manual_seed(0)
    return load_causal_lm(model_dir)


def batch():
    from prefopt.ops import build_sequence_batch

    return build_sequence_batch(PROMPT, RESPONSE, 0)


def nll(model) -> torch.Tensor:
    from prefopt.ops import response_token_logps

    b = batch()
    return -(response_token_logps(model, b).sum(-1) / b["response_mask"].sum(-1)).mean()


def logits(model) -> torch.Tensor:
    b = batch()
    with torch.no_grad():
        return model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits


def estimate(model) -> dict[str, torch.Tensor]:
    layers = lora_layers(model)
    with weight_gradients(model, layers) as (sums, inputs):
        torch.autograd.backward(nll(model), inputs=inputs)
    return dict(sums)


def lora_ga_model(model_dir, **kw):
    """A LoRA-GA policy initialised from the NLL gradient; returns (model, gradients, base logits)."""
    cfg = adapter_cfg(**kw)
    base = load(model_dir)
    reference = logits(base)
    model = attach_adapter(base, cfg)
    grads = estimate(model)
    factors = {
        n: svd_factors(G, cfg.lora_r, cfg.lora_ga_variant, cfg.lora_ga_direction, 16.0, 0) for n, G in grads.items()
    }
    set_lora_ga(model, factors)
    return model, grads, reference


def test_hook_gradients_equal_autograd_weight_gradients(tiny_model_dir):
    model = attach_adapter(load(tiny_model_dir), adapter_cfg("lora"))
    grads = estimate(model)
    plain = load(tiny_model_dir)
    nll(plain).backward()
    modules = dict(plain.named_modules())
    assert len(grads) == 14  # q, k, v, o, gate, up, down in 2 layers ("all-linear" leaves out the output head)
    for name, G in grads.items():
        W = modules[name.removeprefix("base_model.model.")].weight
        torch.testing.assert_close(G, W.grad, atol=1e-6, rtol=1e-4)


def test_hook_gradients_are_unchanged_by_gradient_checkpointing(tiny_model_dir):
    plain = estimate(attach_adapter(load(tiny_model_dir), adapter_cfg("lora")))
    model = load(tiny_model_dir)
    model.gradient_checkpointing_enable()
    model.enable_input_require_grads()
    model = attach_adapter(model, adapter_cfg("lora")).train()
    checkpointed = estimate(model)  # recomputed forwards must neither double nor drop a layer's Σ gᵀx
    assert set(checkpointed) == set(plain)
    assert all(torch.allclose(checkpointed[k], plain[k], atol=1e-7) for k in plain)


@pytest.mark.parametrize("variant", ["paper", "peft"])
def test_lora_ga_starts_at_the_base_models_output_and_pi_ref_is_the_disabled_adapter(tiny_model_dir, variant):
    model, _, reference = lora_ga_model(tiny_model_dir, lora_ga_variant=variant)
    layer = next(iter(lora_layers(model).values()))
    assert layer.lora_B[DEFAULT].weight.abs().max() > 1e-4  # B_0 ≠ 0: the offset keeps the output unchanged
    assert (logits(model) - reference).abs().max() <= 1e-5
    with model.disable_adapter():
        assert torch.equal(logits(model), reference)  # W_0 itself: π_ref
    # peft re-enables adapters by setting requires_grad on each active one: the offset must stay frozen.
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(f".{DEFAULT}." in n for n in trainable)
    assert all(OFFSET not in n for n, _ in model.named_parameters())


def _first_step_delta(model, lr=1e-3):
    """ΔW = s·(B_1A_1 − B_0A_0) per layer after one SGD step on the NLL."""
    layers = lora_layers(model)
    before = {n: (layer.lora_B[DEFAULT].weight @ layer.lora_A[DEFAULT].weight).detach() for n, layer in layers.items()}
    params = [p for p in model.parameters() if p.requires_grad]
    nll(model).backward()
    with torch.no_grad():
        for p in params:
            p -= lr * p.grad
    return {
        n: layer.scaling[DEFAULT] * (layer.lora_B[DEFAULT].weight @ layer.lora_A[DEFAULT].weight - before[n]).detach()
        for n, layer in layers.items()
    }


def test_lora_ga_first_step_lies_closer_to_the_gradients_top_r_subspace_than_lora(tiny_model_dir):
    ga_model, grads, _ = lora_ga_model(tiny_model_dir)
    ga = _first_step_delta(ga_model)
    lora = _first_step_delta(attach_adapter(load(tiny_model_dir), adapter_cfg("lora")))
    r = 4
    for name, G in grads.items():
        U, S, Vh = torch.linalg.svd(G)
        top = U[:, :r] @ torch.diag(S[:r]) @ Vh[:r]  # the full gradient's best rank-r approximation

        ga_cos, lora_cos = (
            float(torch.nn.functional.cosine_similarity(-delta[name].flatten(), top.flatten(), dim=0))
            for delta in (ga, lora)
        )
        # LoRA-GA's ΔW ∝ G_r + (components r+1..2r), so cos ≥ ‖G_r‖/‖G_2r‖ ≥ 1/√2; LoRA's is a random projection.
        assert ga_cos > 0.7 > lora_cos + 0.2, (name, ga_cos, lora_cos)


def test_peft_variant_equals_peft_lora_ga_init(tiny_model_dir):
    """prefopt's `peft` variant gives peft's own A_0 and B_0 (same gradient, same SVD seed) up to the sign of each
    singular vector, which prefopt fixes and peft leaves to the SVD, and the frozen offset adapter gives the output
    of peft's offset base weight."""
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora.config import LoraGAConfig

    ours, grads, _ = lora_ga_model(tiny_model_dir, lora_ga_variant="peft")
    config = LoraConfig(r=4, lora_alpha=8.0, target_modules="all-linear", lora_dropout=0.0)
    theirs = get_peft_model(load(tiny_model_dir), config)
    ga_config = LoraGAConfig(direction="ArB2r", scale="stable", stable_gamma=16)
    our_layers, their_layers = lora_layers(ours), lora_layers(theirs)
    assert set(our_layers) == set(their_layers)
    for name, layer in their_layers.items():
        layer.get_base_layer()._peft_loraga_grad = grads[name].clone()
        torch.manual_seed(0)  # svd_lowrank's random start, as svd_factors(seed=0) draws it
        layer.lora_ga_init(DEFAULT, ga_config)  # peft's code: sets A_0, B_0 and offsets the base weight
        mine = our_layers[name]
        our_a, their_a = mine.lora_A[DEFAULT].weight, layer.lora_A[DEFAULT].weight  # [r, d_in]: rows are v_i
        our_b, their_b = mine.lora_B[DEFAULT].weight, layer.lora_B[DEFAULT].weight  # [d_out, r]: columns are u_j
        row_signs, col_signs = torch.sign((our_a * their_a).sum(1, keepdim=True)), torch.sign((our_b * their_b).sum(0))
        torch.testing.assert_close(our_a, row_signs * their_a, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(our_b, col_signs * their_b, atol=1e-6, rtol=1e-5)
    assert (logits(ours) - logits(theirs)).abs().max() <= 1e-5


def _train_a_little(model) -> None:
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))


@pytest.mark.parametrize("adapter,rslora", [("lora", False), ("lora", True), ("lora_ga", False), ("lora_ga", True)])
def test_saved_adapter_reproduces_the_policy_on_a_fresh_base_model_and_merged(
    tiny_model_dir, tmp_path, adapter, rslora
):
    from peft import PeftModel

    if adapter == "lora_ga":
        model, _, _ = lora_ga_model(tiny_model_dir, use_rslora=rslora)
    else:
        model = attach_adapter(load(tiny_model_dir), adapter_cfg("lora", use_rslora=rslora))
    _train_a_little(model)
    expected = logits(model)
    save_adapter(model, tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(load(tiny_model_dir), str(tmp_path / "adapter"))
    assert (logits(reloaded) - expected).abs().max() <= 1e-5
    merged = reloaded.merge_and_unload()
    assert (logits(merged) - expected).abs().max() <= 1e-4
