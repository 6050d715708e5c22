"""Iterative DPO and APO: hand-computed DPO loss; α = 0 reproduces the base methods exactly; the extrapolations."""

import math
from pathlib import Path

import pytest
import torch
from helpers import REPO, prefopt_ok, run_weights
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


class _Iterates:
    """Records, per round t, the weights it starts from (θ̂_t) and its proximal iterate θ_{t+1} (the weights after its
    last optimizer step, before end_iteration): every trainable tensor, by name."""

    def __init__(self, stop_after=None):
        self.starts, self.proximal, self.stop_after = [], [], stop_after

    @staticmethod
    def _weights(model):
        return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    def on_iteration_begin(self, args, state, control, model=None, **kw):
        self.starts.append(self._weights(model))

    def on_step_end(self, args, state, control, model=None, **kw):
        self.last = self._weights(model)

    def on_iteration_end(self, args, state, control, iteration=None, **kw):
        self.proximal.append(self.last)
        control.should_training_stop = iteration == self.stop_after


def _apo_config(out):
    import prefopt

    values = dict(output_dir=str(out), dataset_name=str(REPO / "configs/data/quickstart_prompts.jsonl"),
                  judge="matrix_game", game="rps", alpha=0.5, momentum="params", beta=0.5, num_samples=4,
                  max_new_tokens=2, prompts_per_iteration=8, per_device_train_batch_size=4, optim="sgd",
                  learning_rate=0.05, lr_scheduler_type="constant", num_iterations=3, disable_tqdm=True)  # fmt: skip
    return prefopt.APOConfig(**values)


def test_parameter_momentum_is_nesterov_on_the_proximal_iterates_and_resumes_exactly(tiny_model_dir, tmp_path):
    """Through the trainer on rock-paper-scissors, 3 rounds of α = 0.5: round t starts from
    θ̂_t = θ_t + α(θ_t − θ_{t−1}), θ_t the proximal iterates (θ_{−1} = θ_0 = the initial weights):
    θ_{t+1} = apo_step(θ_t, θ_{t−1}) with the round's measured displacement θ_{t+1} − θ̂_t as its step r/β, and
    final/ holds θ̂_3. Extrapolating from the weights a round started from (θ̂_t in place of θ_t) only scales each
    step by 1 + α: it fails from θ̂_2 on. A run stopped after round 1 and resumed ends with the same weights (the
    stored θ_2 survives the checkpoint)."""
    import prefopt
    from prefopt.games import apo_step

    alpha, beta = 0.5, 0.5
    rec = _Iterates()
    prefopt.APOTrainer(tiny_model_dir, args=_apo_config(tmp_path / "whole"), callbacks=[rec]).train()
    theta = [rec.starts[0], *rec.proximal]  # θ_0 … θ_3
    for t, start in enumerate(rec.starts):
        for name, now in theta[t + 1].items():
            step = now - start[name]  # the round's proximal step, r/β in apo_step's units
            expected = apo_step(theta[t][name], theta[max(t - 1, 0)][name], beta * step, beta, alpha)
            assert torch.allclose(now, expected, atol=1e-6), (t, name, float((now - expected).abs().max()))
    moved = [max(float((theta[t + 1][k] - theta[t][k]).abs().max()) for k in theta[0]) for t in range(3)]
    assert min(moved) > 1e-3, moved  # every round moves the weights, so a wrong θ_{t−1} shows
    final = run_weights(tmp_path / "whole")
    for name, now in theta[3].items():
        if name in final:
            assert torch.allclose(final[name], now + alpha * (now - theta[2][name]), atol=1e-6), name
    stopped = prefopt.APOTrainer(tiny_model_dir, args=_apo_config(tmp_path / "run"), callbacks=[_Iterates(1)])
    stopped.train()
    prefopt.APOTrainer(tiny_model_dir, args=_apo_config(tmp_path / "run")).train(resume_from_checkpoint=True)
    resumed = run_weights(tmp_path / "run")
    assert all(torch.equal(final[k], resumed[k]) for k in final)


def test_lora_ga_initialisation_retakes_the_initial_iterates_snapshot(tiny_model_dir, tmp_path):
    """LoRA-GA collects the first iteration before it sets A_0, B_0 and offsets the base weights: a snapshot APO kept
    then (θ_0, as adapter tensors) must be of the initialised adapter, which with the offset is the same policy;
    the pre-initialisation adapter with the offset base is another one."""
    from prefopt.algorithms.apo import APOParams
    from prefopt.build import build_run
    from prefopt.config import TrainConfig

    cfg = TrainConfig(
        model_name_or_path=tiny_model_dir,
        dataset_name=str(REPO / "configs/data/quickstart_prompts.jsonl"),
        output_dir=str(tmp_path / "run"),
        adapter="lora_ga",
        prompts_per_iteration=4,
        max_new_tokens=4,
        disable_tqdm=True,
        torch_num_threads=1,
    )
    run = build_run("apo", cfg, APOParams(momentum="params", num_samples=2))
    kept, now = run.ctx.algo_state["previous"], run.backend.snapshot()
    assert kept.keys() == now.keys() and all(torch.equal(kept[k], now[k]) for k in now)
