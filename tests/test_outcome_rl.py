"""RAFT, RAFT++ and GRPO: hand-computed losses and advantages, rows from rewards, the CLI on the digit task."""

import json
import math

import pytest
import torch
from helpers import DIGIT_ARGS, DIGIT_TASK, digit_task_run, prefopt_ok

from prefopt.algorithms.grpo import GRPOParams
from prefopt.algorithms.grpo import loss as grpo_loss
from prefopt.algorithms.outcome import importance_weights
from prefopt.algorithms.raft import RAFTParams, raft_loss, raftpp_loss
from prefopt.batch import MiniBatch, PolicyLogps
from prefopt.config import TrainConfig
from prefopt.ops import group_advantages
from prefopt.rollout.engine import Sample


def one_response(token_logps, advantage, **token):
    """A MiniBatch of one response (S = 1) with the given per-token tensors, and the policy's log-probs."""
    lp = torch.tensor([[token_logps]])
    mask = torch.ones_like(lp, dtype=torch.bool)
    tokens = {k: torch.tensor([[v]]) for k, v in token.items()}
    batch = MiniBatch(1, 1, {"advantage": torch.tensor([[advantage]])}, tokens, mask)
    return batch, PolicyLogps(lp, mask)


def test_raft_is_the_mean_token_nll_of_accepted_responses():
    batch, policy = one_response([-1.0, -3.0], 1.0)
    losses, _ = raft_loss(RAFTParams(), batch, policy)
    assert losses.tolist() == pytest.approx([2.0])  # −(−1 − 3)/2


def test_raftpp_clips_the_ratio():
    # Ratios e^{0.5} = 1.649 (clipped to 1.28) and e^{−0.1} = 0.905 (inside); A = 1 > 0 takes the min:
    # −(1.28 + 0.905)/2.
    batch, policy = one_response([-0.5, -1.1], 1.0, old_logps=[-1.0, -1.0])
    losses, metrics = raftpp_loss(RAFTParams(clip_low=0.2, clip_high=0.28), batch, policy)
    assert losses.item() == pytest.approx(-(1.28 + math.exp(-0.1)) / 2, rel=1e-6)
    assert metrics["clip/fraction"].item() == pytest.approx(0.5)


def test_grpo_loss_with_negative_advantage_and_k3_penalty():
    # A = −2: min(s·A, clip(s)·A) keeps the larger |·|: token 1 s = e^{0.5} → −2e^{0.5} (the unclipped one, since
    # −2·1.649 < −2·1.2); token 2 s = e^{−0.5} = 0.607 → clip to 0.8 → −1.6. k3 with log(π_ref/π_θ) = d:
    # e^d − d − 1, d = −0.2 and 0.3; loss = −mean(surrogate − β·k3).
    batch, policy = one_response([-0.5, -1.5], -2.0, old_logps=[-1.0, -1.0], ref_logps=[-0.7, -1.2])
    cfg = GRPOParams(beta=0.1, clip_low=0.2, clip_high=0.2)
    losses, metrics = grpo_loss(cfg, batch, policy)
    k3 = [math.exp(d) - d - 1 for d in (-0.2, 0.3)]
    surrogate = [-2 * math.exp(0.5), -1.6]
    expected = -sum(s - 0.1 * k for s, k in zip(surrogate, k3)) / 2
    assert losses.item() == pytest.approx(expected, rel=1e-6)
    assert metrics["kl/k3"].item() == pytest.approx(sum(k3) / 2, rel=1e-6)


def corrected(mode, clip_min=None, clip_max=3.0):
    """The importance weights of one sample: trainer log-probs [−1, −2, −0.5], the engine's [−1.5, −1, −0.5]."""
    cfg = TrainConfig(
        vllm_importance_sampling_correction=True,
        vllm_importance_sampling_mode=mode,
        vllm_importance_sampling_clip_min=clip_min,
        vllm_importance_sampling_clip_max=clip_max,
    )
    sample = Sample(
        0, 0, [1], [2, 3, 4], "", torch.tensor([-1.0, -2.0, -0.5]), "stop", torch.tensor([-1.5, -1.0, -0.5])
    )
    return importance_weights(cfg, [sample])[0].tolist()


def test_importance_sampling_correction_weights_by_hand():
    # log ρ_t = trainer − engine = [0.5, −1, 0]: ρ_t = [e^0.5 = 1.649, e^−1 = 0.368, 1];
    # the sequence's ρ = e^−0.5 = 0.607.
    e = math.exp
    assert corrected("token_truncate", clip_max=1.5) == pytest.approx([1.5, e(-1), 1.0])
    assert corrected("token_truncate", clip_min=0.5, clip_max=1.5) == pytest.approx([1.5, 0.5, 1.0])
    assert corrected("token_mask", clip_max=1.5) == pytest.approx([0.0, e(-1), 1.0])
    assert corrected("token_mask", clip_min=0.5, clip_max=1.5) == pytest.approx([0.0, 0.0, 1.0])
    assert corrected("sequence_truncate", clip_min=0.7) == pytest.approx([0.7] * 3)
    assert corrected("sequence_mask") == pytest.approx([e(-0.5)] * 3)
    assert corrected("sequence_mask", clip_min=0.7) == [0.0] * 3
    assert importance_weights(TrainConfig(), []) is None  # off by default


@pytest.mark.parametrize("loss", ["grpo", "raftpp"])
def test_the_importance_weight_multiplies_each_tokens_surrogate(loss):
    # A = 2, ratios s = e^{0.05} = 1.051 (inside the clip) on both tokens, weights [1.5, 0.5]:
    # loss = −(2·1.051·1.5 + 2·1.051·0.5)/2 = −2·1.051; the weights' mean is logged.
    batch, policy = one_response([-0.95, -0.95], 2.0, old_logps=[-1.0, -1.0], is_weight=[1.5, 0.5])
    fn, cfg = (grpo_loss, GRPOParams(beta=0.0)) if loss == "grpo" else (raftpp_loss, RAFTParams())
    losses, metrics = fn(cfg, batch, policy)
    assert losses.item() == pytest.approx(-2 * math.exp(0.05), rel=1e-6)
    assert metrics["is/weight"].item() == pytest.approx(1.0)


def test_group_advantages():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0])  # mean ½, population std ½
    assert group_advantages(r, True, 0.0).tolist() == [1.0, -1.0, -1.0, 1.0]
    assert group_advantages(r, False, 0.0).tolist() == [0.5, -0.5, -0.5, 0.5]


def _setup(tmp_path, tiny_model_dir, name, algo_cfg):
    run = digit_task_run(name, algo_cfg, tiny_model_dir, tmp_path / name)
    prompts = run.train_prompts[:48]
    run.ctx.start_iteration(0, prompts)
    return run, prompts


def test_raft_keeps_exactly_the_correct_responses(tmp_path, tiny_model_dir):
    from prefopt.algorithms.raft import collect

    run, prompts = _setup(tmp_path, tiny_model_dir, "raft", RAFTParams(num_samples=6))
    batch = collect(run.ctx, prompts)
    samples = run.ctx.rollouts[0][2].samples
    correct = [s for s in samples if s.text == prompts[s.prompt_index].extra["answer"]]
    assert batch.num_rows == len(correct) > 0
    assert batch.metrics["raft/accepted_fraction"] == pytest.approx(len(correct) / len(samples))
    assert batch.response_ids == [s.response_ids for s in correct]


def test_grpo_rows_are_the_groups_with_mixed_rewards(tmp_path, tiny_model_dir):
    from prefopt.algorithms.grpo import collect

    run, prompts = _setup(tmp_path, tiny_model_dir, "grpo", GRPOParams(num_samples=6, beta=0.0))
    batch = collect(run.ctx, prompts)
    groups = run.ctx.rollouts[0][2].groups()
    mixed = [g for p, g in zip(prompts, groups) if len({s.text == p.extra["answer"] for s in g}) == 2]
    assert batch.num_rows == 6 * len(mixed) > 0
    adv = batch.row_data["advantage"].view(-1, 6)
    assert torch.allclose(adv.mean(1), torch.zeros(len(mixed)), atol=1e-6)
    assert torch.allclose(adv.std(1, unbiased=False), torch.ones(len(mixed)), atol=1e-4)
    assert "ref_logps" not in batch.token_data  # β = 0: no π_ref pass


@pytest.mark.parametrize("name", ["raft", "raftpp", "grpo"])
def test_cli_iteration_on_the_digit_task(tmp_path, tiny_model_dir, name):
    out = tmp_path / name
    args = ["--model_name_or_path", tiny_model_dir, "--dataset_name", DIGIT_TASK, *DIGIT_ARGS, "--output_dir", out]
    args += ["--num_iterations", "2", "--prompts_per_iteration", "32", "--eval_num_prompts", "8", "--disable_tqdm"]
    prefopt_ok("train", name, *args, "--num_samples", "4", "--torch_num_threads", "1")
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and 0 <= rows[-1]["reward/mean"] <= 1 and "eval/reward" in rows[-1]
