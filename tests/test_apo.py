"""Iterative DPO and APO: hand-computed DPO loss; α = 0 reproduces the base methods exactly; the extrapolations."""

import math
from pathlib import Path

import pytest
import torch
from helpers import REPO, prefopt_ok
from safetensors.torch import load_file

from prefopt.algorithms.dpo import dpo_loss

COMMON = [
    "--dataset_name",
    REPO / "configs/data/quickstart_prompts.jsonl",
    "--max_new_tokens",
    "6",
    "--prompts_per_iteration",
    "8",
    "--num_iterations",
    "2",
    "--num_samples",
    "4",
    "--learning_rate",
    "1e-2",
    "--disable_tqdm",
    "true",
    "--torch_num_threads",
    "1",
]


def test_dpo_loss_hand_computed():
    # β = 0.5: log-ratios w = (−1) − (−2) = 1, l = (−3) − (−2) = −1; margin 0.5·(1 − (−1)) = 1; loss = log(1 + e^−1).
    losses, logratios, margin = dpo_loss(0.5, torch.tensor([[-1.0, -3.0]]), torch.tensor([[-2.0, -2.0]]))
    assert losses.item() == pytest.approx(math.log(1 + math.exp(-1)))
    assert margin.item() == pytest.approx(1.0) and logratios.tolist() == [[1.0, -1.0]]


def train(tiny_model_dir, out, name, *extra):
    prefopt_ok("train", name, "--model_name_or_path", tiny_model_dir, "--output_dir", out, *COMMON, *extra)
    return load_file(str(Path(out) / "final/model.safetensors"))


@pytest.mark.parametrize(
    "base, baseline, extra",
    # The same mechanism on two bases; DPO's in the slow suite.
    [pytest.param("dpo", "dpo", ["--beta", "0.5"], marks=pytest.mark.slow), ("sppo", "sppo", ["--eta", "20"])],
)
def test_alpha_zero_reproduces_the_base_method_exactly(tiny_model_dir, tmp_path, base, baseline, extra):
    apo = train(tiny_model_dir, tmp_path / "apo", "apo", "--alpha", "0", "--base", base, *extra)
    ref = train(tiny_model_dir, tmp_path / "base", baseline, *extra)
    assert all(torch.equal(apo[k], ref[k]) for k in ref)
    accelerated = train(tiny_model_dir, tmp_path / "apo3", "apo", "--alpha", "0.3", "--base", base, *extra)
    assert any(not torch.equal(accelerated[k], ref[k]) for k in ref)  # the extrapolation changes the second round


def test_parameter_momentum_extrapolates_the_weights(tiny_model_dir, tmp_path):
    from prefopt.algorithms.apo import APOParams, end_iteration
    from prefopt.build import build_run
    from prefopt.config import TrainConfig

    cfg = TrainConfig(
        model_name_or_path=tiny_model_dir,
        dataset_name=str(REPO / "configs/data/quickstart_prompts.jsonl"),
        output_dir=str(tmp_path / "run"),
        disable_tqdm=True,
    )
    run = build_run("apo", cfg, APOParams(alpha=0.5, momentum="params"))
    start = run.backend.snapshot()
    run.ctx.algo_state["previous"] = start
    moved = {k: v + 0.01 for k, v in start.items()}  # θ_{t+1} = θ_t + 0.01
    run.backend.restore(moved)
    end_iteration(run.ctx)
    assert all(torch.allclose(v, start[k] + 0.015, atol=1e-6) for k, v in run.backend.snapshot().items())
