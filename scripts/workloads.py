"""Optimise-phase workloads of ``scripts/benchmark.py``: variable-length batches and a large vocabulary.

    python scripts/benchmark.py --workload varlen        # long-tailed response lengths, padded vs packed
    python scripts/benchmark.py --workload large_vocab   # a 151,936-token vocabulary, 8 × 1024 response tokens

Each workload trains one synthetic GRPO batch (random token ids of the workload's lengths, random advantages)
through the real optimiser (``Context.optimise``: micro-batches, the scorer's forward, backward, optimizer steps)
under several variants of the config, side by side: ``padded`` is the forward as it was before padding-free
packing and the chunked head existed (``padding_free: false``, ``logprob_chunk_size: 0``), the others turn them
on. Every variant runs in a fresh subprocess, so its peak memory is its own, and variants alternate over
``--repeats`` rounds. Reported per variant: the padding fraction of the policy's forwards, optimise tokens/s
(prompt + response tokens × epochs / optimise seconds), the optimise seconds, and the peak memory of the
optimisation (the process's resident-set high-water mark, reset just before, minus the resident set then; on a GPU
``torch.cuda.max_memory_allocated`` after a reset), measured on the second optimisation (the first allocates the
optimizer's state).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
CHUNK = 1024
WORKLOADS = {
    # GRPO rows (one response each): 256 rows, 4 optimizer steps of 64 rows (8 micro-batches of 8 rows).
    "varlen": {
        "rows": 256,
        "overrides": {"per_device_train_batch_size": 8, "gradient_accumulation_steps": 8},
        "variants": {
            "padded": {"padding_free": False, "logprob_chunk_size": 0},
            "packed": {"padding_free": True, "logprob_chunk_size": CHUNK},
            "packed, 4096-token micro-batches": {
                "padding_free": True,
                "logprob_chunk_size": CHUNK,
                "max_tokens_per_micro_batch": 4096,
            },
        },
    },
    # One micro-batch of 8 rows × 1024 response tokens, one optimizer step, on a 151,936-token vocabulary.
    "large_vocab": {
        "rows": 8,
        "vocab_size": 151_936,
        "overrides": {"per_device_train_batch_size": 8, "gradient_accumulation_steps": 1},
        "variants": {
            "padded": {"padding_free": False, "logprob_chunk_size": 0},
            "padded, chunked head": {"padding_free": False, "logprob_chunk_size": CHUNK},
            "packed, chunked head": {"padding_free": True, "logprob_chunk_size": CHUNK},
        },
    },
}


def lengths(workload: str, rows: int, seed: int = 0) -> tuple[list[int], list[int]]:
    """(prompt lengths, response lengths). varlen: prompts uniform in [20, 200], responses log-normal with median
    150 and σ = 1 (long-tailed: a tenth above 540), capped at 1024; large_vocab: 20-token prompts, 1024-token
    responses."""
    gen = torch.Generator().manual_seed(seed)
    if workload == "large_vocab":
        return [20] * rows, [1024] * rows
    prompts = torch.randint(20, 201, (rows,), generator=gen).tolist()
    normal = torch.randn(rows, generator=gen, dtype=torch.float64)
    responses = [min(1024, max(1, round(math.exp(math.log(150) + z)))) for z in normal.tolist()]
    return prompts, responses


def synthetic_batch(workload: str, rows: int, vocab: int, seed: int = 0):
    from prefopt.batch import Batch

    prompts, responses = lengths(workload, rows, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    ids = lambda n: torch.randint(3, vocab, (n,), generator=gen).tolist()  # noqa: E731  (0-2: pad, bos, eos)
    token_data = {
        "old_logps": [torch.full((n,), -math.log(vocab)) for n in responses],
        "ref_logps": [torch.full((n,), -math.log(vocab)) for n in responses],
    }
    advantage = torch.randn(rows, 1, generator=gen)
    return Batch([ids(n) for n in prompts], [ids(n) for n in responses], 1, {"advantage": advantage}, token_data)


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def reset_peak() -> float:
    """Reset the peak-memory counters; return the baseline they are measured against (MiB)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated() / 2**20
    with open("/proc/self/clear_refs", "w") as f:  # Linux: 5 resets the resident-set high-water mark
        f.write("5")
    return rss_mib()


def peak_since(baseline: float) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**20 - baseline
    return peak_rss_mib() - baseline


def run_variant(workload: str, variant: str, model_args: dict, threads: int) -> dict:
    """One variant in this process: build a GRPO run, optimise the synthetic batch twice, measure the second."""
    from prefopt.algorithms import get_algorithm
    from prefopt.build import build_run
    from prefopt.config import build_configs
    from prefopt.tiny import write_tiny_model

    spec = WORKLOADS[workload]
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="prefopt-workload-") as tmp:
        model_dir = write_large_vocab(Path(tmp, "model"), spec.get("vocab_size"), model_args, write_tiny_model)
        keys = {
            "model_name_or_path": str(model_dir), "output_dir": str(Path(tmp, "run")), "disable_tqdm": True,
            # A reward judge GRPO accepts; the synthetic batch's advantages stand in for its rewards.
            "dataset_name": str(REPO / "configs/data/arithmetic.jsonl"), "judge": "exact_match",
            "answer_column": "answer", "learning_rate": 1e-5,
            "num_iterations": 1, "beta": 0.04, "dtype": model_args.get("dtype", "float32"),
            **spec["overrides"], **spec["variants"][variant],
        }  # fmt: skip
        cfg, params = build_configs(get_algorithm("grpo").config_class, {}, keys)
        run = build_run("grpo", cfg, params)
        vocab = run.ctx.backend.unwrapped.config.vocab_size
        batch = synthetic_batch(workload, spec["rows"], vocab)
        run.ctx.optimise(batch)  # allocates the optimizer's state
        scorer = run.ctx.scorer
        scorer.take_counts()
        baseline = reset_peak()
        start = time.perf_counter()
        run.ctx.optimise(batch)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        peak = peak_since(baseline)
    tokens = sum(len(p) + len(r) for p, r in zip(batch.prompt_ids, batch.response_ids)) * cfg.num_train_epochs
    return {
        "workload": workload, "variant": variant, "optimise_s": seconds, "tokens": tokens,
        "tokens_per_s": tokens / seconds, "padding_fraction": scorer.padding_fraction, "peak_mib": peak,
        "forward_positions": scorer.forward_tokens_seen, "vocab_size": vocab,
    }  # fmt: skip


def write_large_vocab(out: Path, vocab_size, model_args: dict, write_tiny_model) -> Path:
    """The tiny model (its tokenizer too), re-initialised with ``vocab_size`` output rows when given."""
    write_tiny_model(out, hidden_size=model_args["hidden_size"], num_layers=model_args["num_layers"])
    if vocab_size:
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(out)
        config.vocab_size = vocab_size
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(config).save_pretrained(out)
    return out


def side_by_side(workload: str, repeats: int, model_args: dict, threads: int) -> dict:
    """Every variant ``repeats`` times, alternating, each in a fresh subprocess; the per-variant medians."""
    runs: dict[str, list[dict]] = {v: [] for v in WORKLOADS[workload]["variants"]}
    for _ in range(repeats):
        for variant in runs:
            cmd = [sys.executable, __file__, workload, variant, json.dumps(model_args), str(threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if out.returncode:
                raise RuntimeError(f"{workload} / {variant} failed:\n{out.stderr[-3000:]}")
            runs[variant].append(json.loads(out.stdout.strip().splitlines()[-1]))
    median = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    summary = {
        variant: {
            k: median([r[k] for r in rs]) for k in ("optimise_s", "tokens_per_s", "padding_fraction", "peak_mib")
        }
        | {"tokens": rs[0]["tokens"], "forward_positions": rs[0]["forward_positions"]}
        for variant, rs in runs.items()
    }
    return {"workload": workload, "repeats": repeats, "model": model_args, "threads": threads,
            "variants": summary, "runs": runs}  # fmt: skip


def markdown(result: dict) -> str:
    base = next(iter(result["variants"].values()))
    lines = [
        f"{result['workload']} (median of {result['repeats']}; speed and memory relative to the first row)",
        "",
        "| variant | padding | optimise s | tokens/s | speed-up | peak MiB | memory |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, v in result["variants"].items():
        lines.append(
            f"| {name} | {v['padding_fraction']:.1%} | {v['optimise_s']:.2f} | {v['tokens_per_s']:,.0f} | "
            f"{base['optimise_s'] / v['optimise_s']:.2f}× | {v['peak_mib']:,.0f} | "
            f"{v['peak_mib'] / base['peak_mib']:.2f}× |"
        )
    return "\n".join(lines)


if __name__ == "__main__":  # one variant, as side_by_side launches it: prints its result as the last line
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.path.insert(0, str(REPO))
    name, variant, model_json, threads = sys.argv[1:5]
    print(json.dumps(run_variant(name, variant, json.loads(model_json), int(threads))))
