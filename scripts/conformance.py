"""Matrix-game conformance through the real trainers (docs/conformance.md).

A single-token bandit: one prompt (repeated, so that each iteration draws many samples), N allowed action tokens,
a matrix-game judge, and a tiny model whose initial action distribution π_ref is made non-uniform (the action
tokens' output rows are shifted along the prompt's final hidden state so their logits become c ~ N(0, 1)). Each
algorithm runs through the CLI (rollout engine, judge, loss, optimizer, loop) and logs game/duality_gap and
game/kl_to_ne every iteration; the preference queries are counted from the saved judge outputs.

    python scripts/conformance.py --out docs            # writes the table, the plot and the runs' histories
    python scripts/conformance.py --algorithms nash_md  # reruns one algorithm; the others' saved runs are kept
    python scripts/conformance.py --sppo_cycling        # SPPO at β = 0: last vs average iterate (2 minutes)
    python scripts/conformance.py --floor               # the gap's floor against samples per iteration
    python scripts/conformance.py --exact --iterations 100   # variance-free runs: each method's own rate

Needs matplotlib (`pip install -e ".[scripts]"`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from prefopt.tiny import BANDIT_PROMPT as PROMPT
from prefopt.tiny import write_bandit_model

REPO = Path(__file__).resolve().parents[1]
ALGORITHMS = {
    "egpo": [
        "--beta",
        "0.1",
        "--normalize_logprobs",
        "false",
        "--pair_temperature",
        "1",
        "--pair_top_k",
        "0",
        "--full_step_prompts",
        "reuse",
    ],  # every step sees all the iteration's pairs, as Nash-MP's
    "nash_mp": [  # η = 0.5, the paper's (the step η/β = 5 of the linearised methods' table)
        "--beta",
        "0.1",
        "--eta",
        "0.5",
        "--num_train_epochs",
        "4",
        *"--pair_temperature 1 --pair_top_k 0".split(),
    ],
    "online_ipo": ["--beta", "0.1", "--normalize_logprobs", "false", "--pair_temperature", "1", "--pair_top_k", "0"],
    "nash_md": [*"--beta 0.1 --mixture 0.125 --normalize_logprobs false --pair_temperature 1 --pair_top_k 0".split()],
    # τ = β = 0.1, OMD step τ/η = 0.1; one i.i.d. pair per prompt with a Bernoulli label (the default), and the
    # paper's LLM recipe: one pair of K = 4 by knock-out tournament.
    "inpo": ["--eta", "1.0", "--tau", "0.1", "--num_samples", "2"],
    "inpo_tournament": ["--eta", "1.0", "--tau", "0.1", "--num_samples", "4", "--pairs", "tournament"],
    "sppo": ["--eta", "1.0", "--num_samples", "4", "--train_on", "all"],  # β = 0: the unregularised game
}


# Runs of one trainer under another name (its settings above differ).
TRAINER = {"inpo_tournament": "inpo"}
# Learning-rate multipliers: INPO's regression gradient is (2/η)(τ·Δlog-ratio − (P − ½)) where online IPO's is
# (2/β)(β·Δlog-ratio − (P − P′)), so at η = 1, β = 0.1 the same step takes 10 times the learning rate.
LR_SCALE = {"inpo": 10, "inpo_tournament": 10}


def bandit_model(out: Path, game: str, seed: int) -> int:
    """The tiny bandit model for this game (π_ref non-uniform, seeded); returns the number of actions."""
    n = 3 if game == "rps" else 5
    write_bandit_model(out, n, seed, PROMPT)
    return n


def game_setup(tmp: Path, game: str) -> tuple[Path, list]:
    """The bandit model of ``game`` ("rps" or "random:SEED") written under ``tmp``, and the CLI flags of its judge."""
    kind, _, seed = game.partition(":")
    model = tmp / f"model-{kind}{seed}"
    n = bandit_model(model, kind, int(seed or 1))
    return model, ["--game", kind] + (["--game_size", n, "--game_seed", seed] if kind == "random" else [])


def train(algorithm, model, data, out, game_args, iterations, prompts, *extra) -> list[dict]:
    """One CLI run on the bandit (SGD, no clipping, one minibatch per epoch); its metrics rows with the cumulative
    number of preference queries (counted from the saved judge outputs)."""
    args = [
        "train",
        algorithm,
        "--model_name_or_path",
        model,
        "--dataset_name",
        data,
        "--output_dir",
        out,
        "--overwrite",
        "--judge",
        "matrix_game",
        *game_args,
        "--num_iterations",
        iterations,
        "--prompts_per_iteration",
        prompts,
        "--per_device_train_batch_size",
        prompts,
        "--optim",
        "sgd",
        "--max_grad_norm",
        "0",
        "--disable_tqdm",
        "--torch_num_threads",
        "1",
        "--logprob_batch_size",
        "256",
        "--generation_batch_size",
        "512",
        *extra,
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "prefopt.cli", *map(str, args)], capture_output=True, text=True, env=env, cwd=REPO
    )
    if result.returncode:
        raise SystemExit(f"{algorithm} failed: {result.stderr[-2000:]}")
    rows = [json.loads(x) for x in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    queries, kept = 0, []
    for it, row in enumerate(rows):
        judge = Path(out) / "iterations" / f"iter_{it:03d}" / "judge.jsonl"
        queries += sum(1 for line in judge.read_text().splitlines() if '"kind": "preference"' in line)
        kept.append({"iteration": it, "queries": queries, **{k: row[k] for k in GAME_KEYS}})
    return kept


def run(name, model, data, out, game_args, lr, iterations, prompts) -> list[dict]:
    """A conformance run: the settings ALGORITHMS[name], learning rate ``lr`` decaying linearly."""
    schedule = ["--learning_rate", lr, "--lr_scheduler_type", "linear"]
    trainer = TRAINER.get(name, name)
    return train(trainer, model, data, out, game_args, iterations, prompts, *schedule, *ALGORITHMS[name])


def sppo_cycling(tmp: Path, out: Path) -> None:
    """SPPO at β = 0 on rock-paper-scissors, 80 iterations of Hedge steps (η = 0.5, the regression solved with 8 SGD
    epochs): the last iterate's gap against the average iterate's, plotted to sppo_cycling.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model, data = tmp / "model-sppo", tmp / "sppo.jsonl"
    bandit_model(model, "rps", 1)
    data.write_text("".join(json.dumps({"prompt": PROMPT}) + "\n" for _ in range(128)))
    extra = "--learning_rate 0.02 --lr_scheduler_type constant --num_train_epochs 8 --eta 0.5 --num_samples 4"
    rows = train("sppo", model, data, tmp / "sppo", ["--game", "rps"], 80, 128, *extra.split(), "--train_on", "all")
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.semilogy([r["game/duality_gap"] for r in rows], label="last iterate")
    ax.semilogy([r["game/avg_duality_gap"] for r in rows], label="average iterate")
    ax.set(title="SPPO, β = 0, rock-paper-scissors", xlabel="iteration", ylabel="duality gap")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "sppo_cycling.png", dpi=110)
    last = [r["game/duality_gap"] for r in rows]
    print(f"sppo last iterate: min over iterations 40-79 {min(last[40:]):.3f}, final {last[-1]:.3f}")
    print(f"sppo average iterate: final {rows[-1]['game/avg_duality_gap']:.3f}")


def noise_floor(tmp: Path, out: Path, games: list[str], sizes: list[int], lr: str, iterations: int) -> None:
    """The gap each method settles at against the samples per iteration, at a constant learning rate (the step does
    not decay, so what remains is the sampling noise and the step's own bias): floor = the mean last-iterate gap of
    the final five iterations. Writes conformance_floor.md and conformance_floor.png (one panel per game)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ("online_ipo", "egpo", "nash_mp")
    lines = ["| game | samples per iteration | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    fig, axes = plt.subplots(1, len(games), figsize=(4.6 * len(games), 3.4), squeeze=False)
    for ax, game in zip(axes[0], games):
        model, game_args = game_setup(tmp, game)
        floors: dict[str, list[float]] = {}
        for name in names:
            for size in sizes:
                data = tmp / f"floor-{size}.jsonl"
                data.write_text("".join(json.dumps({"prompt": PROMPT}) + "\n" for _ in range(size)))
                schedule = ["--learning_rate", lr, "--lr_scheduler_type", "constant"]
                rows = train(name, model, data, tmp / f"floor-{name}-{size}", game_args, iterations, size, *schedule,
                             *ALGORITHMS[name])  # fmt: skip
                floors.setdefault(name, []).append(sum(r["game/duality_gap"] for r in rows[-5:]) / 5)
                print(game, name, size, f"{floors[name][-1]:.2e}", flush=True)
            ax.loglog(sizes, floors[name], marker="o", label=name)
        for i, size in enumerate(sizes):
            lines.append(f"| {game} | {size} | " + " | ".join(f"{floors[name][i]:.1e}" for name in names) + " |")
        ax.set(title=f"{game}, constant lr {lr}", xlabel="samples per iteration", ylabel="gap (mean of last 5)")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "conformance_floor.png", dpi=110)
    (out / "conformance_floor.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


EXACT = ("online_ipo", "egpo", "nash_mp", "inpo", "nash_md")  # the trainers game_exact supports
EXACT_MARKS = (10, 25, 50, 100)


def exact_rates(tmp: Path, out: Path, games: list[str], lr: float, iterations: int) -> None:
    """The variance-free runs (``--game_exact``): one prompt whose rows are every pair of actions weighted by its
    probability, one full-batch SGD step per epoch at a constant learning rate, so each iteration is the expected
    update and the gap follows the method's own rate. Writes conformance_exact.md (the gap at a few iterations and
    the per-iteration contraction) and conformance_exact.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = tmp / "one.jsonl"
    data.write_text(json.dumps({"prompt": PROMPT}) + "\n")
    marks = [m for m in EXACT_MARKS if m <= iterations]
    lines = ["| game | algorithm | lr | " + " | ".join(f"gap at {m}" for m in marks) + " | rate per iteration |"]
    lines.append("|---|---|---|" + "---|" * (len(marks) + 1))
    fig, axes = plt.subplots(1, len(games), figsize=(4.6 * len(games), 3.4), squeeze=False)
    for ax, game in zip(axes[0], games):
        model, game_args = game_setup(tmp, game)
        for name in EXACT:
            step = f"{lr * LR_SCALE.get(name, 1):g}"
            flags = ["--learning_rate", step, "--lr_scheduler_type", "constant", "--game_exact", "true",
                     "--per_device_train_batch_size", "64"]  # fmt: skip
            rows = train(name, model, data, tmp / f"exact-{name}", game_args, iterations, 1, *flags, *ALGORITHMS[name])
            gaps = [r["game/duality_gap"] for r in rows]
            ax.semilogy(range(1, len(gaps) + 1), [max(g, 1e-16) for g in gaps], label=name)
            shown = " | ".join(f"{gaps[m - 1]:.1e}" for m in marks)
            lines.append(f"| {game} | {name} | {step} | {shown} | {contraction(gaps)} |")
            print(lines[-1], flush=True)
        ax.set(title=f"{game}, exact expectations, lr {lr:g}", xlabel="iteration", ylabel="duality gap")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "conformance_exact.png", dpi=110)
    (out / "conformance_exact.md").write_text("\n".join(lines) + "\n")


def contraction(gaps: list[float], start: int = 10) -> str:
    """The gap's contraction per iteration: exp of the least-squares slope of log gap from iteration ``start`` to the
    last one above the float64 floor (1e-13); "no" where the gap does not trend down over that window (the largest
    gap of its last quarter is not below the smallest of its first: a cycle)."""
    window = [g for g in gaps[start - 1 :] if g > 1e-13]
    quarter = max(len(window) // 4, 1)
    if len(window) < 4 or max(window[-quarter:]) >= min(window[:quarter]):
        return "no"
    xs, ys = range(len(window)), [math.log(g) for g in window]
    mx, my = (len(window) - 1) / 2, sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return f"{math.exp(slope):.3f}"


GAME_KEYS = ("game/duality_gap", "game/kl_to_ne", "game/avg_duality_gap")


def load_saved(path: Path) -> dict:
    """Earlier runs' histories, keyed (game, algorithm, lr), from conformance_runs.json."""
    if not path.exists():
        return {}
    return {tuple(r["key"]): r["rows"] for r in json.loads(path.read_text())}


def save(results: dict, path: Path) -> None:
    records = [{"key": list(key), "rows": rows} for key, rows in sorted(results.items())]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(records, indent=0) + "\n")
    tmp.replace(path)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    games = sorted({g for g, _, _ in results})
    fig, axes = plt.subplots(1, len(games), figsize=(4.2 * len(games), 3.6), squeeze=False)
    for ax, game in zip(axes[0], games):
        for (g, algorithm, lr), rows in sorted(results.items()):
            if g == game:
                ax.semilogy(
                    [r["queries"] for r in rows],
                    [max(r["game/duality_gap"], 1e-8) for r in rows],
                    label=f"{algorithm} (lr {lr})",
                )
        ax.set(title=game, xlabel="preference queries", ylabel="duality gap (last iterate)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def table(results: dict) -> str:
    lines = [
        "| game | algorithm | lr | queries | final gap | min gap | final KL(π*‖π) | avg-iterate gap |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (game, algorithm, lr), rows in sorted(results.items()):
        last = rows[-1]
        lines.append(
            f"| {game} | {algorithm} | {lr} | {last['queries']} | {last['game/duality_gap']:.1e} | "
            f"{min(r['game/duality_gap'] for r in rows):.1e} | {last['game/kl_to_ne']:.1e} | "
            f"{last['game/avg_duality_gap']:.1e} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs")
    parser.add_argument("--games", default="rps,random:1,random:2,random:3")
    parser.add_argument("--algorithms", default=",".join(ALGORITHMS))
    parser.add_argument("--lrs", default="0.003")
    parser.add_argument("--iterations", type=int, default=25)
    parser.add_argument("--prompts", type=int, default=512)
    parser.add_argument("--fresh", action="store_true", help="drop the saved runs of algorithms not rerun")
    parser.add_argument("--sppo_cycling", action="store_true", help="only the SPPO β = 0 cycling demonstration")
    parser.add_argument("--floor", action="store_true", help="only the gap floor against samples per iteration")
    parser.add_argument("--floor_sizes", default="256,512,1024,2048")
    parser.add_argument("--floor_lr", default="0.006")
    parser.add_argument("--floor_games", default="random:1,rps", help="games of the --floor measurement")
    parser.add_argument("--exact", action="store_true", help="only the variance-free runs (game_exact)")
    parser.add_argument("--exact_lr", type=float, default=0.003)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.floor:
        with tempfile.TemporaryDirectory() as tmp:
            sizes = [int(x) for x in args.floor_sizes.split(",")]
            noise_floor(Path(tmp), out, args.floor_games.split(","), sizes, args.floor_lr, args.iterations)
        return
    if args.exact:
        with tempfile.TemporaryDirectory() as tmp:
            exact_rates(Path(tmp), out, args.games.split(","), args.exact_lr, args.iterations)
        return
    if args.sppo_cycling:
        with tempfile.TemporaryDirectory() as tmp:
            sppo_cycling(Path(tmp), out)
        return
    saved_path = out / "conformance_runs.json"
    results = {} if args.fresh else load_saved(saved_path)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "bandit.jsonl"
        data.write_text("".join(json.dumps({"prompt": PROMPT}) + "\n" for _ in range(args.prompts)))
        for game in args.games.split(","):
            model, game_args = game_setup(Path(tmp), game)
            for algorithm in args.algorithms.split(","):
                for base_lr in args.lrs.split(","):
                    lr = f"{float(base_lr) * LR_SCALE.get(algorithm, 1):g}"
                    run_dir = Path(tmp) / f"{game}-{algorithm}-{lr}"
                    results[(game, algorithm, lr)] = run(
                        algorithm, model, data, run_dir, game_args, lr, args.iterations, args.prompts
                    )
                    save(results, saved_path)
                    print(
                        game,
                        algorithm,
                        lr,
                        f"{results[(game, algorithm, lr)][-1]['game/duality_gap']:.2e}",
                        flush=True,
                    )
    plot(results, out / "conformance.png")
    (out / "conformance_table.md").write_text(table(results) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
