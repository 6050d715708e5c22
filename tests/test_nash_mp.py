"""Nash-MP: the regression loss's minimiser is the tabular mirror-prox iterate; hand-computed value; CLI."""

import pytest
import torch

from prefopt import games
from prefopt.algorithms.nash_mp import NashMPConfig, loss
from prefopt.batch import MiniBatch, PolicyLogps


def test_loss_hand_computed():
    # η = 2, β = 0.25: ηβ = 0.5. Δlp_θ = 1, Δlp_k = 0.3, Δlp_ref = −0.6:
    # h = 1 − 0.3/1.5 − (0.5/1.5)·(−0.6) = 1 − 0.2 + 0.2 = 1.0; target = (2/1.5)·0.3 = 0.4; loss = 0.36.
    row = {
        "centre_logps": torch.tensor([[-1.0, -1.3]]),
        "ref_logps": torch.tensor([[-2.0, -1.4]]),
        "pref_diff": torch.tensor([0.3]),
    }
    batch = MiniBatch(model_inputs={}, rows=1, seqs_per_row=2, row=row, token={}, mask=torch.ones(1, 2, 1).bool())
    policy = PolicyLogps(torch.tensor([[[-1.0], [-2.0]]]), torch.ones(1, 2, 1).bool())
    losses, metrics = loss(NashMPConfig(eta=2.0, beta=0.25), batch, policy)
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
    batch = MiniBatch(model_inputs={}, rows=n * n, seqs_per_row=2, row=row, token={}, mask=mask)
    theta = theta_k.clone().requires_grad_(True)
    optimiser = torch.optim.LBFGS([theta], lr=1, max_iter=500, tolerance_grad=1e-14, tolerance_change=1e-16)

    def closure():
        optimiser.zero_grad()
        lp = torch.log_softmax(theta, 0)
        value = loss(
            NashMPConfig(eta=eta, beta=beta), batch, PolicyLogps(torch.stack([lp[i], lp[j]], 1)[..., None], mask)
        )[0].mean()
        value.backward()
        return value

    optimiser.step(closure)
    _, half = games.nash_mp_step(theta_k, P, eta, beta, theta_ref, return_half=True)
    assert torch.allclose(torch.softmax(theta.detach(), 0), torch.softmax(half, 0), atol=1e-8)
