"""``prefopt arena-hard``: answers (generated, or read from arena-hard-auto model_answer files), both games of each
question judged against the baseline, judgment files in arena-hard-auto's layout, and its leaderboard.

Order: the questions, answer files and output folder are read and checked first, then the judge is built, then
models generate, then the games are played; everything is written into a staging folder that replaces
``output_dir`` only when complete. Layout (arena-hard-auto's ``data/<bench>/`` folder names, so its own
``show_result.py`` runs on a copy of it)::

    OUTPUT_DIR/
      model_answer/<model>.jsonl              every model's and the baseline's answers, with their style metadata
      model_judgment/<judge>/<model>.jsonl    both games of every question, the version's row layout
      results.json, leaderboard.md            the scores, intervals, style coefficients, judge, decoding, inputs

The question file's generation (v0.1 or v2.0) decides the files' layout and the scoring (:mod:`.scoring`). A re-run
into the same folder (``overwrite``) judges only what changed: a judgment row is reused when the judge record, the
question and both answers' texts are identical.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from prefopt.errors import ConfigError, DataError
from prefopt.eval.arena_hard.formats import (
    Question,
    answer_row,
    parse_judgments,
    read_answers,
    read_questions,
)
from prefopt.eval.arena_hard.judging import judge_games, judgment_rows
from prefopt.eval.arena_hard.markdown import tokenizer_counts
from prefopt.eval.arena_hard.scoring import leaderboard, scored_category
from prefopt.eval.formats import write_json, write_jsonl
from prefopt.eval.generation import Decoding, generate_outputs
from prefopt.eval.reuse import judge_record
from prefopt.eval.run import build_eval_judge, file_record, looks_like_path, safe_name, versions
from prefopt.rundir import atomic_dir, atomic_write_text, refuse_non_empty


@dataclass
class ArenaRequest:
    """What ``prefopt arena-hard`` was asked to do (the CLI's flags)."""

    questions: str  # arena-hard-auto's question.jsonl
    models: list[str]  # each "SOURCE" or "NAME=SOURCE": a model_answer file, a model folder or a Hub id
    baseline: str  # same syntax; usually the baseline's model_answer file (gpt-4-0314.jsonl, o3-mini-...jsonl)
    output_dir: str
    judge: dict = field(default_factory=lambda: {"kind": "nontransitive"})
    decoding: Decoding = field(default_factory=lambda: Decoding(max_new_tokens=4096))
    style_control: str = "none"
    n_bootstrap: int = 100
    seed: int = 0
    overwrite: bool = False
    trust_remote_code: bool = False
    max_instances: int | None = None
    reuse: bool = True
    progress: bool = True
    categories: list[str] | None = None  # only these question categories (v2.0: hard_prompt, creative_writing)


@dataclass
class Contestant:
    name: str
    source: dict
    texts: dict[str, str] = field(default_factory=dict)  # by question uid
    metadata: dict[str, dict | None] = field(default_factory=dict)


def _questions(request: ArenaRequest) -> list[Question]:
    if request.max_instances is not None and request.max_instances < 1:
        raise ConfigError(f"max_instances must be >= 1; got {request.max_instances}")
    questions = read_questions(request.questions)
    if request.categories:
        questions = [q for q in questions if q.category in request.categories]
        if not questions:
            raise DataError(f"question file '{request.questions}' has no question in categories {request.categories}")
    return questions[: request.max_instances]


def _resolve(spec: str, questions: list[Question], version: str) -> Contestant:
    name, source = spec.split("=", 1) if "=" in spec else (None, spec)
    if Path(source).is_file():
        answers = read_answers(source)
        if answers.version != version:
            raise DataError(f"answer file '{source}' is arena-hard-auto {answers.version}; the questions {version}")
        missing = [q.uid for q in questions if q.uid not in answers.texts]
        if missing:
            raise DataError(
                f"answer file '{source}' has no answer to question {missing[0]!r} ({len(missing)} missing)"
            )
        uids = [q.uid for q in questions]
        return Contestant(
            name or answers.model,
            {"answer_file": file_record(source)},
            {u: answers.texts[u] for u in uids},
            {u: answers.metadata.get(u) for u in uids},
        )
    if looks_like_path(source) and not Path(source).expanduser().exists():
        raise DataError(f"model '{spec}': no such file or folder '{source}' (a model_answer file or a model folder)")
    return Contestant(name or source, {"model": source})


def _generate(request: ArenaRequest, contestants: list[Contestant], questions: list[Question]) -> None:
    """Answers of the contestants that are models, with their style metadata (token_len: the model's tokenizer)."""
    from prefopt.models import load_tokenizer

    prompts = [q.prompt for q in questions]
    for c in contestants:
        if "model" not in c.source:
            continue
        print(f"[prefopt] generating {len(prompts)} answers with {c.source['model']}", flush=True)
        texts = generate_outputs(c.source["model"], prompts, request.decoding, request.trust_remote_code)
        tokenizer = load_tokenizer(c.source["model"], request.trust_remote_code)
        for q, text in zip(questions, texts):
            c.texts[q.uid] = text
            c.metadata[q.uid] = tokenizer_counts(text, tokenizer)
        c.source["decoding"] = request.decoding.record()
        c.source["token_len"] = "the model's own tokenizer (arena-hard-auto: tiktoken)"


def _previous(out: Path, record: dict, judge_folder: str) -> dict[tuple, dict]:
    """Judgment rows of an earlier run in ``out`` under the same judge record, by (model, uid, answer, baseline)."""
    try:
        results = json.loads((out / "results.json").read_text(encoding="utf-8"))
        if results.get("judge_record") != record:
            return {}
        texts = {}
        for path in (out / "model_answer").glob("*.jsonl"):
            answers = read_answers(path)
            texts[answers.model] = answers.texts
        previous = {}
        for path in (out / "model_judgment" / judge_folder).glob("*.jsonl"):
            for line in path.read_text(encoding="utf-8").splitlines():
                row = json.loads(line)
                uid = row.get("uid", row.get("question_id"))
                model, base = row["model"], results["baseline"]
                previous[(model, uid, texts[model][uid], texts[base][uid])] = row
        return previous
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}  # nothing readable (or edited by hand): everything is judged again


def _play(request, judge, judge_name, questions, contestants, baseline, previous) -> tuple[dict, int]:
    """Judgment rows by model (question order), and how many were reused."""
    rows_by_model, reused = {}, 0
    for c in contestants:
        rows = [previous.get((c.name, q.uid, c.texts[q.uid], baseline.texts[q.uid])) for q in questions]
        todo = [i for i, r in enumerate(rows) if r is None]
        reused += len(rows) - len(todo)
        if todo:
            asked = [questions[i] for i in todo]
            games = judge_games(
                judge,
                [q.prompt for q in asked],
                [q.category for q in asked],
                [c.texts[q.uid] for q in asked],
                [baseline.texts[q.uid] for q in asked],
                desc=f"judging {c.name} vs {baseline.name}",
                progress=request.progress,
            )
            for i, row in zip(todo, judgment_rows(asked, c.name, baseline.name, judge_name, games)):
                rows[i] = row
        rows_by_model[c.name] = rows
    return rows_by_model, reused


def _check_style(request: ArenaRequest, everyone: list[Contestant]) -> None:
    if request.style_control == "none":
        return
    for c in everyone:
        uid = next((u for u, m in c.metadata.items() if not m or "header_count" not in m), None)
        if uid is not None:
            raise DataError(
                f"style_control {request.style_control}: {c.name}'s answer to question {uid!r} has no markdown "
                "metadata (arena-hard-auto's answer files carry it; run utils/add_markdown_info.py on yours)"
            )


def run_arena_hard(request: ArenaRequest) -> dict:
    """Run the whole benchmark; returns what ``results.json`` holds."""
    out = Path(request.output_dir)
    refuse_non_empty(out, request.overwrite, "output_dir")
    questions = _questions(request)
    version = questions[0].version
    baseline = _resolve(request.baseline, questions, version)
    contestants = [_resolve(spec, questions, version) for spec in request.models]
    names = [baseline.name] + [c.name for c in contestants]
    if len({safe_name(n) for n in names}) < len(names):
        raise ConfigError(f"model names must be distinct (as file names too): {names}; name them NAME=SOURCE")
    judge = build_eval_judge(request.judge, request.decoding.device)
    judge_name = request.judge.get("api", {}).get("model") or request.judge["kind"]  # the folder; the record has more
    record = judge_record(judge.name, request.judge)
    folder = safe_name(judge_name)
    previous = _previous(out, record, folder) if request.reuse else {}
    _generate(request, [baseline, *contestants], questions)
    _check_style(request, [baseline, *contestants])
    rows_by_model, reused = _play(request, judge, judge_name, questions, contestants, baseline, previous)
    metadata = {c.name: c.metadata for c in [baseline, *contestants]}
    board = score_rows(
        rows_by_model,
        metadata,
        baseline.name,
        category=scored_category(request.categories),
        style_control=request.style_control,
        n_bootstrap=request.n_bootstrap,
        seed=request.seed,
    )
    n = len(questions) * len(contestants)
    results = {
        "questions": {**file_record(request.questions), "n": len(questions), "version": version},
        "judge": {"name": judge_name, **request.judge, "usage": judge.take_metrics(), "judged": n - reused,
                  "reused": reused},
        "judge_record": record,
        "baseline": baseline.name,
        "models": {c.name: c.source for c in [baseline, *contestants]},
        "leaderboard": board,
        "versions": versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }  # fmt: skip
    _write(out, version, questions, [baseline, *contestants], folder, rows_by_model, results)
    return results


def score_rows(rows_by_model: dict[str, list[dict]], metadata: dict, baseline: str, **options) -> dict:
    """The leaderboard of judgment rows (by model), checked as arena-hard-auto's files are when read;
    ``options``: :func:`.scoring.leaderboard`'s keywords."""
    rows = [(row, f"judgment of {model} row {i}") for model, rs in rows_by_model.items() for i, row in enumerate(rs)]
    judgments = parse_judgments(rows)
    return leaderboard(judgments[0].version, judgments, metadata, baseline, **options)


def _write(out: Path, version, questions, everyone, folder, rows_by_model, results) -> None:
    with atomic_dir(out) as staging:
        for c in everyone:
            rows = [
                answer_row(version, q.uid, c.name, c.texts[q.uid], c.metadata.get(q.uid), prompt=q.prompt)
                for q in questions
            ]
            write_jsonl(staging / "model_answer" / f"{safe_name(c.name)}.jsonl", rows)
        for model, rows in rows_by_model.items():
            write_jsonl(staging / "model_judgment" / folder / f"{safe_name(model)}.jsonl", rows)
        atomic_write_text(staging / "leaderboard.md", to_markdown(results))
        write_json(staging / "results.json", results)


def to_markdown(results: dict) -> str:
    board = results["leaderboard"]
    lo, hi = board["quantiles"]
    lines = [
        f"# Arena-Hard-Auto {board['version']} against {board['baseline']}",
        "",
        f"Judge: {results['judge']['name']}; style control: {board['style_control']}; {board['method']}.",
        "",
        f"| model | score (%) | {lo:.1%}-{hi:.1%} interval | avg tokens |",
        "|---|---|---|---|",
    ]
    for row in board["models"]:
        interval = "-" if row["lower"] is None else f"{row['lower']:.1f} to {row['upper']:.1f}"
        lines.append(f"| {row['model']} | {row['score']:.1f} | {interval} | {row.get('avg_tokens') or '-'} |")
    for name, coef in board.get("style_coefficients", {}).items():
        lines.append(f"\nStyle coefficient {name}: {coef['point']:.3f}")
    return "\n".join(lines) + "\n"
