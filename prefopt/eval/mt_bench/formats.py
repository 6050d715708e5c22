"""MT-Bench's files in FastChat's llm_judge formats, read with row-level checks and written atomically.

- **Questions** (``data/mt_bench/question.jsonl``): ``{"question_id", "category", "turns": [t1, t2]}`` and, for
  some questions, ``"reference": [r1, r2]``. FastChat judges turn 1 and turn 2 only, so 1 or 2 turns are accepted.
- **Model answers** (``model_answer/<model>.jsonl``, written by FastChat's gen_model_answer.py):
  ``{"question_id", "answer_id", "model_id", "choices": [{"index": 0, "turns": [a1, a2]}], "tstamp"}``; only the
  first choice is graded, as gen_judgment.py grades it. Reference answers (``reference_answer/gpt-4.jsonl``) have
  the same shape. A question answered twice keeps its last answer, as FastChat's ``load_model_answers`` keeps it.
- **Judgments** (``model_judgment/<judge>_single.jsonl``, FastChat's ``play_a_match_single``):
  ``{"question_id", "model", "judge": [judge_model, prompt_name], "user_prompt", "judgment", "score", "turn",
  "tstamp"}`` with ``score`` −1 when no rating could be read.

Rows are the file's non-blank lines, numbered from 0 in every error message. Ours are written with the same keys
in the same order; ``answer_id`` is a hash of the model, question and answers (FastChat draws a random shortuuid),
so the same answers make the same file.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prefopt.errors import DataError
from prefopt.eval.formats import read_jsonl

QuestionId = int | str


@dataclass(frozen=True)
class Question:
    """One MT-Bench question; ``row`` is its line in the question file (from 0), for error messages."""

    question_id: QuestionId
    category: str
    turns: tuple[str, ...]
    reference: tuple[str, ...] | None
    row: int


def field(row: dict, key: str, valid: Callable[[object], bool], expected: str, where: str):
    """``row[key]`` when ``valid`` says so, else a one-line DataError: ``WHERE: field 'KEY' must be EXPECTED``."""
    value = row.get(key)
    if key not in row or not valid(value):
        got = "missing" if key not in row else repr(value)[:60]
        raise DataError(f"{where}: field '{key}' must be {expected}; got {got}")
    return value


def _is_id(value) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, str) and bool(value))


def _is_texts(value, lengths: tuple[int, int], allow_empty: bool = False) -> bool:
    return (
        isinstance(value, list)
        and lengths[0] <= len(value) <= lengths[1]
        and all(isinstance(t, str) and (allow_empty or t.strip()) for t in value)
    )


def read_questions(path: str | Path) -> list[Question]:
    """The questions in file order, ids unique."""
    questions, seen = [], {}
    for i, row in enumerate(read_jsonl(path, "question")):
        where = f"question file '{path}' row {i}"
        qid = field(row, "question_id", _is_id, "an integer or a non-empty string", where)
        category = field(row, "category", lambda v: isinstance(v, str) and v.strip(), "a non-empty string", where)
        turns = field(row, "turns", lambda v: _is_texts(v, (1, 2)), "a list of 1 or 2 non-empty strings", where)
        reference = None
        if row.get("reference") is not None:
            reference = field(row, "reference", lambda v: _is_texts(v, (1, 99), True), "a list of strings", where)
        if qid in seen:
            raise DataError(f"{where}: field 'question_id' {qid!r} repeats row {seen[qid]}; ids must be unique")
        seen[qid] = i
        questions.append(Question(qid, category, tuple(turns), None if reference is None else tuple(reference), i))
    return questions


def read_answers(path: str | Path, what: str = "model answer") -> tuple[set[str], dict[QuestionId, list[str]]]:
    """A model_answer-format file as (the ``model_id`` values it holds, {question_id: turns of choice 0})."""
    model_ids, answers = set(), {}
    for i, row in enumerate(read_jsonl(path, what)):
        where = f"{what} file '{path}' row {i}"
        qid = field(row, "question_id", _is_id, "an integer or a non-empty string", where)
        choices = field(row, "choices", lambda v: isinstance(v, list) and v, "a non-empty list of choices", where)
        if not isinstance(choices[0], dict):
            raise DataError(f"{where}: field 'choices' must hold objects with 'turns'; got {repr(choices[0])[:60]}")
        turns = field(choices[0], "turns", lambda v: _is_texts(v, (1, 99), True), "a list of strings", where)
        if "model_id" in row:
            model_ids.add(field(row, "model_id", lambda v: isinstance(v, str) and v, "a non-empty string", where))
        answers[qid] = list(turns)
    return model_ids, answers


def align_answers(
    questions: list[Question], answers: dict[QuestionId, list[str]], path, what: str = "model answer"
) -> dict[QuestionId, list[str]]:
    """The answers to ``questions`` (answers to other questions are ignored); a question without an answer, or
    with fewer answer turns than question turns, is one error naming the first few."""
    missing = [q.question_id for q in questions if q.question_id not in answers]
    short = [
        q.question_id for q in questions if q.question_id in answers and len(answers[q.question_id]) < len(q.turns)
    ]
    problems = []
    if missing:
        problems.append(f"no answer to {len(missing)} question(s) (first: {', '.join(map(repr, missing[:3]))})")
    if short:
        problems.append(f"too few turns for {len(short)} question(s) (first: {', '.join(map(repr, short[:3]))})")
    if problems:
        raise DataError(f"{what} file '{path}' does not match the questions: {'; '.join(problems)}")
    return {q.question_id: answers[q.question_id][: len(q.turns)] for q in questions}


def answer_rows(model_id: str, questions: list[Question], answers: dict[QuestionId, list[str]]) -> list[dict]:
    """``model_answer/<model>.jsonl`` rows, FastChat's keys in its order, one choice per question."""
    now = time.time()
    rows = []
    for q in questions:
        turns = answers[q.question_id]
        digest = hashlib.sha256(json.dumps([model_id, q.question_id, turns]).encode()).hexdigest()[:22]
        rows.append(
            {
                "question_id": q.question_id,
                "answer_id": digest,
                "model_id": model_id,
                "choices": [{"index": 0, "turns": list(turns)}],
                "tstamp": now,
            }
        )
    return rows


def judgment_row(question_id, model, judge, user_prompt, judgment, score, turn, tstamp=None) -> dict:
    """One ``<judge>_single.jsonl`` row; ``judge`` is (judge_model, prompt_name), ``score`` None when unreadable
    (written −1, as FastChat writes it; an integral grade as an integer, as FastChat's literal_eval reads it)."""
    if score is not None and float(score).is_integer():
        score = int(score)
    return {
        "question_id": question_id,
        "model": model,
        "judge": list(judge),
        "user_prompt": user_prompt,
        "judgment": judgment,
        "score": -1 if score is None else score,
        "turn": turn,
        "tstamp": time.time() if tstamp is None else tstamp,
    }


def _is_score(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and (value == -1 or 0 <= value <= 100)


def read_judgments(path: str | Path) -> list[dict]:
    """A single-grading judgment file's rows, each checked (``score`` −1: unreadable, kept; see :mod:`.scores`)."""
    rows = read_jsonl(path, "judgment")
    for i, row in enumerate(rows):
        where = f"judgment file '{path}' row {i}"
        field(row, "question_id", _is_id, "an integer or a non-empty string", where)
        field(row, "model", lambda v: isinstance(v, str) and v, "a non-empty string", where)
        pair = lambda v: isinstance(v, list) and len(v) == 2 and all(isinstance(x, str) for x in v)  # noqa: E731
        field(row, "judge", pair, "[judge_model, prompt_name]", where)
        for key in ("user_prompt", "judgment"):
            field(row, key, lambda v: isinstance(v, str), "a string", where)
        field(row, "score", _is_score, "a number (-1: no rating read)", where)
        field(row, "turn", lambda v: v in (1, 2) and not isinstance(v, bool), "1 or 2", where)
    return rows
