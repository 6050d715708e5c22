"""Evaluation in the loop: the judge gets each row's reference in evaluation as in training, and an evaluation that
fails loses no training (the iteration is committed first; ``--resume`` evaluates it, then goes on).

The runs are CLI runs of SPPO on the digit-sum task with a Python reward that checks the reference digit and records
each call (its prompts, references and rewards), so that the logged evaluation metrics are computed here by hand.
"""

import json
import math

import pytest
import torch
from helpers import DIGIT_TASK, final_weights, prefopt

# The function: references are optional in its signature, but it cannot score without them. A file
# ``fail_after`` makes it raise on the evaluation calls (prompts ending in "=") after that many.
GRADER = """
import json
import pathlib

HERE = pathlib.Path(__file__).parent


def reward(prompts, responses, references=None):
    if references is None:
        raise ValueError("no references")
    if prompts[0].endswith("="):
        count = HERE / "eval_calls"
        n = int(count.read_text()) + 1 if count.exists() else 1
        count.write_text(str(n))
        limit = HERE / "fail_after"
        if limit.exists() and n > int(limit.read_text()):
            raise RuntimeError("grader offline")
    values = [float(y.strip() == str(r)) for y, r in zip(responses, references)]
    with open(HERE / "calls.jsonl", "a") as f:
        f.write(json.dumps({"prompts": prompts, "references": references, "values": values}) + "\\n")
    return values
"""

HELD_OUT = [{"prompt": f"{a}+{b}=", "answer": str((a + b) % 10)} for a, b in [(3, 4), (9, 9), (12, 5), (0, 1)]]


def grader(folder, fail_after: int | None = None) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "grader.py").write_text(GRADER)
    if fail_after is not None:
        (folder / "fail_after").write_text(str(fail_after))
    return f"{folder / 'grader.py'}:reward"


def command(model, out, function, *extra) -> list:
    return ["train", "sppo", "--model_name_or_path", model, "--output_dir", out, "--dataset_name", DIGIT_TASK,
            "--response_choices", "0,1,2,3,4,5,6,7,8,9", "--answer_column", "answer", "--judge", "python_reward",
            "--judge_function", function, "--num_iterations", 2, "--prompts_per_iteration", 8, "--num_samples", 3,
            "--per_device_train_batch_size", 8, "--learning_rate", "1e-2", "--eta", 20, "--disable_tqdm", "true",
            "--torch_num_threads", 1, *extra]  # fmt: skip


def records(out) -> list[dict]:
    lines = (out / "metrics.jsonl").read_text().splitlines() if (out / "metrics.jsonl").exists() else []
    return [{k: v for k, v in json.loads(x).items() if not k.startswith("time/")} for x in lines]


def calls(folder) -> list[dict]:
    return [json.loads(x) for x in (folder / "calls.jsonl").read_text().splitlines()]


def test_a_reward_whose_references_are_optional_gets_them_in_training_and_evaluation(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    result = prefopt(*command(tiny_model_dir, out, grader(tmp_path / "judge"), "--eval_every", 1,
                              "--eval_num_prompts", 8))  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    answers = {row["prompt"]: row["answer"] for row in map(json.loads, DIGIT_TASK.read_text().splitlines())}
    made = calls(tmp_path / "judge")
    assert all(c["references"] == [answers[p] for p in c["prompts"]] for c in made)  # every call, the rows' answers
    # Training calls score 8 prompts × 3 samples; evaluations the 8 held-out prompts: iteration 0 the policy, then
    # the initial policy (once), iteration 1 the policy.
    policy_0, initial, policy_1 = [c["values"] for c in made if len(c["prompts"]) == 8]
    assert len(made) == 5 and len(initial) == 8
    m0, m1 = records(out)
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    sigmoid = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731  (a reward judge's P(y ≻ y0) = σ(r − r0))
    assert (m0["eval/reward"], m0["eval/initial_reward"], m1["eval/reward"]) == (
        mean(policy_0), mean(initial), mean(policy_1))  # fmt: skip
    assert m1["eval/win_rate"] == pytest.approx(mean([sigmoid(a - b) for a, b in zip(policy_1, initial)]), abs=1e-12)


@pytest.fixture(scope="module")
def uninterrupted(tiny_model_dir, tmp_path_factory):
    """The run the failed ones must end equal to: 2 iterations, each evaluated, a checkpoint after the last only."""
    root = tmp_path_factory.mktemp("uninterrupted")
    held_out = root / "held_out.jsonl"
    held_out.write_text("".join(json.dumps(r) + "\n" for r in HELD_OUT))
    args = ["--eval_every", 1, "--save_every", 2, "--eval_dataset_name", held_out]
    result = prefopt(*command(tiny_model_dir, root / "run", grader(root / "judge"), *args))
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "run", args


def fail_then_resume(tiny_model_dir, tmp_path, args, fail_after: int):
    """A run whose evaluation raises after ``fail_after`` evaluation calls, then its command with --resume once the
    judge works: (the failed run's stderr, what it left: metrics records, checkpoints, last completed iteration,
    final/'s weights or None), checked after each step by the caller."""
    out, judge = tmp_path / "run", tmp_path / "judge"
    argv = command(tiny_model_dir, out, grader(judge, fail_after), *args)
    failed = prefopt(*argv)
    assert failed.returncode == 2, failed.stderr[-3000:]
    left = (records(out), sorted(p.name for p in (out / "checkpoints").iterdir()),
            json.loads((out / "state.json").read_text())["last_completed_iteration"],
            final_weights(out) if (out / "final").exists() else None)  # fmt: skip
    (judge / "fail_after").unlink()
    resumed = prefopt(*argv, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return failed.stderr.splitlines(), left, out


def test_a_failed_final_evaluation_keeps_the_trained_policy_and_resume_evaluates_it(
    uninterrupted, tiny_model_dir, tmp_path
):
    full, args = uninterrupted
    # Iteration 0's evaluation makes 2 calls (the policy, the initial policy); iteration 1's, the last, raises.
    lines, (logged, checkpoints, last, final), out = fail_then_resume(tiny_model_dir, tmp_path, args, 2)
    judge = f"{tmp_path / 'judge/grader.py'}:reward"
    assert lines == [
        f"prefopt: error: evaluation of iteration 1 failed: judge function '{judge}' raised RuntimeError: grader "
        f"offline; the trained policy is saved in '{out / 'final'}' and checkpoint '{out / 'checkpoints/iter_001'}': "
        "once the cause is fixed, run the same command with --resume (Python: train(resume_from_checkpoint=True)) "
        "to evaluate it"
    ]
    assert (logged, checkpoints, last) == (records(full)[:1], ["iter_001"], 1)  # iteration 1 committed, not logged
    expected = final_weights(full)
    assert all(torch.equal(final[k], expected[k]) for k in expected)  # final/ was written before the evaluation
    # The resume trained nothing more: it evaluated iteration 1 and wrote its line, as the uninterrupted run did.
    assert records(out) == records(full) and "eval/reward" in records(out)[1]
    assert all(torch.equal(final_weights(out)[k], expected[k]) for k in expected)


def test_a_failed_evaluation_between_checkpoints_checkpoints_its_iteration_and_resume_goes_on(
    uninterrupted, tiny_model_dir, tmp_path
):
    full, args = uninterrupted
    lines, (logged, checkpoints, last, final), out = fail_then_resume(tiny_model_dir, tmp_path, args, 0)
    assert len(lines) == 1 and lines[0].startswith("prefopt: error: evaluation of iteration 0 failed: "), lines
    assert lines[0].endswith(
        f"grader offline; the trained policy is saved in checkpoint '{out / 'checkpoints/iter_000'}': once the cause "
        "is fixed, run the same command with --resume (Python: train(resume_from_checkpoint=True)) to evaluate it "
        "and go on training"
    )
    # save_every 2 schedules no checkpoint after iteration 0: the failed evaluation made one.
    assert (logged, checkpoints, last, final) == ([], ["iter_000"], 0, None)
    assert records(out) == records(full)  # iteration 0 evaluated by the resume, then iteration 1 trained
    expected, resumed = final_weights(full), final_weights(out)
    assert all(torch.equal(resumed[k], expected[k]) for k in expected)


def test_an_evaluation_leaves_the_global_random_states_as_it_found_them():
    """The checkpoint of an evaluated iteration is written before its evaluation: training after it (and a resume
    from it) draws the same random numbers only if the evaluation consumes none of the global streams."""
    import random
    from types import SimpleNamespace

    import numpy as np

    from prefopt.callbacks import Events
    from prefopt.loop import evaluation

    def benchmark(run):  # an evaluation that draws from every global stream
        return {"eval/x/score": float(torch.rand(1)) + random.random() + np.random.rand()}

    def seeded_draws(evaluate_first: bool) -> tuple:
        torch.manual_seed(0), random.seed(0), np.random.seed(0)
        metrics = evaluation(run, Events()) if evaluate_first else {"eval/x/score": None}
        return set(metrics), float(torch.rand(1)), random.random(), float(np.random.rand())

    run = SimpleNamespace(eval_prompts=[], benchmark=benchmark, backend=SimpleNamespace(device=torch.device("cpu")))
    assert seeded_draws(evaluate_first=True) == seeded_draws(evaluate_first=False)
