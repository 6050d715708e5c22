"""INPO: hand-computed loss, the OMD optimum, one row per prompt whatever K, pair selection by reward and by knock-out
tournament."""

import json
import math

import pytest
import torch
from helpers import PROMPTS, minibatch, policy

import prefopt
from prefopt.algorithms.inpo import INPOParams, loss
from prefopt.errors import ConfigError
from prefopt.judges.selection import knockout_pairs, select_pairs
from prefopt.judges.synthetic import MatrixGameJudge


def test_inpo_loss_hand_computed():
    # η = 0.5, τ = 0.25: τ/η = 0.5, (η − τ)/η = 0.5, 1/(2η) = 1.
    # policy margin (−1) − (−3) = 2; ref margin (−2) − (−2) = 0; π_t margin (−1) − (−2) = 1.
    # h = 2 − 0.5·0 − 0.5·1 = 1.5; loss = (1.5 − 1)² = 0.25.
    batch = minibatch(
        ref_logps=torch.tensor([[-2.0, -2.0]]), anchor_logps=torch.tensor([[-1.0, -2.0]]), label=torch.ones(1)
    )
    losses, metrics = loss(INPOParams(eta=0.5, tau=0.25), batch, policy([[-1.0, -3.0]]))
    assert losses.tolist() == pytest.approx([0.25])
    assert metrics["pref/h"].tolist() == pytest.approx([1.5])


def test_inpo_labels_order_the_pair_and_a_soft_label_is_their_expectation():
    # The same numbers as above: h(y, y′) = 1.5, 1/(2η) = 1.
    cfg, logps = INPOParams(eta=0.5, tau=0.25), policy([[-1.0, -3.0]])
    rows = dict(ref_logps=torch.tensor([[-2.0, -2.0]]), anchor_logps=torch.tensor([[-1.0, -2.0]]))
    lost = loss(cfg, minibatch(**rows, label=torch.zeros(1)), logps)[0]
    assert lost.tolist() == pytest.approx([(1.5 + 1) ** 2])  # y′ won: (h(y′, y) − 1)² = (−1.5 − 1)²
    swapped = {k: v.flip(-1) for k, v in rows.items()}
    assert loss(cfg, minibatch(**swapped, label=torch.ones(1)), policy([[-3.0, -1.0]]))[0].tolist() == lost.tolist()
    # ℓ = P = 0.8: target (2·0.8 − 1)/(2η) = 0.6, loss (1.5 − 0.6)² = 0.81, which differs from the expected binary
    # loss 0.8·0.25 + 0.2·6.25 = 1.45 by a constant (1 − 0.6²) = 0.64 whatever h is.
    soft = loss(cfg, minibatch(**rows, label=torch.tensor([0.8])), logps)[0]
    assert soft.tolist() == pytest.approx([0.81]) and 0.8 * 0.25 + 0.2 * 6.25 - soft.item() == pytest.approx(0.64)


def test_inpo_gradient_vanishes_at_the_omd_target():
    cfg = INPOParams(eta=0.1, tau=0.02)
    ref, anchor = torch.tensor([[-3.0, -2.0]]), torch.tensor([[-2.5, -2.5]])
    # Choose the policy margin so that h = 1/(2η) exactly.
    target_margin = 1 / (2 * cfg.eta) + (cfg.tau / cfg.eta) * (-1.0) + ((cfg.eta - cfg.tau) / cfg.eta) * 0.0
    logps = torch.tensor([[target_margin - 4.0, -4.0]], requires_grad=True)
    won = minibatch(ref_logps=ref, anchor_logps=anchor, label=torch.ones(1))
    loss(cfg, won, policy(logps))[0].sum().backward()
    assert torch.allclose(logps.grad, torch.zeros(1, 2), atol=1e-5)
    at_anchor = anchor.clone().requires_grad_(True)
    loss(cfg, won, policy(at_anchor))[0].sum().backward()
    assert at_anchor.grad[0, 0] < 0 < at_anchor.grad[0, 1]  # descent raises the winner, lowers the loser


def test_inpo_config_defaults_and_checks():
    assert INPOParams().tau_value == pytest.approx(0.005 / 3)
    with pytest.raises(ConfigError, match="tau"):
        INPOParams(eta=0.1, tau=0.2).validate()


def transitive_judge(scores):
    """A matrix game whose preferences follow scores: P(i ≻ j) = σ(s_i − s_j)."""
    n = len(scores)
    matrix = [[1 / (1 + math.exp(-(scores[i] - scores[j]))) for j in range(n)] for i in range(n)]
    return MatrixGameJudge(matrix, [chr(ord("A") + i) for i in range(n)])


def test_tournament_finds_best_and_worst_with_eleven_queries_for_k8():
    scores = [0.3, 2.0, -1.0, 0.5, -2.5, 1.0, 0.0, 1.5]
    judge = transitive_judge(scores)
    judge.recorder = []
    groups = [list("ABCDEFGH"), list("HGFEDCBA")]
    result = knockout_pairs(judge, ["x", "y"], groups)
    assert result == [(1, 4, True), (6, 3, True)]  # B (2.0) and E (−2.5), at their positions in each group
    assert len(judge.recorder) == 2 * 11


def test_tournament_with_odd_k_and_a_losing_final():
    # Rock-paper-scissors: A loses to B, B to C, C to A. Round 1: (A, B) → B wins; C has a bye.
    # Winners' bracket: (B, C) → C; losers' bracket: [A] alone. Final C vs A: A beats C, so the pair is dropped.
    rps = [[0.5, 0.0, 1.0], [1.0, 0.5, 0.0], [0.0, 1.0, 0.5]]
    judge = MatrixGameJudge(rps, ["A", "B", "C"])
    assert knockout_pairs(judge, ["x"], [["A", "B", "C"]]) == [(2, 0, False)]


def test_select_pairs_by_reward_needs_a_reward_judge(tmp_path):
    from prefopt.judges.python import PythonRewardJudge

    (tmp_path / "r.py").write_text("def r(p, ys):\n    return [float(len(y)) for y in ys]\n")
    judge = PythonRewardJudge(f"{tmp_path}/r.py:r")
    assert select_pairs("auto", judge, ["x", "y"], [["aa", "a", "aaa"], ["b", "b"]]) == [
        (2, 1, True),
        (0, 0, False),  # all rewards tie: no strict pair
    ]
    with pytest.raises(ConfigError, match="reward judge"):
        select_pairs("best_worst", transitive_judge([0, 1]), ["x"], [["A", "B"]])


def test_a_prompts_iid_pairs_are_one_row_whose_loss_is_their_mean():
    # K = 4: the row holds (y_1, y_2) and (y_3, y_4), label [1, 0]; η = 0.5, τ = 0.25 as above.
    # Pair 1 is the hand-computed pair: h = 1.5, ℓ = 1, loss (1.5 − 1)² = 0.25.
    # Pair 2: every margin 0, so h = 0; ℓ = 0, target −1/(2η) = −1, loss (0 + 1)² = 1. The row's loss: 0.625.
    batch = minibatch(
        ref_logps=torch.tensor([[-2.0, -2.0, -2.0, -2.0]]),
        anchor_logps=torch.tensor([[-1.0, -2.0, -2.0, -2.0]]),
        label=torch.tensor([[1.0, 0.0]]),
    )
    losses, metrics = loss(INPOParams(eta=0.5, tau=0.25), batch, policy([[-1.0, -3.0, -2.0, -2.0]]))
    assert losses.tolist() == pytest.approx([0.625])
    assert metrics["pref/h"].tolist() == pytest.approx([0.75])  # the row's mean h


def _inpo_config(out, k):
    values = dict(output_dir=str(out), dataset_name=str(PROMPTS), judge="matrix_game", game="rps", eta=1.0, tau=0.1,
                  num_samples=k, max_new_tokens=2, prompts_per_iteration=8, per_device_train_batch_size=4,
                  optim="sgd", learning_rate=0.03, num_iterations=1, disable_tqdm=True)  # fmt: skip
    return prefopt.INPOConfig(**values)


@pytest.mark.parametrize("k", [2, 4, 8])
def test_iid_pairs_take_one_row_per_prompt_whatever_k(tiny_model_dir, tmp_path, k):
    """The paper's L_t is one expectation over pairs of π_t, minimised once per iteration (its data: one pair per
    prompt), so K only buys a lower-variance estimate: 8 prompts in minibatches of 4 rows are 2 optimizer steps for
    K = 2, 4 and 8 alike (K/2 rows per prompt made them 2, 4 and 8), and the row holds the K samples."""
    prefopt.INPOTrainer(tiny_model_dir, args=_inpo_config(tmp_path / "run", k)).train()
    state = json.loads((tmp_path / "run/state.json").read_text())
    record = json.loads((tmp_path / "run/metrics.jsonl").read_text().splitlines()[0])
    assert (state["steps_per_iteration"], state["global_step"], record["rows"]) == (2, 2, 8)
    assert record["rollout/samples"] == 8 * k
