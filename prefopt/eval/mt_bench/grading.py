"""MT-Bench single-answer grading with the ``openai`` judge in ``grade`` mode, as FastChat's gen_judgment.py
(``--mode single``) grades.

Each (model, question, turn) is one grade. The judge prompt is a line of FastChat's ``judge_prompts.jsonl`` (the
user's ``judge_template_file``) picked by name:

==========  ===================================  ===================================================================
kind        FastChat's line                      fields
==========  ===================================  ===================================================================
single      ``single-v1``                        question, answer
single-ref  ``single-math-v1``                   question, answer, ref_answer_1
multi       ``single-v1-multi-turn``             question_1, answer_1, question_2, answer_2
multi-ref   ``single-math-v1-multi-turn``        the multi fields and ref_answer_1, ref_answer_2
==========  ===================================  ===================================================================

Turn 1 uses ``single``/``single-ref``, turn 2 ``multi``/``multi-ref`` (both turns shown). The ``-ref`` lines, with
reference answers, serve the categories of FastChat's ``NEED_REF_CATS`` only (math, reasoning, coding,
arena-hard-200): other questions never show a reference, even when their row has one (MT-Bench's question 95 does).
References come from a model_answer-format file (FastChat's ``reference_answer/gpt-4.jsonl``) when one is given,
else from the questions' own ``reference`` field.

**Reuse.** A re-run into the same output folder asks again only what changed: a judgment in the folder's
judgment file is reused when the earlier run's judge record (model, decoding fields and the sha256 of each
template's messages, in results.json) equals this run's and the row's template name, question id, turn and user
prompt (which holds the question, the answer text and any reference) equal the grade about to be asked.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from prefopt.errors import ConfigError, DataError
from prefopt.eval.mt_bench.formats import Question, QuestionId, align_answers, judgment_row, read_answers
from prefopt.eval.mt_bench.formats import read_judgments as read_judgment_file

NEED_REF_CATEGORIES = ("math", "reasoning", "coding", "arena-hard-200")  # FastChat common.py NEED_REF_CATS
TEMPLATE_NAMES = {
    "single": "single-v1",
    "single-ref": "single-math-v1",
    "multi": "single-v1-multi-turn",
    "multi-ref": "single-math-v1-multi-turn",
}
TEMPLATE_FIELDS = {
    "single": ("question", "answer"),
    "single-ref": ("question", "answer", "ref_answer_1"),
    "multi": ("question_1", "answer_1", "question_2", "answer_2"),
    "multi-ref": ("question_1", "answer_1", "question_2", "answer_2", "ref_answer_1", "ref_answer_2"),
}
Key = tuple[str, str, int, str]  # (template name, question id as JSON, turn, user prompt)


@dataclass(frozen=True)
class GradeTask:
    """One grade to ask: ``turn`` is 1 or 2, ``kind`` a key of TEMPLATE_NAMES, ``fields`` its filled values."""

    model: str
    question_id: QuestionId
    turn: int
    kind: str
    fields: dict[str, str]


def template_names(overrides: dict[str, str] | None = None) -> dict[str, str]:
    """FastChat's line names, with ``overrides`` by kind (an unknown kind is an error)."""
    unknown = sorted(set(overrides or {}) - set(TEMPLATE_NAMES))
    if unknown:
        raise ConfigError(f"mt-bench template_names: unknown kind(s) {unknown}; valid: {', '.join(TEMPLATE_NAMES)}")
    return {**TEMPLATE_NAMES, **(overrides or {})}


def load_templates(template_file: str, names: dict[str, str]) -> dict:
    """Each kind's :class:`~prefopt.judges.api.templates.JudgePrompt`, checked for its fields (a JudgeError
    names the file, the line and the missing fields)."""
    from prefopt.judges.api.templates import file_prompt

    return {kind: file_prompt(template_file, names[kind], "grade", TEMPLATE_FIELDS[kind]) for kind in names}


def reference_answers(
    questions: list[Question], question_file: str, reference_file: str | None
) -> dict[QuestionId, list[str]]:
    """The reference answers of the questions that need one (NEED_REF_CATEGORIES), by question id."""
    needing = [q for q in questions if q.category in NEED_REF_CATEGORIES]
    if reference_file is not None:
        _, references = read_answers(reference_file, "reference answer")
        return align_answers(needing, references, reference_file, "reference answer")
    for q in needing:
        if q.reference is None or len(q.reference) < len(q.turns):
            raise DataError(
                f"question file '{question_file}' row {q.row}: question {q.question_id!r} ({q.category}) needs a "
                "reference answer per turn in field 'reference', or give reference_file (FastChat's "
                "reference_answer/gpt-4.jsonl)"
            )
    return {q.question_id: list(q.reference[: len(q.turns)]) for q in needing}


def _fields(q: Question, answers: list[str], reference: list[str] | None, turn: int) -> tuple[str, dict]:
    ref = "-ref" if reference is not None else ""
    if turn == 1:
        fields = {"question": q.turns[0], "answer": answers[0]}
        return "single" + ref, fields | ({"ref_answer_1": reference[0]} if reference is not None else {})
    fields = {"question_1": q.turns[0], "answer_1": answers[0], "question_2": q.turns[1], "answer_2": answers[1]}
    if reference is not None:
        fields |= {"ref_answer_1": reference[0], "ref_answer_2": reference[1]}
    return "multi" + ref, fields


def plan_grades(
    questions: list[Question],
    answers_by_model: dict[str, dict[QuestionId, list[str]]],
    references: dict[QuestionId, list[str]],
) -> list[GradeTask]:
    """Every grade, by model, then question, then turn."""
    tasks = []
    for model, answers in answers_by_model.items():
        for q in questions:
            for turn in range(1, len(q.turns) + 1):
                kind, fields = _fields(q, answers[q.question_id], references.get(q.question_id), turn)
                tasks.append(GradeTask(model, q.question_id, turn, kind, fields))
    return tasks


def judge_record(judge, prompts: dict, names: dict[str, str]) -> dict:
    """What makes two runs' grades interchangeable: the request fields other than the messages (model, max_tokens,
    temperature, extra body) and each template's name and the sha256 of its messages."""
    body = {k: v for k, v in judge.body([]).items() if k != "messages"}
    templates = {
        kind: {"name": names[kind], "sha256": hashlib.sha256(json.dumps(p.messages).encode()).hexdigest()}
        for kind, p in prompts.items()
    }
    return json.loads(json.dumps({"request": body, "templates": templates}))


def _key(name: str, question_id, turn: int, user_prompt: str) -> Key:
    return (name, json.dumps(question_id), int(turn), user_prompt)


def load_previous(out: Path, judgment_file: str, record: dict) -> dict[Key, dict]:
    """The judgments of an earlier run in ``out`` under the same judge record, by key; empty when there are none
    (no results.json, another judge, a file edited into an unreadable state)."""
    try:
        results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(results, dict) or (results.get("judge") or {}).get("record") != record:
        return {}
    path = out / "model_judgment" / judgment_file
    try:
        rows = read_judgment_file(path)
    except DataError:
        return {}
    return {_key(r["judge"][1], r["question_id"], r["turn"], r["user_prompt"]): r for r in rows}


def grade(judge, prompts: dict, names: dict[str, str], tasks: list[GradeTask], previous: dict[Key, dict]):
    """Judgment rows (FastChat's shape) for ``tasks``, in order, and how many were reused from ``previous``.

    The grades not reused are asked in one judge call per template kind (the client sends them concurrently)."""
    user_prompts = [prompts[t.kind].fill(**t.fields)[-1]["content"] for t in tasks]
    rows: list[dict | None] = [None] * len(tasks)
    todo: dict[str, list[int]] = {}
    for i, (task, user_prompt) in enumerate(zip(tasks, user_prompts)):
        old = previous.get(_key(names[task.kind], task.question_id, task.turn, user_prompt))
        if old is not None:
            rows[i] = {**old, "model": task.model}
        else:
            todo.setdefault(task.kind, []).append(i)
    reused = len(tasks) - sum(len(v) for v in todo.values())
    judge_model = judge.options.model
    for kind, indices in todo.items():
        graded = judge.grade_fields([tasks[i].fields for i in indices], prompts[kind])
        for i, (score, text, user_prompt) in zip(indices, graded):
            t = tasks[i]
            rows[i] = judgment_row(
                t.question_id, t.model, (judge_model, names[kind]), user_prompt, text, score, t.turn
            )
    return rows, reused
