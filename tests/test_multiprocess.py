"""Two processes (torchrun, gloo on CPU) against one: the same global batch and seed give the same run.

Each case trains the tiny model twice, once in one process with per_device_train_batch_size 2 and once in two
processes with 1 each (gradient accumulation 2 in both: a global batch of 4 rows). Seven prompts per iteration
split 3 + 4 across the processes, so the blocks are uneven, the last minibatch has 3 rows and one process runs a
spare micro-batch. Five held-out prompts are evaluated 2 + 3.

Tolerances, and why:
- metrics (losses, gradient norms, rewards, collect statistics, win rates): relative 1e-5, or absolute 1e-5 for
  values near zero. fp32 sums taken in another order (DeepSpeed's flat buffers, the all-reduce over two processes)
  differ at ~1e-7 relative; a metric that is a difference of sequence log-probs (EGPO's h, magnitude ~20 each)
  keeps the absolute error of its terms, measured at 3e-7.
- weights: at most 0.1% of the entries differ by more than 1e-5, and none by more than lr / 10. Adam divides each
  gradient by the root of its second moment, so for an entry whose gradients are near zero (embedding rows of
  tokens that barely occur) a rounding-level difference in the gradient becomes a visible difference in the
  update, up to the size of the update (≈ lr) itself; the measured worst case is 2.9e-4 with lr = 1e-2.

Slow (each pair takes 40-60 s on 2 cores), and run by .ci/run with ``pytest -m multiprocess``.
"""

import json
import os
import subprocess
import sys

import pytest
import torch
from helpers import LAUNCHER_VARIABLES, REPO, final_weights, roll_back_to

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]

LR = 1e-2
COMMON = [
    "--num_iterations",
    "2",
    "--prompts_per_iteration",
    "7",
    "--eval_num_prompts",
    "5",
    "--eval_samples_per_prompt",
    "2",
    "--max_new_tokens",
    "4",
    "--gradient_accumulation_steps",
    "2",
    "--num_train_epochs",
    "1",
    "--learning_rate",
    str(LR),
]
GVM = ["--num_samples", "4", "--probe_samples", "4"]


def launch(processes: int, algorithm: str, model, out, *extra) -> None:
    """``prefopt train`` with the algorithm's tiny config, in one process or under torchrun."""
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    command = [sys.executable, *(launcher if processes > 1 else []), "-m", "prefopt.cli", "train", algorithm]
    args = ["--config", f"configs/tiny/{algorithm}.yaml", "--model_name_or_path", model, "--output_dir", out]
    per_device = ["--per_device_train_batch_size", str(2 // processes)]
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1")
    result = subprocess.run(
        [*command, *map(str, [*args, *COMMON, *per_device, *extra])],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def metrics(out) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def assert_same_run(one, two) -> None:
    """The two runs' weights and every non-timing metric agree within the tolerances above."""
    w1, w2 = final_weights(one), final_weights(two)
    diffs = torch.cat([(w1[k] - w2[k]).abs().flatten() for k in w1])
    assert diffs.max() < LR / 10 and (diffs > 1e-5).float().mean() < 1e-3, (diffs.max(), (diffs > 1e-5).sum())
    m1, m2 = metrics(one), metrics(two)
    assert len(m1) == len(m2)
    for r1, r2 in zip(m1, m2):
        keys = {k for k in r1 if not k.startswith("time/")}
        assert keys == {k for k in r2 if not k.startswith("time/")}
        for key in keys:
            assert r2[key] == pytest.approx(r1[key], rel=1e-5, abs=1e-5), key


@pytest.mark.parametrize(
    "algorithm,stage",
    [
        ("egpo", "ddp"),  # plain data parallel (configs/accelerate/multi_gpu.yaml's setting), no DeepSpeed
        ("egpo", "zero2"),
        ("egpo", "zero3"),
        # ZeRO-3 without the whole-model gather: every forward is a collective, so the processes run as many
        # generate calls and anchor passes as the busiest one.
        ("egpo", "zero3-per-token"),
        ("gvm_raft", "zero2"),
        ("gvm_raft", "zero3"),
    ],
)
def test_two_processes_match_one(tiny_model_dir, tmp_path, algorithm, stage):
    extra = [] if stage == "ddp" else ["--deepspeed", REPO / f"configs/deepspeed/{stage.split('-')[0]}.json"]
    extra += GVM if algorithm == "gvm_raft" else []
    extra += ["--ds3_gather_for_generation", "false"] if stage.endswith("per-token") else []
    launch(1, algorithm, tiny_model_dir, tmp_path / "one", *extra)
    launch(2, algorithm, tiny_model_dir, tmp_path / "two", *extra)
    assert_same_run(tmp_path / "one", tmp_path / "two")
    # The iteration's data is written once, with every process's samples (probes and final samples).
    from datasets import load_from_disk

    rows = [load_from_disk(str(tmp_path / run / "iterations/iter_001/rollouts")) for run in ("one", "two")]
    key = ["stream", "prompt_index", "sample_index", "response"]
    assert sorted(zip(*(rows[0][k] for k in key))) == sorted(zip(*(rows[1][k] for k in key)))


@pytest.mark.parametrize(
    "algorithm,stage,extra",
    [
        ("sppo", "zero2", []),
        ("nash_mp", "zero3", ["--prox_step", "pg", "--ema", "0.5"]),  # both phases reuse π_k's samples; EMA centre
        ("apo", "zero2", []),  # extrapolates from the previous iterate after each iteration
        ("inpo", "zero3", []),  # keeps past iterates as snapshots (ZeRO-3 shards)
        ("rebel", "zero2", []),
        ("grao", "zero3", []),
    ],
)
def test_every_trainer_takes_the_same_steps_on_two_processes(tiny_model_dir, tmp_path, algorithm, stage, extra):
    """The other trainers' own mechanisms (hooks, snapshots, phases) under sharding, one ZeRO stage each."""
    extra = ["--deepspeed", REPO / f"configs/deepspeed/{stage}.json", *extra]
    launch(1, algorithm, tiny_model_dir, tmp_path / "one", *extra)
    launch(2, algorithm, tiny_model_dir, tmp_path / "two", *extra)
    assert_same_run(tmp_path / "one", tmp_path / "two")


def test_resumed_two_process_run_matches_the_uninterrupted_one(tiny_model_dir, tmp_path):
    """EGPO (algorithm state and optimizer snapshots) under ZeRO-2: stop after iteration 1, resume with --resume."""
    extra = ["--deepspeed", REPO / "configs/deepspeed/zero2.json", "--num_iterations", "3"]
    launch(2, "egpo", tiny_model_dir, tmp_path / "full", *extra)
    launch(2, "egpo", tiny_model_dir, tmp_path / "crashed", *extra)
    roll_back_to(tmp_path / "crashed", 1)
    launch(2, "egpo", tiny_model_dir, tmp_path / "crashed", *extra, "--resume", "true", "--overwrite", "false")
    full, resumed = final_weights(tmp_path / "full"), final_weights(tmp_path / "crashed")
    assert all(torch.equal(full[k], resumed[k]) for k in full)
    losses = [[m["loss/total"] for m in metrics(tmp_path / run)] for run in ("full", "crashed")]
    assert losses[0] == losses[1]
    # Each process saved its own shard of the optimizer state (DeepSpeed's per-rank files).
    assert len(list((tmp_path / "crashed/checkpoints/iter_002/pytorch_model").glob("*optim_states.pt"))) == 2
