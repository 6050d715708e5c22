"""Estimated GPU memory per process for full fine-tuning and LoRA, by model size and parallel setting.

    python scripts/memory_estimate.py                    # markdown tables for 8 GPUs of 80 GiB (docs/distributed.md)
    python scripts/memory_estimate.py --gpus 16 --json   # 2 nodes × 8 GPUs, as JSON
    python scripts/memory_estimate.py --models llama-3-70b --gpu-memory-gib 141

What it counts (Ψ = parameters, N = GPUs in the data-parallel group, bytes per GPU):

- **Model states** of mixed-precision Adam, the ZeRO paper's accounting (Rajbhandari et al., arXiv 1910.02054,
  Table 1 with K = 12): 2Ψ bf16 weights + 2Ψ bf16 gradients + 12Ψ optimizer states (4Ψ fp32 master weights + 8Ψ
  Adam moments). DDP keeps all 16Ψ on every GPU (prefopt's plain-DDP recipes hold fp32 weights and gradients with
  bf16 autocast instead: 4Ψ + 4Ψ + 8Ψ, the same 16Ψ). ZeRO-2 shards gradients and optimizer states: 2Ψ + 14Ψ/N.
  ZeRO-3 also shards the weights: 16Ψ/N. With ``offload_optimizer`` (ZeRO-Offload) the optimizer states and their
  update live in CPU RAM. Next to these, DeepSpeed's own estimators
  (``deepspeed.runtime.zero.stage_1_and_2.estimate_zero2_model_states_mem_needs`` and
  ``deepspeed.runtime.zero.stage3.estimate_zero3_model_states_mem_needs``, the functions behind the documented
  ``estimate_zero{2,3}_model_states_mem_needs_all_cold``), which count 18 bytes per sharded parameter (fp32
  gradients too) and, for ZeRO-3, 4 bytes per parameter of the largest layer for the gathered working set.
- **LoRA**: the frozen bf16 base (2Ψ, replicated under DDP) plus 16 bytes per adapter parameter.
- **What prefopt's design adds**: under ZeRO-3 with ``ds3_gather_for_generation`` (the default) every GPU holds the
  whole model in bf16 for the duration of a rollout (2Ψ on top of its shard); π_ref costs nothing with an adapter
  (the disabled adapter) and, under full fine-tuning, a CPU snapshot of each process's trainable tensors (its ZeRO-3
  shard, else the whole bf16 model); Nash-MD's mixture sampling under full fine-tuning loads a second bf16 model on
  every GPU (2Ψ); colocated vLLM takes ``vllm_gpu_memory_utilization`` × GPU memory (its own bf16 weights, 2Ψ with
  tensor parallel size 1, and its KV cache).
- **Not counted**: activations (they depend on batch size, sequence length, gradient checkpointing and the
  attention kernel), a judge model on the GPU, CUDA context and allocator fragmentation (budget a few GiB).

Model shapes are the published configs; the parameter counts they give are checked against the published totals in
tests/test_memory_estimate.py.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass

GIB = 2**30
BYTES_BF16 = 2
# Mixed-precision Adam (ZeRO paper, K = 12): fp32 master weights (4) + first and second moments (4 + 4).
BYTES_OPTIMIZER = 12
BYTES_MODEL_STATES = BYTES_BF16 + BYTES_BF16 + BYTES_OPTIMIZER  # 16: weights, gradients, optimizer states
LORA_TARGETS = "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj (peft's all-linear on these models)"


@dataclass(frozen=True)
class Arch:
    """A decoder-only transformer's shape (Llama/Mistral/Qwen2 layout: GQA attention, SwiGLU MLP, RMSNorm)."""

    name: str
    hub_id: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tied_embeddings: bool
    qkv_bias: bool = False  # Qwen2 has biases on q, k, v

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * (self.hidden // self.heads)

    @property
    def params(self) -> int:
        """Every parameter: embeddings, per layer attention + MLP + 2 norms, the final norm, an untied output head."""
        h, kv = self.hidden, self.kv_dim
        attention = 2 * h * h + 2 * h * kv + (h + 2 * kv if self.qkv_bias else 0)
        per_layer = attention + 3 * h * self.intermediate + 2 * h
        embeddings = self.vocab * h * (1 if self.tied_embeddings else 2)
        return self.layers * per_layer + embeddings + h

    @property
    def largest_layer_params(self) -> int:
        """The largest single module: the embedding (or output head) matrix, vocab × hidden, in all five models."""
        return max(self.vocab * self.hidden, self.hidden * self.intermediate)

    def lora_params(self, r: int) -> int:
        """LoRA on every linear layer of every block: r × (d_in + d_out) per module."""
        h, kv, i = self.hidden, self.kv_dim, self.intermediate
        dims = [(h, h), (h, kv), (h, kv), (h, h), (h, i), (h, i), (i, h)]  # q k v o gate up down
        return self.layers * r * sum(d_in + d_out for d_in, d_out in dims)


MODELS: dict[str, Arch] = {
    a.name: a
    for a in (
        Arch("qwen2.5-1.5b", "Qwen/Qwen2.5-1.5B", 1536, 8960, 28, 12, 2, 151936, True, qkv_bias=True),
        Arch("mistral-7b", "mistralai/Mistral-7B-Instruct-v0.2", 4096, 14336, 32, 32, 8, 32000, False),
        Arch("llama-3-8b", "meta-llama/Meta-Llama-3-8B", 4096, 14336, 32, 32, 8, 128256, False),
        Arch("llama-2-13b", "meta-llama/Llama-2-13b-hf", 5120, 13824, 40, 40, 40, 32000, False),
        Arch("llama-3-70b", "meta-llama/Meta-Llama-3-70B", 8192, 28672, 80, 64, 8, 128256, False),
    )
}


# -- the ZeRO paper's formulas (bytes per GPU) -----------------------------------------------------------------------
def ddp_bytes(params: int) -> int:
    return BYTES_MODEL_STATES * params


def zero2_bytes(params: int, gpus: int) -> float:
    return BYTES_BF16 * params + (BYTES_BF16 + BYTES_OPTIMIZER) * params / gpus


def zero3_bytes(params: int, gpus: int) -> float:
    return BYTES_MODEL_STATES * params / gpus


def zero2_offload_bytes(params: int) -> int:
    """ZeRO-2 with offload_optimizer: only the bf16 weights stay on the GPU (gradients stream to the CPU)."""
    return BYTES_BF16 * params


def zero3_offload_bytes(params: int, gpus: int) -> float:
    """ZeRO-3 with offload_optimizer (weights still sharded on the GPU)."""
    return BYTES_BF16 * params / gpus


def lora_bytes(params: int, adapter_params: int) -> int:
    """Frozen bf16 base + the adapter's own weights, gradients and Adam states (16 bytes each), replicated (DDP)."""
    return BYTES_BF16 * params + BYTES_MODEL_STATES * adapter_params


# -- DeepSpeed's estimators ------------------------------------------------------------------------------------------
def deepspeed_estimates(arch: Arch, gpus_per_node: int, nodes: int) -> dict[str, float] | None:
    """DeepSpeed's own numbers (bytes per GPU, and CPU bytes per node for the offload settings); None without it."""
    try:
        from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
        from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs
    except ImportError:
        return None
    kw = {"num_gpus_per_node": gpus_per_node, "num_nodes": nodes}
    z2_cpu_off, z2_gpu_off = estimate_zero2_model_states_mem_needs(arch.params, cpu_offload=True, **kw)
    _, z2_gpu = estimate_zero2_model_states_mem_needs(arch.params, cpu_offload=False, **kw)
    z3 = {}
    for key, offload, offload_params in (
        ("zero3", False, False),
        ("zero3_offload_optimizer", True, False),
        ("zero3_offload_all", True, True),
    ):
        cpu, gpu, _ = estimate_zero3_model_states_mem_needs(
            arch.params, arch.largest_layer_params, cpu_offload=offload, cpu_offload_params=offload_params, **kw
        )
        z3[key], z3[key + "_cpu"] = gpu, cpu
    return {
        "zero2": z2_gpu,
        "zero2_offload_optimizer": z2_gpu_off,
        "zero2_offload_optimizer_cpu": z2_cpu_off,
        **z3,
    }


# -- one model's estimate --------------------------------------------------------------------------------------------
def estimate(
    arch: Arch,
    gpus_per_node: int = 8,
    nodes: int = 1,
    gpu_memory_gib: float = 80.0,
    lora_r: int = 16,
    vllm_gpu_memory_utilization: float = 0.3,
) -> dict:
    """Every number for one model, in GiB (per GPU unless the key ends in ``_cpu``)."""
    n = gpus_per_node * nodes
    p = arch.params
    adapter = arch.lora_params(lora_r)
    states = {
        "ddp": ddp_bytes(p),
        "zero2": zero2_bytes(p, n),
        "zero2_offload_optimizer": zero2_offload_bytes(p),
        "zero3": zero3_bytes(p, n),
        "zero3_offload_optimizer": zero3_offload_bytes(p, n),
        "lora": lora_bytes(p, adapter),
    }
    vllm = vllm_gpu_memory_utilization * gpu_memory_gib * GIB
    extras = {
        "zero3_generation_gather": BYTES_BF16 * p,  # whole bf16 model on every GPU for the rollout
        "ref_snapshot_cpu_per_process_zero3": BYTES_BF16 * p / n,  # this process's bf16 shard
        "ref_snapshot_cpu_per_process_zero2": BYTES_BF16 * p,  # the whole bf16 model (4Ψ with fp32 weights)
        "nash_md_reference_model": BYTES_BF16 * p,
        "vllm": vllm,
        "vllm_weights": BYTES_BF16 * p,  # inside the vllm share, tensor parallel size 1
    }
    # The peak of a ZeRO-3 rollout with the in-process engine, and what is left for activations during training with
    # colocated vLLM (its share stays reserved unless vllm_enable_sleep_mode frees it).
    peaks = {
        "zero3_rollout_peak": states["zero3"] + extras["zero3_generation_gather"],
        "zero3_plus_vllm": states["zero3"] + vllm,
        "headroom_zero3_vllm": gpu_memory_gib * GIB - states["zero3"] - vllm,
    }
    ds = deepspeed_estimates(arch, gpus_per_node, nodes)
    gib = lambda d: {k: v / GIB for k, v in d.items()}  # noqa: E731
    return {
        "model": arch.name,
        "hub_id": arch.hub_id,
        "params": p,
        "largest_layer_params": arch.largest_layer_params,
        "lora_r": lora_r,
        "lora_params": adapter,
        "gpus": n,
        "gpu_memory_gib": gpu_memory_gib,
        "vllm_gpu_memory_utilization": vllm_gpu_memory_utilization,
        "model_states_gib": gib(states),
        "deepspeed_estimator_gib": None if ds is None else gib(ds),
        "prefopt_extras_gib": gib(extras),
        "peaks_gib": gib(peaks),
    }


# -- output ----------------------------------------------------------------------------------------------------------
def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1f}"


def markdown(rows: list[dict]) -> str:
    r0 = rows[0]
    n, mem, util, r = r0["gpus"], r0["gpu_memory_gib"], r0["vllm_gpu_memory_utilization"], r0["lora_r"]
    out = [
        f"Model states per GPU (GiB), mixed-precision Adam, {n} GPUs (the ZeRO paper's formulas; activations not "
        "included):",
        "",
        "| model | params | largest layer | DDP | ZeRO-2 | ZeRO-2 + offload_optimizer | ZeRO-3 | "
        f"ZeRO-3 + offload_optimizer | LoRA r={r}, DDP |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        s = row["model_states_gib"]
        out.append(
            f"| {row['model']} | {row['params'] / 1e9:.2f}B | {row['largest_layer_params'] / 1e6:.0f}M | "
            f"{_fmt(s['ddp'])} | {_fmt(s['zero2'])} | {_fmt(s['zero2_offload_optimizer'])} | {_fmt(s['zero3'])} | "
            f"{_fmt(s['zero3_offload_optimizer'])} | {_fmt(s['lora'])} |"
        )
    if all(row["deepspeed_estimator_gib"] for row in rows):
        out += [
            "",
            f"DeepSpeed's estimators for the same {n} GPUs (GiB per GPU; CPU RAM per node in brackets):",
            "",
            "| model | ZeRO-2 | ZeRO-2 + offload_optimizer | ZeRO-3 | ZeRO-3 + offload_optimizer | "
            "ZeRO-3 + offload all |",
            "|---|---|---|---|---|---|",
        ]
        for row in rows:
            d = row["deepspeed_estimator_gib"]
            out.append(
                f"| {row['model']} | {_fmt(d['zero2'])} | {_fmt(d['zero2_offload_optimizer'])} "
                f"({_fmt(d['zero2_offload_optimizer_cpu'])}) | {_fmt(d['zero3'])} | "
                f"{_fmt(d['zero3_offload_optimizer'])} ({_fmt(d['zero3_offload_optimizer_cpu'])}) | "
                f"{_fmt(d['zero3_offload_all'])} ({_fmt(d['zero3_offload_all_cpu'])}) |"
            )
    out += [
        "",
        f"What prefopt adds (GiB; vLLM at gpu_memory_utilization {util} of {mem:g} GiB):",
        "",
        "| model | ZeRO-3 rollout gather (GPU) | ZeRO-3 + gather | π_ref snapshot, ZeRO-3 (CPU/process) | "
        "π_ref snapshot, DDP/ZeRO-2 (CPU/process) | Nash-MD π_ref model (GPU) | vLLM share (its weights) | "
        "left for activations, ZeRO-3 + vLLM |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        e, pk = row["prefopt_extras_gib"], row["peaks_gib"]
        too_big = ": does not fit, needs tensor parallelism" if e["vllm_weights"] > e["vllm"] else ""
        out.append(
            f"| {row['model']} | {_fmt(e['zero3_generation_gather'])} | {_fmt(pk['zero3_rollout_peak'])} | "
            f"{_fmt(e['ref_snapshot_cpu_per_process_zero3'])} | {_fmt(e['ref_snapshot_cpu_per_process_zero2'])} | "
            f"{_fmt(e['nash_md_reference_model'])} | {_fmt(e['vllm'])} ({_fmt(e['vllm_weights'])}{too_big}) | "
            f"{_fmt(pk['headroom_zero3_vllm'])}{' (none)' if pk['headroom_zero3_vllm'] < 0 else ''} |"
        )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpus", type=int, default=8, help="GPUs per node (default 8).")
    parser.add_argument("--nodes", type=int, default=1, help="Nodes (default 1).")
    parser.add_argument("--gpu-memory-gib", type=float, default=80.0, help="Memory of one GPU (default 80).")
    parser.add_argument("--vllm-gpu-memory-utilization", type=float, default=0.3, help="vLLM's share (default 0.3).")
    parser.add_argument("--lora-r", type=int, default=16, help="LoRA rank, on every linear layer (default 16).")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--json", action="store_true", help="Print JSON instead of markdown tables.")
    args = parser.parse_args(argv)
    # Only arithmetic is used from DeepSpeed: its CPU accelerator avoids probing for GPUs (and the warning it prints to
    # stdout when there is none).
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    rows = [
        estimate(MODELS[m], args.gpus, args.nodes, args.gpu_memory_gib, args.lora_r, args.vllm_gpu_memory_utilization)
        for m in args.models
    ]
    print(json.dumps(rows, indent=2) if args.json else markdown(rows), end="" if not args.json else "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
