"""Online IPO and EGPO: hand-computed loss, optimizer snapshot round trip, both EGPO phases start from θ_t."""

import os

import pytest
import torch
from helpers import REPO

from prefopt.algorithms.online_ipo import OnlineIPOParams, loss
from prefopt.batch import MiniBatch, PolicyLogps


def test_online_ipo_loss_hand_computed():
    # β = 0.5, sums (no length normalisation). Δ log π_θ = (−1) − (−3) = 2, Δ log π_ref = (−2) − (−2.5) = 0.5,
    # h = 1.5; target (P(y≻y'') − P(y'≻y''))/β = 0.25/0.5 = 0.5; loss (1.5 − 0.5)² = 1.
    row = {"ref_logps": torch.tensor([[-2.0, -2.5]]), "pref_diff": torch.tensor([0.25])}
    batch = MiniBatch(rows=1, seqs_per_row=2, row=row, token={}, mask=torch.ones(1, 2, 1).bool())
    logps = torch.tensor([[-1.0, -3.0]])
    policy = PolicyLogps(logps.unsqueeze(-1), torch.ones(1, 2, 1).bool())
    losses, metrics = loss(OnlineIPOParams(beta=0.5, normalize_logprobs=False), batch, policy)
    assert losses.tolist() == pytest.approx([1.0])
    assert metrics["pref/h"].tolist() == pytest.approx([1.5])
    # Length-normalised: the same token log-probs spread over 2 tokens halve each sequence's log-prob.
    two_tokens = PolicyLogps(torch.tensor([[[-0.5, -0.5], [-1.5, -1.5]]]), torch.ones(1, 2, 2).bool())
    losses, _ = loss(OnlineIPOParams(beta=0.5, normalize_logprobs=True), batch, two_tokens)
    assert losses.tolist() == pytest.approx([((-0.5 + 1.5) - 0.5 - 0.5) ** 2])


def _setup(tiny_model_dir, tmp_path, name, deepspeed=None, **overrides):
    from prefopt.algorithms import get_algorithm
    from prefopt.build import build_run
    from prefopt.config import TrainConfig

    cfg = TrainConfig(
        model_name_or_path=tiny_model_dir,
        dataset_name="configs/data/quickstart_prompts.jsonl",
        output_dir=str(tmp_path / "run"),
        judge="matrix_game",
        game="rps",
        learning_rate=0.05,
        prompts_per_iteration=4,
        per_device_train_batch_size=8,
        disable_tqdm=True,
        deepspeed=None if deepspeed is None else str(REPO / f"configs/deepspeed/{deepspeed}.json"),
        **overrides,
    )
    return build_run(name, cfg, get_algorithm(name).config_class(beta=0.5))


@pytest.fixture
def restored_environ():
    """An in-process DeepSpeed run sets launcher variables (RANK, MASTER_PORT, ...): put the environment back."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.mark.parametrize("deepspeed", [None, "zero2", "zero3"])
def test_optimizer_snapshot_round_trip(tiny_model_dir, tmp_path, deepspeed, restored_environ):
    """Weights and optimizer state go back exactly; under ZeRO also the fp32 master, or the next step would start
    from the discarded weights: a step after the restore equals the step taken from the snapshot."""
    from prefopt.algorithms.opponent import collect_against_opponent

    run = _setup(tiny_model_dir, tmp_path, "online_ipo", deepspeed, lr_scheduler_type="constant")
    run.ctx.start_iteration(0, run.train_prompts[:4])
    batch = collect_against_opponent(run.ctx, run.ctx.prompts)
    run.ctx.optimise(batch)  # one step so that AdamW has moments
    params, state = run.backend.snapshot(), run.backend.snapshot_optimizer()
    run.ctx.optimise(batch)
    after_first = run.backend.snapshot()
    assert any(not torch.equal(params[k], v) for k, v in after_first.items())
    run.ctx.optimise(batch)  # move further away, so the restore has something to undo
    run.backend.restore(params)
    run.backend.restore_optimizer(state)
    assert all(torch.equal(params[k], v) for k, v in run.backend.snapshot().items())
    assert _nested_equal(state, run.backend.snapshot_optimizer())
    run.ctx.optimise(batch)
    assert all(torch.equal(after_first[k], v) for k, v in run.backend.snapshot().items())


def _nested_equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_nested_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_nested_equal(x, y) for x, y in zip(a, b))
    return a == b


def test_egpo_full_step_starts_from_theta_t(tiny_model_dir, tmp_path, monkeypatch):
    from prefopt.algorithms import egpo

    run = _setup(tiny_model_dir, tmp_path, "egpo")
    run.ctx.start_iteration(0, run.train_prompts[:4])
    real, captured = egpo.collect_against_opponent, []

    def spy(ctx, prompts, stream="policy"):  # the real collect, its batch kept for the replay below
        captured.append(real(ctx, prompts, stream))
        return captured[-1]

    monkeypatch.setattr(egpo, "collect_against_opponent", spy)
    theta_t, optimizer_t = run.backend.snapshot(), run.backend.snapshot_optimizer()
    run.algorithm.train_step(run.ctx, real(run.ctx, run.ctx.prompts))
    theta_next = run.backend.snapshot()
    (full_batch,) = captured  # drawn with the half-step model
    assert all(int(v["step"]) == 1 for v in run.backend.optimizer.state_dict()["state"].values())
    # Replaying only the full step from θ_t (and θ_t's optimizer state) gives exactly θ_{t+1}.
    run.backend.restore(theta_t)
    run.backend.restore_optimizer(optimizer_t)
    run.ctx.optimise(full_batch)
    assert all(torch.equal(theta_next[k], v) for k, v in run.backend.snapshot().items())
