"""A benchmark scored during training (``eval_benchmark``): AlpacaEval, Arena-Hard-Auto or MT-Bench on the current
policy, every ``eval_every`` iterations and after the last.

The benchmark's settings are its command's flags (``prefopt eval``, ``prefopt arena-hard``, ``prefopt mt-bench``)
from ``eval_benchmark_preset`` files and the ``eval_benchmark_options`` mapping, read and checked when the run is
built; ``eval_max_instances`` keeps the first N questions. The policy answers through the run's own rollout engine
(the weights it is training, no second copy) with the benchmark's decoding and fixed per-question seeds; the
baseline's answers come from a file (AlpacaEval outputs, an arena-hard-auto model_answer file). Only the main
process judges and scores; every process logs the same metrics:

- ``alpaca_eval``: ``eval/alpaca_eval/win_rate``, ``ci_low``, ``ci_high`` (bootstrap), ``lc_win_rate`` (from 10
  questions), ``avg_length``;
- ``arena_hard``: ``eval/arena_hard/score`` (percent, the version's statistic), ``ci_low``, ``ci_high``;
- ``mt_bench``: ``eval/mt_bench/score`` (mean grade), ``ci_low``, ``ci_high``, ``turn_1``, ``turn_2``;

each with ``n`` (questions) and the API judge's usage under ``eval/<benchmark>/judge/...``. Answers are sharded
across processes for the one-turn benchmarks; MT-Bench's two turns (one engine call per temperature) run whole on
every process, so that all of them make the same engine calls.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from prefopt.errors import ConfigError
from prefopt.rollout.engine import SamplingParams, derive_seed

COMMANDS = {"alpaca_eval": "eval", "arena_hard": "arena-hard", "mt_bench": "mt-bench"}


def benchmark_args(cfg) -> argparse.Namespace:
    """The benchmark command's flags: its defaults, then the presets, then ``eval_benchmark_options``."""
    from prefopt import cli_eval
    from prefopt.eval.presets import load_presets

    command = COMMANDS[cfg.eval_benchmark]
    add = {"eval": cli_eval.add_eval_parser, "arena-hard": cli_eval.add_arena_hard_parser}
    add["mt-bench"] = cli_eval.add_mt_bench_parser
    parser = add[command](argparse.ArgumentParser(prog="prefopt").add_subparsers(dest="command"))
    flags = {a.dest for a in parser._actions} - {"help", "preset"}
    values = load_presets(list(cfg.eval_benchmark_preset), flags, command)
    unknown = sorted(set(cfg.eval_benchmark_options) - flags)
    if unknown:
        raise ConfigError(
            f"config key 'eval_benchmark_options': unknown key '{unknown[0]}' (a flag of prefopt {command})"
        )
    parser.set_defaults(**{**values, **cfg.eval_benchmark_options})
    args = parser.parse_args([])
    args.command = command
    return args


def _baseline_file(args, what: str) -> str:
    spec = args.baseline or ""
    path = spec.split("=", 1)[1] if "=" in spec else spec
    if not Path(path).is_file():
        raise ConfigError(f"eval_benchmark: 'baseline' must name the baseline's {what} file (NAME=FILE); got {spec!r}")
    return spec


class BenchmarkEval:
    """One benchmark's inputs, read once; :meth:`__call__` scores the current policy (see the module docstring).
    ``cfg`` is a validated TrainConfig (its ``eval_benchmark`` one of ``BENCHMARKS``)."""

    def __init__(self, cfg, tokenizer):
        self.kind, self.cfg, self.tokenizer = cfg.eval_benchmark, cfg, tokenizer
        self.args = benchmark_args(cfg)
        self.judge = None
        getattr(self, f"_read_{self.kind}")()

    # -- inputs ----------------------------------------------------------------------------------------------------
    def _read_alpaca_eval(self) -> None:
        from prefopt.eval.run import EvalRequest, _read_inputs, _resolve

        baseline = _baseline_file(self.args, "AlpacaEval outputs")
        eval_set = self.args.eval_set or baseline.split("=", 1)[-1]
        request = EvalRequest(eval_set, [baseline], "", max_instances=self.cfg.eval_max_instances)
        request.lc_variant, request.lc_data = self.args.lc_variant, self.args.lc_data
        rows, every, self.lc_data = _read_inputs(request)
        self.instructions = [r["instruction"] for r in rows]
        self.baseline = _resolve(baseline, self.instructions, every)
        self.texts = self.instructions

    def _read_arena_hard(self) -> None:
        from prefopt.eval.arena_hard.run import ArenaRequest, _questions, _resolve

        spec = _baseline_file(self.args, "model_answer")
        request = ArenaRequest(self.args.questions, [], spec, "", categories=self.args.categories)
        request.max_instances = self.cfg.eval_max_instances
        self.questions = _questions(request)
        self.baseline = _resolve(spec, self.questions, self.questions[0].version)
        self.texts = [q.prompt for q in self.questions]

    def _read_mt_bench(self) -> None:
        from prefopt.cli_eval import _api_judge_options
        from prefopt.eval.mt_bench import grading
        from prefopt.eval.mt_bench.formats import read_questions
        from prefopt.eval.mt_bench.run import grade_judge_options

        self.questions = read_questions(self.args.questions)[: self.cfg.eval_max_instances]
        self.references = grading.reference_answers(self.questions, self.args.questions, self.args.reference_answers)
        self.grade_options, self.names = grade_judge_options(_api_judge_options(self.args))
        self.prompts = grading.load_templates(self.grade_options.template_file, self.names)

    def _build_judge(self):
        from prefopt.cli_eval import decoding, judge_options
        from prefopt.eval.run import build_eval_judge

        if self.kind == "mt_bench":
            from prefopt.judges.api.judges import OpenAIGradeJudge

            return OpenAIGradeJudge(self.grade_options)
        return build_eval_judge(judge_options(self.args), decoding(self.args).device)  # device auto: cuda if any

    # -- one evaluation --------------------------------------------------------------------------------------------
    def __call__(self, run) -> dict[str, float]:
        answers = self._answers(run)
        metrics = None
        if run.backend.is_main:
            if self.judge is None:
                self.judge = self._build_judge()
            metrics = getattr(self, f"_score_{self.kind}")(answers)
            usage = self.judge.take_metrics()
            metrics.update({f"judge/{k.removeprefix('judge/')}": v for k, v in usage.items()})
            metrics = {f"eval/{self.kind}/{k}": float(v) for k, v in metrics.items() if v is not None}
        return run.backend.all_gather_object(metrics)[0]

    def _answers(self, run):
        ctx, a = run.ctx, self.args
        if self.kind == "mt_bench":
            return self._mt_bench_answers(ctx)
        from prefopt.data import encode_prompt
        from prefopt.eval.generation import as_prompt

        lo, hi = ctx.shard(self.texts)
        ids = [encode_prompt(self.tokenizer, as_prompt(self.tokenizer, x)) for x in self.texts[lo:hi]]
        seeds = [derive_seed(a.seed, "benchmark", x) for x in self.texts[lo:hi]]
        params = SamplingParams(a.max_new_tokens, a.temperature, a.top_p, a.top_k)
        batch = ctx.rollout.generate(ids, 1, params, seeds)
        return ctx.gather([s.text for s in sorted(batch.samples, key=lambda s: s.prompt_index)])

    def _mt_bench_answers(self, ctx) -> dict:
        from prefopt.eval.mt_bench.generation import MTBenchDecoding, answer_turns

        a = self.args
        decoding = MTBenchDecoding(
            a.max_new_tokens, temperature=a.temperature, top_p=a.top_p, top_k=a.top_k, seed=a.seed
        )
        return answer_turns(ctx.rollout, self.tokenizer, self.questions, decoding).answers

    # -- scores ----------------------------------------------------------------------------------------------------
    def _score_alpaca_eval(self, answers: list[str]) -> dict:
        from prefopt.eval.compare import Generator, PairJudge, comparison_metrics

        policy = Generator("policy", answers, {})
        probs = PairJudge(self.judge, self.instructions)(policy, self.baseline)
        a = self.args
        m = comparison_metrics(probs, policy, self.baseline, a.lc_variant, self.lc_data, a.n_bootstrap, a.seed)
        keys = ("win_rate", "ci_low", "ci_high", "lc_win_rate", "avg_length", "n")
        return {k: m.get(k) for k in keys}

    def _score_arena_hard(self, answers: list[str]) -> dict:
        from prefopt.eval.arena_hard.judging import judge_games, judgment_rows
        from prefopt.eval.arena_hard.markdown import tokenizer_counts
        from prefopt.eval.arena_hard.run import score_rows
        from prefopt.eval.arena_hard.scoring import scored_category

        qs, base, name = self.questions, self.baseline, "policy"
        games = judge_games(self.judge, self.texts, [q.category for q in qs], answers,
                            [base.texts[q.uid] for q in qs], progress=False)  # fmt: skip
        rows = judgment_rows(qs, name, base.name, self.judge.name, games)
        metadata = {name: {q.uid: tokenizer_counts(y, self.tokenizer) for q, y in zip(qs, answers)}}
        metadata[base.name] = base.metadata
        a = self.args
        category = scored_category(a.categories)
        board = score_rows({name: rows}, metadata, base.name, category=category, style_control=a.style_control,
                           n_bootstrap=a.n_bootstrap, seed=a.seed)  # fmt: skip
        row = next(r for r in board["models"] if r["model"] == name)
        return {"score": row["score"], "ci_low": row["lower"], "ci_high": row["upper"], "n": len(qs)}

    def _score_mt_bench(self, answers: dict) -> dict:
        from prefopt.eval.mt_bench import grading
        from prefopt.eval.mt_bench.scores import model_scores

        tasks = grading.plan_grades(self.questions, {"policy": answers}, self.references)
        rows, _ = grading.grade(self.judge, self.prompts, self.names, tasks, {})
        s = model_scores(rows, self.questions, self.args.n_bootstrap, self.args.seed)
        keys = ("ci_low", "ci_high", "turn_1", "turn_2")
        return {"score": s["overall"], **{k: s[k] for k in keys}, "n": s["n_questions"]}
