"""Rollout workers that sample with vLLM (``use_vllm`` with ``rollout_workers``), against the colocated vLLM engine:
runs where vllm and ray import (``bash scripts/vllm_env.sh``; skipped in the main environment)."""

import datasets
import pytest
from helpers import ADAM_ARGS, DIGIT_ARGS, DIGIT_TASK, assert_same_weights, prefopt_ok

pytest.importorskip("vllm")
pytest.importorskip("ray")

RUN = ["--dataset_name", DIGIT_TASK, *DIGIT_ARGS, "--num_iterations", "2", "--prompts_per_iteration", "16",
       "--num_samples", "4", "--per_device_train_batch_size", "16", "--use_vllm", "true", "--disable_tqdm", "true",
       "--torch_num_threads", "1", *ADAM_ARGS]  # fmt: skip


def rollouts(out, iteration):
    return datasets.load_from_disk(str(out / f"iterations/iter_{iteration:03d}/rollouts"))


def test_a_vllm_worker_samples_what_the_colocated_engine_does(tiny_model_dir, tmp_path):
    prefopt_ok("train", "grpo", "--model_name_or_path", tiny_model_dir, "--output_dir", tmp_path / "colocated", *RUN)
    prefopt_ok("train", "grpo", "--model_name_or_path", tiny_model_dir, "--output_dir", tmp_path / "worker", *RUN,
               "--rollout_workers", "1")  # fmt: skip
    for it in range(2):  # the same weights each iteration: the same seeded samples, log-probs to rounding
        one, two = rollouts(tmp_path / "colocated", it), rollouts(tmp_path / "worker", it)
        assert one["response_ids"] == two["response_ids"]
        worst = max(abs(a - b) for x, y in zip(one["token_logps"], two["token_logps"]) for a, b in zip(x, y))
        assert worst < 1e-4
        assert set(two["weights_version"]) == {it}
    assert_same_weights(tmp_path / "colocated", tmp_path / "worker")


def test_an_async_vllm_worker_trains_on_the_previous_policys_samples(tiny_model_dir, tmp_path):
    prefopt_ok("train", "grpo", "--model_name_or_path", tiny_model_dir, "--output_dir", tmp_path / "run", *RUN,
               "--rollout_workers", "1", "--async_rollouts", "true", "--num_iterations", "3")  # fmt: skip
    assert [set(rollouts(tmp_path / "run", it)["policy_iteration"]) for it in range(3)] == [{0}, {0}, {1}]
