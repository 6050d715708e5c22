"""Time full online iterations (rollout, judge, anchors, optimisation) and report throughput and peak memory.

    python scripts/benchmark.py                                        # quickstart config, tiny model, 1 thread
    python scripts/benchmark.py --hidden_size 256 --num_layers 4 --max_new_tokens 32
    python scripts/benchmark.py --deepspeed configs/deepspeed/zero2.json --out zero2.json
    python scripts/benchmark.py --learning_rate 1e-3                   # any other --key value goes to the config
    python scripts/benchmark.py --workload varlen --repeats 3          # optimise only: padded vs packed
    python scripts/benchmark.py --workload large_vocab                 # optimise only: a 151,936-token head
    python scripts/benchmark.py --config configs/tiny/grpo.yaml --algorithm grpo \
        --rollout_workers 1 --async_rollouts true --repeats 3            # Ray workers, async, against the default

Training runs in-process through the public API (``build_configs`` + ``train``), into a temporary run directory,
and the per-iteration ``time/*_s`` numbers are read back from its metrics.jsonl, so the benchmark measures what
``prefopt train`` does, not a copy of it. The first ``--warmup`` iterations are left out of the averages: they pay
for one-off costs (lazy imports, allocator growth). Setup (model load, DeepSpeed's op build on its first use) and
the per-iteration checkpoint writes fall outside ``time/iteration_s``; they show as ``outside_iterations_s``.
With ``--workload`` the benchmark times the optimiser alone on a synthetic batch instead, each variant of the
scorer in its own subprocess (scripts/workloads.py). With ``--rollout_workers N`` (and ``--async_rollouts true``)
it runs that setting and the default in-process rollouts side by side, alternating for ``--repeats`` rounds, and
compares the loop's throughput: prompts per second of wall time between the ends of the measured iterations (an
iteration's commit and checkpoint included, which ``time/iteration_s`` leaves out). See docs/benchmark.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from prefopt.algorithms import get_algorithm
from prefopt.config import build_configs, parse_cli_overrides, read_yaml
from prefopt.errors import ConfigError, PrefoptError
from prefopt.tiny import write_tiny_model
from prefopt.trainers import trainer_class

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workloads import WORKLOADS, side_by_side  # noqa: E402
from workloads import markdown as workload_markdown  # noqa: E402

PHASES = ("rollout", "judge", "anchor", "collect", "optimise", "iteration")
# Keys of the rollout workers' setting: the side-by-side baseline drops them.
WORKER_KEYS = ("rollout_workers", "async_rollouts", "max_staleness", "anchor_logps", "rollout_worker_threads")
# Benchmark flags that are also config keys: passed on only when given, so the YAML stays the default.
CONFIG_FLAGS = ("prompts_per_iteration", "max_new_tokens", "num_samples", "deepspeed")


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/quickstart.yaml", help="Training YAML (its keys are defaults).")
    parser.add_argument("--algorithm", default="sppo")
    parser.add_argument("--model", help="Policy folder or Hub id; default: a tiny random Llama in a temp dir.")
    parser.add_argument("--hidden_size", type=int, default=64, help="Tiny model width (ignored with --model).")
    parser.add_argument("--num_layers", type=int, default=2, help="Tiny model depth (ignored with --model).")
    parser.add_argument("--iterations", type=int, default=4, help="Measured iterations.")
    parser.add_argument("--warmup", type=int, default=1, help="Iterations run first and left out of the averages.")
    parser.add_argument("--prompts_per_iteration", type=int)
    parser.add_argument("--max_new_tokens", type=int)
    parser.add_argument("--num_samples", type=int)
    parser.add_argument("--torch_num_threads", type=int, default=1, help="1 is fastest for tiny models on CPU.")
    parser.add_argument("--deepspeed", help="DeepSpeed JSON config, e.g. configs/deepspeed/zero2.json.")
    parser.add_argument("--out", help="Also write the results to this JSON file.")
    parser.add_argument("--workload", choices=sorted(WORKLOADS), help="Optimise-only workload (scripts/workloads.py).")
    parser.add_argument("--repeats", type=int, default=3, help="With --workload: alternating rounds per variant.")
    args, rest = parser.parse_known_args(argv)
    if args.iterations < 1 or args.warmup < 0 or args.repeats < 1:
        parser.error("--iterations and --repeats must be >= 1 and --warmup >= 0")
    overrides = parse_cli_overrides(rest)
    overrides.update({k: getattr(args, k) for k in CONFIG_FLAGS if getattr(args, k) is not None})
    return args, overrides


def make_configs(args: argparse.Namespace, overrides: dict, model: str, run_dir: str):
    """(TrainConfig, algorithm config) of the run; raises ConfigError on a bad key before anything is built."""
    algorithm = get_algorithm(args.algorithm)
    forced = {
        "model_name_or_path": model,
        "output_dir": run_dir,
        "overwrite": True,
        "eval_num_prompts": 0,
        "disable_tqdm": True,
        "num_iterations": args.warmup + args.iterations,
        "torch_num_threads": args.torch_num_threads,
    }
    train_cfg, algo_cfg = build_configs(
        algorithm.config_class, read_yaml(args.config), {**overrides, **forced}, args.config
    )
    if train_cfg.prompts_per_iteration is None:  # prompts/s needs a fixed number of prompts per iteration
        raise ConfigError("the config has no prompts_per_iteration; pass --prompts_per_iteration N")
    return train_cfg, algo_cfg


class IterationEnds:
    """A callback: the perf_counter time at the end of each iteration (its commit and checkpoint done)."""

    def __init__(self):
        self.ends: list[float] = []

    def on_iteration_end(self, args, state, control, **kwargs):
        self.ends.append(time.perf_counter())


def run_training(algorithm: str, train_cfg, algo_cfg) -> tuple[list[dict], float, list[float]]:
    """Train in-process; return the run's metrics lines, the wall time of the whole run (setup included) and each
    iteration's end time."""
    cls = trainer_class(algorithm)
    clock = IterationEnds()
    start = time.perf_counter()
    trainer = cls(args=cls.config_class.from_parts(train_cfg, algo_cfg), callbacks=[clock])
    trainer.train()
    wall_s = time.perf_counter() - start
    close = getattr(trainer._run.ctx.rollout, "close", None)
    if close is not None:  # the rollout workers of this run
        close()
    lines = Path(train_cfg.output_dir, "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()], wall_s, clock.ends


def parameter_count(model: str) -> int:
    # Built on the meta device: counts parameters without allocating them or touching the peak RSS.
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        return sum(p.numel() for p in AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model)).parameters())


def per_iteration_rates(m: dict, prompts: int, epochs: int) -> dict[str, float]:
    """Derived throughputs of one iteration's metrics line (rows count once per epoch in the optimiser)."""
    tokens = m.get("rollout/samples", 0) * m.get("rollout/mean_length", 0.0)
    return {
        "prompts/s": prompts / m["time/iteration_s"],
        "samples/s": m.get("rollout/samples", 0) / m["time/iteration_s"],
        "generated tokens/s": tokens / m["time/rollout_s"] if m.get("time/rollout_s") else 0.0,
        "optimiser rows/s": m["rows"] * epochs / m["time/optimise_s"],
    }


def mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def summarise(measured: list[dict], train_cfg) -> dict:
    phases = {f"time/{p}_s": mean_std([m[f"time/{p}_s"] for m in measured]) for p in PHASES}
    rates = [per_iteration_rates(m, train_cfg.prompts_per_iteration, train_cfg.num_train_epochs) for m in measured]
    sizes = {k: mean_std([m.get(k, 0) for m in measured]) for k in ("rows", "rollout/samples", "rollout/mean_length")}
    return {"phases": phases, "sizes": sizes, "rates": {k: mean_std([r[k] for r in rates]) for k in rates[0]}}


def memory_and_machine() -> dict:
    # The load average shows whether other processes shared the CPUs during the run (timings are then noisy).
    # ru_maxrss is KiB on Linux (bytes on macOS); CUDA peak is reported whenever a GPU was used, never assumed absent.
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_mib = rss_kib / (1024 * 1024) if sys.platform == "darwin" else rss_kib / 1024
    cuda = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    return {
        "peak_rss_mib": rss_mib,
        "peak_cuda_allocated_mib": cuda,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_avg_1m": os.getloadavg()[0],
        "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def markdown(result: dict) -> str:
    rows = [f"| {k} | {v['mean']:.3f} ± {v['std']:.3f} |" for k, v in result["phases"].items()]
    rows += [f"| {k} | {v['mean']:.1f} ± {v['std']:.1f} |" for s in ("sizes", "rates") for k, v in result[s].items()]
    info = {k: v for k, v in result.items() if k not in ("phases", "sizes", "rates", "iterations", "overrides")}
    rows += [f"| {k} | {v:.1f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in info.items()]
    return "\n".join(["| metric | per measured iteration (mean ± std) / value |", "|---|---|", *rows])


def benchmark(args: argparse.Namespace, overrides: dict) -> dict:
    """One benchmark run: build the model, train, and gather timings, rates, memory and machine facts."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory(prefix="prefopt-bench-") as tmp:
        model = args.model or str(Path(tmp, "model"))
        train_cfg, algo_cfg = make_configs(args, overrides, model, str(Path(tmp, "run")))
        if not args.model:
            write_tiny_model(model, hidden_size=args.hidden_size, num_layers=args.num_layers)
        params = parameter_count(model)  # before training: a ZeRO-3 run leaves transformers in its sharded mode
        lines, wall_s, ends = run_training(args.algorithm, train_cfg, algo_cfg)
    measured = lines[args.warmup :]
    first = ends[args.warmup - 1] if args.warmup else None
    loop_s = ends[-1] - first if first is not None else None
    return {
        "loop_s": loop_s,
        "loop_prompts_per_s": len(measured) * train_cfg.prompts_per_iteration / loop_s if loop_s else None,
        **summarise(measured, train_cfg),
        "parameters": params,
        "measured_iterations": len(measured),
        "warmup_iterations": args.warmup,
        "prompts_per_iteration": train_cfg.prompts_per_iteration,
        "run_wall_s": wall_s,
        "outside_iterations_s": wall_s - sum(m["time/iteration_s"] for m in lines),
        **memory_and_machine(),
        "overrides": overrides,
        "iterations": lines,
    }


def against_in_process(args: argparse.Namespace, overrides: dict) -> dict:
    """The rollout-worker setting in ``overrides`` and the default (in-process, synchronous) side by side, in
    alternating order for ``args.repeats`` rounds: each one's loop throughput and the training reward per iteration
    (``reward/mean``, the mean reward of the samples each iteration trained on) where the judge gives one."""
    settings = {"in-process": {k: v for k, v in overrides.items() if k not in WORKER_KEYS}, "workers": overrides}
    runs: dict[str, list[dict]] = {name: [] for name in settings}
    for r in range(args.repeats):
        for name in list(settings)[:: 1 if r % 2 == 0 else -1]:
            runs[name].append(benchmark(args, settings[name]))
    variants = {}
    for name, results in runs.items():
        variants[name] = {
            "loop_prompts_per_s": mean_std([x["loop_prompts_per_s"] for x in results]),
            "iteration_s": mean_std([x["phases"]["time/iteration_s"]["mean"] for x in results]),
            "rollout_s": mean_std([x["phases"]["time/rollout_s"]["mean"] for x in results]),
            "optimise_s": mean_std([x["phases"]["time/optimise_s"]["mean"] for x in results]),
            "reward_curves": [[m.get("reward/mean") for m in x["iterations"]] for x in results],
            "staleness_mean": statistics.fmean(
                m.get("rollout/staleness_mean", 0.0) for x in results for m in x["iterations"]
            ),
            "overrides": settings[name],
        }
    speedup = variants["workers"]["loop_prompts_per_s"]["mean"] / variants["in-process"]["loop_prompts_per_s"]["mean"]
    return {"variants": variants, "speedup": speedup, "rounds": args.repeats, **memory_and_machine()}


def workers_markdown(result: dict) -> str:
    rows = [
        "| rollouts | loop prompts/s | iteration s | rollout wait s | optimise s | mean staleness |",
        "|---|---|---|---|---|---|",
    ]
    for name, v in result["variants"].items():
        rows.append(
            f"| {name} | {v['loop_prompts_per_s']['mean']:.1f} ± {v['loop_prompts_per_s']['std']:.1f} "
            f"| {v['iteration_s']['mean']:.3f} | {v['rollout_s']['mean']:.3f} | {v['optimise_s']['mean']:.3f} "
            f"| {v['staleness_mean']:.2f} |"
        )
    rows.append(f"\nspeed-up of the loop: {result['speedup']:.2f}x over {result['rounds']} alternating rounds")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args, overrides = parse_args(argv)
        if args.workload:
            model = {"hidden_size": args.hidden_size, "num_layers": args.num_layers}
            result = side_by_side(args.workload, args.repeats, model, args.torch_num_threads)
        elif overrides.get("rollout_workers"):
            result = against_in_process(args, overrides)
        else:
            result = benchmark(args, overrides)
    except PrefoptError as err:  # a bad key or file: one line, as `prefopt train` prints it
        print(f"benchmark: error: {err}", file=sys.stderr)
        return 2
    result["command"] = shlex.join([sys.executable, sys.argv[0], *argv])
    if args.workload:
        print(workload_markdown(result))
    else:
        print(workers_markdown(result) if "variants" in result else markdown(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
