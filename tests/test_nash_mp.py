"""Nash-MP: the regression loss's minimiser is the paper's prox step (η, β the paper's); hand-computed values; CLI."""

import pytest
import torch
from helpers import PROMPTS, prefopt_ok, rps_run

from prefopt import games
from prefopt.algorithms.nash_mp import NashMPParams, loss
from prefopt.batch import MiniBatch, PolicyLogps


def test_loss_hand_computed():
    # The paper's η = 0.5, β = 0.25. Δlp_θ = 1, Δlp_k = 0.3, Δlp_ref = −0.6:
    # h = 1 − 0.3/1.5 − (0.5/1.5)·(−0.6) = 1 − 0.2 + 0.2 = 1.0; target = ((0.5/0.25)/1.5)·0.3 = 0.4; loss = 0.36.
    row = {
        "centre_logps": torch.tensor([[-1.0, -1.3]]),
        "ref_logps": torch.tensor([[-2.0, -1.4]]),
        "pref_diff": torch.tensor([0.3]),
    }
    batch = MiniBatch(rows=1, seqs_per_row=2, row=row, token={}, mask=torch.ones(1, 2, 1).bool())
    policy = PolicyLogps(torch.tensor([[[-1.0], [-2.0]]]), torch.ones(1, 2, 1).bool())
    losses, metrics = loss(NashMPParams(eta=0.5, beta=0.25), batch, policy)
    assert losses.tolist() == pytest.approx([0.36])
    assert metrics["pref/h"].tolist() == pytest.approx([1.0])


def _setup(seed: int = 3):
    """A random game (N = 5), π_k and π_ref as logits [N], float64."""
    gen = torch.Generator().manual_seed(seed)
    P = games.random_preference_matrix(5, seed=4)
    theta_k, theta_ref = (
        torch.randn(5, generator=gen, dtype=torch.float64),
        torch.randn(5, generator=gen, dtype=torch.float64),
    )
    return P, theta_k, theta_ref


def _loss_minimiser(cfg: NashMPParams, P, theta_k, theta_ref) -> torch.Tensor:
    """The half step fitted by the regression loss: minimised over free logits on all N² pairs with exact targets
    (Pπ_k)_i − (Pπ_k)_j. Returns the policy [N]."""
    n = len(theta_k)
    lp_k, lp_ref = torch.log_softmax(theta_k, 0), torch.log_softmax(theta_ref, 0)
    wins = P @ torch.softmax(theta_k, 0)
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    i, j = i.flatten(), j.flatten()
    row = {
        "centre_logps": torch.stack([lp_k[i], lp_k[j]], 1),
        "ref_logps": torch.stack([lp_ref[i], lp_ref[j]], 1),
        "pref_diff": wins[i] - wins[j],
    }
    mask = torch.ones(n * n, 2, 1).bool()
    batch = MiniBatch(rows=n * n, seqs_per_row=2, row=row, token={}, mask=mask)
    theta = theta_k.clone().requires_grad_(True)
    optimiser = torch.optim.LBFGS([theta], lr=1, max_iter=500, tolerance_grad=1e-14, tolerance_change=1e-16)

    def closure():
        optimiser.zero_grad()
        lp = torch.log_softmax(theta, 0)
        value = loss(cfg, batch, PolicyLogps(torch.stack([lp[i], lp[j]], 1)[..., None], mask))[0].mean()
        value.backward()
        return value

    optimiser.step(closure)
    return torch.softmax(theta.detach(), 0)


@pytest.mark.parametrize("eta, beta", [(0.45, 0.3), (0.5, 0.1)])
def test_regression_minimiser_is_the_mirror_prox_half_step(eta, beta):
    P, theta_k, theta_ref = _setup()
    fitted = _loss_minimiser(NashMPParams(eta=eta, beta=beta), P, theta_k, theta_ref)
    _, half = games.nash_mp_step(theta_k, P, eta, beta, theta_ref, return_half=True)
    assert torch.allclose(fitted, torch.softmax(half, 0), atol=1e-8)


def _papers_prox_step(P, pi_opp, theta_k, theta_ref, eta: float, beta: float) -> torch.Tensor:
    """argmin_π (1/β)·P(π_opp ≻ π) + KL(π‖π_ref) + (1/η)·KL(π‖π_k), the paper's prox step as docs/algorithms/nash_mp.md
    quotes it, by direct numerical minimisation over the simplex (softmax logits, LBFGS; no closed form used)."""
    lp_k, lp_ref = torch.log_softmax(theta_k, 0), torch.log_softmax(theta_ref, 0)
    z = theta_k.clone().requires_grad_(True)
    optimiser = torch.optim.LBFGS([z], lr=1, max_iter=500, tolerance_grad=1e-14, tolerance_change=1e-16)

    def closure():
        optimiser.zero_grad()
        pi, lp = torch.softmax(z, 0), torch.log_softmax(z, 0)
        value = (pi_opp @ P @ pi) / beta + (pi * (lp - lp_ref)).sum() + (pi * (lp - lp_k)).sum() / eta
        value.backward()
        return value

    optimiser.step(closure)
    return torch.softmax(z.detach(), 0)


def test_eta_is_the_papers_eta():
    """``eta`` is the paper's η: at η = 0.2, β = 0.1 the regression loss's minimiser is the paper's half step (the
    key was η/β before, when 0.2 took a step ten times smaller: 3e-2 off)."""
    P, theta_k, theta_ref = _setup()
    papers = _papers_prox_step(P, torch.softmax(theta_k, 0), theta_k, theta_ref, eta=0.2, beta=0.1)
    fitted = _loss_minimiser(NashMPParams(eta=0.2, beta=0.1), P, theta_k, theta_ref)
    assert torch.allclose(fitted, papers, atol=1e-8), (fitted - papers).abs().max()


def test_nash_mp_step_is_the_papers_prox_steps():
    """prefopt.games.nash_mp_step in the paper's η: the half step is the prox step against π_k, the full step the
    prox step from π_k against π_{k+½}, both the numerical argmin of the paper's objective."""
    P, theta_k, theta_ref = _setup()
    eta, beta = 0.2, 0.1
    full, half = games.nash_mp_step(theta_k, P, eta, beta, theta_ref, return_half=True)
    half_papers = _papers_prox_step(P, torch.softmax(theta_k, 0), theta_k, theta_ref, eta, beta)
    assert torch.allclose(torch.softmax(half, 0), half_papers, atol=1e-8)
    full_papers = _papers_prox_step(P, torch.softmax(half, 0), theta_k, theta_ref, eta, beta)
    assert torch.allclose(torch.softmax(full, 0), full_papers, atol=1e-8)
    with pytest.raises(ValueError, match="beta > 0"):
        games.nash_mp_step(theta_k, P, eta, 0.0, theta_ref)


def test_pg_advantage_and_loss_hand_computed():
    from types import SimpleNamespace

    from prefopt.algorithms.nash_mp import _advantages, pg_loss
    from prefopt.judges.synthetic import MatrixGameJudge

    rps = games.rock_paper_scissors()
    cfg = NashMPParams(beta=0.5, eta=1.0, num_samples=3)
    ctx = SimpleNamespace(algo_cfg=cfg, judge=MatrixGameJudge(rps), references=lambda prompts: None)
    samples = [SimpleNamespace(text=a) for a in "ABC"]
    lp = torch.tensor([[-1.0, -1.0, -1.0]])
    lp_ref = torch.tensor([[-2.0, -1.0, -1.0]])
    lp_centre = torch.tensor([[-1.0, -3.0, -1.0]])
    adv = _advantages(ctx, [SimpleNamespace(prompt="x")], samples, ["B"], lp, lp_ref, lp_centre)
    # wins against B: P(A≻B) = 0, P(B≻B) = ½, P(C≻B) = 1; − β(lp − lp_ref) = (−0.5, 0, 0);
    # − (β/η)(lp − lp_c) = −0.5·(0, 2, 0) = (0, −1, 0)
    raw = torch.tensor([0.0 - 0.5, 0.5 - 1.0, 1.0])
    assert adv[0].tolist() == pytest.approx((raw - raw.mean()).tolist())
    mask = torch.ones(1, 3, 1).bool()
    batch = MiniBatch(rows=1, seqs_per_row=3, row={"advantage": adv}, token={}, mask=mask)
    losses, _ = pg_loss(ctx.algo_cfg, batch, PolicyLogps(lp[..., None], mask))
    assert losses.item() == pytest.approx(-(adv * lp).mean().item())


def test_pg_ema_centre_starts_at_theta_0(tiny_model_dir, tmp_path):
    """One iteration (collect, both prox steps, end_iteration) with ema = e: the centre is e·θ_0 + (1 − e)·θ_1, θ_0
    the weights before the iteration and θ_1 after it (snapshots taken here, the mixture computed by hand)."""
    e = 0.25
    run = rps_run("nash_mp", tiny_model_dir, tmp_path / "run", {"prox_step": "pg", "ema": e})
    run.ctx.start_iteration(0, run.train_prompts[:4])
    theta_0 = run.backend.snapshot()
    run.algorithm.train_step(run.ctx, run.algorithm.collect(run.ctx, run.ctx.prompts))
    run.algorithm.end_iteration(run.ctx)
    theta_1, centre = run.backend.snapshot(), run.ctx.algo_state["centre"]
    assert max(float((theta_1[k] - v).abs().max()) for k, v in theta_0.items()) > 1e-3  # the iteration moved θ
    for k, v in theta_0.items():
        assert torch.allclose(centre[k], e * v + (1 - e) * theta_1[k], atol=1e-7), k


def test_pg_with_ema_centre_runs_through_the_cli_and_resumes_exactly(tmp_path, tiny_model_dir):
    """The EMA centre lives in ctx.algo_state, which every checkpoint saves: a run rolled back to its first
    iteration and resumed ends with the uninterrupted run's weights (a centre lost on resume would restart at θ_1
    and change the second iteration's advantages)."""
    import json

    from helpers import final_weights, roll_back_to

    args = [
        "train",
        "nash_mp",
        "--model_name_or_path",
        tiny_model_dir,
        "--dataset_name",
        PROMPTS,
        "--prox_step",
        "pg",
        "--ema",
        "0.5",
        "--num_iterations",
        "2",
        "--prompts_per_iteration",
        "6",
        "--max_new_tokens",
        "5",
        "--disable_tqdm",
        "--torch_num_threads",
        "1",
        "--learning_rate",
        "1e-2",
    ]
    prefopt_ok(*args, "--output_dir", tmp_path / "run")
    rows = [json.loads(x) for x in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and "loss/nash_mp_pg" in rows[1] and "half/loss/nash_mp_pg" in rows[1]
    assert (tmp_path / "run/checkpoints/iter_001/algo_state_0.pt").exists()  # the EMA centre is checkpointed
    prefopt_ok(*args, "--output_dir", tmp_path / "crashed")
    roll_back_to(tmp_path / "crashed", 0)
    assert "resuming after iteration 0" in prefopt_ok(*args, "--output_dir", tmp_path / "crashed", "--resume").stdout
    full, resumed = final_weights(tmp_path / "run"), final_weights(tmp_path / "crashed")
    assert all(torch.equal(full[k], resumed[k]) for k in full)
