"""The GVM-setting recipes (RAFT, RAFT++, GRPO and their GVM variants, configs/recipes/{raft,raftpp,grpo,gvm}_*):
every value names its source, and the values the official runs fix are those they run.

Sources (each recipe's header): "code", set in the GVM repository's scripts (RLHFlow/GVM runs/scripts/run_raft.sh,
run_grpo.sh, run_em.sh, em/run_em.sh); "fork default", left unset there, so the repository's verl fork's default
applies (verl/trainer/config/ppo_trainer.yaml: clip_ratio_low = clip_ratio_high = 0.2, weight_decay 0.01, grad_clip
1.0, ppo_epochs 1, constant schedule without warmup, temperature 1, top_p 1); "paper", from the paper's text; "not
from the paper", from neither.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from prefopt.algorithms import get_algorithm
from prefopt.config import build_configs, read_yaml

ROOT = Path(__file__).resolve().parent.parent
RECIPES = sorted(p for p in (ROOT / "configs/recipes").glob("*.yaml") if p.name.startswith(("raft", "gvm_", "grpo_")))
IDS = [p.name for p in RECIPES]
SOURCES = ("code", "fork default", "paper", "not from the paper")
KEY_LINE = re.compile(r"^([a-z_0-9]+):")


def test_the_gvm_setting_recipes_are_found():
    assert len(RECIPES) == 7 and "gvm_raft_qwen2.5-math-7b_zero3_vllm.yaml" in IDS


@pytest.mark.parametrize("path", RECIPES, ids=IDS)
def test_every_value_names_its_source(path):
    unmarked = [
        line
        for line in path.read_text().splitlines()
        if KEY_LINE.match(line) and not line.partition("  # ")[2].startswith(SOURCES)
    ]
    assert not unmarked, f"{path.name}: values without a source: {unmarked}"


@pytest.mark.parametrize("path", RECIPES, ids=IDS)
def test_the_values_the_official_runs_fix(path, monkeypatch):
    monkeypatch.chdir(ROOT)
    values = read_yaml(path)
    train, algo = build_configs(get_algorithm(values["algorithm"]).config_class, values, {}, str(path))
    # The fork's clip_ratio_low/high (0.2): no script sets them; run_em.sh's clip_higher_ratio=0.3 only names the run.
    assert (algo.clip_low, algo.clip_high) == (0.2, 0.2)
    # code: data.train_batch_size, max_prompt_length, max_response_length, actor.optim.lr, rollout.n (or, under GVM,
    # stage_2_samples_per_prompt: the budget per prompt).
    assert (train.prompts_per_iteration, train.max_prompt_length, train.max_new_tokens) == (1024, 1024, 3072)
    assert (train.learning_rate, algo.num_samples) == (1e-6, 8)
    # fork defaults.
    assert (train.temperature, train.top_p, train.weight_decay, train.max_grad_norm) == (1.0, 1.0, 0.01, 1.0)
    assert (train.num_train_epochs, train.lr_scheduler_type, train.warmup_ratio) == (1, "constant", 0.0)
    # ppo_mini_batch_size 256 prompts × 8 responses = 2048 rows per step, over 8 GPUs.
    assert train.per_device_train_batch_size * train.gradient_accumulation_steps * 8 == 2048
    if "grpo" in values["algorithm"]:
        assert (algo.beta, algo.scale_rewards) == (0.001, True)  # code: kl_loss_coef; fork: norm_adv_by_std_in_grpo
    if values["algorithm"].startswith("gvm_"):  # code: em/run_em.sh
        assert (algo.probe_samples, algo.gvm_alpha, algo.gvm_beta, algo.grad_params) == (8, 1e-3, 2.0, "embed_tokens")
