"""scripts/memory_estimate.py: the model shapes give the published parameter counts, and each setting's bytes per GPU
match the ZeRO paper's formulas (and DeepSpeed's own estimators) computed by hand."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GIB = 2**30


@pytest.fixture(scope="module")
def mem():
    spec = importlib.util.spec_from_file_location("memory_estimate", ROOT / "scripts" / "memory_estimate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


# Totals from the models' Hub pages / safetensors metadata.
PUBLISHED = {
    "qwen2.5-1.5b": 1_543_714_304,
    "mistral-7b": 7_241_732_096,
    "llama-3-8b": 8_030_261_248,
    "llama-2-13b": 13_015_864_320,
    "llama-3-70b": 70_553_706_496,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_shapes_give_the_published_parameter_counts(mem, name):
    assert mem.MODELS[name].params == PUBLISHED[name]


def test_largest_layer_and_lora_counts(mem):
    mistral = mem.MODELS["mistral-7b"]
    assert mistral.largest_layer_params == 32000 * 4096  # the embedding (and, untied, the output head)
    # peft's count for r = 16 on q,k,v,o,gate,up,down of Mistral-7B: 32 layers × 16 ×
    # (2·(4096+4096) + 2·(4096+1024) + 2·(4096+14336) + (14336+4096)) = 32 × 16 × 81920 = 41,943,040.
    assert mistral.lora_params(16) == 41_943_040


def test_formulas_by_hand(mem):
    psi, n = 7_000_000_000, 8
    assert mem.ddp_bytes(psi) == 16 * psi  # 112e9: 2 weights + 2 gradients + 12 optimizer states per parameter
    assert mem.zero2_bytes(psi, n) == 2 * psi + 14 * psi / n == 26.25e9  # 14e9 + 12.25e9
    assert mem.zero3_bytes(psi, n) == 16 * psi / n == 14e9
    assert mem.zero3_offload_bytes(psi, n) == 2 * psi / n == 1.75e9
    assert mem.lora_bytes(psi, 40_000_000) == 2 * psi + 16 * 40_000_000 == 14.64e9


def test_estimate_zero3_is_16_psi_over_n(mem):
    arch = mem.MODELS["llama-3-8b"]
    row = mem.estimate(arch, gpus_per_node=8, nodes=2, gpu_memory_gib=80, vllm_gpu_memory_utilization=0.25)
    psi = PUBLISHED["llama-3-8b"]
    assert row["gpus"] == 16
    assert row["model_states_gib"]["zero3"] * GIB == pytest.approx(16 * psi / 16)  # 8.03e9 bytes
    assert row["model_states_gib"]["ddp"] * GIB == pytest.approx(16 * psi)
    assert row["prefopt_extras_gib"]["zero3_generation_gather"] * GIB == pytest.approx(2 * psi)
    assert row["prefopt_extras_gib"]["vllm"] == pytest.approx(20.0)
    assert row["peaks_gib"]["headroom_zero3_vllm"] == pytest.approx(80 - 20 - psi / GIB)


def test_deepspeed_estimators_by_hand(mem):
    pytest.importorskip("deepspeed")
    arch = mem.MODELS["llama-3-70b"]
    psi, layer, n = arch.params, arch.largest_layer_params, 8
    ds = mem.deepspeed_estimates(arch, gpus_per_node=n, nodes=1)
    # DeepSpeed counts 18 bytes per sharded parameter (fp32 gradients too) and, under ZeRO-3, 4 bytes per parameter
    # of the largest layer for the gathered working set.
    assert ds["zero2"] == 2 * psi + int(18 * psi / n)
    assert ds["zero2_offload_optimizer"] == 2 * psi
    assert ds["zero3"] == 4 * layer + int(18 * psi / n)
    assert ds["zero3_offload_all"] == 4 * layer


def test_cli_markdown_and_json(mem, capsys):
    assert mem.main(["--models", "qwen2.5-1.5b", "mistral-7b"]) == 0
    text = capsys.readouterr().out
    assert "| mistral-7b | 7.24B | 131M | 107.9 |" in text
    assert text.count("| qwen2.5-1.5b |") in (2, 3)  # 3 with DeepSpeed's table
    assert mem.main(["--json", "--gpus", "4", "--models", "llama-2-13b"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["gpus"] == 4 and row["params"] == PUBLISHED["llama-2-13b"]
