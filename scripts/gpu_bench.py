"""The GPU benchmark of scripts/gpu_bench.sh: real model shapes, random weights, bf16, GRPO and SPPO, padded vs
packed, and TRL's GRPOTrainer on the same settings; one JSON and one markdown table.

    python scripts/gpu_bench.py --out_dir gpu_bench            # on a GPU: Qwen2.5-0.5B and 1.5B shapes, bf16
    python scripts/gpu_bench.py --out_dir /tmp/b --cpu-dry-run # a tiny Qwen2 shape on CPU, float32: the script's proof

Each run is a subprocess of ``scripts/benchmark.py`` (prefopt: the real training loop, its ``time/*`` phases and
the peak CUDA memory) or ``scripts/compare_trl.py --one trl`` (TRL's loop), so every peak is that run's own. The
models are random-initialised from configs written here (the published shapes; no download) with the tiny
project tokenizer (responses are random ids: decoding skips the ids it lacks, which the rewards tolerate).
Settings per run: ``--prompts`` prompts × G = 4 responses of up to ``--max_new_tokens`` tokens, one optimizer step
per iteration over all of them in micro-batches of ``--micro_batch`` sequences, 1 warm-up + ``--iterations`` measured.
GRPO's reward is the vowel fraction of compare_trl.py; SPPO's judge is the synthetic non-transitive one.
Reported: seconds per iteration (prefopt: ``time/iteration_s``, which leaves out the iteration's commit, a few
milliseconds for 64 samples; TRL: its loop per step, from the first step's end to the last's) and responses/s;
rollout tokens/s (generated tokens / ``time/rollout_s``); train tokens/s (``forward/tokens``, the prompt +
response tokens of the training and anchor forwards, / their time, ``time/optimise_s + time/anchor_s``); the
padding share of those forwards; the peak GPU memory of the run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Published shapes (the Hub's config.json of Qwen/Qwen2.5-0.5B and Qwen/Qwen2.5-1.5B), written here, not fetched.
QWEN = {"model_type": "qwen2", "vocab_size": 151936, "num_key_value_heads": 2, "rope_theta": 1e6,
        "rms_norm_eps": 1e-6, "max_position_embeddings": 32768, "tie_word_embeddings": True,
        "hidden_act": "silu"}  # fmt: skip
SHAPES = {
    "qwen2.5-0.5b": QWEN | {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
                            "num_attention_heads": 14},
    "qwen2.5-1.5b": QWEN | {"hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
                            "num_attention_heads": 12},
    # --cpu-dry-run: the same architecture, tiny (head_dim 32), the tokenizer's own vocabulary.
    "qwen2-tiny": QWEN | {"vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                          "num_attention_heads": 2, "max_position_embeddings": 2048},
}  # fmt: skip
VARIANTS = {"packed": {}, "padded": {"padding_free": False, "logprob_chunk_size": 0}}
JUDGES = {
    "grpo": {"judge": "python_reward", "judge_function": f"{REPO / 'scripts/compare_trl.py'}:reward"},
    "sppo": {"judge": "nontransitive", "train_on": "all"},
}


def write_model(out: Path, shape: dict, dtype: str) -> Path:
    """A random model of ``shape`` in ``dtype`` with the tiny tokenizer (its special ids set in the config)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from prefopt.tiny import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    tokenizer.save_pretrained(out)
    fields = {k: v for k, v in shape.items() if k != "model_type"}
    ids = {f"{k}_token_id": getattr(tokenizer, f"{k}_token_id") for k in ("bos", "eos", "pad")}
    config = AutoConfig.for_model(shape["model_type"], **fields, **ids)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    return out


def run(cmd: list[str], timeout: float) -> str:
    """Run one benchmark subprocess; its stdout (a failure raises with the end of its stderr)."""
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if out.returncode:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed:\n{out.stderr[-3000:]}")
    return out.stdout


def prefopt_run(model: Path, algorithm: str, variant: str, args, tmp: Path) -> dict:
    out, config = tmp / f"{algorithm}-{variant}.json", tmp / f"{algorithm}-{variant}.yaml"
    responses = args.prompts * 4
    # SPPO's rows are a prompt's 4 samples (train_on: all): its micro-batch counts rows of 4 sequences.
    rows_per_micro = args.micro_batch if algorithm == "grpo" else max(1, args.micro_batch // 4)
    keys = {"algorithm": algorithm, "dataset_name": str(REPO / "configs/data/quickstart_prompts.jsonl"),
            "output_dir": str(tmp / "run"), "dtype": args.dtype, "learning_rate": 1e-6, "num_samples": 4,
            "prompts_per_iteration": args.prompts, "max_new_tokens": args.max_new_tokens, "temperature": 1.0,
            "generation_batch_size": responses, "per_device_train_batch_size": rows_per_micro,
            "gradient_accumulation_steps": max(1, responses // args.micro_batch), "num_train_epochs": 1,
            **({"beta": 0.04} if algorithm == "grpo" else {}), **JUDGES[algorithm], **VARIANTS[variant]}  # fmt: skip
    config.write_text(json.dumps(keys))  # JSON is YAML
    cmd = [sys.executable, str(REPO / "scripts/benchmark.py"), "--algorithm", algorithm, "--config", str(config),
           "--model", str(model), "--iterations", str(args.iterations), "--warmup", "1",
           "--torch_num_threads", str(args.threads), "--out", str(out)]  # fmt: skip
    run(cmd, args.run_timeout)
    r = json.loads(out.read_text())
    ph = {k.split("/")[1][:-2]: v["mean"] for k, v in r["phases"].items()}
    samples, length = r["sizes"]["rollout/samples"]["mean"], r["sizes"]["rollout/mean_length"]["mean"]
    tokens = _mean(r["iterations"][1:], "forward/tokens")  # training and anchor forwards' tokens
    return {
        "trainer": "prefopt", "algorithm": algorithm, "variant": variant, "s_per_iteration": ph["iteration"],
        "rollout_s": ph["rollout"], "optimise_s": ph["optimise"], "anchor_s": ph["anchor"],
        "rollout_tokens_per_s": samples * length / ph["rollout"],
        "train_tokens_per_s": tokens / (ph["optimise"] + ph["anchor"]),
        "responses_per_s": samples / ph["iteration"], "peak_gpu_mib": r["peak_cuda_allocated_mib"],
        "padding_fraction": _mean(r["iterations"][1:], "forward/padding_fraction"),
    }  # fmt: skip


def _mean(lines: list[dict], key: str):
    values = [m[key] for m in lines if key in m]
    return sum(values) / len(values) if values else None


def trl_run(model: Path, args) -> dict:
    s = {"num_generations": 4, "max_new_tokens": args.max_new_tokens, "batch": args.prompts * 4,
         "steps": args.iterations + 1, "beta": 0.04, "learning_rate": 1e-6, "temperature": 1.0, "seed": 0,
         "micro_batch": args.micro_batch, "warmup_steps": 1}  # fmt: skip
    cmd = [sys.executable, str(REPO / "scripts/compare_trl.py"), "--one", "trl", "--model", str(model),
           "--settings", json.dumps(s)]  # fmt: skip
    r = json.loads(run(cmd, args.run_timeout).strip().splitlines()[-1])
    per = r["measured_s"] / args.iterations
    return {"trainer": "trl", "algorithm": "grpo", "variant": "TRL GRPOTrainer", "s_per_iteration": per,
            "responses_per_s": s["batch"] / per, "peak_gpu_mib": r.get("peak_gpu_mib")}  # fmt: skip


def markdown(result: dict) -> str:
    lines = [
        f"{result['device']}; {result['settings']}",
        "",
        "| shape | trainer | algorithm | variant | s / iteration | responses/s | rollout tok/s | train tok/s | "
        "padding | peak GPU MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    fmt = lambda v, f: "–" if v is None else format(v, f)  # noqa: E731
    for shape, runs in result["shapes"].items():
        for r in runs:
            lines.append(
                f"| {shape} | {r['trainer']} | {r['algorithm']} | {r['variant']} | {r['s_per_iteration']:.2f} | "
                f"{r['responses_per_s']:.1f} | {fmt(r.get('rollout_tokens_per_s'), ',.0f')} | "
                f"{fmt(r.get('train_tokens_per_s'), ',.0f')} | {fmt(r.get('padding_fraction'), '.1%')} | "
                f"{fmt(r.get('peak_gpu_mib'), ',.0f')} |"
            )
    return "\n".join(lines)


def main(argv=None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out_dir", required=True)
    parser.add_argument("--cpu-dry-run", dest="dry", action="store_true", help="Tiny shape, float32, on CPU.")
    parser.add_argument("--shapes", nargs="+", help="Default: both Qwen2.5 shapes (qwen2-tiny with --cpu-dry-run).")
    parser.add_argument("--prompts", type=int, default=16, help="Prompts per iteration (G = 4 responses each).")
    parser.add_argument("--max_new_tokens", type=int, default=256)
    parser.add_argument("--micro_batch", type=int, default=16, help="Sequences per micro-batch.")
    parser.add_argument("--iterations", type=int, default=2, help="Measured iterations (after 1 warm-up).")
    parser.add_argument("--run_timeout", type=float, default=150, help="Seconds one run may take.")
    parser.add_argument("--skip_trl", action="store_true")
    args = parser.parse_args(argv)
    if not args.dry and not torch.cuda.is_available():
        parser.error("no CUDA device: run on a GPU machine, or pass --cpu-dry-run")
    args.dtype, args.threads = ("float32", 1) if args.dry else ("bfloat16", 4)
    shapes = args.shapes or (["qwen2-tiny"] if args.dry else ["qwen2.5-0.5b", "qwen2.5-1.5b"])
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU (dry run)"
    settings = (f"{args.prompts} prompts × 4 responses, up to {args.max_new_tokens} new tokens, micro-batches of "
                f"{args.micro_batch}, {args.dtype}, 1 warm-up + {args.iterations} measured iterations")  # fmt: skip
    result = {"device": device, "settings": settings, "torch": torch.__version__, "shapes": {}}
    start = time.perf_counter()
    for name in shapes:
        with tempfile.TemporaryDirectory(prefix="gpu-bench-") as tmp:
            model = write_model(Path(tmp, "model"), SHAPES[name], args.dtype)
            runs = [prefopt_run(model, a, v, args, Path(tmp)) for a in ("grpo", "sppo") for v in VARIANTS]
            if not args.skip_trl:
                runs.append(trl_run(model, args))
        result["shapes"][name] = runs
        print(f"{name}: done after {time.perf_counter() - start:.0f} s", flush=True)
    result["wall_s"] = time.perf_counter() - start
    (out_dir / "gpu_bench.json").write_text(json.dumps(result, indent=1) + "\n")
    (out_dir / "gpu_bench.md").write_text(markdown(result) + "\n")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
