"""The three scripts in examples/ run as a user runs them, on the tiny models, and leave what they describe."""

import json
import subprocess
import sys

import yaml
from helpers import LAUNCHER_VARIABLES, REPO


def run_example(script: str, *args) -> subprocess.CompletedProcess:
    import os

    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    result = subprocess.run([sys.executable, f"examples/{script}", *map(str, args)], capture_output=True, text=True,
                            cwd=REPO, env=env, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def metrics(out) -> list[dict]:
    return [json.loads(line) for line in open(out / "metrics.jsonl")]


def test_sppo_with_a_pairwise_judge_object(tiny_model_dir, tiny_reward_dir, tmp_path):
    out = tmp_path / "sppo"
    result = run_example("sppo_pairwise_judge.py", "--model", tiny_model_dir, "--judge", tiny_reward_dir,
                         "--output_dir", out)  # fmt: skip
    win_rate = metrics(out)[-1]["eval/win_rate"]
    assert f"win rate against the initial policy: {win_rate:.3f}" in result.stdout
    assert yaml.safe_load((out / "config.yaml").read_text())["judge"].startswith("pairwise_model")
    assert (out / "model/model.safetensors").exists() and (out / "model/tokenizer.json").exists()


def test_gvm_raft_with_a_python_reward_function(tiny_model_dir, tmp_path):
    out = tmp_path / "gvm"
    result = run_example("gvm_raft_reward_function.py", "--model", tiny_model_dir, "--output_dir", out)
    last = metrics(out)[-1]
    assert f"mean reward of the last iteration's samples: {last['reward/mean']:.3f}" in result.stdout
    assert yaml.safe_load((out / "config.yaml").read_text())["judge"] == "reward_funcs:correct_digit"
    # The judge's records are the function's values: 1 exactly where the response is the reference digit.
    judged = [json.loads(line) for line in open(out / "iterations/iter_001/judge.jsonl")]
    assert judged and all(r["value"] == float(r["response"].strip() == r["reference"]) for r in judged)


def test_egpo_with_a_lora_config(tiny_model_dir, tmp_path):
    out = tmp_path / "egpo"
    run_example("egpo_lora.py", "--model", tiny_model_dir, "--output_dir", out)
    adapter = json.loads((out / "final/adapter_config.json").read_text())
    assert adapter["r"] == 8 and adapter["lora_alpha"] == 16
    assert not (out / "final/model.safetensors").exists()  # the adapter alone
    assert "eval/win_rate" in metrics(out)[-1]
