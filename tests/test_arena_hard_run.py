"""``prefopt arena-hard`` end to end: generated and file answers, both games judged (a Python preference judge whose
probabilities are read on the 5-way scale; the openai judge against a local OpenAI-compatible server with
arena-hard-auto's v2.0 settings layout), judgment files in arena-hard-auto's layouts, the scores by hand, reuse."""

import json

import pytest
from api_replay import ReplayServer, with_text
from helpers import REPO, prefopt, prefopt_ok

from prefopt.eval.arena_hard import answer_row, markdown_counts, read_answers, read_judgments, write_jsonl
from prefopt.eval.arena_hard.judging import label_of
from prefopt.eval.arena_hard.run import ArenaRequest, run_arena_hard

JUDGE_FILE = """
def prefer_longer(prompts, a, b):
    return [1.0 if len(x) > len(y) else 0.5 if len(x) == len(y) else 0.0 for x, y in zip(a, b)]
"""


def _v01_questions(path, n):
    rows = [{"question_id": f"q{i}", "category": "arena-hard-v0.1", "cluster": "c", "turns": [{"content": f"Q{i}?"}]}
            for i in range(n)]  # fmt: skip
    write_jsonl(path, rows)


def _answers(path, version, model, texts, prompts=None):
    rows = [
        answer_row(version, f"q{i}", model, t, markdown_counts(t, len(t.split())), prompt=(prompts or {}).get(i))
        for i, t in enumerate(texts)
    ]
    write_jsonl(path, rows)


def test_label_scale_is_symmetric():
    assert [label_of(p) for p in (1.0, 0.9, 0.75, 0.6, 0.5, 0.4, 0.25, 0.1, 0.0)] == [
        "A>>B", "A>>B", "A>B", "A>B", "A=B", "B>A", "B>A", "B>>A", "B>>A"
    ]  # fmt: skip


def test_arena_hard_command_v01_with_a_python_judge(tmp_path, tiny_model_dir):
    n = 12
    _v01_questions(tmp_path / "question.jsonl", n)
    _answers(tmp_path / "gpt-4-0314.jsonl", "v0.1", "gpt-4-0314", ["a medium answer"] * n)
    long_texts = ["a much longer answer, **bold**"] * 9 + ["a medium answer"] * 3  # 9 wins, 3 ties
    _answers(tmp_path / "long.jsonl", "v0.1", "long", long_texts)
    (tmp_path / "judge.py").write_text(JUDGE_FILE)
    out = tmp_path / "out"
    args = ["arena-hard", "--questions", tmp_path / "question.jsonl", "--baseline", tmp_path / "gpt-4-0314.jsonl"]
    args += ["--models", tmp_path / "long.jsonl", f"tiny={tiny_model_dir}", "--max_new_tokens", 6]
    preset = tmp_path / "preset.yaml"  # the judge from a preset file, a path in it from the environment
    preset.write_text("judge: python_preference\njudge_function: ${JUDGES}/judge.py:prefer_longer\nn_bootstrap: 20\n")
    args += ["--preset", preset, "--output_dir", out]
    with pytest.MonkeyPatch.context() as env:
        env.setenv("JUDGES", str(tmp_path))
        prefopt_ok(*args)
    results = json.loads((out / "results.json").read_text())
    board = {row["model"]: row for row in results["leaderboard"]["models"]}
    # Every win is a strong verdict in both games (P = 1 → A>>B / B>>A: 3 battles each), a tie one battle per game:
    # 9·2·3 battles won and 3·2 half-won out of 60, and a single pair's Bradley-Terry fit is that mean.
    assert board["long"]["point"] == pytest.approx(100 * (54 + 3) / 60, abs=1e-3)
    assert results["leaderboard"]["version"] == "v0.1" and results["judge"]["judged"] == 2 * n
    rows = [
        json.loads(line) for line in (out / "model_judgment/python_preference/long.jsonl").read_text().splitlines()
    ]
    assert set(rows[0]) == {"question_id", "model", "judge", "games"}
    assert [g["score"] for g in rows[0]["games"]] == ["B>>A", "A>>B"] and rows[-1]["games"][0]["score"] == "A=B"
    assert len(read_judgments(out / "model_judgment/python_preference/tiny.jsonl")) == n
    tiny = read_answers(out / "model_answer/tiny.jsonl")
    assert tiny.model == "tiny" and set(tiny.metadata["q0"]) == {
        "token_len",
        "header_count",
        "list_count",
        "bold_count",
    }
    assert results["leaderboard"]["n_bootstrap"] == 20 and results["judge"]["kind"] == "python_preference"
    # A re-run into the same folder judges nothing again.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("JUDGES", str(tmp_path))
        prefopt_ok(*args, "--overwrite")
    result = prefopt(*args, "--overwrite")  # JUDGES unset
    assert result.stderr.strip().endswith(
        f"preset '{preset}' key 'judge_function': environment variable JUDGES is not set"
    )
    assert json.loads((out / "results.json").read_text())["judge"]["reused"] == 2 * n


def test_arena_hard_errors_are_one_line(tmp_path):
    _v01_questions(tmp_path / "question.jsonl", 3)
    _answers(tmp_path / "base.jsonl", "v0.1", "base", ["x", "y"])  # no answer to q2
    result = prefopt(
        "arena-hard", "--questions", tmp_path / "question.jsonl", "--baseline", tmp_path / "base.jsonl",
        "--models", tmp_path / "base.jsonl", "--judge", "nontransitive", "--output_dir", tmp_path / "out",
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"prefopt: error: answer file '{tmp_path / 'base.jsonl'}' has no answer to question 'q2' (1 missing)"
    ]
    assert not (tmp_path / "out").exists()


def _v2_checkout(root):
    (root / "config").mkdir(parents=True)
    (root / "utils").mkdir()
    (root / "utils" / "judge_utils.py").write_text(
        'P = "Judge the two answers."\nJUDGE_SETTINGS = {"hard_prompt": {"baseline": "base", "system_prompt": P}}\n'
    )
    (root / "config" / "arena-hard-v2.0.yaml").write_text(
        "bench_name: arena-hard-v2.0\nregex_patterns:\n  - \\[\\[([AB<>=]+)\\]\\]\n  - \\[([AB<>=]+)\\]\n"
        'prompt_template: "<Q>{QUESTION}</Q><A>{ANSWER_A}</A><B>{ANSWER_B}</B>"\n'
    )


def _verdicts(body):
    """Assistant A "good" beats "bad" strongly; the last of two labels counts (v2.0's rule)."""
    user = body["messages"][-1]["content"]
    a = user.split("<A>")[1].split("</A>")[0]
    b = user.split("<B>")[1].split("</B>")[0]
    if a == b:
        return with_text("Same. [[A>B]] ... no: [[A=B]]")
    return with_text("My verdict: [[A>>B]]" if a == "good" else "[[B>>A]]")


def test_arena_hard_v20_with_the_openai_judge(tmp_path):
    _v2_checkout(tmp_path / "ah")
    questions = [
        {"uid": f"q{i}", "category": "hard_prompt", "subcategory": "math", "prompt": f"Q{i}?"} for i in range(4)
    ]
    write_jsonl(tmp_path / "question.jsonl", questions)
    prompts = {i: q["prompt"] for i, q in enumerate(questions)}
    _answers(tmp_path / "base.jsonl", "v2.0", "base", ["bad", "bad", "good", "bad"], prompts)
    _answers(tmp_path / "m.jsonl", "v2.0", "m", ["good", "good", "good", "bad"], prompts)
    with ReplayServer(_verdicts) as server:
        judge = {"kind": "openai", "api": dict(base_url=server.url, model="judge", api_key_env=None, mode="arena_hard",
                 template_file=str(tmp_path / "ah/config/arena-hard-v2.0.yaml"), cache=False)}  # fmt: skip
        request = ArenaRequest(str(tmp_path / "question.jsonl"), [str(tmp_path / "m.jsonl")],
                               str(tmp_path / "base.jsonl"), str(tmp_path / "out"), judge, n_bootstrap=0)  # fmt: skip
        results = run_arena_hard(request)
        assert len(server.bodies) == 6  # two games of four questions, one attempt each; q2's two are equal: sent once
    rows = [json.loads(line) for line in (tmp_path / "out/model_judgment/judge/m.jsonl").read_text().splitlines()]
    assert rows[0]["baseline"] == "base" and rows[0]["category"] == "hard_prompt"
    # Game 1 shows the baseline ("bad") as A: B>>A; game 2 the model ("good") as A: A>>B; ties read the last label.
    assert [g["score"] for g in rows[0]["games"]] == ["B>>A", "A>>B"]
    assert [g["score"] for g in rows[2]["games"]] == ["A=B", "A=B"]
    assert rows[0]["games"][0]["prompt"][0] == {"role": "system", "content": "Judge the two answers."}
    assert rows[0]["games"][0]["judgment"] == {"answer": "[[B>>A]]"}
    # v2.0's score without style control: the mean battle score, (2 questions · 2 games · 3 wins + 2 · 2 · ½) / 16
    board = {row["model"]: row for row in results["leaderboard"]["models"]}
    assert board["m"]["point"] == pytest.approx(100 * (12 + 2) / 16)


def test_scoring_arena_hard_autos_own_judgment_files():
    """``--judgments``: arena-hard-auto's v0.1 files of the reference fixture, scored as its show_result.py does
    (tests/data/arena_hard/reference.json: its compute_mle_elo on the same files)."""
    data = REPO / "tests/data/arena_hard"
    reference = json.loads((data / "reference.json").read_text())["v0.1"]["none"]["win_rates"]
    judgments = sorted((data / "v0.1/model_judgment/gpt-4-1106-preview").glob("*.jsonl"))
    result = prefopt_ok("arena-hard", "--judgments", *judgments, "--baseline", "gpt-4-0314", "--n_bootstrap", 0)
    board = {row["model"]: row["point"] for row in json.loads(result.stdout)["models"]}
    assert board == pytest.approx(reference, rel=1e-6)
