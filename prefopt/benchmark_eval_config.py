"""The keys of a benchmark scored during training (``eval_benchmark``), mixed into
:class:`prefopt.config.TrainConfig`: which benchmark, and the flags of its command (``prefopt eval``,
``prefopt arena-hard`` or ``prefopt mt-bench``) from presets and a mapping. :mod:`prefopt.eval.in_training` runs it.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefopt.config_fields import _f
from prefopt.errors import ConfigError

BENCHMARKS = ("alpaca_eval", "arena_hard", "mt_bench")


@dataclass
class BenchmarkEvalKeys:
    """A benchmark scored every ``eval_every`` iterations (docs/evaluation.md, "In training")."""

    eval_benchmark: str | None = _f(
        None,
        "Also score a benchmark every eval_every iterations (and after the last): alpaca_eval, arena_hard or "
        "mt_bench; its files and judge come from eval_benchmark_preset and eval_benchmark_options.",
    )
    eval_benchmark_preset: list[str] = _f(
        [], "Preset files of the benchmark's command (eval/presets/*.yaml): its judge, files and decoding."
    )
    eval_benchmark_options: dict = _f(
        {},
        "The benchmark command's flags as a mapping, over the presets: e.g. {questions: q.jsonl, baseline: "
        "gpt-4-0314=answers.jsonl, judge: openai, judge_model: ...}.",
    )
    eval_max_instances: int | None = _f(
        None, "Score only the first N questions of the benchmark in training (a subset keeps it cheap)."
    )

    def _check_benchmark(self) -> None:
        if self.eval_benchmark is not None and self.eval_benchmark not in BENCHMARKS:
            raise ConfigError(
                f"config key 'eval_benchmark' must be one of {', '.join(BENCHMARKS)}, got {self.eval_benchmark!r}"
            )
        if self.eval_max_instances is not None and self.eval_max_instances < 1:
            raise ConfigError(f"config key 'eval_max_instances' must be >= 1, got {self.eval_max_instances}")
        given = [k for k in ("eval_benchmark_preset", "eval_benchmark_options") if getattr(self, k)]
        if given and self.eval_benchmark is None:
            raise ConfigError(f"config key '{given[0]}' needs eval_benchmark (alpaca_eval, arena_hard or mt_bench)")
