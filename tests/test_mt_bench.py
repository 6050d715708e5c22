"""MT-Bench (prefopt.eval.mt_bench): two-turn generation with the tiny model, grading through a replayed
OpenAI-compatible judge (tests/api_replay.py) with judge prompts written here (our wording, FastChat's line names
and fields), hand-computed scores, FastChat-shaped files, reuse of earlier grades and one-line errors."""

import json
import re

import pytest
from api_replay import ReplayServer, with_text

from prefopt.errors import ConfigError, DataError, JudgeError
from prefopt.eval.mt_bench import MTBenchDecoding, MTBenchRequest, run_mt_bench, score_judgments
from prefopt.eval.mt_bench.formats import read_answers, read_judgments, read_questions

FASTCHAT_ANSWER_KEYS = ["question_id", "answer_id", "model_id", "choices", "tstamp"]
FASTCHAT_JUDGMENT_KEYS = ["question_id", "model", "judge", "user_prompt", "judgment", "score", "turn", "tstamp"]

QUESTIONS = [
    {"question_id": 81, "category": "writing", "turns": ["Write a poem about rain.", "Now make it about snow."]},
    {
        "question_id": 95,
        "category": "roleplay",  # has a reference, but is not a reference category: it must never be shown
        "turns": ["Play a pirate and greet me.", "Now say goodbye."],
        "reference": ["ROLEPLAY-REF-1", "ROLEPLAY-REF-2"],
    },
    {
        "question_id": 101,
        "category": "reasoning",
        "turns": ["Which is heavier, a kilo of feathers or of iron?", "And a pound of each?"],
        "reference": ["ROW-REF-101a", "ROW-REF-101b"],
    },
    {
        "question_id": 111,
        "category": "math",
        "turns": ["What is 2 + 3?", "Multiply that by 4."],
        "reference": ["ROW-REF-111a", "ROW-REF-111b"],
    },
    {"question_id": 142, "category": "stem", "turns": ["Why is the sky blue?", "And why are sunsets red?"]},
]
# The grade each answer asks for ("none": the judge gives no rating), per model, question and turn.
GRADES = {
    "alpha": {81: (8, 6), 95: (7, 5), 101: (4, None), 111: (9, 3), 142: (6, 6)},
    "beta": {81: (5, 5), 95: (5, 5), 101: (2, 2), 111: (10, 8), 142: (7, 9)},
}
TEMPLATES = [  # our own wording; FastChat's names, fields and record keys
    ("single-v1", "GRADE ONE TURN\n[Q]\n{question}\n[ANSWER]\n{answer}\n[END]\nEnd with: Rating: [[n]]"),
    (
        "single-math-v1",
        "GRADE ONE TURN WITH REFERENCE\n[Q]\n{question}\n[REF]\n{ref_answer_1}\n[ANSWER]\n{answer}\n[END]",
    ),
    (
        "single-v1-multi-turn",
        "GRADE TURN TWO\n[Q1]\n{question_1}\n[A1]\n{answer_1}\n[Q2]\n{question_2}\n[ANSWER]\n{answer_2}\n[END]",
    ),
    (
        "single-math-v1-multi-turn",
        "GRADE TURN TWO WITH REFERENCE\n[Q1]\n{question_1}\n[REF1]\n{ref_answer_1}\n[A1]\n{answer_1}\n"
        "[Q2]\n{question_2}\n[REF2]\n{ref_answer_2}\n[ANSWER]\n{answer_2}\n[END]",
    ),
]


def answer_text(model: str, qid: int, turn: int) -> str:
    grade = GRADES[model][qid][turn - 1]
    return f"{model} answers {qid} turn {turn} grade={'none' if grade is None else grade}"


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def fastchat_answers(model: str, turns_by_qid: dict) -> list[dict]:
    """Rows as FastChat's gen_model_answer.py writes them."""
    return [
        {
            "question_id": q,
            "answer_id": f"id{q}",
            "model_id": model,
            "choices": [{"index": 0, "turns": t}],
            "tstamp": 1.5,
        }
        for q, t in turns_by_qid.items()
    ]


@pytest.fixture
def bench(tmp_path):
    """Question, answer, reference and judge-prompt files in FastChat's formats."""
    files = {"questions": write_jsonl(tmp_path / "question.jsonl", QUESTIONS)}
    for model in GRADES:
        turns = {q: [answer_text(model, q, 1), answer_text(model, q, 2)] for q in GRADES[model]}
        files[model] = write_jsonl(tmp_path / f"{model}.jsonl", fastchat_answers(model, turns))
    refs = {101: ["FILE-REF-101a", "FILE-REF-101b"], 111: ["FILE-REF-111a", "FILE-REF-111b"], 130: ["x", "y"]}
    files["references"] = write_jsonl(tmp_path / "gpt-4.jsonl", fastchat_answers("gpt-4", refs))
    lines = [{"name": "pair-v2", "type": "pairwise", "system_prompt": "x", "prompt_template": "{question}"}]
    lines += [
        {"name": name, "type": "single", "system_prompt": "You grade answers.", "prompt_template": template,
         "description": "test prompt", "category": "general", "output_format": "[[rating]]"}
        for name, template in TEMPLATES
    ]  # fmt: skip
    files["prompts"] = write_jsonl(tmp_path / "judge_prompts.jsonl", lines)
    return files


def user_text(body: dict) -> str:
    return body["messages"][-1]["content"]


def grader(body: dict) -> dict:
    """Rates the graded answer (turn 2's when both are shown) with the grade it asks for."""
    graded = user_text(body).split("[ANSWER]\n", 1)[1].split("\n[END]", 1)[0]
    match = re.search(r"grade=(\d+)", graded)
    return with_text(f"A fair answer. Rating: [[{match.group(1)}]]" if match else "I cannot decide on this one.")


def mt_request(bench, server, out, **kw) -> MTBenchRequest:
    judge = dict(base_url=server.url, model="judge", api_key_env=None, template_file=bench["prompts"], cache=False)
    values = dict(
        question_file=bench["questions"],
        models=[bench["alpha"], bench["beta"]],
        output_dir=str(out),
        judge=judge,
        reference_file=bench["references"],
        n_bootstrap=200,
    )
    return MTBenchRequest(**{**values, **kw})


# --- grading -------------------------------------------------------------------------------------------------------
def test_grades_scores_files_and_reuse(bench, tmp_path):
    out = tmp_path / "out"
    with ReplayServer(grader) as server:
        results = run_mt_bench(mt_request(bench, server, out))
        bodies = [user_text(b) for b in server.bodies]
        assert len(bodies) == 20  # 2 models x 5 questions x 2 turns
        first = server.bodies[0]
        assert first["messages"][0] == {"role": "system", "content": "You grade answers."}
        assert (first["model"], first["max_tokens"], first["temperature"]) == ("judge", 2048, 0.0)  # FastChat's
        # references: the file's, for the reasoning and math questions only
        with_ref = [t for t in bodies if "[REF" in t]
        assert len(with_ref) == 8 and all("101" in t or "111" in t for t in with_ref)
        assert not any("ROLEPLAY-REF" in t or "ROW-REF" in t for t in bodies)
        assert sum("[REF]\nFILE-REF-111a\n" in t for t in bodies) == 2
        assert sum("[REF1]\nFILE-REF-111a\n" in t and "[REF2]\nFILE-REF-111b\n" in t for t in bodies) == 2
        # turn 2 shows both turns: the questions and the model's own two answers
        turn_two = [t for t in bodies if t.startswith("GRADE TURN TWO")]
        assert len(turn_two) == 10
        for model in GRADES:
            for q in QUESTIONS:
                qid, (t1, t2) = q["question_id"], q["turns"]
                a1, a2 = answer_text(model, qid, 1), answer_text(model, qid, 2)
                shown = [t for t in turn_two if f"[Q1]\n{t1}\n" in t and a2 in t]
                assert len(shown) == 1 and shown[0].index(a1) < shown[0].index(f"[Q2]\n{t2}\n") < shown[0].index(a2)
        # scores by hand (alpha's 101 turn 2 is unreadable: dropped and counted)
        alpha, beta = results["scores"]["alpha"], results["scores"]["beta"]
        assert alpha["turn_1"] == pytest.approx((8 + 7 + 4 + 9 + 6) / 5)
        assert alpha["turn_2"] == pytest.approx((6 + 5 + 3 + 6) / 4)
        assert alpha["overall"] == pytest.approx(54 / 9) and (alpha["n_graded"], alpha["n_unreadable"]) == (9, 1)
        assert alpha["categories"] == pytest.approx(
            {"writing": 7.0, "roleplay": 6.0, "reasoning": 4.0, "math": 6.0, "stem": 6.0}
        )
        assert beta["turn_1"] == pytest.approx(29 / 5) and beta["turn_2"] == pytest.approx(29 / 5)
        assert beta["categories"]["math"] == 9.0 and beta["n_unreadable"] == 0
        assert alpha["ci_low"] <= alpha["overall"] <= alpha["ci_high"] and alpha["se"] > 0
        assert results["judge"]["usage"]["judge/unparsed"] == 1 and results["judge"]["judged"] == 20
        # files: FastChat's shapes, read back
        judgments = read_judgments(out / "model_judgment" / "judge_single.jsonl")
        assert len(judgments) == 20 and all(list(r) == FASTCHAT_JUDGMENT_KEYS for r in judgments)
        unreadable = [r for r in judgments if r["score"] == -1]
        assert [(r["model"], r["question_id"], r["turn"], r["judge"]) for r in unreadable] == [
            ("alpha", 101, 2, ["judge", "single-math-v1-multi-turn"])
        ]
        judgment_file = out / "model_judgment" / "judge_single.jsonl"
        assert score_judgments(bench["questions"], judgment_file, 200) == results["scores"]
        rows = [json.loads(line) for line in (out / "model_answer" / "alpha.jsonl").read_text().splitlines()]
        assert all(list(r) == FASTCHAT_ANSWER_KEYS and r["choices"][0]["index"] == 0 for r in rows)
        assert read_answers(out / "model_answer" / "alpha.jsonl") == read_answers(bench["alpha"])
        board = (out / "leaderboard.md").read_text()
        assert board.index("| alpha |") < board.index("| beta |") and "| alpha | 6.00 |" in board

        # a re-run into the same folder asks nothing (the cache is off: the judgment file is what is reused) ...
        again = run_mt_bench(mt_request(bench, server, out, overwrite=True))
        assert len(server.bodies) == 20 and again["judge"]["reused"] == 20 and again["scores"] == results["scores"]
        # ... and only the grade whose answer changed when one answer changes
        turns = {q: [answer_text("beta", q, 1), answer_text("beta", q, 2)] for q in GRADES["beta"]}
        turns[142][1] = "a new answer grade=1"
        (tmp_path / "v2").mkdir()
        beta_file = write_jsonl(tmp_path / "v2" / "beta.jsonl", fastchat_answers("beta", turns))
        third = run_mt_bench(mt_request(bench, server, out, overwrite=True, models=[bench["alpha"], beta_file]))
        assert len(server.bodies) == 21 and "a new answer grade=1" in user_text(server.bodies[-1])
        assert third["judge"]["reused"] == 19 and third["scores"]["beta"]["turn_2"] == pytest.approx(21 / 5)


def test_a_judge_failure_leaves_the_earlier_results(bench, tmp_path):
    out = tmp_path / "out"
    with ReplayServer(grader) as server:
        run_mt_bench(mt_request(bench, server, out, models=[bench["alpha"]]))
        before = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
        server.script = [(400, {}, b'{"error": {"message": "bad request"}}', 0.0)] * 20
        with pytest.raises(JudgeError, match="HTTP 400 bad request"):
            run_mt_bench(mt_request(bench, server, out, overwrite=True, reuse=False))
        assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".out")) == []


def test_references_from_the_question_rows(bench, tmp_path):
    with ReplayServer(grader) as server:
        run_mt_bench(mt_request(bench, server, tmp_path / "out", models=[bench["alpha"]], reference_file=None))
        bodies = [user_text(b) for b in server.bodies]
        assert sum("ROW-REF-101a" in t for t in bodies) == 2 and sum("ROW-REF-111b" in t for t in bodies) == 1
        assert not any("ROLEPLAY-REF" in t or "FILE-REF" in t for t in bodies)


def test_fastchat_judgment_file_scores(bench, tmp_path):
    """A judgment file as FastChat's gen_judgment.py writes it (integer scores, -1 for no rating)."""
    rows = [
        {"question_id": q, "model": "vicuna", "judge": ["gpt-4", "single-v1"], "user_prompt": "p", "judgment": "j",
         "score": s, "turn": t, "tstamp": 1.0}
        for q, t, s in [(81, 1, 9), (81, 2, 7), (95, 1, -1), (95, 2, 4), (142, 1, 8), (142, 2, 6.5)]
    ]  # fmt: skip
    judgments = write_jsonl(tmp_path / "gpt-4_single.jsonl", rows)
    result = score_judgments(bench["questions"], judgments, 100)["vicuna"]
    assert (result["turn_1"], result["turn_2"]) == pytest.approx((8.5, 17.5 / 3))
    assert result["overall"] == pytest.approx(34.5 / 5) and result["n_unreadable"] == 1
    assert result["categories"] == {"writing": 8.0, "roleplay": 4.0, "reasoning": None, "math": None, "stem": 7.25}
    from helpers import prefopt_ok  # the same from the command line

    printed = prefopt_ok("mt-bench", "--judgments", judgments, "--questions", bench["questions"], "--n_bootstrap", 100)
    assert json.loads(printed.stdout) == {"vicuna": result}


# --- generation ----------------------------------------------------------------------------------------------------
def test_two_turn_generation_through_the_chat_template(tiny_model_dir, tokenizer, monkeypatch):
    from prefopt.data import encode_prompt
    from prefopt.eval.mt_bench.formats import Question
    from prefopt.eval.mt_bench.generation import generate_answers
    from prefopt.rollout.hf import HFRolloutEngine

    calls = []
    original = HFRolloutEngine.generate

    def counted(self, prompt_ids, n, params, seeds):
        calls.append((len(prompt_ids), params.temperature))
        return original(self, prompt_ids, n, params, seeds)

    monkeypatch.setattr(HFRolloutEngine, "generate", counted)
    questions = [
        Question(81, "writing", ("Write a poem about the sea.", "Make it shorter."), None, 0),
        Question(111, "math", ("What is two plus two?", "And three plus three?"), None, 1),
        Question(142, "stem", ("Why is the sky blue?", "Why is the sun bright?"), None, 2),
        Question(7, "writing", ("Tell me a story.",), None, 3),  # one turn only
    ]
    decoding = MTBenchDecoding(max_new_tokens=12, batch_size=2)
    generated = generate_answers(tiny_model_dir, questions, decoding)
    # every first turn before any second turn; one call per temperature (FastChat's table: 0.7, 0.0, 0.1)
    assert calls == [(1, 0.0), (1, 0.1), (2, 0.7), (1, 0.0), (1, 0.1), (1, 0.7)]
    assert [len(generated.answers[q.question_id]) for q in questions] == [2, 2, 2, 1]
    for q in questions[:3]:
        a1 = generated.answers[q.question_id][0]
        assert a1 and a1 == a1.strip()
        expected = [
            {"role": "user", "content": q.turns[0]},
            {"role": "assistant", "content": a1},
            {"role": "user", "content": q.turns[1]},
        ]
        turn_two_ids = generated.prompt_ids[q.question_id][1]
        assert turn_two_ids == encode_prompt(tokenizer, expected)
        assert generated.prompt_ids[q.question_id][0] == encode_prompt(tokenizer, expected[:1])
        text = tokenizer.decode(turn_two_ids)
        assert (
            text
            == f"<s><|user|>\n{q.turns[0]}</s>\n<|assistant|>\n{a1}</s>\n<|user|>\n{q.turns[1]}</s>\n<|assistant|>\n"
        )
    # per-question seeds: a question's answers do not depend on the others (sampled ones included)
    alone = generate_answers(tiny_model_dir, [questions[0]], decoding)
    assert alone.answers[81] == generated.answers[81]
    calls.clear()
    greedy = generate_answers(tiny_model_dir, questions[:3], MTBenchDecoding(max_new_tokens=12, temperature=0))
    assert calls == [(3, 0.0), (3, 0.0)] and greedy.answers[111] == generated.answers[111]  # math: greedy in both


def test_run_generates_and_grades(bench, tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    with ReplayServer(lambda body: with_text("Rating: [[5]]")) as server:
        decoding = MTBenchDecoding(max_new_tokens=6, temperature=0.0)
        results = run_mt_bench(
            mt_request(bench, server, out, models=[f"tiny={tiny_model_dir}", bench["beta"]], decoding=decoding)
        )
        assert len(server.bodies) == 20
    assert results["models"]["tiny"]["decoding"]["temperature"] == 0.0 and results["scores"]["tiny"]["overall"] == 5
    _, answers = read_answers(out / "model_answer" / "tiny.jsonl")
    assert sorted(answers) == [81, 95, 101, 111, 142] and all(len(t) == 2 for t in answers.values())
    assert set(results) >= {"questions", "references", "judge", "models", "scores", "bootstrap", "versions"}


# --- bad input -----------------------------------------------------------------------------------------------------
def _edit(path, rows):
    return write_jsonl(path, rows)


BAD = [
    ("questions", lambda q: q[:1] + ["{not json"], DataError, r"question file '.*' row 1: invalid JSON"),
    ("questions", lambda q: [{"question_id": 1, "category": "writing"}], DataError,
     r"row 0: field 'turns' must be a list of 1 or 2 non-empty strings; got missing"),
    ("questions", lambda q: [q[0], q[0]], DataError, r"row 1: field 'question_id' 81 repeats row 0"),
    ("questions", lambda q: [{**q[0], "turns": ["a", "b", "c"]}], DataError, r"row 0: field 'turns' must be"),
    ("alpha", lambda a: a[:-1], DataError,
     r"model answer file '.*alpha.jsonl' does not match the questions: no answer to 1 question\(s\) \(first: 142\)"),
    ("alpha", lambda a: [{**a[0], "choices": []}] + a[1:], DataError,
     r"model answer file '.*' row 0: field 'choices' must be a non-empty list"),
    ("references", lambda r: r[1:], DataError, r"reference answer file '.*' does not match .* \(first: 101\)"),
    ("prompts", lambda p: p[:-1], JudgeError, r"no line named 'single-math-v1-multi-turn'"),
    ("prompts", lambda p: p[:3] + [{**p[3], "prompt_template": "{question_1} {answer_1} {question_2}"}] + p[4:],
     JudgeError, r"judge template '.*' \(single-v1-multi-turn\) lacks the field\(s\) \{answer_2\}"),
]  # fmt: skip


@pytest.mark.parametrize("key, edit, error, message", BAD)
def test_bad_input_is_one_line_and_writes_nothing(bench, tmp_path, key, edit, error, message):
    path = tmp_path / f"bad_{key}.jsonl"
    rows = [json.loads(line) for line in open(bench[key])]
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in edit(rows)))
    files = {**bench, key: str(path)}
    with ReplayServer(grader) as server:
        req = mt_request(files, server, tmp_path / "out", models=[files["alpha"]])
        with pytest.raises(error, match=message) as err:
            run_mt_bench(req)
    assert "\n" not in str(err.value) and not (tmp_path / "out").exists() and server.bodies == []


def test_bad_requests(bench, tmp_path):
    with ReplayServer(grader) as server:
        with pytest.raises(
            DataError, match=r"question file '.*' row 2: question 101 \(reasoning\) needs a reference answer per turn"
        ):
            no_refs = [{k: v for k, v in q.items() if k != "reference"} for q in QUESTIONS]
            questions = write_jsonl(tmp_path / "q.jsonl", no_refs)
            run_mt_bench(mt_request(bench, server, tmp_path / "o1", question_file=questions, reference_file=None))
        with pytest.raises(ConfigError, match="needs judge_template_file"):
            req = mt_request(bench, server, tmp_path / "o2")
            run_mt_bench(MTBenchRequest(**{**req.__dict__, "judge": {**req.judge, "template_file": None}}))
        (tmp_path / "o3").mkdir()
        (tmp_path / "o3" / "x").write_text("x")
        with pytest.raises(ConfigError, match="exists and is not empty; pass --overwrite"):
            run_mt_bench(mt_request(bench, server, tmp_path / "o3"))
        with pytest.raises(DataError, match="no such file or folder"):
            run_mt_bench(mt_request(bench, server, tmp_path / "o4", models=["./missing.jsonl"]))
        with pytest.raises(ConfigError, match="must be distinct"):
            run_mt_bench(mt_request(bench, server, tmp_path / "o5", models=[bench["alpha"], f"alpha={bench['beta']}"]))
        assert server.bodies == []
    with pytest.raises(ConfigError, match=r"temperatures\['math'\] must be a number >= 0"):
        MTBenchDecoding(temperatures={"math": -1})
    judgments = tmp_path / "j.jsonl"
    judgments.write_text(json.dumps({"question_id": 81, "model": "m", "judge": ["g", "single-v1"]}) + "\n")
    with pytest.raises(
        DataError, match=r"judgment file '.*' row 0: field 'user_prompt' must be a string; got missing"
    ):
        read_judgments(judgments)
    assert read_questions(bench["questions"])[1].reference == ("ROLEPLAY-REF-1", "ROLEPLAY-REF-2")
