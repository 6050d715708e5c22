"""REBEL: hand-computed loss, its minimiser is Hedge on the reward, pair construction, the CLI on the digit task."""

import json

import pytest
import torch
from helpers import DIGIT_ARGS, DIGIT_TASK, REPO, digit_task_run, minibatch, policy, prefopt, prefopt_ok

from prefopt.algorithms.rebel import REBELParams, loss
from prefopt.batch import PolicyLogps


def test_loss_hand_computed():
    # η = 2. log π_θ − log π_t: y: −1 − (−2) = 1, y': −3 − (−2.5) = −0.5, so h = 1.5; η·Δr = 2·0.5 = 1; (1.5 − 1)².
    batch = minibatch(anchor_logps=torch.tensor([[-2.0, -2.5]]), delta=torch.tensor([0.5]))
    losses, metrics = loss(REBELParams(eta=2.0), batch, policy([[-1.0, -3.0]]))
    assert losses.tolist() == pytest.approx([0.25])
    assert metrics["pref/target"].tolist() == pytest.approx([1.0])


def test_exact_minimiser_is_hedge_on_the_reward():
    """Over all ordered pairs of a 4-armed bandit, minimising the loss gives π ∝ π_t·exp(η·r)."""
    torch.manual_seed(0)
    theta_t, r, eta = torch.randn(4, dtype=torch.float64), torch.rand(4, dtype=torch.float64), 1.5
    i, j = torch.meshgrid(torch.arange(4), torch.arange(4), indexing="ij")
    i, j = i.flatten(), j.flatten()
    anchor = torch.log_softmax(theta_t, -1)
    batch = minibatch(anchor_logps=torch.stack([anchor[i], anchor[j]], 1), delta=r[i] - r[j])
    theta = theta_t.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([theta], max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-14)

    def closure():
        optimizer.zero_grad()
        lp = torch.log_softmax(theta, -1)
        mask = torch.ones(16, 2, 1, dtype=torch.bool)
        value = loss(REBELParams(eta=eta), batch, PolicyLogps(torch.stack([lp[i], lp[j]], 1)[..., None], mask))[0]
        value.mean().backward()
        return value.mean()

    optimizer.step(closure)
    expected = torch.softmax(theta_t + eta * r, -1)
    assert torch.allclose(torch.softmax(theta.detach(), -1), expected, atol=1e-8)


def _run(tmp_path, tiny_model_dir, algo_cfg):
    return digit_task_run("rebel", algo_cfg, tiny_model_dir, tmp_path / "run")


def test_missing_eos_reward_and_kl_penalty(tmp_path, tiny_model_dir):
    from prefopt.algorithms.rebel import collect

    run = _run(tmp_path, tiny_model_dir, REBELParams(num_samples=6, kl_coef=0.5, missing_eos_reward=-1.0))
    with torch.no_grad():  # move π_t away from π_ref so that the penalty is not 0
        for p in run.backend.model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    prompts = run.train_prompts[:32]
    run.ctx.start_iteration(0, prompts)
    batch = collect(run.ctx, prompts)
    # One digit and no EOS: every response is cut at max_new_tokens = 1, so every reward becomes −1 whatever the
    # checker said, and the target is the KL penalty alone: −0.5·[(log π_t − log π_ref)(y) − (…)(y')].
    assert all(s.finish_reason == "length" for s in run.ctx.rollouts[0][2].samples)
    ref = run.ctx.anchors.logps(batch.prompt_ids, batch.response_ids, policy="reference").view(-1, 2)
    kl = batch.row_data["anchor_logps"] - ref
    expected = -0.5 * (kl[:, 0] - kl[:, 1])
    assert torch.allclose(batch.row_data["delta"], expected, atol=1e-5)
    assert (batch.row_data["delta"] >= 0).all() and batch.row_data["delta"].max() > 0.01  # best minus worst


def test_best_and_worst_by_reward(tmp_path, tiny_model_dir):
    from prefopt.algorithms.rebel import collect

    run = _run(tmp_path, tiny_model_dir, REBELParams(num_samples=6))
    prompts = run.train_prompts[:32]
    run.ctx.start_iteration(0, prompts)
    batch = collect(run.ctx, prompts)
    groups = run.ctx.rollouts[0][2].groups()
    for k, (p, g) in enumerate(zip(prompts, groups)):
        rewards = [float(s.text == p.extra["answer"]) for s in g]
        assert batch.row_data["delta"][k].item() == max(rewards) - min(rewards)
        winner = batch.response_ids[2 * k]
        assert float(run.tokenizer.decode(winner) == p.extra["answer"]) == max(rewards)


def test_cli_on_the_digit_task_and_the_preference_variant(tmp_path, tiny_model_dir):
    common = ["--model_name_or_path", tiny_model_dir, "--disable_tqdm", "--torch_num_threads", "1"]
    out = tmp_path / "digits"
    args = [
        "--dataset_name",
        DIGIT_TASK,
        "--num_iterations",
        "2",
        "--prompts_per_iteration",
        "32",
        "--eval_num_prompts",
        "8",
    ]
    prefopt_ok("train", "rebel", *common, *DIGIT_ARGS, *args, "--output_dir", out, "--num_samples", "4")
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert 0 <= rows[-1]["reward/mean"] <= 1 and "eval/reward" in rows[-1]
    text = ["--dataset_name", REPO / "configs/data/quickstart_prompts.jsonl", "--max_new_tokens", "4"]
    pref = tmp_path / "pref"
    prefopt_ok(
        "train", "rebel", *common, *text, "--num_iterations", "1", "--prompts_per_iteration", "8", "--output_dir", pref
    )
    (row,) = [json.loads(x) for x in (pref / "metrics.jsonl").read_text().splitlines()]
    assert "pref/first_wins" in row and abs(row["pref/target"]) <= 0.5


def test_rule_judge_without_answer_column_is_one_line(tmp_path, tiny_model_dir):
    result = prefopt(
        "train",
        "rebel",
        "--model_name_or_path",
        tiny_model_dir,
        "--dataset_name",
        DIGIT_TASK,
        "--judge",
        "exact_match",
        "--output_dir",
        tmp_path / "run",
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "prefopt: error: judge 'exact_match' checks responses against reference answers: set answer_column"
    )
    assert not (tmp_path / "run").exists()


def _cut_only(run, truncated: set[tuple[int, int]]):
    """Make ``run``'s rollouts report EOS ("stop") for every sample but the (prompt position, sample index) pairs in
    ``truncated``, which report "length" (cut at max_new_tokens). On the digit task every one-token response is
    "length" otherwise."""
    sample = run.ctx.sample

    def with_reasons(prompts, n, **kwargs):
        batch = sample(prompts, n, **kwargs)
        for s in batch.samples:
            s.finish_reason = "length" if (s.prompt_index, s.sample_index) in truncated else "stop"
        return batch

    run.ctx.sample = with_reasons


@pytest.mark.parametrize("drop", [True, False])
def test_prompts_with_a_truncated_response_are_dropped(tmp_path, tiny_model_dir, drop):
    """The UltraFeedback pipeline (filter_tokenize.py) drops a prompt when any of its K responses does not fit the
    generation cap with its end-of-turn token, i.e. was cut at max_new_tokens: with the filter on such a prompt gives
    no row, whichever of its responses was cut (here prompt 1's best-or-worst candidates and prompt 4's third)."""
    from prefopt.algorithms.rebel import collect

    run = _run(tmp_path, tiny_model_dir, REBELParams(num_samples=4, drop_truncated_completions=drop))
    _cut_only(run, {(1, 0), (1, 3), (4, 2)})
    prompts = run.train_prompts[:8]
    run.ctx.start_iteration(0, prompts)
    batch = collect(run.ctx, prompts)
    kept = [k for k in range(8) if not drop or k not in (1, 4)]
    assert batch.num_rows == len(kept)
    groups = run.ctx.rollouts[0][2].groups()
    for row, k in enumerate(kept):
        assert batch.prompt_ids[2 * row] == prompts[k].prompt_ids
        rewards = [float(s.text == prompts[k].extra["answer"]) for s in groups[k]]
        assert batch.row_data["delta"][row].item() == max(rewards) - min(rewards)
    assert batch.metrics.get("pref/pairs_kept") == (0.75 if drop else None)
    # reward/mean is every response's, before any is dropped (as the pipeline ranks them all before filtering).
    assert batch.metrics["reward/mean"] == pytest.approx(
        sum(float(s.text == p.extra["answer"]) for p, g in zip(prompts, groups) for s in g) / 32
    )


def test_a_process_whose_prompts_are_all_dropped_gives_no_rows(tmp_path, tiny_model_dir):
    from prefopt.algorithms.rebel import collect

    run = _run(tmp_path, tiny_model_dir, REBELParams(num_samples=2, drop_truncated_completions=True))
    prompts = run.train_prompts[:4]
    run.ctx.start_iteration(0, prompts)
    batch = collect(run.ctx, prompts)  # one digit and no EOS: every response is cut at max_new_tokens = 1
    assert batch.num_rows == 0 and batch.row_data["delta"].shape == (0,) and batch.metrics["pref/pairs_kept"] == 0
