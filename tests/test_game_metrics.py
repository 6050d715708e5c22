"""GameMonitor: the equilibrium reads as gap 0 and KL 0; the average iterate is the mean of the iterates."""

import pytest
import torch

from prefopt import games
from prefopt.game_metrics import GameMonitor, action_probs


def test_equilibrium_policy_has_zero_gap_and_kl():
    rps = games.rock_paper_scissors()
    ref = torch.tensor([[0.6, 0.3, 0.1]], dtype=torch.float64)
    policies = [ref]  # the first call fixes π_ref

    def policy_fn(_):
        return policies[-1]

    monitor = GameMonitor(rps, 0.1, [[1, 2]], policy_fn)
    ne = monitor.equilibria
    assert games.duality_gap(rps, ne[0], 0.1, ref[0]) < 1e-10
    policies.append(ne)
    metrics, total = monitor.metrics(None, 0)
    assert metrics["game/duality_gap"] < 1e-10 and metrics["game/kl_to_ne"] < 1e-10
    policies.append(torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64))
    _, total = monitor.metrics(total, 1)
    assert torch.allclose(torch.tensor(total, dtype=torch.float64), ne + policies[-1])


def test_unregularised_monitor_uses_the_maximin_equilibrium():
    rps = games.rock_paper_scissors()
    uniform = torch.full((1, 3), 1 / 3, dtype=torch.float64)
    monitor = GameMonitor(rps, 0.0, [[1]], lambda _: uniform)
    metrics, _ = monitor.metrics(None, 0)
    assert metrics["game/duality_gap"] == pytest.approx(0.0, abs=1e-12)
    assert metrics["game/policy_entropy"] == pytest.approx(torch.log(torch.tensor(3.0)).item())


def test_action_probs_is_the_restricted_softmax(tiny_model_dir, tokenizer):
    from prefopt.models import load_causal_lm

    model = load_causal_lm(tiny_model_dir)
    actions = [tokenizer.convert_tokens_to_ids(t) for t in "ABC"]
    prompts = [[1, 4, 30], [1, 4, 50, 51, 52]]
    probs = action_probs(model, prompts, actions, tokenizer.pad_token_id, "cpu")
    for row, ids in enumerate(prompts):
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1, actions]
        assert torch.allclose(probs[row], torch.softmax(logits.double(), -1), atol=1e-5)
