"""Anchor log-probs: π_t is the current model, π_ref the initial weights (full fine-tuning, by a CPU snapshot
swapped in) or the disabled adapter (LoRA); either way the trained weights are untouched afterwards."""

import pytest
import torch

from prefopt.anchors import Anchors
from prefopt.backend import Backend
from prefopt.config import TrainConfig
from prefopt.ops import build_sequence_batch, response_token_logps
from prefopt.scoring import Scorer

PROMPTS = [[1, 4, 30, 31], [1, 4, 50, 51, 52]]
RESPONSES = [[60, 61, 2], [70]]


def manual_logps(model):
    with torch.no_grad():
        batch = build_sequence_batch(PROMPTS, RESPONSES, 0)
        return response_token_logps(model, batch).sum(-1)


def perturb(model):
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))


def backend_with(model, tmp_path):
    cfg = TrainConfig(model_name_or_path="x", dataset_name="x", output_dir=str(tmp_path))
    backend = Backend(cfg)
    backend.prepare(model, torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1))
    return backend


def test_full_finetuning_reference_is_the_initial_snapshot(tiny_model_dir, tmp_path):
    from prefopt.models import load_causal_lm

    model = load_causal_lm(tiny_model_dir)
    initial = manual_logps(model.eval())
    backend = backend_with(model, tmp_path)
    anchors = Anchors(backend, Scorer(0, backend.device), batch_size=1, show_progress=False)
    anchors.keep_reference()
    torch.manual_seed(0)
    perturb(backend.unwrapped)
    trained = manual_logps(backend.unwrapped)
    assert not torch.allclose(trained, initial, atol=1e-3)
    assert torch.allclose(anchors.logps(PROMPTS, RESPONSES, "reference"), initial, atol=1e-5)
    assert torch.allclose(anchors.logps(PROMPTS, RESPONSES, "current"), trained, atol=1e-5)
    assert torch.allclose(manual_logps(backend.unwrapped), trained, atol=1e-6)  # weights swapped back
    assert not any(p.requires_grad and p.grad is not None for p in backend.unwrapped.parameters())


def test_lora_reference_is_the_disabled_adapter_without_a_snapshot(tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    from prefopt.models import load_causal_lm

    base = load_causal_lm(tiny_model_dir)
    initial = manual_logps(base.eval())
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    backend = backend_with(model, tmp_path)
    anchors = Anchors(backend, Scorer(0, backend.device), batch_size=8, show_progress=False)
    anchors.keep_reference()
    assert anchors.ref_snapshot is None and backend.has_adapter  # nothing copied: π_ref is the adapter switched off
    adapted = manual_logps(backend.unwrapped)
    assert not torch.allclose(adapted, initial, atol=1e-4)
    assert torch.allclose(anchors.logps(PROMPTS, RESPONSES, "reference"), initial, atol=1e-5)
    assert torch.allclose(anchors.logps(PROMPTS, RESPONSES, "current"), adapted, atol=1e-5)
    snapshot = backend.snapshot()
    assert all("lora_" in name for name in snapshot)  # snapshots hold adapter tensors only


def test_reference_requires_the_capability(tiny_model_dir, tmp_path):
    from prefopt.models import load_causal_lm

    backend = backend_with(load_causal_lm(tiny_model_dir), tmp_path)
    anchors = Anchors(backend, Scorer(0, backend.device), batch_size=2, show_progress=False)
    with pytest.raises(RuntimeError, match="needs_ref"):
        anchors.logps(PROMPTS, RESPONSES, "reference")
