"""Nash-MP: the regression loss's minimiser is the tabular mirror-prox iterate; hand-computed value; CLI."""

import pytest
import torch
from helpers import PROMPTS, prefopt_ok

from prefopt import games
from prefopt.algorithms.nash_mp import NashMPParams, loss
from prefopt.batch import MiniBatch, PolicyLogps


def test_loss_hand_computed():
    # η = 2, β = 0.25: ηβ = 0.5. Δlp_θ = 1, Δlp_k = 0.3, Δlp_ref = −0.6:
    # h = 1 − 0.3/1.5 − (0.5/1.5)·(−0.6) = 1 − 0.2 + 0.2 = 1.0; target = (2/1.5)·0.3 = 0.4; loss = 0.36.
    row = {
        "centre_logps": torch.tensor([[-1.0, -1.3]]),
        "ref_logps": torch.tensor([[-2.0, -1.4]]),
        "pref_diff": torch.tensor([0.3]),
    }
    batch = MiniBatch(rows=1, seqs_per_row=2, row=row, token={}, mask=torch.ones(1, 2, 1).bool())
    policy = PolicyLogps(torch.tensor([[[-1.0], [-2.0]]]), torch.ones(1, 2, 1).bool())
    losses, metrics = loss(NashMPParams(eta=2.0, beta=0.25), batch, policy)
    assert losses.tolist() == pytest.approx([0.36])
    assert metrics["pref/h"].tolist() == pytest.approx([1.0])


@pytest.mark.parametrize("eta, beta", [(1.5, 0.3), (5.0, 0.1)])
def test_regression_minimiser_is_the_mirror_prox_half_step(eta, beta):
    """Tabular: minimise the loss over free logits on all N² pairs with exact targets (Pπ_k)_i − (Pπ_k)_j."""
    gen = torch.Generator().manual_seed(3)
    n = 5
    P = games.random_preference_matrix(n, seed=4)
    theta_k, theta_ref = (
        torch.randn(n, generator=gen, dtype=torch.float64),
        torch.randn(n, generator=gen, dtype=torch.float64),
    )
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
        value = loss(
            NashMPParams(eta=eta, beta=beta), batch, PolicyLogps(torch.stack([lp[i], lp[j]], 1)[..., None], mask)
        )[0].mean()
        value.backward()
        return value

    optimiser.step(closure)
    _, half = games.nash_mp_step(theta_k, P, eta, beta, theta_ref, return_half=True)
    assert torch.allclose(torch.softmax(theta.detach(), 0), torch.softmax(half, 0), atol=1e-8)


def test_pg_advantage_and_loss_hand_computed():
    from types import SimpleNamespace

    from prefopt.algorithms.nash_mp import _advantages, pg_loss
    from prefopt.judges.synthetic import MatrixGameJudge

    rps = games.rock_paper_scissors()
    cfg = NashMPParams(beta=0.5, eta=2.0, num_samples=3)
    ctx = SimpleNamespace(algo_cfg=cfg, judge=MatrixGameJudge(rps), references=lambda prompts: None)
    samples = [SimpleNamespace(text=a) for a in "ABC"]
    lp = torch.tensor([[-1.0, -1.0, -1.0]])
    lp_ref = torch.tensor([[-2.0, -1.0, -1.0]])
    lp_centre = torch.tensor([[-1.0, -3.0, -1.0]])
    adv = _advantages(ctx, [SimpleNamespace(prompt="x")], samples, ["B"], lp, lp_ref, lp_centre)
    # wins against B: P(A≻B) = 0, P(B≻B) = ½, P(C≻B) = 1; − β(lp − lp_ref) = (−0.5, 0, 0); − (lp − lp_c)/η = (0, −1, 0)
    raw = torch.tensor([0.0 - 0.5, 0.5 - 1.0, 1.0])
    assert adv[0].tolist() == pytest.approx((raw - raw.mean()).tolist())
    mask = torch.ones(1, 3, 1).bool()
    batch = MiniBatch(rows=1, seqs_per_row=3, row={"advantage": adv}, token={}, mask=mask)
    losses, _ = pg_loss(ctx.algo_cfg, batch, PolicyLogps(lp[..., None], mask))
    assert losses.item() == pytest.approx(-(adv * lp).mean().item())


def test_pg_with_ema_centre_runs_through_the_cli(tmp_path, tiny_model_dir):
    import json

    args = [
        "train",
        "nash_mp",
        "--model_name_or_path",
        tiny_model_dir,
        "--dataset_name",
        PROMPTS,
        "--output_dir",
        tmp_path / "run",
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
    prefopt_ok(*args)
    rows = [json.loads(x) for x in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and "loss/nash_mp_pg" in rows[1] and "half/loss/nash_mp_pg" in rows[1]
    assert (tmp_path / "run/checkpoints/iter_001/algo_state_0.pt").exists()  # the EMA centre is checkpointed
