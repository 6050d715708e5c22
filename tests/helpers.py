"""Helpers shared by the tests: loss inputs built by hand, and the CLI run in a subprocess as a user runs it."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from prefopt.batch import MiniBatch, PolicyLogps

REPO = Path(__file__).resolve().parents[1]
PROMPTS = REPO / "configs/data/quickstart_prompts.jsonl"


def minibatch(**row) -> MiniBatch:
    """A MiniBatch holding only per-row tensors (all [B, S, ...] or [B]); one token per sequence."""
    b, s = next(v for v in row.values() if v.dim() == 2).shape
    return MiniBatch(rows=b, seqs_per_row=s, row=row, token={}, mask=torch.ones(b, s, 1).bool())


def policy(logps) -> PolicyLogps:
    """PolicyLogps whose sequence log-probs are ``logps`` [B, S] (one token each)."""
    logps = torch.as_tensor(logps, dtype=torch.float32)
    return PolicyLogps(logps.unsqueeze(-1), torch.ones_like(logps).bool().unsqueeze(-1))


# What a launcher (or an in-process DeepSpeed run of an earlier test) leaves in the environment: a CLI run started
# by a test is a fresh single-process run and must not see them.
LAUNCHER_VARIABLES = {"RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "ACCELERATE_USE_DEEPSPEED"}


def prefopt(*args, timeout: int = 900) -> subprocess.CompletedProcess:
    """`python -m prefopt.cli ARGS` from the repository root, offline (each run its own process: accelerate's
    state is a per-process singleton, so a DeepSpeed run must not leak into the next test)."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    return subprocess.run(
        [sys.executable, "-m", "prefopt.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=timeout,
    )


def prefopt_ok(*args) -> subprocess.CompletedProcess:
    result = prefopt(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


DIGIT_TASK = REPO / "configs/data/arithmetic.jsonl"
# The CLI flags of the digit-sum task: responses are single digits, checked exactly against the answer column.
DIGIT_ARGS = ["--response_choices", "0,1,2,3,4,5,6,7,8,9", "--judge", "exact_match", "--answer_column", "answer"]


def digit_task_run(name: str, algo_cfg, model_dir, output_dir, **overrides):
    """``build_run`` of algorithm ``name`` on the digit-sum task, in this process (no iteration run yet)."""
    from prefopt.build import build_run
    from prefopt.config import TrainConfig

    settings = dict(
        model_name_or_path=str(model_dir),
        dataset_name=str(DIGIT_TASK),
        output_dir=str(output_dir),
        judge="exact_match",
        answer_column="answer",
        response_choices=[str(d) for d in range(10)],
        disable_tqdm=True,
    )
    cfg = TrainConfig(**(settings | overrides))
    return build_run(name, cfg, algo_cfg)


def rps_run(name: str, model_dir, output_dir, algo: dict | None = None, deepspeed: str | None = None, **overrides):
    """``build_run`` of algorithm ``name`` (β = 0.5 and ``algo``) against rock-paper-scissors on the quickstart
    prompts, in this process (no iteration run yet); ``deepspeed``: a config name under configs/deepspeed."""
    from prefopt.algorithms import get_algorithm
    from prefopt.build import build_run
    from prefopt.config import TrainConfig

    settings = dict(
        model_name_or_path=str(model_dir),
        dataset_name=str(PROMPTS),
        output_dir=str(output_dir),
        judge="matrix_game",
        game="rps",
        learning_rate=0.05,
        prompts_per_iteration=4,
        per_device_train_batch_size=8,
        disable_tqdm=True,
        deepspeed=None if deepspeed is None else str(REPO / f"configs/deepspeed/{deepspeed}.json"),
    )
    cfg = TrainConfig(**(settings | overrides))
    return build_run(name, cfg, get_algorithm(name).config_class(beta=0.5, **(algo or {})))


# SPPO on the quickstart prompts, small enough for a CLI run in a test.
BASE = [
    "--dataset_name",
    str(REPO / "configs/data/quickstart_prompts.jsonl"),
    "--max_new_tokens",
    "6",
    "--num_samples",
    "3",
    "--prompts_per_iteration",
    "16",
    "--per_device_train_batch_size",
    "8",
    "--learning_rate",
    "1e-2",
    "--eta",
    "20",
    "--disable_tqdm",
    "true",
    "--torch_num_threads",
    "1",
]


def train(model, out, *extra):
    result = prefopt("train", "sppo", "--model_name_or_path", model, "--output_dir", out, *BASE, *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def final_weights(out):
    return load_file(str(Path(out) / "final" / "model.safetensors"))


# Optimizers under which two runs that differ only in the order of fp32 sums (processes, ZeRO's flat buffers, another
# CPU's kernels) keep their weights within rounding of each other: SGD, or AdamW with a large ε (its update is then
# Lipschitz in the gradient, ≲ 2·lr/ε). With Adam's default ε an entry whose gradient is rounding noise moves by ±lr on
# the noise's sign alone. The arithmetic is spelled out in tests/test_multiprocess.py's docstring.
SGD_ARGS = ["--optim", "sgd", "--learning_rate", "0.1"]
ADAM_ARGS = ["--optim", "adamw_torch", "--learning_rate", "1e-2", "--adam_epsilon", "1e-3"]


def run_weights(out) -> dict:
    """The final trained tensors of a run: the model, or the peft adapter under LoRA."""
    final = Path(out) / "final"
    name = "adapter_model.safetensors" if (final / "adapter_model.safetensors").exists() else "model.safetensors"
    return load_file(str(final / name))


def assert_same_weights(one, two, init: float = 0.0) -> None:
    """Two runs' final weights differ by at most 1e-4 of lr × optimizer steps, the most an entry can move (an SGD step
    moves it by lr·|g| <= lr·max_grad_norm, an Adam step by about lr); rounding-level gradient differences give
    ~1e-6 of that, a real mismatch (a row dropped or counted twice) a sizeable fraction. ``init``: what the two
    initialisations may already differ by (LoRA-GA's comes from a gradient that differs by rounding)."""
    import yaml

    lr = float(yaml.safe_load((Path(one) / "config.yaml").read_text())["learning_rate"])
    steps = json.loads((Path(one) / "state.json").read_text())["global_step"]
    w1, w2 = run_weights(one), run_weights(two)
    assert set(w1) == set(w2)
    diff = max(float((w1[k] - w2[k]).abs().max()) for k in w1)
    assert diff <= 1e-4 * lr * steps + init, (diff, lr, steps, init)


def roll_back_to(out: Path, iteration: int) -> None:
    """Make a finished run look like one that crashed right after committing ``iteration``."""
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()][: iteration + 1]
    (out / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    state = json.loads((out / "state.json").read_text())
    state.update(last_completed_iteration=iteration, global_step=metrics[-1]["step"])
    (out / "state.json").write_text(json.dumps(state))
    for later in [*(out / "checkpoints").glob("iter_*"), *(out / "iterations").glob("iter_*")]:
        if int(later.name.split("_")[1]) > iteration:
            shutil.rmtree(later)
    shutil.rmtree(out / "final")


# One CLI iteration of each algorithm: its own flags (the outcome-reward methods on the digit-sum task).
ALGORITHM_ARGS = {
    "sppo": ["--eta", "20", "--num_samples", "3"],
    "sppo_hard": ["--beta", "0.5", "--num_samples", "3"],
    "inpo": ["--eta", "0.5", "--num_samples", "4"],
    "online_ipo": ["--beta", "0.5"],
    "egpo": ["--beta", "0.5"],
    "dpo": ["--beta", "0.5", "--num_samples", "4"],
    "apo": ["--beta", "0.5", "--num_samples", "4", "--num_iterations", "2"],
    "nash_mp": ["--beta", "0.5", "--eta", "0.5"],
    "nash_md": ["--beta", "0.5", "--mixture", "0.25"],
    "rebel": ["--eta", "1.0"],  # the preference variant under the default nontransitive judge
}
DIGIT_TASK_ARGS = ["--dataset_name", DIGIT_TASK, *DIGIT_ARGS, "--num_samples", "4"]
ALGORITHM_ARGS.update(
    {name: DIGIT_TASK_ARGS for name in ("raft", "raftpp", "grpo", "gvm_raft", "gvm_raftpp", "gvm_grpo")}
)
ALGORITHM_ARGS["grao"] = [*DIGIT_TASK_ARGS, "--reference_column", "answer"]


def chat_prompt_ids(tokenizer, texts) -> list[list[int]]:
    """Each text as a one-turn user message with the generation prompt, tokenised once (no added specials)."""
    return [
        tokenizer(
            tokenizer.apply_chat_template(
                [{"role": "user", "content": t}], add_generation_prompt=True, tokenize=False
            ),
            add_special_tokens=False,
        )["input_ids"]
        for t in texts
    ]
