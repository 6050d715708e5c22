"""A cyclic ground truth: a pairwise preference model learns it, a Bradley-Terry reward model cannot, and SPPO
against the learned pairwise model improves under the ground truth.

    python scripts/cyclic_judge_demo.py [--out runs/cyclic_demo]     # about 1.5 minutes on 2 CPU cores

The task. Responses are five single-token words, R = (at, to, in, the, all), one per prompt (``response_choices``).
The ground truth is prefopt's synthetic non-transitive judge (``NonTransitiveJudge()``, the quickstart's judge):
P(y ≻ y') = 0.7·σ(10·(q(y) − q(y'))) + 0.3·(½ + ½·A[c(y), c(y')]), with q the vowel share and c the first letter's
class mod 3 (rock-paper-scissors A). "at", "to", "in" have the same q = ½ and the three classes, so among them only
the cycle speaks: to ≻ at ≻ in ≻ to, each with P = 0.65. "the" and "all" (q = ⅓) lose to all three. Each preference
row is labelled with the response the ground truth prefers (P > ½); half of the rows compare two words of the cycle.

Why a Bradley-Terry model is capped. A reward model answers P(y ≻ y') = σ(r(x, y) − r(x, y')), so for a fixed prompt
its preferences follow the order of three numbers r(at), r(to), r(in), and an order agrees with at most 2 of the 3
edges of a cycle (agreeing with all three would need r(to) > r(at) > r(in) > r(to)). Averaged over the cycle's three
pairs its accuracy is at most ⅔, whatever the model; on this data set (half cycle pairs, half pairs an order gets
right) at most 1 − ½·⅓ = ⅚ ≈ 0.833 overall. A pairwise model p(x, y, y') has no such constraint.

Steps: (1) build the data and the tiny models; (2) ``prefopt train-judge`` both kinds on the same rows (the same
held-out split); (3) their held-out accuracies with 95% Wilson intervals, and the accuracy on a probe of every cycle
pair in both orders × 48 unseen prompts; (4) ``prefopt train sppo`` against the learned pairwise model, then the
win rate of the final policy against the initial one under the ground-truth judge on the 48 unseen prompts: exact
expectations over the five actions per prompt, E_{y∼π_T(x), y'∼π_0(x)} P(y ≻ y'), with a 95% bootstrap interval
over prompts (``prefopt.eval.winrate``). Results go to OUT/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
PROMPTS = REPO / "configs/data/quickstart_prompts.jsonl"
ACTIONS = ("at", "to", "in", "the", "all")
CYCLE = ("at", "to", "in")
NUM_EVAL_PROMPTS = 48


def ground_truth():
    from prefopt.judges import NonTransitiveJudge

    return NonTransitiveJudge()


def truth_matrix() -> torch.Tensor:
    """[5, 5] P_gt(ACTIONS[i] ≻ ACTIONS[j]); checks that CYCLE is a cycle."""
    judge = ground_truth()
    a = [x for x in ACTIONS for _ in ACTIONS]
    b = [y for _ in ACTIONS for y in ACTIONS]
    matrix = judge.preference([""] * len(a), a, b).view(len(ACTIONS), len(ACTIONS))
    i = {w: k for k, w in enumerate(ACTIONS)}
    wins = [matrix[i[CYCLE[k]], i[CYCLE[(k + 1) % 3]]] > 0.5 for k in range(3)]
    assert all(wins) or not any(wins), f"{CYCLE} is not a cycle under the ground truth"
    return matrix


def split_prompts() -> tuple[list, list]:
    """(training prompts, the last 48 held out from judge training and SPPO alike)."""
    prompts = [json.loads(line)["prompt"] for line in PROMPTS.read_text().splitlines() if line.strip()]
    return prompts[:-NUM_EVAL_PROMPTS], prompts[-NUM_EVAL_PROMPTS:]


def preference_rows(prompts: list, num_rows: int, seed: int) -> list[dict]:
    """Rows {prompt, chosen, rejected}: half a pair of the cycle, half one of the other 7 pairs, order random, the
    chosen one the response the ground truth prefers."""
    matrix, index = truth_matrix(), {w: k for k, w in enumerate(ACTIONS)}
    cycle_pairs = [(a, b) for k, a in enumerate(CYCLE) for b in CYCLE[k + 1 :]]
    other_pairs = [(a, b) for k, a in enumerate(ACTIONS) for b in ACTIONS[k + 1 :] if (a, b) not in cycle_pairs]
    rng = random.Random(seed)
    rows = []
    for _ in range(num_rows):
        a, b = rng.choice(cycle_pairs if rng.random() < 0.5 else other_pairs)
        a, b = (a, b) if rng.random() < 0.5 else (b, a)
        a_wins = matrix[index[a], index[b]] > 0.5
        rows.append({"prompt": rng.choice(prompts), "chosen": a if a_wins else b, "rejected": b if a_wins else a})
    return rows


def run(command: list[str]) -> float:
    """Run a prefopt command (printed first), stop on failure; return its wall time in seconds."""
    print("$ " + " ".join(command), flush=True)
    start = time.perf_counter()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    python = [sys.executable, "-m", "prefopt.cli"]  # the `prefopt` console script of this interpreter
    result = subprocess.run(python + command[1:], cwd=REPO, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        sys.exit(f"command failed:\n{result.stderr[-3000:]}")
    print("\n".join(line for line in result.stdout.splitlines() if line.startswith("[prefopt]")), flush=True)
    return time.perf_counter() - start


def train_judges(out: Path, data: Path, policy: Path) -> dict:
    """`prefopt train-judge` of both kinds on the same rows and split; their metrics.json and run times."""
    results = {}
    for kind in ("reward_model", "pairwise_model"):
        command = [
            "prefopt", "train-judge", "--judge", kind, "--model_name_or_path", str(policy),
            "--dataset_name", str(data), "--output_dir", str(out / kind), "--overwrite", "--test_size", "0.25",
            "--max_steps", "300", "--per_device_train_batch_size", "32", "--learning_rate", "1e-3",
            "--lr_scheduler_type", "constant", "--save_steps", "300", "--logging_steps", "50",
            "--disable_tqdm", "true", "--torch_num_threads", "2", "--seed", "0",
        ]  # fmt: skip
        seconds = run(command)
        results[kind] = {**json.loads((out / kind / "metrics.json").read_text()), "wall_s": round(seconds, 1)}
    return results


def cycle_probe(out: Path, eval_prompts: list) -> dict:
    """Accuracy of each trained judge on every cycle pair, in both orders, on each unseen prompt (6 × 48 rows):
    a reward model cannot exceed ⅔ here (module docstring)."""
    from prefopt.judge_training.metrics import wilson_interval
    from prefopt.judges import build_judge

    matrix, index = truth_matrix(), {w: k for k, w in enumerate(ACTIONS)}
    rows = [(x, a, b) for x in eval_prompts for a in CYCLE for b in CYCLE if a != b]
    winners = [(a, b) if matrix[index[a], index[b]] > 0.5 else (b, a) for _, a, b in rows]
    probe = {}
    for kind in ("reward_model", "pairwise_model"):
        judge = build_judge(kind, model_name_or_path=str(out / kind))
        probs = judge.preference([x for x, _, _ in rows], [w for w, _ in winners], [lo for _, lo in winners])
        correct = int((probs > 0.5).sum())
        probe[kind] = {"accuracy": correct / len(rows), "ci95": wilson_interval(correct, len(rows)), "n": len(rows)}
    return probe


def train_sppo(out: Path, policy: Path, prompts_file: Path) -> float:
    """`prefopt train sppo` against the learned pairwise model, actions restricted to the five words."""
    command = [
        "prefopt", "train", "sppo", "--model_name_or_path", str(policy), "--dataset_name", str(prompts_file),
        "--output_dir", str(out / "sppo"), "--overwrite", "--judge", "pairwise_model",
        "--judge_model_name_or_path", str(out / "pairwise_model"), "--response_choices", ",".join(ACTIONS),
        "--max_new_tokens", "1", "--num_iterations", "4", "--prompts_per_iteration", "64", "--num_samples", "4",
        "--eta", "10", "--learning_rate", "1e-2", "--lr_scheduler_type", "constant",
        "--per_device_train_batch_size", "32", "--num_train_epochs", "2", "--eval_num_prompts", "0",
        "--disable_tqdm", "true", "--torch_num_threads", "2", "--seed", "0",
    ]  # fmt: skip
    return run(command)


def action_probs(model_dir: Path, prompts: list) -> torch.Tensor:
    """π(a | x) [P, 5] over ACTIONS: the policy's next-token softmax restricted to the action tokens, as the
    rollout engine samples with response_choices at temperature 1."""
    from prefopt.data import encode_prompt
    from prefopt.models import load_causal_lm, load_tokenizer

    tokenizer, model = load_tokenizer(str(model_dir)), load_causal_lm(str(model_dir)).eval()
    ids = [tokenizer(a, add_special_tokens=False)["input_ids"][0] for a in ACTIONS]
    rows = []
    with torch.no_grad():
        for prompt in prompts:
            logits = model(torch.tensor([encode_prompt(tokenizer, prompt)])).logits[0, -1]
            rows.append(torch.softmax(logits[ids].double(), dim=-1))
    return torch.stack(rows)


def ground_truth_win_rates(out: Path, policy: Path, eval_prompts: list) -> dict:
    """Per unseen prompt: E P_gt(y ≻ y') for y ∼ π_T, y' ∼ π_0 (exact over the five actions), and the best
    response's win rate against π_T (½ at the game's equilibrium); aggregated with a bootstrap interval."""
    from prefopt.eval.winrate import win_rate

    matrix = truth_matrix()
    initial, final = action_probs(policy, eval_prompts), action_probs(out / "sppo" / "final", eval_prompts)
    per_prompt = ((final @ matrix) * initial).sum(-1)  # π_T(x)ᵀ P π_0(x)
    result = win_rate(per_prompt.tolist(), n_bootstrap=2000, seed=0)
    return {
        "win_rate_vs_initial": result.win_rate,
        "ci95": [result.ci_low, result.ci_high],
        "n_prompts": result.n,
        "best_response_vs_final": float((matrix @ final.T).max(0).values.mean()),
        "best_response_vs_initial": float((matrix @ initial.T).max(0).values.mean()),
        "initial_action_probs": dict(zip(ACTIONS, initial.mean(0).tolist())),
        "final_action_probs": dict(zip(ACTIONS, final.mean(0).tolist())),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/cyclic_demo", help="Folder for the data, judges and runs.")
    parser.add_argument("--rows", type=int, default=1600, help="Preference rows (a quarter held out).")
    out = (REPO / parser.parse_args().out).resolve()
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    train_prompts, eval_prompts = split_prompts()
    policy = out / "policy"
    run(["prefopt", "tiny-model", str(policy), "--overwrite"])
    data, prompts_file = out / "preferences.jsonl", out / "train_prompts.jsonl"
    rows = preference_rows(train_prompts, parser.parse_args().rows, seed=0)
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    prompts_file.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in train_prompts))
    results = {"judges": train_judges(out, data, policy), "cycle_probe": cycle_probe(out, eval_prompts)}
    results["sppo_wall_s"] = round(train_sppo(out, policy, prompts_file), 1)
    results["sppo_ground_truth"] = ground_truth_win_rates(out, policy, eval_prompts)
    results["total_wall_s"] = round(time.perf_counter() - start, 1)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
