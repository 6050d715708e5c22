"""Evidence for GVM on the CPU digit-sum task: gradient variance at equal budget, and accuracy over updates.

1. Variance. On the initial tiny model and P prompts, the GVM probe (N′ samples per prompt) estimates p̂_i and Ĝ_i
   and allocates the budget N = n·P; uniform allocation gives n to every prompt. For each allocation the script
   draws R independent batches through the rollout engine and forms the rejection-sampling gradient estimator of
   the paper, ĝ = Σ_i k_i/(n_i·p_i) · ∇θ log π(c_i | x_i) (k_i correct answers among n_i draws, c_i the correct
   digit, the full parameter gradient), and reports its measured variance E‖ĝ − E ĝ‖² next to the exact value
   Σ_i ‖∇ log π(c_i|x_i)‖²·(1 − p_i)/(n_i·p_i) (prompts with n_i = 0 leave the estimator).
2. Accuracy. RAFT, GVM-RAFT, GRPO and GVM-GRPO train from the same model with the same number of updates (one
   optimizer step per iteration, so iterations = updates) and the same sample budget per iteration; accuracy is the
   exact expected accuracy mean_i π(c_i | x_i) over all 400 prompts, read from the checkpoints.

    python scripts/outcome_rl.py --out docs          # about 20 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
TASK = REPO / "configs/data/arithmetic.jsonl"
DIGITS = [str(d) for d in range(10)]
METHODS = ["raft", "gvm_raft", "grpo", "gvm_grpo"]


def setup(model_dir: Path, out: Path, num_samples: int, probe: int):
    from prefopt.algorithms.gvm import GVMRAFTParams
    from prefopt.build import build_run
    from prefopt.config import TrainConfig

    cfg = TrainConfig(
        model_name_or_path=str(model_dir),
        dataset_name=str(TASK),
        output_dir=str(out),
        judge="exact_match",
        answer_column="answer",
        response_choices=DIGITS,
        disable_tqdm=True,
        generation_batch_size=1024,
    )
    return build_run("gvm_raft", cfg, GVMRAFTParams(num_samples=num_samples, probe_samples=probe))


def correct_index(prompt) -> int:
    return DIGITS.index(prompt.extra["answer"])


def true_gradients(run, prompts) -> tuple[torch.Tensor, torch.Tensor]:
    """(p_i = π(c_i|x_i) [P], Gram matrix of g_i = ∇θ log π(c_i|x_i) [P, P]) of the current model."""
    model, allowed = run.backend.unwrapped, list(run.ctx.sampling.allowed_token_ids)
    model.eval()
    grads, probs = [], []
    params = [p for p in model.parameters() if p.requires_grad]
    for prompt in prompts:
        logits = model(input_ids=torch.tensor([prompt.prompt_ids], device=run.backend.device)).logits[0, -1]
        logp = torch.log_softmax(logits[allowed].double(), -1)[correct_index(prompt)]
        probs.append(float(logp.detach().exp()))
        grads.append(torch.cat([g.flatten() for g in torch.autograd.grad(logp, params)]).double())
    g = torch.stack(grads)
    return torch.tensor(probs, dtype=torch.float64), g @ g.T


def estimator_variance(run, prompts, counts, p, gram, replicates: int, name: str) -> tuple[float, float]:
    """(measured, exact) variance of ĝ under the allocation ``counts``."""
    n = torch.tensor(counts, dtype=torch.float64)
    coefficients = []
    for r in range(replicates):
        groups = run.ctx.sample(prompts, counts, stream=f"variance/{name}/{r}").groups()
        k = torch.tensor([sum(s.text == pr.extra["answer"] for s in g) for pr, g in zip(prompts, groups)])
        coefficients.append(torch.where(n > 0, k / (n.clamp(min=1) * p), torch.zeros_like(p)))
    c = torch.stack(coefficients)
    centred = c - c.mean(0)
    measured = float(torch.einsum("ri,ij,rj->r", centred, gram, centred).mean() * replicates / (replicates - 1))
    used = n > 0
    exact = float((gram.diagonal()[used] * (1 - p[used]) / (n[used] * p[used])).sum())
    return measured, exact


def variance_study(tmp: Path, model_dir: Path, args) -> dict:
    from prefopt.algorithms.gvm import probe_and_allocate

    run = setup(model_dir, tmp / "variance", args.num_samples, args.probe)
    prompts = run.train_prompts[: args.variance_prompts]
    run.ctx.start_iteration(0, prompts)
    gvm_counts, metrics = probe_and_allocate(run.ctx, prompts)
    p, gram = true_gradients(run, prompts)
    uniform = [args.num_samples] * len(prompts)
    result = {"prompts": len(prompts), "budget": sum(uniform), "probe_samples": args.probe, "gvm_metrics": metrics}
    for name, counts in (("uniform", uniform), ("gvm", gvm_counts)):
        measured, exact = estimator_variance(run, prompts, counts, p, gram, args.replicates, name)
        result[name] = {"measured": measured, "exact": exact, "prompts_sampled": sum(c > 0 for c in counts)}
        print(f"variance {name}: measured {measured:.4g}, exact {exact:.4g}", flush=True)
    result["ratio_measured"] = result["gvm"]["measured"] / result["uniform"]["measured"]
    result["ratio_exact"] = result["gvm"]["exact"] / result["uniform"]["exact"]
    return result


def train(method: str, model_dir: Path, out: Path, args) -> None:
    cmd = [sys.executable, "-m", "prefopt.cli", "train", method, "--config", f"configs/tiny/{method}.yaml"]
    cmd += ["--model_name_or_path", model_dir, "--output_dir", out, "--num_iterations", args.iterations]
    cmd += ["--prompts_per_iteration", args.prompts, "--num_samples", args.num_samples, "--eval_num_prompts", "0"]
    cmd += ["--per_device_train_batch_size", 8192, "--learning_rate", args.lr, "--save_every", 1]
    cmd += ["--save_total_limit", args.iterations + 1]
    if method.startswith("gvm"):
        cmd += ["--probe_samples", args.probe]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=REPO, env=env)
    if result.returncode:
        raise SystemExit(f"{method} failed: {result.stderr[-2000:]}")


def accuracy_curve(run, out: Path, iterations: int) -> list[float]:
    """Exact expected accuracy over every prompt of the task, at the start and after each iteration."""
    from safetensors.torch import load_file

    from prefopt.game_metrics import action_probs

    model, allowed = run.backend.unwrapped, run.ctx.sampling.allowed_token_ids
    prompts = run.train_prompts + run.eval_prompts
    targets = torch.tensor([correct_index(p) for p in prompts])
    initial = {k: v.clone() for k, v in model.state_dict().items()}

    def accuracy() -> float:
        with torch.no_grad():
            probs = action_probs(model, [p.prompt_ids for p in prompts], allowed, run.tokenizer.pad_token_id, "cpu")
        return float(probs[torch.arange(len(prompts)), targets].mean())

    curve = [accuracy()]
    for it in range(iterations):
        model.load_state_dict(load_file(str(out / "checkpoints" / f"iter_{it:03d}" / "model.safetensors")))
        curve.append(accuracy())
    model.load_state_dict(initial)
    return curve


def plot(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for method, curve in curves.items():
        ax.plot(range(len(curve)), curve, label=method, linestyle="--" if not method.startswith("gvm") else "-")
    ax.set(title="digit-sum task: accuracy against updates", xlabel="optimizer updates", ylabel="expected accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def table(variance: dict, curves: dict) -> str:
    lines = [
        f"Gradient variance at equal budget ({variance['budget']} samples over {variance['prompts']} prompts, "
        f"GVM probe {variance['probe_samples']} per prompt):",
        "",
        "| allocation | prompts sampled | measured variance | exact variance |",
        "|---|---|---|---|",
    ]
    for name in ("uniform", "gvm"):
        v = variance[name]
        lines.append(f"| {name} | {v['prompts_sampled']} | {v['measured']:.4g} | {v['exact']:.4g} |")
    lines += [
        "",
        f"GVM / uniform: {variance['ratio_measured']:.3f} measured, {variance['ratio_exact']:.3f} exact.",
        "",
        "| method | accuracy at start | after half the updates | at the end |",
        "|---|---|---|---|",
    ]
    for method, curve in curves.items():
        lines.append(f"| {method} | {curve[0]:.3f} | {curve[len(curve) // 2]:.3f} | {curve[-1]:.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs")
    parser.add_argument("--iterations", type=int, default=150)
    parser.add_argument("--prompts", type=int, default=128)
    parser.add_argument("--num_samples", type=int, default=8)
    parser.add_argument("--probe", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--variance_prompts", type=int, default=64)
    parser.add_argument("--replicates", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from prefopt.tiny import write_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = write_tiny_model(tmp / "model")
        variance = variance_study(tmp, model_dir, args)
        run = setup(model_dir, tmp / "accuracy", args.num_samples, args.probe)
        curves = {}
        for method in METHODS:
            train(method, model_dir, tmp / method, args)
            curves[method] = accuracy_curve(run, tmp / method, args.iterations)
            print(method, " ".join(f"{a:.3f}" for a in curves[method][:: max(args.iterations // 8, 1)]), flush=True)
    results = {"settings": vars(args), "variance": variance, "accuracy": curves}
    (out / "outcome_rl.json").write_text(json.dumps(results, indent=1) + "\n")
    plot(curves, out / "outcome_rl.png")
    (out / "outcome_rl_table.md").write_text(table(variance, curves) + "\n")
    print(table(variance, curves))


if __name__ == "__main__":
    main()
