"""The evaluation commands of ``prefopt``: ``eval`` (AlpacaEval-style win rates), ``arena-hard`` and ``mt-bench``.

They share the judge flags (the kinds of :mod:`prefopt.judges`, and one flag per ``judge_*`` key of the ``openai``
judge), the decoding flags of the models that generate, and ``--preset FILE`` (:mod:`prefopt.eval.presets`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from prefopt.errors import ConfigError


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


# --- shared -------------------------------------------------------------------------------------------------------
def judge_options(args) -> dict:
    """The judge's options (``build_judge``'s keywords and its kind) from the ``--judge*`` flags."""
    if not args.judge:
        raise ConfigError("give --judge (openai, reward_model, pairwise_model, generative, python_preference, ...)")
    judge = {"kind": args.judge}
    for key in ("model_name_or_path", "function", "template", "batch_size", "max_length", "dtype"):
        value = getattr(args, f"judge_{key}")
        if value is not None:
            judge[key] = value
    if args.judge == "openai":
        judge["api"] = _api_judge_options(args)
    return judge


def _api_judge_options(args) -> dict:
    """The ``openai`` judge's options from the ``--judge_*`` flags (checked like the train config's keys)."""
    from prefopt.api_judge_config import ApiJudgeKeys
    from prefopt.config import coerce_keys

    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(ApiJudgeKeys)}
    given = coerce_keys(ApiJudgeKeys, {k: v for k, v in given.items() if v is not None}, "command line")
    return dataclasses.asdict(ApiJudgeKeys(**given).api_options())


def decoding(args, **overrides):
    from prefopt.eval.generation import Decoding

    device = args.device if args.device != "auto" else ("cuda" if _cuda() else "cpu")
    values = dict(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        seed=args.seed,
        batch_size=args.batch_size,
        dtype=args.dtype,
        device=device,
    )
    return Decoding(**{**values, **overrides})


def _add_judge_flags(p) -> None:
    from prefopt.api_judge_config import ApiJudgeKeys
    from prefopt.config import field_help

    p.add_argument("--judge", help="Judge kind (prefopt.judges.JUDGE_KINDS).")
    p.add_argument("--judge_model_name_or_path")
    p.add_argument("--judge_function", help="module:function or file.py:function (python_reward/preference).")
    p.add_argument("--judge_template", help="Pairwise/generative judge template ({prompt} {a} {b}).")
    p.add_argument("--judge_batch_size", type=int)
    p.add_argument("--judge_max_length", type=int)
    p.add_argument("--judge_dtype")
    for name, help_text, _ in field_help(ApiJudgeKeys):
        p.add_argument(f"--{name}", help=help_text.replace("%", "%%"))


def _add_common_flags(p, max_new_tokens: int, temperature: float | None) -> None:
    """Output folder, reuse, judge, decoding and presets: what every evaluation command takes."""
    p.add_argument("--preset", action="append", default=[], help="YAML of flag values (eval/presets/); repeatable.")
    p.add_argument("--output_dir", help="Folder for the results (replaced only when complete).")
    p.add_argument("--max_instances", type=int, help="Evaluate only the first N questions.")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="Replace a non-empty output_dir (the judgments already in it are reused where judge, question and "
        "outputs are identical).",
    )
    p.add_argument("--no_reuse", action="store_true", help="Judge everything afresh, reusing nothing in output_dir.")
    p.add_argument("--no_progress", action="store_true", help="No progress bar (none anyway when not on a terminal).")
    _add_judge_flags(p)
    p.add_argument("--max_new_tokens", type=int, default=max_new_tokens)
    p.add_argument("--temperature", type=float, default=temperature, help="0: greedy decoding.")
    p.add_argument("--top_p", type=float, default=1.0)
    p.add_argument("--top_k", type=int, default=0)
    p.add_argument("--batch_size", type=int, default=16, help="Generation batch size.")
    p.add_argument("--dtype", default="float32", help="Weights dtype of the generating models.")
    p.add_argument("--device", default="auto", help="cuda, cpu or auto.")
    p.add_argument("--trust_remote_code", action="store_true")
    p.add_argument("--seed", type=int, default=0, help="Seed of sampling and of the bootstrap.")


def _report(output_dir: str, counts: str) -> int:
    """The leaderboard the command wrote, what was judged, and where the results are."""
    print((Path(output_dir) / "leaderboard.md").read_text(), end="")
    print(f"[prefopt] {counts}")
    print(f"[prefopt] results in {output_dir}")
    return 0


def _add_models_flag(p, files: str) -> None:
    p.add_argument(
        "--models",
        nargs="+",
        help=f"Models to score: {files}, model folders or Hub ids; NAME=SOURCE names one.",
    )


def apply_presets(parser: argparse.ArgumentParser, sub: argparse.ArgumentParser, argv: list[str], args):
    """Re-parse ``argv`` with the ``--preset`` files' values as the command's defaults (typed flags win)."""
    if not getattr(args, "preset", None):
        return args
    from prefopt.eval.presets import load_presets

    flags = {a.dest for a in sub._actions} - {"help", "preset"}
    sub.set_defaults(**load_presets(args.preset, flags, args.command))
    return parser.parse_args(argv)


# --- prefopt eval -------------------------------------------------------------------------------------------------
def run_eval_command(args: argparse.Namespace) -> int:
    from prefopt.eval.run import EvalRequest, run_eval, score_annotations

    if args.agreement:
        if args.models or args.eval_set or args.annotations:
            raise ConfigError("give either --agreement A B, --annotations, or --eval_set with --models")
        from prefopt.eval.agreement import judge_agreement

        print(json.dumps(judge_agreement(*args.agreement)))
        return 0
    if args.annotations:
        if args.models or args.eval_set:
            raise ConfigError("give either --annotations, or --eval_set with --models; not both")
        for path in args.annotations:
            result = score_annotations(path, args.lc_variant, args.lc_data, args.n_bootstrap, args.seed)
            print(json.dumps({k: v for k, v in result.items() if k != "versions"}))
        return 0
    if not (args.eval_set and args.models and args.output_dir):
        raise ConfigError("eval needs --eval_set, --models and --output_dir (or --annotations FILE)")
    request = EvalRequest(
        args.eval_set,
        args.models,
        args.output_dir,
        args.baseline,
        judge_options(args),
        decoding(args),
        args.lc_variant,
        args.lc_data,
        args.n_bootstrap,
        args.seed,
        args.overwrite,
        args.trust_remote_code,
        args.max_instances,
        args.pairs,
        not args.no_reuse,
        not args.no_progress,
    )
    results = run_eval(request)
    judged, reused = results["judge"]["judged"], results["judge"]["reused"]
    return _report(args.output_dir, f"{judged} judgments made, {reused} reused from the earlier run in the folder")


def add_eval_parser(sub) -> argparse.ArgumentParser:
    ev = sub.add_parser("eval", help="Win rates of models on an eval set: AlpacaEval files and a leaderboard.")
    ev.add_argument("--eval_set", help="JSON/JSONL list of {instruction, dataset?} (AlpacaEval's format).")
    _add_models_flag(ev, "outputs files (AlpacaEval format)")
    ev.add_argument("--baseline", help="The baseline generator (same syntax); default: the first of --models.")
    ev.add_argument(
        "--pairs",
        choices=["baseline", "all"],
        default="baseline",
        help="Judge each generator against the baseline (default) or every pair (fills the pairwise matrix).",
    )
    ev.add_argument(
        "--annotations",
        nargs="+",
        help="Instead: print the metrics of existing annotations files (rows with a null preference dropped, "
        "counted in n_dropped_null).",
    )
    ev.add_argument(
        "--agreement",
        nargs=2,
        metavar=("A", "B"),
        help="Instead: print two judges' agreement (rate, Cohen's kappa) and position bias on the same outputs.",
    )
    _add_common_flags(ev, max_new_tokens=512, temperature=0.0)
    ev.add_argument(
        "--lc_variant",
        default="auto",
        help="Length-controlled GLM: auto (length_controlled_v1 with --lc_data, else length_controlled_minimal), "
        "length_controlled_minimal, length_controlled_noreg, length_controlled_v1.",
    )
    ev.add_argument("--lc_data", help="AlpacaEval's df_gamed.csv (per-instruction difficulty, gamed annotations).")
    ev.add_argument("--n_bootstrap", type=int, default=2000, help="Bootstrap resamples of the 95%% interval.")
    return ev


# --- prefopt arena-hard -------------------------------------------------------------------------------------------
def run_arena_hard_command(args: argparse.Namespace) -> int:
    from prefopt.eval.arena_hard.run import ArenaRequest, run_arena_hard

    if args.judgments:
        return _score_arena_judgments(args)
    if not (args.questions and args.models and args.baseline and args.output_dir):
        raise ConfigError("arena-hard needs --questions, --models, --baseline and --output_dir")
    request = ArenaRequest(
        questions=args.questions,
        models=args.models,
        baseline=args.baseline,
        output_dir=args.output_dir,
        judge=judge_options(args),
        decoding=decoding(args),
        style_control=args.style_control,
        n_bootstrap=args.n_bootstrap,
        seed=args.seed,
        overwrite=args.overwrite,
        trust_remote_code=args.trust_remote_code,
        max_instances=args.max_instances,
        reuse=not args.no_reuse,
        progress=not args.no_progress,
        categories=args.categories,
    )
    results = run_arena_hard(request)
    return _report(
        args.output_dir, f"{results['judge']['judged']} questions judged, {results['judge']['reused']} reused"
    )


def _score_arena_judgments(args: argparse.Namespace) -> int:
    """``--judgments``: the leaderboard of existing judgment files (prefopt's or arena-hard-auto's), as JSON."""
    from prefopt.eval.arena_hard import leaderboard, read_answers, read_judgments
    from prefopt.eval.arena_hard.scoring import scored_category

    if args.models or args.output_dir:
        raise ConfigError("give either --judgments FILE... (with --answers for style control), or --models; not both")
    judgments = read_judgments(args.judgments)
    answers = [read_answers(path) for path in args.answers or []]
    baseline = args.baseline.split("=", 1)[0] if args.baseline else None
    board = leaderboard(
        judgments[0].version,
        judgments,
        answers or None,
        baseline,
        category=scored_category(args.categories),
        style_control=args.style_control,
        n_bootstrap=args.n_bootstrap,
        seed=args.seed,
    )
    print(json.dumps(board))
    return 0


def add_arena_hard_parser(sub) -> argparse.ArgumentParser:
    ah = sub.add_parser(
        "arena-hard", help="Arena-Hard-Auto: answers, judgments in its formats, Bradley-Terry scores with intervals."
    )
    ah.add_argument("--questions", help="arena-hard-auto's question.jsonl (v0.1 or v2.0).")
    _add_models_flag(ah, "model_answer files (arena-hard-auto format)")
    ah.add_argument("--baseline", help="The baseline: NAME=its model_answer file (e.g. gpt-4-0314.jsonl), or a model.")
    ah.add_argument(
        "--style_control",
        choices=["none", "length", "markdown", "both"],
        default="none",
        help="Covariates of the Bradley-Terry fit: the normalised length and/or markdown density differences.",
    )
    ah.add_argument(
        "--categories",
        nargs="+",
        help="Only these question categories (v2.0: hard_prompt against o3-mini, creative_writing against gemini).",
    )
    ah.add_argument("--n_bootstrap", type=int, default=100, help="Bootstrap rounds of the interval.")
    ah.add_argument(
        "--judgments",
        nargs="+",
        help="Instead: print the leaderboard (JSON) of existing judgment files, prefopt's or arena-hard-auto's; "
        "--baseline NAME names the baseline (default: the version's).",
    )
    ah.add_argument("--answers", nargs="+", help="With --judgments: model_answer files (style control, avg_tokens).")
    _add_common_flags(ah, max_new_tokens=4096, temperature=0.0)
    return ah


# --- prefopt mt-bench ---------------------------------------------------------------------------------------------
def run_mt_bench_command(args: argparse.Namespace) -> int:
    from prefopt.eval.mt_bench import MTBenchDecoding, MTBenchRequest, run_mt_bench

    if args.judgments:
        from prefopt.eval.mt_bench import score_judgments

        if args.models or args.output_dir or not args.questions:
            raise ConfigError("give --judgments FILE with --questions (and no --models), or --models; not both")
        print(json.dumps(score_judgments(args.questions, args.judgments, args.n_bootstrap, args.seed)))
        return 0
    if not (args.questions and args.models and args.output_dir):
        raise ConfigError("mt-bench needs --questions, --models and --output_dir")
    if args.judge != "openai":
        raise ConfigError(f"mt-bench grades with --judge openai (judge_mode grade); got --judge {args.judge}")
    plain = decoding(args, temperature=0.0)  # the checks and the device; the temperature is per category
    request = MTBenchRequest(
        question_file=args.questions,
        models=args.models,
        output_dir=args.output_dir,
        judge={**_api_judge_options(args), "mode": "grade"},
        reference_file=args.reference_answers,
        decoding=MTBenchDecoding(
            max_new_tokens=plain.max_new_tokens,
            temperature=args.temperature,
            top_p=plain.top_p,
            top_k=plain.top_k,
            seed=plain.seed,
            batch_size=plain.batch_size,
            dtype=plain.dtype,
            device=plain.device,
        ),
        n_bootstrap=args.n_bootstrap,
        seed=args.seed,
        overwrite=args.overwrite,
        reuse=not args.no_reuse,
        trust_remote_code=args.trust_remote_code,
        max_questions=args.max_instances,
    )
    results = run_mt_bench(request)
    return _report(args.output_dir, f"{results['judge']['judged']} grades asked, {results['judge']['reused']} reused")


def add_mt_bench_parser(sub) -> argparse.ArgumentParser:
    mt = sub.add_parser("mt-bench", help="MT-Bench: two-turn answers, 1-10 grades by an LLM judge, scores.")
    mt.add_argument("--questions", help="FastChat's data/mt_bench/question.jsonl.")
    _add_models_flag(mt, "model_answer files (FastChat format)")
    mt.add_argument("--reference_answers", help="FastChat's reference_answer/gpt-4.jsonl (math, reasoning, coding).")
    mt.add_argument("--n_bootstrap", type=int, default=2000, help="Bootstrap resamples (questions) of the interval.")
    mt.add_argument(
        "--judgments",
        help="Instead: print the scores (JSON) of an existing judgment file (ours or FastChat's gpt-4_single.jsonl).",
    )
    _add_common_flags(mt, max_new_tokens=1024, temperature=None)
    mt.set_defaults(judge="openai")
    return mt
