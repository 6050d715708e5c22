"""Nash-MD: its opponent is drawn from the geometric mixture with π_ref, through the trainer, and the CLI runs it."""

import json

import pytest
import torch
from helpers import prefopt, prefopt_ok

from prefopt.tiny import BANDIT_PROMPT, write_bandit_model


@pytest.fixture
def bandit(tmp_path):
    model = tmp_path / "bandit"
    write_bandit_model(model, 3, seed=1)
    data = tmp_path / "bandit.jsonl"
    data.write_text("".join(json.dumps({"prompt": BANDIT_PROMPT}) + "\n" for _ in range(64)))
    return model, data


def test_opponent_is_the_geometric_mixture_of_the_moved_policy_and_the_reference(bandit, tmp_path):
    from prefopt.algorithms import get_algorithm
    from prefopt.algorithms.nash_md import NashMDParams, collect
    from prefopt.build import build_run
    from prefopt.config import TrainConfig

    model, data = bandit
    cfg = TrainConfig(
        model_name_or_path=str(model),
        dataset_name=str(data),
        output_dir=str(tmp_path / "run"),
        judge="matrix_game",
        game="rps",
        optim="sgd",
        learning_rate=2.0,
        prompts_per_iteration=64,
        per_device_train_batch_size=64,
        disable_tqdm=True,
    )
    mu = 0.4
    run = build_run("nash_md", cfg, NashMDParams(beta=0.1, mixture=mu, normalize_logprobs=False))
    assert run.algorithm is get_algorithm("nash_md")
    run.ctx.start_iteration(0, run.train_prompts)
    run.ctx.optimise(collect(run.ctx, run.ctx.prompts))  # π_θ moves away from π_ref
    run.ctx.start_iteration(1, run.train_prompts)
    collect(run.ctx, run.ctx.prompts)
    actions = run.ctx.sampling.allowed_token_ids
    prompt = run.train_prompts[0].prompt_ids
    log_pi = run.ctx.anchors.logps([prompt] * 3, [[a] for a in actions], policy="current")
    log_ref = run.ctx.anchors.logps([prompt] * 3, [[a] for a in actions], policy="reference")
    assert (log_pi - log_ref).abs().max() > 0.1
    mixture = torch.log_softmax((1 - mu) * log_pi + mu * log_ref, -1)
    (opponents,) = [batch for stream, _, batch in run.ctx.rollouts if stream == "policy/opponent"]
    (pairs,) = [batch for stream, _, batch in run.ctx.rollouts if stream == "policy/pair"]
    for s in opponents.samples:
        assert s.token_logps.item() == pytest.approx(mixture[actions.index(s.response_ids[0])].item(), abs=1e-5)
    for s in pairs.samples:  # y, y' still come from the policy itself
        assert s.token_logps.item() == pytest.approx(log_pi[actions.index(s.response_ids[0])].item(), abs=1e-5)


def test_cli_iteration_on_text_and_bad_mixture(tmp_path, tiny_model_dir):
    base = ["train", "nash_md", "--config", "configs/tiny/nash_md.yaml", "--model_name_or_path", tiny_model_dir]
    out = tmp_path / "run"
    prefopt_ok(*base, "--output_dir", out, "--num_iterations", "1", "--prompts_per_iteration", "8")
    (row,) = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert row["loss/online_ipo"] > 0 and (out / "final/model.safetensors").exists()
    bad = prefopt(*base, "--output_dir", tmp_path / "bad", "--mixture", "1.5")
    assert bad.returncode == 2 and "config key 'mixture' must be in [0, 1], got 1.5" in bad.stderr
    assert not (tmp_path / "bad").exists()
