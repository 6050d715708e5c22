"""`prefopt train-judge`: the objectives and metrics by hand, and real CLI runs of both judge kinds.

The runs train the tiny random Llama (prefopt.tiny) on a separable toy preference: the chosen response is made of
"bright" words, the rejected one of "dark" words. A few dozen optimizer steps take the held-out accuracy from chance
to near 1. The runs share module-scoped fixtures (each CLI run is a subprocess of about 7 s).
"""

import json
import math
import random
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from helpers import prefopt
from safetensors.torch import load_file

from prefopt.cli import main
from prefopt.judge_training.losses import bradley_terry_loss, symmetrised_pairwise_loss
from prefopt.judge_training.metrics import (
    accuracy,
    antisymmetry_violation,
    expected_calibration_error,
    wilson_interval,
)
from prefopt.judges import build_judge
from prefopt.judges.pairwise import DEFAULT_PAIRWISE_TEMPLATE, JUDGE_INFO_FILE, PairwiseModelJudge, symmetrise

# ------------------------------------------------------------------------------------ objectives and metrics


def test_symmetrised_pairwise_loss_by_hand():
    """One label, p = σ(logit). Row 0: p(x, y⁺, y⁻) = σ(log 3) = ¾, p(x, y⁻, y⁺) = σ(−log 3) = ¼, so
    P = ½(¾ + 1 − ¼) = ¾. Row 1: p = ½ forward, ¾ swapped: P = ½(½ + ¼) = ⅜. Row 2: a classifier that always says
    "the first one wins" (p = ¾ both ways) gets P = ½(¾ + ¼) = ½ whatever the pair."""
    forward = torch.tensor([[math.log(3)], [0.0], [math.log(3)]])
    swapped = torch.tensor([[-math.log(3)], [math.log(3)], [math.log(3)]])
    expected = torch.tensor([-math.log(0.75), -math.log(0.375), math.log(2.0)])
    torch.testing.assert_close(symmetrised_pairwise_loss(forward, swapped), expected)
    # It is −log of exactly what the pairwise_model judge answers.
    p_f, p_s = torch.sigmoid(forward[:, 0]), torch.sigmoid(swapped[:, 0])
    torch.testing.assert_close(symmetrised_pairwise_loss(forward, swapped), -torch.log(symmetrise(p_f, p_s)).float())


def test_symmetrised_pairwise_loss_two_labels_and_extremes():
    """Two labels, p = softmax[0]: logits (log 3, 0) give p = ¾, (0, log 3) give ¼, so P = ¾ as above. Logits of
    ±100 stay finite: P = ½(σ(−100) + σ(−100)) = e^−100 (to 1e-44), loss 100; the other way round, loss ~0."""
    forward = torch.tensor([[math.log(3), 0.0]])
    swapped = torch.tensor([[0.0, math.log(3)]])
    torch.testing.assert_close(symmetrised_pairwise_loss(forward, swapped), torch.tensor([-math.log(0.75)]))
    wrong = symmetrised_pairwise_loss(torch.tensor([[-100.0]]), torch.tensor([[100.0]]))
    right = symmetrised_pairwise_loss(torch.tensor([[100.0]]), torch.tensor([[-100.0]]))
    torch.testing.assert_close(wrong, torch.tensor([100.0]))
    assert torch.isfinite(right).all() and float(right) < 1e-40


def test_bradley_terry_loss_by_hand():
    """r⁺ − r⁻ = 1: −log σ(1) = log(1 + e^−1) = 0.31326; equal rewards: log 2."""
    loss = bradley_terry_loss(torch.tensor([1.0, 0.3]), torch.tensor([0.0, 0.3]))
    torch.testing.assert_close(loss, torch.tensor([math.log1p(math.exp(-1.0)), math.log(2.0)]))


def test_accuracy_ece_antisymmetry_by_hand():
    """probs (0.95, 0.65, 0.35, 0.55): accuracy ¾. ECE, 10 bins, both orders (8 predictions):
    bin 0: 0.05 (label 0), gap 0.05; bin 3: 0.35 (1) and 0.35 (0), gap |0.35 − 0.5| = 0.15, twice; bin 4: 0.45 (0),
    gap 0.45; bin 5: 0.55 (1), gap 0.45; bin 6: 0.65 (1), 0.65 (0), 0.15 twice; bin 9: 0.95 (1), 0.05.
    ECE = (0.05 + 0.3 + 0.45 + 0.45 + 0.3 + 0.05) / 8 = 0.2: the confidence form over [½, 1] gives the same,
    (0.45 [0.55 right] + 2·0.15 [0.65 right, 0.65 wrong] + 0.05 [0.95 right]) / 4 = 0.2."""
    probs = torch.tensor([0.95, 0.65, 0.35, 0.55], dtype=torch.float64)
    assert accuracy(probs) == 0.75
    assert accuracy(torch.tensor([0.5, 0.6])) == 0.5  # a tie is not a win
    assert expected_calibration_error(probs, 10) == pytest.approx(0.2, abs=1e-12)
    assert expected_calibration_error(torch.tensor([1.0, 1.0]), 10) == 0.0  # right and sure: calibrated
    assert expected_calibration_error(torch.tensor([0.5]), 10) == 0.0  # ½ with labels 1 and 0: calibrated
    # |0.7 + 0.4 − 1| = 0.1, |0.2 + 0.8 − 1| = 0: mean 0.05.
    assert antisymmetry_violation(torch.tensor([0.7, 0.2]), torch.tensor([0.4, 0.8])) == pytest.approx(0.05)


def test_wilson_interval_by_hand():
    """8 of 10: centre (0.8 + z²/20)/(1 + z²/10) = 0.71681, half-width 1.96·sqrt(0.016 + z²/400)/(1 + z²/10) =
    0.22658, so [0.4902, 0.9434] (the textbook value); 10 of 10 still has a lower end below 1."""
    low, high = wilson_interval(8, 10)
    assert (low, high) == pytest.approx((0.49016, 0.94332), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.72247, 1.0), abs=1e-4)


# ----------------------------------------------------------------------------------------- CLI runs

BRIGHT = "happy bright good new clear simple quick".split()
DARK = "sad dark bad old slow small big".split()
PROMPTS = ["Tell me about the sky.", "Write a poem.", "Explain why.", "What is a river?", "Give me a plan."]


def toy_pairs(n: int, seed: int, chat: bool = False) -> list[dict]:
    """n pairs: chosen = 1-3 bright words, rejected = 1-3 dark words (explicit prompt; chat messages if ``chat``)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        prompt = rng.choice(PROMPTS)
        row = {
            "prompt": [{"role": "user", "content": prompt}] if chat else prompt,
            "chosen": " ".join(rng.choice(BRIGHT) for _ in range(rng.randint(1, 3))),
            "rejected": " ".join(rng.choice(DARK) for _ in range(rng.randint(1, 3))),
        }
        rows.append(row)
    return rows


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    return write_jsonl(root / "pairs.jsonl", toy_pairs(200, seed=0)), root


def train_args(judge: str, model: str, data: Path, out: Path, *extra) -> list:
    return ["train-judge", "--judge", judge, "--model_name_or_path", model, "--dataset_name", data,
            "--output_dir", out, "--test_size", "0.2", "--max_steps", "30", "--save_steps", "15",
            "--per_device_train_batch_size", "16", "--learning_rate", "1e-3", "--disable_tqdm", "true",
            "--torch_num_threads", "1", "--logging_steps", "5", *extra]  # fmt: skip


def run_ok(*args):
    result = prefopt(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def reward_run(toy_data, tiny_model_dir):
    data, root = toy_data
    result = run_ok(*train_args("reward_model", tiny_model_dir, data, root / "rm"))
    return root / "rm", result


@pytest.fixture(scope="module")
def pairwise_run(toy_data, tiny_model_dir):
    data, root = toy_data
    result = run_ok(*train_args("pairwise_model", tiny_model_dir, data, root / "pw"))
    return root / "pw", result


@pytest.fixture(scope="module")
def lora_run(toy_data, tiny_model_dir):
    data, root = toy_data
    lora = ["--adapter", "lora", "--lora_r", "8", "--learning_rate", "5e-3", "--num_labels", "2"]
    result = run_ok(*train_args("pairwise_model", tiny_model_dir, data, root / "lora", *lora))
    return root / "lora", result


def held_out(out: Path, data: Path) -> list[dict]:
    """The held-out rows of a run: the same seeded split the run made."""
    from prefopt.data import holdout_split

    rows = [json.loads(line) for line in data.read_text().splitlines()]
    return holdout_split(rows, 40, 42)[1]


@pytest.mark.parametrize("kind", ["reward_model", "pairwise_model"])
def test_a_cli_run_learns_the_toy_preference_and_reports_it(kind, reward_run, pairwise_run):
    out, result = reward_run if kind == "reward_model" else pairwise_run
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["judge"] == kind and metrics["n"] == 40 and metrics["train_pairs"] == 160
    assert metrics["global_step"] == 30
    # From chance (½ for a random head) to clearly separated: 95% Wilson interval above 0.8.
    assert metrics["accuracy"] >= 0.95 and metrics["accuracy_ci95"][0] > 0.8, metrics
    assert 0 <= metrics["ece"] < 0.3 and metrics["loss"] < math.log(2) / 2
    assert f"held-out {kind}: accuracy {metrics['accuracy']:.3f}" in result.stdout
    if kind == "pairwise_model":
        # The symmetrised objective does not need an antisymmetric classifier, but this one has become nearly so.
        assert 0 <= metrics["antisymmetry_violation"] < 0.2
        assert "antisymmetry violation" in result.stdout
    else:
        assert "antisymmetry_violation" not in metrics
    info = json.loads((out / JUDGE_INFO_FILE).read_text())
    assert info["judge"] == kind
    assert sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*")) == ["checkpoint-15", "checkpoint-30"]


def checkpoint_probs(checkpoint: Path, base: str, kind: str, rows: list[dict], num_labels: int = 1):
    """P(chosen ≻ rejected) from the trainer's last checkpoint as training ran it (right padding, no position ids,
    a LoRA adapter unmerged), for comparison with the judge that loads the output folder."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from prefopt.judge_training.data import Pair, encode_rows
    from prefopt.judge_training.trainers import PairCollator
    from prefopt.models import load_tokenizer

    tokenizer = load_tokenizer(str(checkpoint))
    if (checkpoint / "adapter_config.json").exists():
        model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=num_labels)
        model = PeftModel.from_pretrained(model, str(checkpoint))
    else:
        model = AutoModelForSequenceClassification.from_pretrained(str(checkpoint))
    model.eval()
    pairs = [Pair(r["prompt"], r["chosen"], r["rejected"]) for r in rows]
    columns = encode_rows(pairs, tokenizer, kind, DEFAULT_PAIRWISE_TEMPLATE, 1024)
    batch = PairCollator(tokenizer.pad_token_id)([dict(zip(columns, v)) for v in zip(*columns.values())])
    with torch.no_grad():
        logits = model(**batch).logits.double()
    first, second = logits.chunk(2)
    if kind == "reward_model":
        return torch.sigmoid(first[:, 0] - second[:, 0])
    p = torch.sigmoid(logits[:, 0]) if num_labels == 1 else torch.softmax(logits, -1)[:, 0]
    return symmetrise(p[: len(rows)], p[len(rows) :])


@pytest.mark.parametrize("which", ["reward_run", "pairwise_run", "lora_run"])
def test_the_folder_loads_as_its_judge_and_scores_as_the_trained_model(which, request, toy_data, tiny_model_dir):
    """build_judge(kind, model_name_or_path=OUTPUT_DIR) gives the trained model's probabilities (checkpoint, LoRA
    unmerged, right-padded as in training) to float round-off, and reproduces metrics.json."""
    out, _ = request.getfixturevalue(which)
    data, _ = toy_data
    kind = json.loads((out / JUDGE_INFO_FILE).read_text())["judge"]
    rows = held_out(out, data)
    judge = build_judge(kind, model_name_or_path=str(out))
    probs = judge.preference([r["prompt"] for r in rows], [r["chosen"] for r in rows], [r["rejected"] for r in rows])
    num_labels = 2 if which == "lora_run" else 1
    expected = checkpoint_probs(out / "checkpoints" / "checkpoint-30", tiny_model_dir, kind, rows, num_labels)
    torch.testing.assert_close(probs, expected, atol=1e-5, rtol=0)
    metrics = json.loads((out / "metrics.json").read_text())
    assert accuracy(probs) == metrics["accuracy"]
    assert float(-torch.log(probs).mean()) == pytest.approx(metrics["loss"], abs=1e-9)
    if which == "lora_run":
        assert isinstance(judge, PairwiseModelJudge) and judge.num_labels == 2
        assert not (out / "adapter_config.json").exists()  # merged: a plain classifier folder


def test_resume_redoes_the_lost_steps_and_ends_with_the_same_weights(pairwise_run, toy_data, tiny_model_dir, tmp_path):
    """A copy of the finished run, cut back to its step-15 checkpoint (the step-30 checkpoint and the final judge
    gone, as after a crash), resumed with --resume: it continues from step 15 and ends bit for bit where the
    uninterrupted run did."""
    out, _ = pairwise_run
    data, _ = toy_data
    copy = tmp_path / "pw"
    shutil.copytree(out, copy)
    shutil.rmtree(copy / "checkpoints" / "checkpoint-30")
    for name in ("model.safetensors", "metrics.json"):
        (copy / name).unlink()
    result = run_ok(*train_args("pairwise_model", tiny_model_dir, data, copy, "--resume"))
    assert f"resuming from {copy / 'checkpoints' / 'checkpoint-15'}" in result.stdout
    # Only steps 16..30 ran in this process: it logged the losses of steps 20, 25 and 30 (every 5), not 5..15.
    assert (result.stdout + result.stderr).count("{'loss': ") == 3
    logs = [json.loads((run / "checkpoints" / "checkpoint-30" / "trainer_state.json").read_text())["log_history"]
            for run in (out, copy)]  # fmt: skip
    assert [r.get("loss") for r in logs[0]][:-1] == [r.get("loss") for r in logs[1]][:-1]
    original, resumed = load_file(str(out / "model.safetensors")), load_file(str(copy / "model.safetensors"))
    assert all(torch.equal(original[k], resumed[k]) for k in original)
    assert (
        json.loads((copy / "metrics.json").read_text())["accuracy"]
        == json.loads((out / "metrics.json").read_text())["accuracy"]
    )


def test_a_deepspeed_zero2_run_ends_where_the_plain_run_does(reward_run, toy_data, tiny_model_dir, tmp_path):
    """ZeRO-2 in one process on CPU (gloo), no launcher: same data order and updates, so the same weights to float
    round-off (DeepSpeed's flat fp32 buffers sum in another order) and a DeepSpeed checkpoint."""
    out, _ = reward_run
    data, _ = toy_data
    args = train_args("reward_model", tiny_model_dir, data, tmp_path / "ds", "--deepspeed",
                      "configs/deepspeed/zero2.json")  # fmt: skip
    run_ok(*args)
    assert (tmp_path / "ds" / "checkpoints" / "checkpoint-30" / "global_step30").is_dir()
    plain, zero = load_file(str(out / "model.safetensors")), load_file(str(tmp_path / "ds" / "model.safetensors"))
    assert max(float((plain[k] - zero[k]).abs().max()) for k in plain) < 1e-4


def test_conversational_pairs_train_a_reward_model_with_the_chat_template(tmp_path, tiny_model_dir):
    """TRL's implicit-prompt conversational format: chosen/rejected are whole conversations. The judge renders them
    with the chat template, as training did."""
    rows = [
        {
            "chosen": [*r["prompt"], {"role": "assistant", "content": r["chosen"]}],
            "rejected": [*r["prompt"], {"role": "assistant", "content": r["rejected"]}],
        }
        for r in toy_pairs(120, seed=3, chat=True)
    ]
    data = write_jsonl(tmp_path / "chat.jsonl", rows)
    run_ok(*train_args("reward_model", tiny_model_dir, data, tmp_path / "rm", "--test_size", "30"))
    metrics = json.loads((tmp_path / "rm" / "metrics.json").read_text())
    assert metrics["n"] == 30 and metrics["accuracy"] >= 0.9


# ------------------------------------------------------------------------------- saved template, bad input


def test_pairwise_judge_reads_the_template_saved_in_the_folder(tmp_path, tiny_reward_dir):
    folder = tmp_path / "judge"
    shutil.copytree(tiny_reward_dir, folder)
    template = "Q: {prompt}\nFirst: {a}\nSecond: {b}\nWhich?"
    (folder / JUDGE_INFO_FILE).write_text(json.dumps({"judge": "pairwise_model", "template": template}))
    assert build_judge("pairwise_model", model_name_or_path=str(folder)).template == template
    explicit = "{prompt} | {a} | {b}"
    assert build_judge("pairwise_model", model_name_or_path=str(folder), template=explicit).template == explicit
    assert PairwiseModelJudge(tiny_reward_dir).template == DEFAULT_PAIRWISE_TEMPLATE  # no file: the default
    judge = PairwiseModelJudge(str(folder))
    assert judge.encode("x", "a", "b") == judge.tokenizer(template.format(prompt="x", a="a", b="b"))["input_ids"]
    (folder / JUDGE_INFO_FILE).write_text(json.dumps({"template": 3}))
    with pytest.raises(Exception, match="template that is not a string"):
        PairwiseModelJudge(str(folder))


def tree(root: Path) -> dict:
    return {str(p.relative_to(root)): None if p.is_dir() else p.read_bytes() for p in sorted(root.rglob("*"))}


BAD = [
    ("missing-column", lambda d: write_jsonl(d / "x.jsonl", [{"prompt": "p", "chosen": "a"}]), [],
     "x.jsonl: missing column 'rejected'; columns present: prompt, chosen"),
    ("empty-file", lambda d: write_jsonl(d / "x.jsonl", []), [], "x.jsonl' (split train) has no rows"),
    ("wrong-type", lambda d: write_jsonl(d / "x.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"},
                                                        {"prompt": "p", "chosen": 3, "rejected": "b"}]), [],
     "x.jsonl: line 2: column 'chosen' must be a string or a list of messages, got int"),
    ("bad-json", lambda d: write_jsonl(d / "x.jsonl", ['{"prompt": "p", "chosen": "a", "rejected": "b"}', "{oops"]),
     [], "x.jsonl: line 2: invalid JSON"),
    ("unknown-key", None, ["--learning_rat", "1"], "unknown config key 'learning_rat' (from the command line); did "
     "you mean 'learning_rate'? valid keys: adapter, bf16"),
    ("wrong-value-type", None, ["--max_steps", "many"], "config key 'max_steps' (from the command line) expects int"),
    ("no-judge-kind", None, ["--judge", "none"], "config key 'judge' is required"),
    ("reward-two-labels", None, ["--num_labels", "2"], "'num_labels' must be 1 for judge reward_model"),
    ("template-without-b", None, ["--judge", "pairwise_model", "--template", "{prompt} {a}"],
     "must contain both {a} and {b}"),
    ("test-size-all", None, ["--test_size", "6"], "test_size 6.0 holds out 6 of 6 pairs"),
    ("missing-model", None, ["--model_name_or_path", "./no/such/model"], "path './no/such/model' does not exist"),
]  # fmt: skip


@pytest.mark.parametrize("name,make,flags,expected", BAD, ids=[case[0] for case in BAD])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(name, make, flags, expected, tmp_path, tiny_model_dir,
                                                         capsys):  # fmt: skip
    data = make(tmp_path) if make else write_jsonl(tmp_path / "ok.jsonl", toy_pairs(6, seed=1))
    args = ["train-judge", "--judge", "reward_model", "--model_name_or_path", tiny_model_dir, "--dataset_name", data,
            "--output_dir", tmp_path / "out", "--disable_tqdm", "true", *flags]  # fmt: skip
    before = tree(tmp_path)
    code = main([str(a) for a in args])
    lines = capsys.readouterr().err.splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("prefopt: error: "), lines
    assert expected in lines[0], lines[0]
    assert tree(tmp_path) == before


def test_an_existing_folder_is_kept_without_overwrite_and_a_foreign_one_is_not_resumed(tmp_path, tiny_model_dir,
                                                                                       capsys):  # fmt: skip
    data = write_jsonl(tmp_path / "ok.jsonl", toy_pairs(6, seed=1))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    base = ["train-judge", "--judge", "reward_model", "--model_name_or_path", tiny_model_dir, "--dataset_name",
            str(data), "--output_dir", str(tmp_path / "out")]  # fmt: skip
    before = tree(tmp_path)
    assert main(base) == 2 and "exists and is not empty; pass --overwrite or --resume" in capsys.readouterr().err
    assert main([*base, "--resume"]) == 2
    assert "is not a train-judge run (no train_judge_config.yaml)" in capsys.readouterr().err
    assert tree(tmp_path) == before


def test_yaml_gives_defaults_flags_override_and_help_keys_lists_them(tmp_path, capsys):
    from prefopt.judge_training import build_judge_config

    path = tmp_path / "judge.yaml"
    path.write_text(yaml.safe_dump({"judge": "pairwise_model", "model_name_or_path": "m", "dataset_name": "d.jsonl",
                                    "output_dir": "o", "learning_rate": 1e-5, "overwrite": True}))  # fmt: skip
    cfg = build_judge_config(yaml.safe_load(path.read_text()), {"learning_rate": "3e-4", "resume": True}, str(path))
    assert cfg.learning_rate == 3e-4 and cfg.judge == "pairwise_model"
    assert cfg.resume and not cfg.overwrite  # the command line's --resume wins over the YAML's overwrite
    assert main(["train-judge", "--help-keys"]) == 0
    listed = capsys.readouterr().out
    assert "--test_size" in listed and "--center_rewards_coefficient" in listed and "--adapter" in listed
