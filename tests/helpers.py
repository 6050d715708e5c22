"""Helpers shared by the tests: loss inputs built by hand, and the CLI run in a subprocess as a user runs it."""

import os
import subprocess
import sys
from pathlib import Path

import torch

from prefopt.batch import MiniBatch, PolicyLogps

REPO = Path(__file__).resolve().parents[1]
PROMPTS = REPO / "configs/data/quickstart_prompts.jsonl"


def minibatch(**row) -> MiniBatch:
    """A MiniBatch holding only per-row tensors (all [B, S, ...] or [B]); one token per sequence."""
    b, s = next(v for v in row.values() if v.dim() == 2).shape
    return MiniBatch(model_inputs={}, rows=b, seqs_per_row=s, row=row, token={}, mask=torch.ones(b, s, 1).bool())


def policy(logps) -> PolicyLogps:
    """PolicyLogps whose sequence log-probs are ``logps`` [B, S] (one token each)."""
    logps = torch.as_tensor(logps, dtype=torch.float32)
    return PolicyLogps(logps.unsqueeze(-1), torch.ones_like(logps).bool().unsqueeze(-1))


def prefopt(*args, timeout: int = 900) -> subprocess.CompletedProcess:
    """`python -m prefopt.cli ARGS` from the repository root, offline (each run its own process: accelerate's
    state is a per-process singleton, so a DeepSpeed run must not leak into the next test)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
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
    """``setup_run`` of algorithm ``name`` on the digit-sum task, in this process (no iteration run yet)."""
    from prefopt.config import TrainConfig
    from prefopt.setup import setup_run

    cfg = TrainConfig(
        model_name_or_path=str(model_dir),
        dataset_name=str(DIGIT_TASK),
        output_dir=str(output_dir),
        judge="exact_match",
        answer_column="answer",
        response_choices=[str(d) for d in range(10)],
        disable_tqdm=True,
        **overrides,
    )
    return setup_run(name, cfg, algo_cfg)
