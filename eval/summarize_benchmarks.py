"""One table of a model's benchmark scores from the result folders eval/benchmarks.sh wrote.

python eval/summarize_benchmarks.py OUT_DIR MODEL_NAME
"""

import json
import sys
from pathlib import Path


def _alpaca(results: dict, model: str) -> tuple[str, str]:
    row = next(r for r in results["leaderboard"] if r["generator"] == model)
    lc = "" if row.get("lc_win_rate") is None else f"LC {100 * row['lc_win_rate']:.1f}, "
    return f"{lc}WR {100 * row['win_rate']:.1f}", f"WR {100 * row['ci_low']:.1f}-{100 * row['ci_high']:.1f}"


def _arena(results: dict, model: str) -> tuple[str, str]:
    row = next(r for r in results["leaderboard"]["models"] if r["model"] == model)
    interval = "-" if row["lower"] is None else f"{row['lower']:.1f}-{row['upper']:.1f}"
    return f"{row['score']:.1f}", interval


def _mt_bench(results: dict, model: str) -> tuple[str, str]:
    s = results["scores"][model]
    interval = "-" if s["ci_low"] is None else f"{s['ci_low']:.2f}-{s['ci_high']:.2f}"
    return f"{s['overall']:.2f} (turn 1 {s['turn_1']:.2f}, turn 2 {s['turn_2']:.2f})", interval


def main(out: str, model: str) -> None:
    print(f"| {model} | score | interval |\n|---|---|---|")
    for folder, name, read in [
        ("alpaca_eval_2", "AlpacaEval 2.0 (%)", _alpaca),
        ("arena_hard_v0.1", "Arena-Hard v0.1 (%)", _arena),
        ("mt_bench", "MT-Bench (1-10)", _mt_bench),
    ]:
        path = Path(out) / folder / "results.json"
        if path.is_file():
            score, interval = read(json.loads(path.read_text()), model)
            print(f"| {name} | {score} | {interval} |")


if __name__ == "__main__":
    main(*sys.argv[1:3])
