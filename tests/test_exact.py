"""game_exact (prefopt.exact): the rows of a single-token game as exact expectations, weighted, and the loop's row
weights. The trainers' convergence under it is in test_conformance.py."""

import math

import pytest
import torch

from prefopt.exact import sampler_probs
from prefopt.game_metrics import action_probs
from prefopt.rollout.engine import SamplingParams


def test_sampler_probs_by_hand():
    logps = torch.tensor([[0.5, 0.3, 0.2]], dtype=torch.float64).log()
    assert sampler_probs(logps, SamplingParams()).tolist()[0] == pytest.approx([0.5, 0.3, 0.2])
    # Temperature 2 takes square roots, top-k 2 drops the last action: q ∝ (√0.5, √0.3, 0).
    q = sampler_probs(logps, SamplingParams(temperature=2.0, top_k=2)).tolist()[0]
    total = math.sqrt(0.5) + math.sqrt(0.3)
    assert q == pytest.approx([math.sqrt(0.5) / total, math.sqrt(0.3) / total, 0.0])
    assert sampler_probs(logps, SamplingParams(temperature=0.0)).tolist()[0] == [1.0, 0.0, 0.0]


def _run(tiny_model_dir, tmp_path, name, algo_overrides=None, **overrides):
    from prefopt.algorithms import get_algorithm
    from prefopt.build import build_run
    from prefopt.config import TrainConfig

    settings = dict(
        model_name_or_path=tiny_model_dir,
        dataset_name="configs/data/quickstart_prompts.jsonl",
        output_dir=str(tmp_path / "run"),
        judge="matrix_game",
        game="rps",
        game_exact=True,
        optim="sgd",
        lr_scheduler_type="constant",
        learning_rate=0.05,
        per_device_train_batch_size=64,
        disable_tqdm=True,
    )
    cfg = TrainConfig(**(settings | overrides))
    run = build_run(name, cfg, get_algorithm(name).config_class(**(algo_overrides or {})))
    run.ctx.start_iteration(0, run.train_prompts[:2])
    return run


def _policy(run) -> torch.Tensor:
    """π [P, N] of the iteration's prompts, read off the model as the game metrics do."""
    ctx = run.ctx
    ids = [p.prompt_ids for p in ctx.prompts]
    return action_probs(ctx.backend.model, ids, ctx.sampling.allowed_token_ids, run.tokenizer.pad_token_id, "cpu")


def test_online_ipo_exact_rows_are_every_pair_with_its_probability(tiny_model_dir, tmp_path):
    """Rows (a, b) for every ordered pair of rock, paper, scissors at each prompt, weight π_a π_b, target
    (Pπ)_a − (Pπ)_b: the expectation of P(a ≻ y″) − P(b ≻ y″) over the opponent y″ ~ π."""
    from prefopt.algorithms.opponent import collect_against_opponent

    run = _run(tiny_model_dir, tmp_path, "online_ipo", {"pair_temperature": 1.0, "pair_top_k": 0})
    batch = collect_against_opponent(run.ctx, run.ctx.prompts)
    pi, P = _policy(run), run.judge.game_matrix().double()
    wins = pi @ P.T  # [prompts, N]: P(a ≻ π)
    assert batch.num_rows == 2 * 9
    torch.testing.assert_close(batch.row_weights, (pi[:, :, None] * pi[:, None, :]).flatten(), atol=1e-6, rtol=0)
    expected = (wins[:, :, None] - wins[:, None, :]).flatten().float()
    torch.testing.assert_close(batch.row_data["pref_diff"], expected, atol=1e-6, rtol=0)
    # Each row's sampling log-probs are the policy's own: log π_a, log π_b.
    first = batch.row_data["sample_logps"][:, 0].view(2, 3, 3)[:, :, 0]
    torch.testing.assert_close(first.double(), pi.log(), atol=1e-5, rtol=0)
    assert [s for s, _, _ in run.ctx.rollouts] == ["policy/pair", "policy/opponent"]


def test_inpo_exact_rows_carry_the_soft_label(tiny_model_dir, tmp_path):
    from prefopt.algorithms.inpo import collect

    run = _run(tiny_model_dir, tmp_path, "inpo", {"eta": 1.0, "tau": 0.1, "num_samples": 2})
    batch = collect(run.ctx, run.ctx.prompts)
    pi, P = _policy(run), run.judge.game_matrix()
    torch.testing.assert_close(batch.row_data["label"], P.float().flatten().repeat(2))
    torch.testing.assert_close(batch.row_weights, (pi[:, :, None] * pi[:, None, :]).flatten(), atol=1e-6, rtol=0)


def test_weighted_rows_step_as_their_weighted_mean(tiny_model_dir, tmp_path):
    """A step on rows weighted (2, 0) (mean 1) is the step on the first row alone: the loop's loss is the weighted
    mean, and a zero weight removes a row."""
    from prefopt.algorithms.opponent import collect_against_opponent

    run = _run(tiny_model_dir, tmp_path, "online_ipo", {"pair_temperature": 1.0, "pair_top_k": 0})
    batch = collect_against_opponent(run.ctx, run.ctx.prompts).select([1, 5])
    start = run.backend.snapshot()
    batch.row_weights = torch.tensor([0.4, 0.0])
    run.ctx.optimise(batch)
    weighted = run.backend.snapshot()
    run.backend.restore(start)
    alone = batch.select([0])
    alone.row_weights = None
    run.ctx.optimise(alone)
    assert any(not torch.equal(start[k], v) for k, v in weighted.items())
    for key, value in run.backend.snapshot().items():
        torch.testing.assert_close(value, weighted[key], atol=1e-7, rtol=0)


def test_collect_that_samples_is_refused_under_game_exact(tiny_model_dir, tmp_path):
    run = _run(tiny_model_dir, tmp_path, "online_ipo")
    with pytest.raises(RuntimeError, match="outside the Context's estimators"):
        run.ctx.sample(run.ctx.prompts, 2)
