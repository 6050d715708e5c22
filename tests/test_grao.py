"""GRAO: the three terms computed by hand, the advantages of both normalisation groups by hand, rows with the
reference answer, the refusal of stale samples, the CLI on the digit task."""

import json
import math

import pytest
import torch
from helpers import DIGIT_ARGS, DIGIT_TASK, REPO, digit_task_run, minibatch, prefopt_ok

from prefopt.algorithms.grao import GRAOParams, grao_advantages, loss
from prefopt.batch import PolicyLogps
from prefopt.errors import ConfigError

# The example: G = 8 samples, two of them correct (reward 1), and a correct reference y.
SAMPLES, REFERENCE = torch.tensor([0.0, 0, 1, 0, 0, 0, 1, 0]), torch.tensor(1.0)


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


def test_advantages_over_the_samples_and_the_reference_by_hand():
    # μ, σ over the 9 rewards (0,0,1,0,0,0,1,0, 1): μ = 1/3, σ² = (1/3)(2/3) = 2/9, σ = √2/3.
    # A correct response: (2/3)/(√2/3) = √2 ≈ 1.414; a wrong one: (−1/3)/(√2/3) = −1/√2; y: √2.
    adv = grao_advantages(SAMPLES, REFERENCE, "samples_and_reference", 0.0)
    assert adv[2].item() == pytest.approx(math.sqrt(2)) and adv[8].item() == pytest.approx(math.sqrt(2))
    assert adv[0].item() == pytest.approx(-1 / math.sqrt(2))
    assert adv.sum().item() == pytest.approx(0.0, abs=1e-6)


def test_advantages_over_the_samples_alone_are_eq4_by_hand():
    # μ, σ over the 8 samples' rewards: μ = 1/4, σ² = (1/4)(3/4) = 3/16, σ = √3/4.
    # A correct response: (3/4)/(√3/4) = √3 ≈ 1.732; a wrong one: (−1/4)/(√3/4) = −1/√3; y, scored against them: √3.
    adv = grao_advantages(SAMPLES, REFERENCE, "samples", 0.0)
    assert adv[2].item() == pytest.approx(math.sqrt(3)) and adv[8].item() == pytest.approx(math.sqrt(3))
    assert adv[0].item() == pytest.approx(-1 / math.sqrt(3))


def test_eq4_with_tied_samples_takes_the_g_plus_one_statistics_not_nan():
    # Eight wrong samples and a right reference: eq. 4's σ is 0, so it gives 0/0 for the samples and 1/0 for y.
    # The prompt falls back to the 9 rewards: μ = 1/9, σ = √8/9; a sample (−1/9)/(√8/9) = −1/√8, y (8/9)/(√8/9) = √8.
    adv = grao_advantages(torch.zeros(8), REFERENCE, "samples", 1e-6)
    assert torch.isfinite(adv).all()
    assert adv[:8].tolist() == pytest.approx([-1 / math.sqrt(8)] * 8, rel=1e-5)
    assert adv[8].item() == pytest.approx(math.sqrt(8), rel=1e-5)
    # One sample is always a tie.
    assert grao_advantages(torch.zeros(1), REFERENCE, "samples", 0.0).tolist() == pytest.approx([-1.0, 1.0])


def test_advantage_group_is_a_checked_key():
    with pytest.raises(ConfigError, match="^config key 'advantage_group' must be"):
        GRAOParams(advantage_group="reference").validate()


@pytest.mark.parametrize("group", ["samples_and_reference", "samples"])
def test_rows_hold_the_samples_then_the_reference(tmp_path, tiny_model_dir, group):
    from prefopt.algorithms.grao import collect

    algo_cfg = GRAOParams(num_samples=3, reference_column="answer", advantage_group=group)
    run = digit_task_run("grao", algo_cfg, tiny_model_dir, tmp_path / "run")
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
        # eq. 4 (samples): μ, σ of the 3 samples' rewards, unless they tie (then, as by default, of all 4).
        over = rewards[:3] if group == "samples" and len(set(rewards[:3].tolist())) > 1 else rewards
        expected = (rewards - over.mean()) / (over.std(unbiased=False) + 1e-6)
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


def test_stale_samples_are_refused_before_any_compute(capsys, tmp_path, tiny_model_dir, monkeypatch):
    """GRAO's loss has no ratio: samples of an earlier policy (async_rollouts with max_staleness > 0) are refused with
    one line and exit 2, before the policy loads (and before Ray is looked for)."""
    from prefopt.cli import main

    monkeypatch.chdir(REPO)
    out = tmp_path / "run"
    argv = ["train", "grao", "--config", "configs/tiny/grao.yaml", "--model_name_or_path", str(tiny_model_dir),
            "--output_dir", str(out), "--torch_num_threads", "1", "--rollout_workers", "1",
            "--async_rollouts", "true", "--max_staleness", "1"]  # fmt: skip
    code = main(argv)
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0] == (
        "prefopt: error: grao needs samples of the current iterate (docs/async.md): set max_staleness: 0 or "
        "async_rollouts: false"
    )
    assert not out.exists()
