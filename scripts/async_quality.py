"""Does training on stale samples learn as well? Synchronous and asynchronous runs of a tiny config, over seeds.

    python scripts/async_quality.py                           # GRPO and SPPO tiny configs, seeds 0 1 2
    python scripts/async_quality.py --configs configs/tiny/grpo.yaml --seeds 0 1 2 3 4 --out async_quality.json

Each config trains per seed with in-process rollouts and with ``--rollout_workers 1 --async_rollouts true
--max_staleness 1`` (with ``--anchor_logps recompute`` where the algorithm regresses onto π_t; a reward method also
with the importance-sampling correction, ``token_truncate``), through ``prefopt train`` in a subprocess, with the
same data, seeds and number of iterations: the same samples per iteration, so a curve's x axis is the samples drawn.
It reports, per setting, the final held-out score (``eval/reward``, the accuracy against the reference answers,
where the judge gives rewards; else ``eval/win_rate`` against the initial policy) averaged over seeds with a 95%
interval over seeds, and the per-iteration training reward (``reward/mean``) where there is one. See
docs/benchmark.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from prefopt.algorithms import get_algorithm, stale_samples

REPO = Path(__file__).resolve().parents[1]
ASYNC = ["--rollout_workers", "1", "--async_rollouts", "true", "--max_staleness", "1"]
IS_CORRECTION = ["--vllm_importance_sampling_correction", "true", "--vllm_importance_sampling_mode", "token_truncate"]


def run(algorithm: str, config: str, seed: int, extra: list[str], out: Path, model: str) -> list[dict]:
    cmd = [sys.executable, "-m", "prefopt.cli", "train", algorithm, "--config", config, "--seed", str(seed),
           "--output_dir", str(out), "--model_name_or_path", model, *extra]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def interval(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of a normal 95% interval over seeds."""
    mean = statistics.fmean(values)
    return mean, 1.96 * statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0.0


def study(config: str, seeds: list[int], model: str) -> dict:
    values = yaml.safe_load(Path(REPO, config).read_text())
    algorithm = values["algorithm"]
    spec = get_algorithm(algorithm)
    params = spec.config_class(**{k: v for k, v in values.items() if k in spec.config_class.__dataclass_fields__})
    mode = stale_samples(spec, params)
    settings = {
        "in-process": [],
        "async k=1": ASYNC + (["--anchor_logps", "recompute"] if mode == "current_anchor" else []),
    }
    if mode == "behaviour_ratio":  # also the decoupled objective: clip around the current policy, IS-weight the rest
        settings["async k=1, IS-corrected"] = ASYNC + IS_CORRECTION
    result = {"config": config, "algorithm": algorithm, "settings": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in settings.items():
            runs = [run(algorithm, config, s, extra, Path(tmp, f"{name}-{s}".replace(" ", "_")), model) for s in seeds]
            key = "eval/reward" if "eval/reward" in runs[0][-1] else "eval/win_rate"
            curves = [[m.get("reward/mean") for m in r] for r in runs]
            result["settings"][name] = {
                "extra": extra,
                "score_key": key,
                "final": interval([r[-1][key] for r in runs]),
                "per_seed": [r[-1][key] for r in runs],
                "reward_curve": [statistics.fmean(c) for c in zip(*curves)] if curves[0][0] is not None else None,
                "staleness": statistics.fmean(m.get("rollout/staleness_mean", 0) for r in runs for m in r),
            }
    return result


def markdown(results: list[dict], seeds: list[int]) -> str:
    rows = ["| config | rollouts | final score (mean ± 95% CI over seeds) | mean staleness |", "|---|---|---|---|"]
    for r in results:
        for name, s in r["settings"].items():
            mean, half = s["final"]
            rows.append(
                f"| {r['config']} | {name} | {s['score_key']} {mean:.3f} ± {half:.3f} | {s['staleness']:.2f} |"
            )
    rows.append(f"\nseeds: {' '.join(map(str, seeds))}")
    for r in results:
        for name, s in r["settings"].items():
            if s["reward_curve"]:
                curve = " ".join(f"{v:.3f}" for v in s["reward_curve"])
                rows.append(f"\n{r['config']} {name}: reward/mean per iteration: {curve}")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=["configs/tiny/grpo.yaml", "configs/tiny/sppo.yaml"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--model", default="runs/tiny-model", help="Policy folder (prefopt tiny-model makes one).")
    parser.add_argument("--out", help="Also write the results to this JSON file.")
    args = parser.parse_args()
    results = [study(c, args.seeds, args.model) for c in args.configs]
    print(markdown(results, args.seeds))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
