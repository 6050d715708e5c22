"""The CLI and the loop end to end on the tiny model: run directory, resume, ZeRO, bad input.

Training runs go through `python -m prefopt.cli` in a subprocess, as a user runs them (and because accelerate's
state is a per-process singleton: a DeepSpeed run must not leak into the next test).
"""

import json
import math
import os

import pytest
import torch
from helpers import (
    ADAM_ARGS,
    ALGORITHM_ARGS,
    BASE,
    REPO,
    assert_same_weights,
    final_weights,
    prefopt,
    roll_back_to,
    train,
)


def test_one_cli_iteration_writes_a_complete_run_directory(tiny_model_dir, tmp_path):
    from datasets import load_from_disk
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    result = train(
        tiny_model_dir,
        out,
        "--num_iterations",
        "1",
        "--eval_num_prompts",
        "8",
        "--report_to",
        "tensorboard",
        "--logging_steps",
        "1",
        "--per_device_train_batch_size",
        "4",
        "--gradient_accumulation_steps",
        "2",
    )
    assert "win rate of the final policy against the initial policy" in result.stdout
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 1 and metrics[0]["iteration"] == 0
    assert {"loss/sppo", "grad_norm", "lr", "rollout/mean_length", "eval/win_rate", "time/rollout_s"} <= set(
        metrics[0]
    )
    rollouts = load_from_disk(str(out / "iterations/iter_000/rollouts"))
    assert len(rollouts) == 16 * 3 and set(rollouts["finish_reason"]) <= {"stop", "length"}
    judge_rows = (out / "iterations/iter_000/judge.jsonl").read_text().splitlines()
    assert len(judge_rows) == 16 * 3  # K(K−1)/2 = 3 queried pairs per prompt
    assert json.loads((out / "state.json").read_text())["last_completed_iteration"] == 0
    assert (out / "checkpoints/iter_000/model.safetensors").exists()
    assert "algorithm: sppo" in (out / "config.yaml").read_text()
    trained = AutoModelForCausalLM.from_pretrained(out / "final")
    initial = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    diff = max((a - b).abs().max() for a, b in zip(trained.state_dict().values(), initial.state_dict().values()))
    assert diff > 0
    assert not list(out.rglob(".*staging*")) and not list(out.rglob(".iter_*"))  # no leftovers of atomic writes
    assert list(out.rglob("events.out.tfevents.*"))  # report_to tensorboard
    steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    assert [r["step"] for r in steps] == [1, 2] and "loss/sppo" in steps[0]  # 16 rows / (4 × 2) = 2 steps
    # Each step's record is the mean over its 8 rows (both micro-batches), so the two average to the iteration's.
    assert (steps[0]["loss/sppo"] + steps[1]["loss/sppo"]) / 2 == pytest.approx(metrics[0]["loss/sppo"], rel=1e-9)


def test_quickstart_config_beats_the_initial_policy(tmp_path):
    """The shipped quickstart, as the README runs it: the 95% interval of the final win rate lies above 1/2."""
    from prefopt.tiny import write_tiny_model

    model = write_tiny_model(tmp_path / "tiny-model")
    result = prefopt(
        "train",
        "sppo",
        "--config",
        "configs/quickstart.yaml",
        "--model_name_or_path",
        model,
        "--output_dir",
        tmp_path / "quickstart",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    last = json.loads((tmp_path / "quickstart/metrics.jsonl").read_text().splitlines()[-1])
    assert last["eval/ci_low"] > 0.5 and last["eval/win_rate"] > 0.75, last


def test_resume_ends_with_the_same_weights_as_an_uninterrupted_run(tiny_model_dir, tmp_path):
    args = [
        "--num_iterations",
        "3",
        "--lr_scheduler_type",
        "linear",
        "--warmup_ratio",
        "0.2",
        "--eval_num_prompts",
        "4",
    ]
    import shutil

    train(tiny_model_dir, tmp_path / "full", *args)
    # The last checkpoint cut short (a full disk while it was written): --resume names it and the intact one before.
    shutil.copytree(tmp_path / "full", tmp_path / "crashed")
    weights = tmp_path / "crashed/checkpoints/iter_002/model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    refused = prefopt(
        "train",
        "sppo",
        "--model_name_or_path",
        tiny_model_dir,
        "--output_dir",
        tmp_path / "crashed",
        *BASE,
        *args,
        "--resume",
    )
    assert refused.returncode == 2 and refused.stderr.splitlines() == [
        f"prefopt: error: --resume: '{weights}' is damaged (truncated or not a checkpoint file); checkpoint "
        f"'{tmp_path / 'crashed/checkpoints/iter_001'}' is intact: resume from it with --resume_from_iteration 1"
    ]
    resumed = train(tiny_model_dir, tmp_path / "crashed", *args, "--resume", "--resume_from_iteration", "1")
    assert "resuming after iteration 1" in resumed.stdout
    full, crashed = final_weights(tmp_path / "full"), final_weights(tmp_path / "crashed")
    assert all(torch.equal(full[k], crashed[k]) for k in full)
    m_full, m_resumed = ((tmp_path / d / "metrics.jsonl").read_text().splitlines() for d in ("full", "crashed"))
    strip = lambda line: {k: v for k, v in json.loads(line).items() if not k.startswith("time/")}  # noqa: E731
    assert [strip(x) for x in m_full] == [strip(x) for x in m_resumed]
    assert sorted(p.name for p in (tmp_path / "full" / "checkpoints").iterdir()) == ["iter_001", "iter_002"]


@pytest.mark.parametrize(
    "stage",
    # zero3 without the whole-model gather: DeepSpeed fetches each layer's shards at every forward of generate.
    ["zero2", *(pytest.param(stage, marks=pytest.mark.slow) for stage in ("zero3", "zero3-per-token"))],
)
def test_deepspeed_single_process_matches_plain_training(tiny_model_dir, tmp_path, stage):
    args = ["--num_iterations", "1", *ADAM_ARGS]
    train(tiny_model_dir, tmp_path / "plain", *args)
    gather = ["--ds3_gather_for_generation", "false"] if stage.endswith("per-token") else []
    deepspeed = ["--deepspeed", REPO / f"configs/deepspeed/{stage.split('-')[0]}.json", *gather]
    train(tiny_model_dir, tmp_path / stage, *args, *deepspeed)
    # fp32 on CPU: DeepSpeed's flattened buffers sum gradients in another order; differences stay at rounding level.
    assert_same_weights(tmp_path / "plain", tmp_path / stage)
    m_plain = json.loads((tmp_path / "plain/metrics.jsonl").read_text())
    m_ds = json.loads((tmp_path / stage / "metrics.jsonl").read_text())
    assert m_ds["loss/total"] == pytest.approx(m_plain["loss/total"], rel=1e-5)


def test_matrix_game_judge_restricts_responses_to_single_token_actions(tiny_model_dir, tmp_path):
    from datasets import load_from_disk

    out = tmp_path / "game"
    train(
        tiny_model_dir, out, "--num_iterations", "1", "--judge", "matrix_game", "--game", "random", "--game_size", "5"
    )
    rollouts = load_from_disk(str(out / "iterations/iter_000/rollouts"))
    assert set(rollouts["response"]) <= {"A", "B", "C", "D", "E"}
    assert all(len(ids) == 1 for ids in rollouts["response_ids"])
    assert set(rollouts["finish_reason"]) == {"length"}
    (metrics,) = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert metrics["game/duality_gap"] >= 0 and metrics["game/kl_to_ne"] >= 0
    # One iteration: the average iterate is the current one.
    assert metrics["game/avg_duality_gap"] == pytest.approx(metrics["game/duality_gap"])


@pytest.mark.slow
def test_resume_under_zero3_matches_the_uninterrupted_run(tiny_model_dir, tmp_path):
    args = [
        "--num_iterations",
        "3",
        "--lr_scheduler_type",
        "linear",
        "--deepspeed",
        REPO / "configs/deepspeed/zero3.json",
    ]
    train(tiny_model_dir, tmp_path / "full", *args)
    train(tiny_model_dir, tmp_path / "crashed", *args)
    assert (tmp_path / "crashed/checkpoints/iter_001/pytorch_model").is_dir()  # DeepSpeed's sharded format
    roll_back_to(tmp_path / "crashed", 1)
    assert "resuming after iteration 1" in train(tiny_model_dir, tmp_path / "crashed", *args, "--resume").stdout
    full, crashed = final_weights(tmp_path / "full"), final_weights(tmp_path / "crashed")
    assert all(torch.equal(full[k], crashed[k]) for k in full)


# Algorithms whose own test file runs CLI iterations with closer checks (metrics of the method): not repeated here.
CLI_TESTED_IN = {
    "raft": "test_outcome_rl",
    "raftpp": "test_outcome_rl",
    "grpo": "test_outcome_rl",
    "gvm_raft": "test_gvm",
    "gvm_grpo": "test_gvm",
    "grao": "test_grao",
    "rebel": "test_rebel",
    "nash_md": "test_nash_md",
}


def test_every_algorithm_has_a_cli_iteration():
    from prefopt.algorithms import ALGORITHMS

    assert set(ALGORITHM_ARGS) == set(ALGORITHMS)  # a new algorithm gets its CLI iteration below (or in its file)
    assert set(CLI_TESTED_IN) <= set(ALGORITHMS)


@pytest.mark.parametrize("name", sorted(set(ALGORITHM_ARGS) - set(CLI_TESTED_IN)))
def test_each_algorithm_runs_one_cli_iteration(tiny_model_dir, tmp_path, name):
    out = tmp_path / name
    args = ALGORITHM_ARGS[name]
    dataset = [] if "--dataset_name" in args else ["--dataset_name", REPO / "configs/data/quickstart_prompts.jsonl"]
    common = [
        *dataset,
        "--max_new_tokens",
        "6",
        "--prompts_per_iteration",
        "8",
        "--disable_tqdm",
        "true",
        "--torch_num_threads",
        "1",
    ]
    result = prefopt(
        "train",
        name,
        "--model_name_or_path",
        tiny_model_dir,
        "--output_dir",
        out,
        "--num_iterations",
        "1",
        *common,
        *args,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][-1]
    assert math.isfinite(metrics["loss/total"]) and (out / "final/model.safetensors").exists()


@pytest.mark.slow
def test_save_every_checkpoints_sparsely_and_resume_redoes_the_uncheckpointed_iterations(tiny_model_dir, tmp_path):
    import shutil

    args = ["--num_iterations", "3", "--save_every", "2", "--lr_scheduler_type", "linear"]
    train(tiny_model_dir, tmp_path / "full", *args)
    out = tmp_path / "crashed"
    train(tiny_model_dir, out, *args)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["iter_001", "iter_002"]  # every 2nd + last
    # A crash after iteration 2's data and metrics were written but before its checkpoint:
    shutil.rmtree(out / "checkpoints/iter_002")
    shutil.rmtree(out / "final")
    state = json.loads((out / "state.json").read_text())
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    state.update(last_completed_iteration=1, global_step=metrics[1]["step"])
    (out / "state.json").write_text(json.dumps(state))
    assert "resuming after iteration 1" in train(tiny_model_dir, out, *args, "--resume").stdout
    assert [json.loads(x)["iteration"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [0, 1, 2]
    full, resumed = final_weights(tmp_path / "full"), final_weights(out)
    assert all(torch.equal(full[k], resumed[k]) for k in full)
