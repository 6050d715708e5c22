"""eval_benchmark: Arena-Hard, MT-Bench and AlpacaEval scored on the policy during training, logged every
eval_every iterations with their intervals; the judges decide by the question, so the scores are known by hand."""

import json

import pytest
from api_replay import ReplayServer, with_text
from helpers import prefopt, train
from test_mt_bench import TEMPLATES

from prefopt.eval.arena_hard import answer_row, markdown_counts, write_jsonl
from prefopt.eval.formats import outputs_rows, write_json

BY_QUESTION = """
def by_question(prompts, a, b):
    # the policy (a) wins questions 0 and 1, loses question 2, ties the rest
    verdict = {"Q0?": 1.0, "Q1?": 1.0, "Q2?": 0.0}
    return [verdict.get(p[-1]["content"], 0.5) for p in prompts]
"""


def _metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def arena_files(tmp_path) -> dict:
    """An arena-hard v0.1 question file (8 questions), the baseline's answers and the by-question judge; the flags."""
    questions = [{"question_id": f"q{i}", "category": "arena-hard-v0.1", "turns": [{"content": f"Q{i}?"}]}
                 for i in range(8)]  # fmt: skip
    write_jsonl(tmp_path / "question.jsonl", questions)
    write_jsonl(tmp_path / "base.jsonl", [answer_row("v0.1", f"q{i}", "base", "x", markdown_counts("x", 1))
                                          for i in range(8)])  # fmt: skip
    (tmp_path / "judge.py").write_text(BY_QUESTION)
    return {"questions": str(tmp_path / "question.jsonl"), "baseline": f"base={tmp_path / 'base.jsonl'}",
            "judge": "python_preference", "judge_function": f"{tmp_path}/judge.py:by_question",
            "max_new_tokens": 4, "n_bootstrap": 20}  # fmt: skip


def mt_bench_files(tmp_path, url: str) -> dict:
    """Three MT-Bench questions of three temperatures, judge prompts (test_mt_bench's) and the judge at ``url``."""
    questions = [{"question_id": i, "category": c, "turns": [f"T1 of {i}", f"T2 of {i}"]}
                 for i, c in enumerate(["writing", "stem", "roleplay"])]  # fmt: skip
    (tmp_path / "question.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    lines = [{"name": n, "type": "single", "system_prompt": "Grade.", "prompt_template": t} for n, t in TEMPLATES]
    (tmp_path / "judge_prompts.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return {"questions": str(tmp_path / "question.jsonl"), "judge_base_url": url, "judge_model": "judge",
            "judge_api_key_env": "none", "max_new_tokens": 4, "judge_cache": False,
            "judge_template_file": str(tmp_path / "judge_prompts.jsonl"), "n_bootstrap": 50}  # fmt: skip


def test_arena_hard_in_training(tmp_path, tiny_model_dir):
    options = arena_files(tmp_path)
    out = tmp_path / "run"
    train(tiny_model_dir, out, "--num_iterations", 2, "--eval_every", 1, "--eval_benchmark", "arena_hard",
          "--eval_benchmark_options", json.dumps(options), "--eval_max_instances", 6)  # fmt: skip
    metrics = _metrics(out)
    # Of the first 6 questions: 2 won (both games strong: 2 · 2 · 3 battles of 1), 1 lost (6 of 0), 3 tied (6 of ½):
    # (12 + 3) / 24, Bradley-Terry's fit of one pair being the mean.
    assert [m["eval/arena_hard/score"] for m in metrics] == pytest.approx([62.5, 62.5], abs=1e-3)
    assert all(m["eval/arena_hard/n"] == 6 and m["eval/arena_hard/ci_low"] <= 62.5 for m in metrics)


def test_mt_bench_in_training(tmp_path, tiny_model_dir):
    def grades(body):  # turn 1: 7, turn 2: 9
        return with_text("Rating: [[9]]" if "GRADE TURN TWO" in body["messages"][-1]["content"] else "[[7]]")

    with ReplayServer(grades) as server:
        options = mt_bench_files(tmp_path, server.url)
        out = tmp_path / "run"
        train(tiny_model_dir, out, "--num_iterations", 1, "--eval_benchmark", "mt_bench",
              "--eval_benchmark_options", json.dumps(options))  # fmt: skip
        assert len(server.bodies) == 6
    (m,) = _metrics(out)
    assert (m["eval/mt_bench/score"], m["eval/mt_bench/turn_1"], m["eval/mt_bench/turn_2"]) == (8.0, 7.0, 9.0)
    assert m["eval/mt_bench/judge/requests"] == 6 and m["eval/mt_bench/n"] == 3


def test_alpaca_eval_in_training_and_bad_options(tmp_path, tiny_model_dir):
    rows = outputs_rows([{"instruction": f"Q{i}?", "dataset": None} for i in range(4)], ["base"] * 4, "base")
    write_json(tmp_path / "base.json", rows)
    (tmp_path / "judge.py").write_text(BY_QUESTION)
    options = {"baseline": str(tmp_path / "base.json"), "judge": "python_preference", "max_new_tokens": 4,
               "judge_function": f"{tmp_path}/judge.py:by_question", "n_bootstrap": 20}  # fmt: skip
    out = tmp_path / "run"
    train(tiny_model_dir, out, "--num_iterations", 1, "--eval_benchmark", "alpaca_eval",
          "--eval_benchmark_options", json.dumps(options))  # fmt: skip
    (m,) = _metrics(out)
    assert m["eval/alpaca_eval/win_rate"] == pytest.approx((1 + 1 + 0 + 0.5) / 4)
    assert m["eval/alpaca_eval/n"] == 4 and "eval/alpaca_eval/lc_win_rate" not in m  # LC from 10 questions
    bad = prefopt("train", "sppo", "--model_name_or_path", tiny_model_dir, "--output_dir", tmp_path / "x",
                  "--dataset_name", "configs/data/quickstart_prompts.jsonl", "--eval_benchmark", "arena_hard",
                  "--eval_benchmark_options", '{"questoins": "q.jsonl"}')  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1] == (
        "prefopt: error: config key 'eval_benchmark_options': unknown key 'questoins' (a flag of prefopt arena-hard)"
    )
    assert not (tmp_path / "x").exists()
