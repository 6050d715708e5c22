"""Evidence for the adapters: full fine-tuning, LoRA and LoRA-GA at equal optimizer steps on two CPU tasks.

- quickstart: SPPO on the synthetic non-transitive preference task (``configs/quickstart.yaml``); the metric is the
  win rate of the policy against the initial one on held-out prompts (``eval/win_rate``, every iteration).
- digit: GRPO on the digit-sum task (``configs/tiny/grpo.yaml``, verifiable reward); the metric is the exact
  expected accuracy over all 400 prompts, read from each iteration's checkpoint.

Every method runs each learning rate of ``--lrs`` for the task's iterations; the best rate (by the final metric)
is kept per method. LoRA then runs ``--lora_factor`` times longer at its best rate, and the study reports how many
steps LoRA needs to reach LoRA-GA's final level (the paper claims 2-4x fewer steps for LoRA-GA). Adapters: rank
``--rank`` on every linear layer, alpha = 2r, no dropout; LoRA-GA's gradient is each algorithm's own first-iteration
objective.

    python scripts/adapters_study.py --out docs      # about 6 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
TASKS = {
    "quickstart": {"config": "configs/quickstart.yaml", "algorithm": "sppo", "metric": "win rate vs initial"},
    "digit": {"config": "configs/tiny/grpo.yaml", "algorithm": "grpo", "metric": "expected accuracy"},
}
METHODS = ["full", "lora", "lora_ga"]


def train(task: str, method: str, lr: float, iterations: int, model_dir: Path, out: Path, args) -> Path:
    spec = TASKS[task]
    cmd = [sys.executable, "-m", "prefopt.cli", "train", spec["algorithm"], "--config", spec["config"]]
    cmd += ["--model_name_or_path", model_dir, "--output_dir", out, "--num_iterations", iterations]
    cmd += ["--learning_rate", lr, "--save_total_limit", iterations + 1, "--seed", args.seed]
    if task == "quickstart":
        cmd += ["--eval_every", 1, "--eval_samples_per_prompt", 8]
    else:
        cmd += ["--eval_num_prompts", 0]
    if method != "full":
        cmd += ["--adapter", method, "--lora_r", args.rank, "--lora_alpha", 2 * args.rank, "--lora_dropout", 0]
        cmd += ["--lora_target_modules", "all-linear"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=REPO, env=env)
    if result.returncode:
        raise SystemExit(f"{task} {method} lr={lr} failed: {result.stderr[-2000:]}")
    return out


def digit_accuracy(out: Path, model_dir: Path) -> list[float]:
    """Exact expected accuracy over every prompt of the digit task, at the start and after each iteration."""
    from safetensors.torch import load_file

    from prefopt.adapters import attach_adapter
    from prefopt.config import TrainConfig
    from prefopt.data import load_prompts
    from prefopt.game_metrics import action_probs
    from prefopt.models import load_causal_lm, load_tokenizer

    config = yaml.safe_load((out / "config.yaml").read_text())
    cfg = TrainConfig(**{k: v for k, v in config.items() if k in TrainConfig.__dataclass_fields__})
    tokenizer = load_tokenizer(str(model_dir))
    prompts = load_prompts(cfg.dataset_name, tokenizer, require_columns=("answer",))
    allowed = [tokenizer(d, add_special_tokens=False)["input_ids"][0] for d in cfg.response_choices]
    targets = torch.tensor([cfg.response_choices.index(p.extra["answer"]) for p in prompts])
    model = attach_adapter(load_causal_lm(str(model_dir)), cfg).eval()

    def accuracy() -> float:
        with torch.no_grad():
            probs = action_probs(model, [p.prompt_ids for p in prompts], allowed, tokenizer.pad_token_id, "cpu")
        return float(probs[torch.arange(len(prompts)), targets].mean())

    curve = [accuracy()]  # LoRA-GA's start: its adapter and offset cancel, so the untrained adapters do too
    for checkpoint in sorted((out / "checkpoints").glob("iter_*")):
        model.load_state_dict(load_file(str(checkpoint / "model.safetensors")))
        curve.append(accuracy())
    return curve


def curves(task: str, out: Path, model_dir: Path) -> dict[str, list[float]]:
    """Per iteration: the task's metric (with its value at the start first) and the training loss."""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    loss = [r["loss/total"] for r in rows]
    metric = [0.5] + [r["eval/win_rate"] for r in rows] if task == "quickstart" else digit_accuracy(out, model_dir)
    return {"metric": metric, "loss": loss, "steps_per_iteration": rows[0]["step"]}


def steps_to_reach(curve: list[float], level: float) -> int | None:
    """The first iteration (1-based) at which ``curve`` (start value first) reaches ``level``, or None."""
    return next((i for i, v in enumerate(curve) if i > 0 and v >= level), None)


def run_task(task: str, model_dir: Path, tmp: Path, args) -> dict:
    iterations = args.iterations[task]
    jobs = [(m, lr) for m in METHODS for lr in args.lrs]

    def run_one(job):
        method, lr = job
        return train(task, method, lr, iterations, model_dir, tmp / f"{task}-{method}-{lr}", args)

    with ThreadPoolExecutor(args.workers) as pool:
        outs = list(pool.map(run_one, jobs))
    results = {f"{m} lr={lr}": curves(task, out, model_dir) for (m, lr), out in zip(jobs, outs)}
    best = {m: max(args.lrs, key=lambda lr: results[f"{m} lr={lr}"]["metric"][-1]) for m in METHODS}
    long_iters = iterations * args.lora_factor
    long_out = train(task, "lora", best["lora"], long_iters, model_dir, tmp / f"{task}-lora-long", args)
    long_curve = curves(task, long_out, model_dir)
    target = results[f"lora_ga lr={best['lora_ga']}"]["metric"][-1]
    reached = steps_to_reach(long_curve["metric"], target)
    print(f"{task}: best lrs {best}; LoRA reaches LoRA-GA's {target:.3f} at iteration {reached}", flush=True)
    return {
        "iterations": iterations,
        "runs": results,
        "best_lr": best,
        "lora_long": long_curve,
        "lora_ga_final": target,
        "lora_iterations_to_reach": reached,
        "ratio": None if reached is None else reached / iterations,
    }


def plot(study: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(study), figsize=(5.0 * len(study), 6.4), squeeze=False)
    for col, (task, result) in enumerate(study.items()):
        for method in METHODS:
            run = result["runs"][f"{method} lr={result['best_lr'][method]}"]
            steps = run["steps_per_iteration"]
            label = f"{method} (lr {result['best_lr'][method]:g})"
            axes[0, col].plot([i * steps for i in range(len(run["metric"]))], run["metric"], label=label)
            axes[1, col].plot([(i + 1) * steps for i in range(len(run["loss"]))], run["loss"], label=label)
        long = result["lora_long"]
        axes[0, col].plot(
            [i * long["steps_per_iteration"] for i in range(len(long["metric"]))],
            long["metric"],
            linestyle=":",
            color="gray",
            label=f"lora, {len(long['loss'])} iterations",
        )
        axes[0, col].set(title=f"{task}: {TASKS[task]['metric']}", xlabel="optimizer steps")
        axes[1, col].set(title=f"{task}: training loss", xlabel="optimizer steps")
        for ax in axes[:, col]:
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def table(study: dict, args) -> str:
    lines = []
    for task, result in study.items():
        n = result["iterations"]
        lines += [
            f"**{task}** ({TASKS[task]['metric']}, {n} iterations; rank {args.rank}, all linear layers):",
            "",
            "| method | learning rate | metric at the start | after half | at the end | final loss |",
            "|---|---|---|---|---|---|",
        ]
        for name, run in result["runs"].items():
            m = run["metric"]
            best = result["best_lr"][name.split()[0]] == float(name.split("=")[1])
            lr = name.split("=")[1] + (" (best)" if best else "")
            values = f"{m[0]:.3f} | {m[len(m) // 2]:.3f} | {m[-1]:.3f} | {run['loss'][-1]:.4g}"
            lines.append(f"| {name.split()[0]} | {lr} | {values} |")
        reached = result["lora_iterations_to_reach"]
        long_n = len(result["lora_long"]["loss"])
        verdict = (
            f"LoRA reaches LoRA-GA's final {result['lora_ga_final']:.3f} after {reached} iterations: "
            f"{result['ratio']:.2f}x LoRA-GA's steps."
            if reached is not None
            else f"LoRA does not reach LoRA-GA's final {result['lora_ga_final']:.3f} within {long_n} iterations "
            f"(> {long_n / n:.0f}x LoRA-GA's steps); its best is {max(result['lora_long']['metric']):.3f}."
        )
        lines += ["", verdict, ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--lrs", nargs="+", type=float, default=[3e-3, 1e-2, 3e-2])
    parser.add_argument("--quickstart_iterations", type=int, default=10)
    parser.add_argument("--digit_iterations", type=int, default=10)
    parser.add_argument("--lora_factor", type=int, default=3)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--model", help="A model folder or Hub id instead of the tiny random model.")
    args = parser.parse_args()
    args.iterations = {"quickstart": args.quickstart_iterations, "digit": args.digit_iterations}
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from prefopt.tiny import write_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = args.model or write_tiny_model(tmp / "policy")
        study = {task: run_task(task, model_dir, tmp, args) for task in args.tasks}
    (out / "adapters_study.json").write_text(json.dumps(study, indent=1))
    plot(study, out / "adapters_study.png")
    text = table(study, args)
    (out / "adapters_study_table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
