"""Adapters through the trainers: every algorithm with LoRA and LoRA-GA, ZeRO-2 and ZeRO-3, resume, and the saved
adapter against the trained policy."""

import json
import math

import pytest
import torch
from helpers import ADAM_ARGS, ALGORITHM_ARGS, PROMPTS, REPO, assert_same_weights, roll_back_to, train
from safetensors.torch import load_file

ADAPTER = ["--adapter", "lora_ga", "--lora_r", "4", "--lora_alpha", "8", "--lora_target_modules", "all-linear"]


def run_in_process(name: str, args: list, model_dir, out) -> dict:
    """One training run in this process (no DeepSpeed: accelerate's state stays plain); its last metrics."""
    from prefopt.algorithms import get_algorithm
    from prefopt.config import build_configs, parse_cli_overrides
    from prefopt.trainers import train as train_loop

    values = parse_cli_overrides([str(a) for a in args])
    values.update(model_name_or_path=str(model_dir), output_dir=str(out))
    cfg, algo_cfg = build_configs(get_algorithm(name).config_class, {}, values)
    return train_loop(name, cfg, algo_cfg)


@pytest.mark.parametrize("adapter", ["lora", "lora_ga"])
def test_each_algorithm_runs_one_iteration_with_each_adapter(tiny_model_dir, tmp_path, adapter):
    from prefopt.algorithms import ALGORITHMS

    assert set(ALGORITHM_ARGS) == set(ALGORITHMS)
    for name in sorted(ALGORITHM_ARGS):
        args = ALGORITHM_ARGS[name]
        dataset = [] if "--dataset_name" in args else ["--dataset_name", PROMPTS]
        common = ["--num_iterations", "1", "--max_new_tokens", "6", "--prompts_per_iteration", "8"]
        common += ["--disable_tqdm", "true", "--torch_num_threads", "1", "--adapter", adapter, "--lora_r", "4"]
        out = tmp_path / name
        metrics = run_in_process(name, [*dataset, *common, *args], tiny_model_dir, out)
        assert math.isfinite(metrics["loss/total"]), name
        assert (out / "final/adapter_model.safetensors").exists(), name
        # Snapshots kept between iterations (APO's previous iterate) are adapter tensors only.
        for state_file in (out / "checkpoints").glob("iter_*/algo_state_0.pt"):
            snapshots = [v for v in torch.load(state_file).values() if isinstance(v, dict)]
            assert snapshots and all(".lora_" in k for s in snapshots for k in s), name


def _policy(model_dir, checkpoint, lora_args):
    """The trained policy as the run held it: the adapter structure with a checkpoint's tensors loaded."""
    from types import SimpleNamespace

    from prefopt.adapters import attach_adapter
    from prefopt.models import load_causal_lm

    cfg = SimpleNamespace(**lora_args, lora_dropout=0.0, use_rslora=False)
    model = attach_adapter(load_causal_lm(model_dir), cfg)
    model.load_state_dict(load_file(str(checkpoint / "model.safetensors")))
    return model.eval()


def _logits(model):
    ids = torch.tensor([[5, 17, 40, 99, 23, 61, 62]])
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.slow
def test_lora_ga_run_resumes_exactly_and_its_saved_adapter_is_the_trained_policy(tiny_model_dir, tmp_path):
    from peft import PeftModel

    from prefopt.models import load_causal_lm

    args = [*ADAPTER, "--num_iterations", "2", "--learning_rate", "5e-3", "--lr_scheduler_type", "linear"]
    first = train(tiny_model_dir, tmp_path / "full", *args)
    assert "LoRA-GA: algorithm gradient on 16 rows, 14 layers" in first.stdout
    train(tiny_model_dir, tmp_path / "crashed", *args)
    roll_back_to(tmp_path / "crashed", 0)
    resumed = train(tiny_model_dir, tmp_path / "crashed", *args, "--resume")
    assert "resuming after iteration 0" in resumed.stdout and "LoRA-GA" not in resumed.stdout
    full = load_file(str(tmp_path / "full/final/adapter_model.safetensors"))
    again = load_file(str(tmp_path / "crashed/final/adapter_model.safetensors"))
    assert set(full) == set(again) and all(torch.equal(full[k], again[k]) for k in full)
    # The saved rank-2r adapter on a fresh base model is the policy of the last checkpoint.
    lora = dict(adapter="lora_ga", lora_r=4, lora_alpha=8.0, lora_target_modules=["all-linear"])
    trained = _policy(tiny_model_dir, tmp_path / "full/checkpoints/iter_001", lora)
    reloaded = PeftModel.from_pretrained(load_causal_lm(tiny_model_dir), str(tmp_path / "full/final")).eval()
    assert reloaded.peft_config["default"].r == 8
    assert (_logits(reloaded) - _logits(trained)).abs().max() <= 1e-5
    assert (_logits(reloaded.merge_and_unload()) - _logits(trained)).abs().max() <= 1e-4
    metrics = [json.loads(x) for x in (tmp_path / "full/metrics.jsonl").read_text().splitlines()]
    assert metrics[0]["time/collect_s"] > 0 and metrics[0]["rows"] == 16  # iteration 0 trained on setup's batch


# LoRA-GA under ZeRO-2 runs in the slow suite (with its ZeRO-3 run); LoRA under ZeRO-2 in the default one.
@pytest.mark.parametrize("adapter", ["lora", pytest.param("lora_ga", marks=pytest.mark.slow)])
def test_zero2_with_an_adapter_matches_plain_training(tiny_model_dir, tmp_path, adapter):
    args = ["--num_iterations", "1", "--adapter", adapter, "--lora_r", "4", *ADAM_ARGS]
    train(tiny_model_dir, tmp_path / "plain", *args)
    train(tiny_model_dir, tmp_path / "zero2", *args, "--deepspeed", REPO / "configs/deepspeed/zero2.json")
    assert_same_weights(tmp_path / "plain", tmp_path / "zero2")


def test_zero3_with_lora_matches_plain_training(tiny_model_dir, tmp_path):
    """ZeRO-3 partitions the frozen output head, which backward's recompute of a chunked head would find released:
    the scorer takes the model's own logits there, and says so."""
    args = ["--num_iterations", "1", "--adapter", "lora", "--lora_r", "4", *ADAM_ARGS]
    train(tiny_model_dir, tmp_path / "plain", *args)
    result = train(tiny_model_dir, tmp_path / "zero3", *args, "--deepspeed", REPO / "configs/deepspeed/zero3.json")
    assert "the output head is frozen and partitioned by ZeRO-3" in result.stdout
    assert_same_weights(tmp_path / "plain", tmp_path / "zero3")


@pytest.mark.slow
def test_zero3_with_lora_ga_matches_plain_training(tiny_model_dir, tmp_path):
    args = [*ADAPTER, "--num_iterations", "1", *ADAM_ARGS]
    train(tiny_model_dir, tmp_path / "plain", *args)
    train(tiny_model_dir, tmp_path / "zero3", *args, "--deepspeed", REPO / "configs/deepspeed/zero3.json")
    # ZeRO-3's gathered gradient differs from the plain one by ~2e-7 (relative); the singular vectors LoRA-GA starts
    # from move by that over the relative gap between neighbouring singular values (>= 1e-2 here): ~1e-5 measured.
    assert_same_weights(tmp_path / "plain", tmp_path / "zero3", init=1e-4)
