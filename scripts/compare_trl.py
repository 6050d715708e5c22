"""prefopt's GRPOTrainer beside TRL's GRPOTrainer on the same model, prompts, reward, group size, lengths and steps.

    python scripts/compare_trl.py                       # 5 alternating rounds, tiny model, 1 thread
    python scripts/compare_trl.py --rounds 1 --steps 5  # a quick look
    python scripts/compare_trl.py --out compare.json

Both trainers are built the same way (``Trainer(model=FOLDER, args=Config(...), train_dataset=...,
reward_funcs=reward, callbacks=[timer])``) on one tiny random Llama written once (``prefopt tiny-model``), the
quickstart prompts (chat messages), and the Python reward below, with G responses per prompt, up to
``--max_new_tokens`` new tokens at temperature 1, ``--batch`` responses per optimizer step (batch / G prompts), one
optimizer step per generation (TRL's μ = 1; prefopt: one epoch of one minibatch), β = 0.04 (so both run a
reference forward per step), float32, no gradient checkpointing, nothing saved during the loop. Each run is a fresh
subprocess; the two alternate, ``--rounds`` times.

Reported per trainer (medians over the rounds): ``loop_s``, from the ``on_train_begin`` event to the last step's
end event (prefopt: ``on_iteration_end``; TRL: ``on_step_end``): generation, reward, reference and policy
forwards, backward, optimizer step and per-step logging, as each trainer does them, for ``--steps`` steps; and
``process_s``, the subprocess's whole wall time (imports, model loading, trainer construction, the loop, the final
save). The ratio is TRL's time over prefopt's: above 1, prefopt is faster.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROMPTS = REPO / "configs/data/quickstart_prompts.jsonl"


def reward(prompts, completions, **kwargs) -> list[float]:
    """The fraction of a response's letters that are vowels (a smooth reward with spread within every group)."""
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    letters = [[ch for ch in t.lower() if ch.isalpha()] for t in texts]
    return [sum(ch in "aeiou" for ch in ls) / len(ls) if ls else 0.0 for ls in letters]


def make_timer():
    """A ``TrainerCallback`` timing the loop from its begin to the last step (both trainers take one)."""
    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        def __init__(self):
            self.begin = self.end = None
            self.steps = 0
            self.step_ends: list[float] = []

        def on_train_begin(self, args, state, control, **kwargs):
            self.begin = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.end = time.perf_counter()
            self.steps += 1
            self.step_ends.append(self.end)

        def on_iteration_end(self, args, state, control, **kwargs):  # prefopt: after its iteration bookkeeping
            self.end = time.perf_counter()

    return Timer()


def settings(args) -> dict:
    return {
        "num_generations": args.group, "max_new_tokens": args.max_new_tokens, "batch": args.batch,
        "steps": args.steps, "beta": 0.04, "learning_rate": 1e-5, "temperature": 1.0, "seed": 0,
    }  # fmt: skip


def run_prefopt(model: str, s: dict, out_dir: str, timer):
    import torch
    from datasets import load_dataset

    from prefopt.trainers import GRPOConfig, GRPOTrainer

    micro = s.get("micro_batch", s["batch"])
    config = GRPOConfig(
        output_dir=out_dir, overwrite=True, num_samples=s["num_generations"], beta=s["beta"],
        prompts_per_iteration=s["batch"] // s["num_generations"], num_iterations=s["steps"],
        per_device_train_batch_size=micro, gradient_accumulation_steps=s["batch"] // micro, num_train_epochs=1,
        max_new_tokens=s["max_new_tokens"], temperature=s["temperature"], learning_rate=s["learning_rate"],
        save_every=s["steps"], eval_num_prompts=0, disable_tqdm=True, torch_num_threads=1, seed=s["seed"],
        dtype="bfloat16" if torch.cuda.is_available() else "float32",
    )  # fmt: skip
    data = load_dataset("json", data_files=str(PROMPTS), split="train")
    GRPOTrainer(model=model, args=config, train_dataset=data, reward_funcs=reward, callbacks=[timer]).train()


def run_trl(model: str, s: dict, out_dir: str, timer):
    import torch
    from datasets import load_dataset
    from trl import GRPOConfig, GRPOTrainer

    gpu = torch.cuda.is_available()  # bf16 on a GPU (scripts/gpu_bench.py); float32 on this CPU
    micro = s.get("micro_batch", s["batch"])
    config = GRPOConfig(
        output_dir=out_dir, num_generations=s["num_generations"], beta=s["beta"],
        per_device_train_batch_size=micro, gradient_accumulation_steps=s["batch"] // micro, max_steps=s["steps"],
        max_completion_length=s["max_new_tokens"], temperature=s["temperature"], learning_rate=s["learning_rate"],
        bf16=gpu, gradient_checkpointing=False, use_cpu=not gpu, save_strategy="no", report_to="none",
        logging_steps=1, disable_tqdm=True, seed=s["seed"], dataloader_num_workers=0,
    )  # fmt: skip
    data = load_dataset("json", data_files=str(PROMPTS), split="train")
    trainer = GRPOTrainer(model=model, args=config, train_dataset=data, reward_funcs=reward, callbacks=[timer])
    trainer.train()
    trainer.save_model(out_dir)  # prefopt's train() ends by saving final/: the process time includes both saves


def one_run(which: str, model: str, s: dict) -> dict:
    """One trainer in this process (as ``side_by_side`` launches it)."""
    import torch

    torch.set_num_threads(1)
    timer = make_timer()
    with tempfile.TemporaryDirectory(prefix=f"compare-{which}-") as tmp:
        (run_prefopt if which == "prefopt" else run_trl)(model, s, tmp, timer)
    if timer.steps != s["steps"]:
        raise RuntimeError(f"{which} ran {timer.steps} steps, not {s['steps']}")
    warmup = s.get("warmup_steps", 0)  # steps left out of measured_s (scripts/gpu_bench.py: the first)
    measured = timer.end - (timer.step_ends[warmup - 1] if warmup else timer.begin)
    peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    return {"loop_s": timer.end - timer.begin, "measured_s": measured, "steps": timer.steps, "peak_gpu_mib": peak}


def side_by_side(args) -> dict:
    from prefopt.tiny import write_tiny_model

    s = settings(args)
    runs: dict[str, list[dict]] = {"prefopt": [], "trl": []}
    with tempfile.TemporaryDirectory(prefix="compare-model-") as tmp:
        write_tiny_model(tmp)
        for _ in range(args.rounds):
            for which in runs:
                start = time.perf_counter()
                cmd = [sys.executable, __file__, "--one", which, "--model", tmp, "--settings", json.dumps(s)]
                out = subprocess.run(cmd, capture_output=True, text=True, check=False, env=_env())
                if out.returncode:
                    raise RuntimeError(f"{which} failed:\n{out.stderr[-4000:]}")
                result = json.loads(out.stdout.strip().splitlines()[-1])
                runs[which].append(result | {"process_s": time.perf_counter() - start})
    median = {w: {k: statistics.median(r[k] for r in rs) for k in ("loop_s", "process_s")} for w, rs in runs.items()}
    ratio = {k: median["trl"][k] / median["prefopt"][k] for k in ("loop_s", "process_s")}
    return {"settings": s, "rounds": args.rounds, "median": median, "trl_over_prefopt": ratio, "runs": runs}


def _env() -> dict:
    return dict(os.environ, TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")


def markdown(result: dict) -> str:
    s, m, r = result["settings"], result["median"], result["trl_over_prefopt"]
    steps = s["steps"]
    lines = [
        f"G = {s['num_generations']}, up to {s['max_new_tokens']} new tokens, {s['batch']} responses per step, "
        f"{steps} steps, β = {s['beta']}; median of {result['rounds']} alternating rounds",
        "",
        "| trainer | loop s | s / step | process s |",
        "|---|---|---|---|",
    ]
    for which in ("trl", "prefopt"):
        lines.append(f"| {which} | {m[which]['loop_s']:.2f} | {m[which]['loop_s'] / steps:.3f} | "
                     f"{m[which]['process_s']:.2f} |")  # fmt: skip
    lines.append(f"| TRL / prefopt | {r['loop_s']:.2f}× | | {r['process_s']:.2f}× |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--group", type=int, default=4, help="G, responses per prompt.")
    parser.add_argument("--batch", type=int, default=32, help="Responses per optimizer step (a multiple of G).")
    parser.add_argument("--max_new_tokens", type=int, default=32)
    parser.add_argument("--out", help="Also write the results to this JSON file.")
    parser.add_argument("--one", choices=("prefopt", "trl"), help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--settings", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one_run(args.one, args.model, json.loads(args.settings))))
        return 0
    if args.batch % args.group or min(args.rounds, args.steps, args.group - 1) < 1:
        parser.error("--batch must be a multiple of --group (>= 2); --rounds and --steps >= 1")
    result = side_by_side(args)
    result["command"] = " ".join([sys.executable, *sys.argv])
    print(markdown(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
