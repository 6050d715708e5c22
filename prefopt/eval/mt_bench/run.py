"""``prefopt mt-bench``: MT-Bench answers (generated, or read from model_answer files), single-answer grades from
an ``openai`` judge with FastChat's judge prompts, scores and a leaderboard.

Order: the questions, references, answer files, judge prompts and output folder are read and checked first, then
the judge is built (its preflight checks the endpoint, key and model), then models generate, then the answers are
graded; everything is written into a staging folder that replaces ``output_dir`` only when complete, so a failure
leaves nothing half-written. Layout (FastChat's llm_judge folder names)::

    OUTPUT_DIR/
      model_answer/<model>.jsonl            FastChat's model_answer rows, one file per model
      model_judgment/<judge>_single.jsonl   FastChat's single-grading judgment rows, every model
      results.json                          scores, the judge's record and usage, decoding, inputs, versions
      leaderboard.md                        overall, CI, per turn and per category, best first

Grades already in ``output_dir`` (``overwrite=True``) are reused when the judge, template, question, turn and
prompt (hence the answer) are unchanged (:mod:`prefopt.eval.mt_bench.grading`).

Departures from FastChat's gen_judgment.py: requests go through prefopt's ``openai`` judge client (its disk cache,
retries, rate limits and concurrency; its ``judge_max_tokens``, default 2048, and ``judge_temperature``, default 0,
as FastChat's gpt-4 calls), and its stop rule applies: once 10 or more grades were asked and more than
``judge_max_unparsed_fraction`` of them were unreadable, the run stops with a JudgeError (FastChat keeps going,
writing −1); set it to 1 to never stop. Nothing is written on a failure; the answers already graded are in the
judge's cache, so a re-run pays only for the rest.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from prefopt.errors import ConfigError, DataError
from prefopt.eval.formats import write_json, write_jsonl
from prefopt.eval.mt_bench import grading
from prefopt.eval.mt_bench.formats import (
    Question,
    QuestionId,
    align_answers,
    answer_rows,
    read_answers,
    read_judgments,
    read_questions,
)
from prefopt.eval.mt_bench.generation import MTBenchDecoding
from prefopt.eval.mt_bench.scores import scores, to_markdown
from prefopt.eval.run import file_record, looks_like_path, safe_name, versions
from prefopt.rundir import atomic_dir, atomic_write_text, refuse_non_empty


@dataclass
class MTBenchRequest:
    """What ``prefopt mt-bench`` was asked to do.

    ``judge`` holds :class:`prefopt.judges.api.ApiOptions` fields as a dict (the ``--judge_*`` flags without the
    prefix); ``template_file`` must be FastChat's ``judge_prompts.jsonl`` (or a file with lines of the same names
    and fields), and the mode is always ``grade``.
    """

    question_file: str  # FastChat's data/mt_bench/question.jsonl
    models: list[str]  # each "SOURCE" or "NAME=SOURCE"; SOURCE a model_answer .jsonl file, a model folder or Hub id
    output_dir: str
    judge: dict
    reference_file: str | None = None  # FastChat's reference_answer/gpt-4.jsonl; None: the questions' "reference"
    template_names: dict[str, str] = field(default_factory=dict)  # kind → line name, over grading.TEMPLATE_NAMES
    decoding: MTBenchDecoding = field(default_factory=MTBenchDecoding)
    n_bootstrap: int = 2000
    seed: int = 0  # the bootstrap's
    overwrite: bool = False
    reuse: bool = True  # reuse the grades already in output_dir (same judge, template, question, turn, answer)
    trust_remote_code: bool = False
    max_questions: int | None = None  # only the first N questions of the file


@dataclass
class Contestant:
    """A model under evaluation: its name in the files, where its answers come from, and the answers."""

    name: str
    source: dict
    answers: dict[QuestionId, list[str]] | None = None


def grade_judge_options(judge: dict, template_names: dict[str, str] | None = None):
    """The grading judge's :class:`~prefopt.judges.api.ApiOptions` (``judge``: their fields as a dict; the mode is
    always ``grade``) and the judge-prompt line name of each template kind."""
    from prefopt.judges.api import ApiOptions

    given = {**judge, "mode": "grade"}
    if not given.get("template_file"):
        raise ConfigError(
            "mt-bench needs judge_template_file: FastChat's judge_prompts.jsonl (single-v1, single-math-v1 and their "
            "-multi-turn lines)"
        )
    names = grading.template_names(template_names)
    try:
        return ApiOptions(**{**given, "template_name": names["single"]}), names
    except TypeError as err:
        raise ConfigError(f"mt-bench judge options: {err}") from None


def _resolve(spec: str, questions: list[Question]) -> Contestant:
    """An answer file is read and matched now; a model is only named (it generates later)."""
    name, source = spec.split("=", 1) if "=" in spec else (None, spec)
    if Path(source).is_file():
        _, answers = read_answers(source)
        aligned = align_answers(questions, answers, source)
        return Contestant(name or Path(source).stem, {"answer_file": file_record(source)}, aligned)  # FastChat's name
    if looks_like_path(source) and not Path(source).expanduser().exists():
        raise DataError(f"model '{spec}': no such file or folder '{source}' (a model_answer file or a model folder)")
    return Contestant(name or Path(source.rstrip("/")).name, {"model": source})


def _contestants(request: MTBenchRequest, questions: list[Question]) -> list[Contestant]:
    if not request.models:
        raise ConfigError("mt-bench needs at least one model: a model folder, a Hub id or a model_answer file")
    contestants = [_resolve(spec, questions) for spec in request.models]
    names = [c.name for c in contestants]
    if len({safe_name(n) for n in names}) < len(names):
        raise ConfigError(f"model names must be distinct (as file names too): {names}; name them NAME=SOURCE")
    return contestants


def _generate(request: MTBenchRequest, contestants: list[Contestant], questions: list[Question]) -> None:
    from prefopt.eval.mt_bench.generation import generate_answers

    for c in contestants:
        if c.answers is None:
            print(f"[prefopt] mt-bench: generating {len(questions)} x 2 turns with {c.source['model']}", flush=True)
            generated = generate_answers(c.source["model"], questions, request.decoding, request.trust_remote_code)
            c.answers = generated.answers
            cut = sum(r == "length" for reasons in generated.finish_reasons.values() for r in reasons)
            c.source.update(decoding=request.decoding.record(), n_turns_cut_at_max_new_tokens=cut)


def _read_inputs(request: MTBenchRequest) -> tuple[list[Question], int, dict]:
    if request.max_questions is not None and request.max_questions < 1:
        raise ConfigError(f"max_questions must be >= 1; got {request.max_questions}")
    if request.n_bootstrap < 0:
        raise ConfigError(f"n_bootstrap must be >= 0; got {request.n_bootstrap}")
    every = read_questions(request.question_file)
    questions = every[: request.max_questions]
    references = grading.reference_answers(questions, request.question_file, request.reference_file)
    return questions, len(every), references


def run_mt_bench(request: MTBenchRequest) -> dict:
    """Run the whole evaluation; returns what ``results.json`` holds."""
    from prefopt.judges.api import OpenAIGradeJudge

    out = Path(request.output_dir)
    refuse_non_empty(out, request.overwrite, "output_dir")
    questions, n_in_file, references = _read_inputs(request)
    contestants = _contestants(request, questions)
    options, names = grade_judge_options(request.judge, request.template_names)
    prompts = grading.load_templates(options.template_file, names)  # every line checked before any compute
    judge = OpenAIGradeJudge(options)
    record = grading.judge_record(judge, prompts, names)
    judgment_file = f"{safe_name(options.model)}_single.jsonl"
    previous = grading.load_previous(out, judgment_file, record) if request.reuse else {}
    _generate(request, contestants, questions)
    tasks = grading.plan_grades(questions, {c.name: c.answers for c in contestants}, references)
    print(f"[prefopt] mt-bench: {len(tasks)} grades, {len(previous)} earlier ones in {out} to reuse", flush=True)
    rows, reused = grading.grade(judge, prompts, names, tasks, previous)
    results = {
        "questions": {**file_record(request.question_file), "n": len(questions), "n_in_file": n_in_file},
        "references": file_record(request.reference_file) if request.reference_file else "question file",
        "judge": {
            "model": options.model,
            "base_url": options.base_url,
            "template_file": file_record(options.template_file),
            "templates": names,
            "record": record,
            "judged": len(tasks) - reused,
            "reused": reused,
            "unreadable": sum(r["score"] == -1 for r in rows),  # reused ones included (scores drop them)
            "usage": judge.take_metrics(),
        },
        "models": {c.name: c.source for c in contestants},
        "scores": scores(rows, questions, request.n_bootstrap, request.seed),
        "bootstrap": {"n": request.n_bootstrap, "seed": request.seed, "level": 0.95, "resampled": "questions"},
        "versions": versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    _write(out, questions, contestants, judgment_file, rows, results)
    return results


def _write(out: Path, questions, contestants: list[Contestant], judgment_file: str, rows, results: dict) -> None:
    with atomic_dir(out) as staging:
        for c in contestants:
            path = staging / "model_answer" / f"{safe_name(c.name)}.jsonl"
            write_jsonl(path, answer_rows(c.name, questions, c.answers))
        write_jsonl(staging / "model_judgment" / judgment_file, rows)
        label = f"openai: {results['judge']['model']}"
        atomic_write_text(staging / "leaderboard.md", to_markdown(results["scores"], label))
        write_json(staging / "results.json", results)


def score_judgments(question_file: str, judgment_file: str, n_bootstrap: int = 2000, seed: int = 0) -> dict:
    """The scores of an existing judgment file (ours, or FastChat's ``gpt-4_single.jsonl``), by model."""
    questions = read_questions(question_file)
    rows = read_judgments(judgment_file)
    known = {q.question_id for q in questions}
    unknown = [r["question_id"] for r in rows if r["question_id"] not in known]
    if unknown:
        raise DataError(
            f"judgment file '{judgment_file}': {len(unknown)} row(s) grade questions not in '{question_file}' "
            f"(first: {unknown[0]!r})"
        )
    return scores(rows, questions, n_bootstrap, seed)
