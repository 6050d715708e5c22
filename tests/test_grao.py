"""GRAO: the three terms computed by hand, rows with the reference answer, the CLI on the digit task."""

import json

import pytest
import torch
from helpers import DIGIT_ARGS, DIGIT_TASK, digit_task_run, minibatch, prefopt_ok

from prefopt.algorithms.grao import GRAOParams, loss
from prefopt.batch import PolicyLogps


def test_loss_hand_computed():
    # G = 2 samples and the reference. Length-normalised ℓ: o1 = (−1 − 3)/2 = −2, o2 = −1, y = −0.5.
    # Â = (1, −1, 0.5). exploration = (1·−2 + −1·−1)/2 = −0.5; imitation = 0.5·0.5·−0.5 = −0.125;
    # alignment = 0.6·(1·(−2 + 0.5) + −1·(−1 + 0.5))/2 = 0.6·(−1.5 + 0.5)/2 = −0.3. Loss = 0.925.
    token = torch.tensor([[[-1.0, -3.0], [-1.0, 0.0], [-0.5, 0.0]]])
    mask = torch.tensor([[[True, True], [True, False], [True, False]]])
    batch = minibatch(advantage=torch.tensor([[1.0, -1.0, 0.5]]))
    losses, metrics = loss(GRAOParams(beta=0.5, lam=0.6), batch, PolicyLogps(token, mask))
    assert losses.tolist() == pytest.approx([0.925])
    assert metrics["grao/alignment"].tolist() == pytest.approx([-0.3])


def test_rows_hold_the_samples_then_the_reference(tmp_path, tiny_model_dir):
    from prefopt.algorithms.grao import collect

    run = digit_task_run(
        "grao", GRAOParams(num_samples=3, reference_column="answer"), tiny_model_dir, tmp_path / "run"
    )
    prompts = run.train_prompts[:16]
    run.ctx.start_iteration(0, prompts)
    batch = collect(run.ctx, prompts)
    groups = run.ctx.rollouts[0][2].groups()
    # The reference is always right (reward 1), so a row is dropped only when all 3 samples are right too.
    kept = [(p, g) for p, g in zip(prompts, groups) if not all(s.text == p.extra["answer"] for s in g)]
    assert batch.num_rows == len(kept) > 0
    for k, (p, g) in enumerate(kept):
        assert run.tokenizer.decode(batch.response_ids[4 * k + 3]) == p.extra["answer"]
        rewards = torch.tensor([float(s.text == p.extra["answer"]) for s in g] + [1.0])
        expected = (rewards - rewards.mean()) / (rewards.std(unbiased=False) + 1e-6)
        assert torch.allclose(batch.row_data["advantage"][k], expected, atol=1e-5)


def test_cli_iteration(tmp_path, tiny_model_dir):
    out = tmp_path / "grao"
    args = [
        "--model_name_or_path",
        tiny_model_dir,
        "--dataset_name",
        DIGIT_TASK,
        "--output_dir",
        out,
        "--disable_tqdm",
    ]
    args += DIGIT_ARGS
    prefopt_ok("train", "grao", *args, "--reference_column", "answer", "--num_iterations", "1", "--num_samples", "4")
    (row,) = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert row["reward/reference_mean"] == 1.0 and "grao/imitation" in row


def test_reference_from_a_conversational_completion():
    from prefopt.data import PromptExample, reference_text
    from prefopt.errors import DataError

    chosen = [{"role": "assistant", "content": "Sure."}]
    assert reference_text(PromptExample(0, "Hi", [1], {"chosen": chosen}), "chosen") == "Sure."
    with pytest.raises(DataError, match=r"^p.jsonl: line 4: column 'chosen' must be a string"):
        reference_text(PromptExample(3, "Hi", [1], {"chosen": 5}, where="p.jsonl: line 4"), "chosen")
    with pytest.raises(DataError, match=r"^row 3 \(counting from 0\): column 'chosen'"):  # built without a source
        reference_text(PromptExample(3, "Hi", [1], {"chosen": 5}), "chosen")
