"""Online IPO and EGPO: hand-computed loss, optimizer snapshot round trip, both EGPO phases start from θ_t."""

import os

import pytest
import torch
from helpers import REPO, rps_run

from prefopt.algorithms.online_ipo import OnlineIPOParams, loss
from prefopt.batch import MiniBatch, PolicyLogps

PROMPTS = REPO / "configs/data/quickstart_prompts.jsonl"


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


def _setup(tiny_model_dir, tmp_path, name, deepspeed=None, algo=None, **overrides):
    return rps_run(name, tiny_model_dir, tmp_path / "run", algo, deepspeed, **overrides)


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


def _prompts_by_stream(ctx) -> dict[str, list[int]]:
    """The dataset rows each sampling stream of the iteration drew for (every ``ctx.sample`` call is recorded)."""
    return {stream: [p.index for p in prompts] for stream, prompts, _ in ctx.rollouts}


@pytest.mark.parametrize("schedule", ["split", "reuse"])
def test_egpo_full_step_takes_the_next_batch_of_prompts(tiny_model_dir, tmp_path, schedule):
    """The EGPO repository's trainer draws the odd (full) step's prompts from the next batch of its dataloader. With
    ``full_step_prompts: split`` (the default) the iteration's 8 prompts are those two batches: the half step samples
    and is judged on the first 4, the full step on the other 4. ``reuse`` samples both steps on all 8."""
    from prefopt.context import collect_shard

    run = _setup(tiny_model_dir, tmp_path, "egpo", algo={"full_step_prompts": schedule}, prompts_per_iteration=8)
    batch, _ = collect_shard(run.ctx, run.algorithm, run.train_prompts, 0)
    stats = run.algorithm.train_step(run.ctx, batch)
    rows = [p.index for p in run.ctx.iteration_prompts]
    assert len(set(rows)) == 8
    first, second = (rows[:4], rows[4:]) if schedule == "split" else (rows, rows)
    assert _prompts_by_stream(run.ctx) == {
        "policy/pair": first,
        "policy/opponent": first,
        "half_step/pair": second,
        "half_step/opponent": second,
    }
    assert batch.num_rows == len(first)
    # One optimizer step per phase (8 rows fit the global batch): the two phases' steps, nothing else.
    assert run.optimisation.state["global_step"] == 2 and "half/loss/total" in stats


@pytest.mark.parametrize("n, world", [(7, 1), (7, 2), (7, 3), (8, 2), (8, 4), (9, 4)])
def test_split_batches_do_not_depend_on_the_number_of_processes(n, world):
    """Each process samples its contiguous share of each batch, so the shares gathered in rank order (what the
    optimisation trains on) are the iteration's first ⌈n/2⌉ prompts for the half step and the rest for the full
    step, with any number of processes."""
    from prefopt.algorithms.egpo import step_prompts

    halves = [[], []]
    for rank in range(world):
        ctx = _split_context(list(range(n)), world, rank)
        for step in (0, 1):
            share = step_prompts(ctx, step)
            assert share, (rank, step)  # no process is left without prompts
            halves[step] += share
    assert halves == [list(range((n + 1) // 2)), list(range((n + 1) // 2, n))]


def _split_context(iteration_prompts, world, rank, schedule="split", game_exact=False):
    from types import SimpleNamespace

    return SimpleNamespace(
        algo_cfg=SimpleNamespace(full_step_prompts=schedule),
        cfg=SimpleNamespace(game_exact=game_exact),
        iteration_prompts=iteration_prompts,
        prompts=iteration_prompts,  # the block of a one-process run
        backend=SimpleNamespace(world_size=world, rank=rank),
    )


@pytest.mark.parametrize("n, world", [(1, 1), (3, 2), (7, 4)])
def test_too_few_prompts_to_split_is_a_config_error(n, world):
    from prefopt.algorithms.egpo import step_prompts
    from prefopt.errors import ConfigError

    with pytest.raises(ConfigError, match="^config key 'prompts_per_iteration'.*full_step_prompts: reuse") as err:
        step_prompts(_split_context(list(range(n)), world, 0), 0)
    assert "\n" not in str(err.value) and f"{2 * world}" in str(err.value)
    # reuse, and game_exact (exact expectations on the iteration's prompts), need no split.
    assert step_prompts(_split_context(list(range(n)), world, 0, schedule="reuse"), 1) == list(range(n))
    assert step_prompts(_split_context(list(range(n)), world, 0, game_exact=True), 1) == list(range(n))


def test_egpo_cli_refuses_one_prompt_per_iteration_in_one_line(tiny_model_dir, tmp_path):
    from helpers import prefopt

    result = prefopt("train", "egpo", "--model_name_or_path", tiny_model_dir, "--dataset_name", PROMPTS,
                     "--output_dir", tmp_path / "run", "--prompts_per_iteration", "1", "--max_new_tokens", "4",
                     "--disable_tqdm", "--torch_num_threads", "1")  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("prefopt: error: config key 'prompts_per_iteration': full_step_prompts: split")
    assert "need at least 2, got 1" in line
