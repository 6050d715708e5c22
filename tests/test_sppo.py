"""SPPO and sppo_hard: hand-computed losses and win-rate estimates, the optimum, and collect on a real model."""

import pytest
import torch
from helpers import minibatch, policy

from prefopt.algorithms.sppo import (
    SPPOHardParams,
    SPPOParams,
    estimate_win_rates,
    loss,
    loss_hard,
)


def test_win_rate_estimate_includes_self_comparison():
    p = torch.tensor([[0.5, 0.8, 0.3], [0.2, 0.5, 0.6], [0.7, 0.4, 0.5]], dtype=torch.float64)
    # (0.5 + 0.8 + 0.3)/3, (0.2 + 0.5 + 0.6)/3, (0.7 + 0.4 + 0.5)/3: the j = i term 0.5 is in each mean.
    assert estimate_win_rates([p])[0].tolist() == pytest.approx([1.6 / 3, 1.3 / 3, 1.6 / 3])


def test_sppo_loss_hand_computed():
    # η = 2. Row 0: log-ratios (−1 − (−1.5), −2 − (−1)) = (0.5, −1.0); targets 2·(0.75 − ½) = 0.5, 2·(0.25 − ½) = −0.5;
    # errors (0, −0.5); mean of squares (0 + 0.25)/2 = 0.125 (the official ½[(·)_w² + (·)_l²]).
    # Row 1: log-ratios (0, 0), targets (1.0, −1.0): (1 + 1)/2 = 1.0.
    batch = minibatch(
        anchor_logps=torch.tensor([[-1.5, -1.0], [-3.0, -3.0]]), win_rates=torch.tensor([[0.75, 0.25], [1.0, 0.0]])
    )
    losses, metrics = loss(SPPOParams(eta=2.0), batch, policy([[-1.0, -2.0], [-3.0, -3.0]]))
    assert losses.tolist() == pytest.approx([0.125, 1.0])
    assert metrics["kl/logratio"].tolist() == pytest.approx([-0.25, 0.0])


def test_sppo_gradient_vanishes_at_the_target_and_pushes_towards_it():
    eta = 4.0
    win = torch.tensor([[0.9, 0.2]])
    anchor = torch.tensor([[-2.0, -2.0]])
    optimum = anchor + eta * (win - 0.5)  # log π_θ = log π_t + η(P̂ − ½)
    logps = optimum.clone().requires_grad_(True)
    loss(SPPOParams(eta=eta), minibatch(anchor_logps=anchor, win_rates=win), policy(logps))[0].sum().backward()
    assert torch.allclose(logps.grad, torch.zeros(1, 2), atol=1e-6)
    at_anchor = anchor.clone().requires_grad_(True)
    loss(SPPOParams(eta=eta), minibatch(anchor_logps=anchor, win_rates=win), policy(at_anchor))[0].sum().backward()
    # Gradient descent raises the winner (P̂ > ½) and lowers the loser (P̂ < ½).
    assert at_anchor.grad[0, 0] < 0 < at_anchor.grad[0, 1]


def test_sppo_hard_loss_hand_computed():
    # β = 0.5 → 1/(2β) = 1. Log-ratios w = 0.5, l = −1: (0.5 − 1)² + (−1 + 1)² = 0.25.
    batch = minibatch(anchor_logps=torch.tensor([[-1.5, -1.0]]))
    losses, metrics = loss_hard(SPPOHardParams(beta=0.5), batch, policy([[-1.0, -2.0]]))
    assert losses.tolist() == pytest.approx([0.25])
    assert metrics["pref/margin"].tolist() == pytest.approx([1.5])


def test_configs_reject_bad_values():
    from prefopt.errors import ConfigError

    with pytest.raises(ConfigError, match="eta"):
        SPPOParams(eta=0).validate()
    with pytest.raises(ConfigError, match="num_samples"):
        SPPOParams(num_samples=1).validate()
    with pytest.raises(ConfigError, match="beta"):
        SPPOHardParams(beta=-1).validate()


def _config(tiny_model_dir, tmp_path, **overrides):
    from prefopt.config import TrainConfig

    values = dict(
        model_name_or_path=tiny_model_dir,
        dataset_name="configs/data/quickstart_prompts.jsonl",
        output_dir=str(tmp_path / "run"),
        max_new_tokens=6,
        disable_tqdm=True,
        num_iterations=1,
    )
    values.update(overrides)
    return TrainConfig(**values)


def test_collect_builds_best_worst_rows_with_rollout_anchors(tiny_model_dir, tmp_path):
    from prefopt.algorithms.sppo import SPPO
    from prefopt.build import build_run
    from prefopt.objective import policy_logps

    cfg = _config(tiny_model_dir, tmp_path)
    run = build_run("sppo", cfg, SPPOParams(num_samples=4))
    prompts = run.train_prompts[:5]
    batch = SPPO.collect(run.ctx, prompts)
    assert batch.num_rows == 5 and batch.seqs_per_row == 2
    groups = run.ctx.rollouts[0][2].groups()
    matrices = run.judge.preference_matrices([p.prompt for p in prompts], [[s.text for s in g] for g in groups])
    for r, (group, m) in enumerate(zip(groups, matrices)):
        p_hat = m.mean(1)
        best, worst = int(p_hat.argmax()), int(p_hat.argmin())
        assert batch.response_ids[2 * r] == group[best].response_ids
        assert batch.response_ids[2 * r + 1] == group[worst].response_ids
        assert batch.row_data["win_rates"][r].tolist() == pytest.approx([p_hat[best].item(), p_hat[worst].item()])
    # π_t log-probs come from the rollout and equal a fresh forward pass: the first step's log-ratio is ~0.
    mb = batch.to_minibatch()
    with torch.no_grad():
        logps = policy_logps(run.ctx, mb).logps
    assert torch.allclose(logps, batch.row_data["anchor_logps"], atol=1e-4)


def test_sppo_hard_from_dataset_pairs(tiny_model_dir, tmp_path):
    import json

    from prefopt.algorithms.sppo import SPPO_HARD
    from prefopt.build import build_run
    from prefopt.data import encode_response

    rows = [
        {
            "prompt": [{"role": "user", "content": f"Say {w}"}],
            "chosen": [{"role": "assistant", "content": "aeiou"}],
            "rejected": [{"role": "assistant", "content": "xkcd"}],
        }
        for w in ("hi", "bye", "yes")
    ]
    data = tmp_path / "prefs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = build_run(
        "sppo_hard", _config(tiny_model_dir, tmp_path, dataset_name=str(data)), SPPOHardParams(pairs_from="dataset")
    )
    batch = SPPO_HARD.collect(run.ctx, run.train_prompts)
    assert batch.num_rows == 3 and run.ctx.rollouts == []  # no sampling in dataset mode
    p = run.train_prompts[0]
    assert batch.response_ids[0] == encode_response(run.tokenizer, p.prompt, "aeiou")
    assert batch.response_ids[1] == encode_response(run.tokenizer, p.prompt, "xkcd")
    assert batch.response_ids[0][-1] == run.tokenizer.eos_token_id
    expected = run.ctx.anchors.logps([p.prompt_ids], [batch.response_ids[1]])
    assert batch.row_data["anchor_logps"][0, 1].item() == pytest.approx(expected.item(), abs=1e-5)
