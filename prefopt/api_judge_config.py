"""The options of the ``openai`` judge (prefopt.judges.api), as flat ``judge_*`` config keys (TRL style) and as one
value object.

:class:`ApiJudgeKeys` is mixed into :class:`prefopt.config.TrainConfig` (so ``prefopt train`` takes
``--judge_base_url`` ...) and ``prefopt eval`` makes one command-line flag per field; :meth:`ApiJudgeKeys.api_options`
turns the keys into the :class:`ApiOptions` the judge is built from. It lives outside ``prefopt.judges`` so that
reading a config imports no torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from prefopt.config_fields import _f, require
from prefopt.errors import ConfigError

MODES = ("alpaca_eval", "arena_hard", "grade")


@dataclass
class ApiOptions:
    """Everything the ``openai`` judge needs; see :class:`ApiJudgeKeys` for each field's meaning."""

    base_url: str
    model: str
    mode: str = "alpaca_eval"
    api_key_env: str | None = "OPENAI_API_KEY"
    template_file: str | None = None
    template_name: str | None = None
    max_tokens: int | None = None
    temperature: float = 0.0
    extra_body: dict = field(default_factory=dict)
    max_concurrency: int = 8
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    max_retries: int = 6
    retry_backoff_s: float = 1.0
    timeout_s: float = 120.0
    cache: bool = True
    cache_path: str | None = None
    usage_log: str | None = None
    price_input_per_million: float = 0.0
    price_output_per_million: float = 0.0
    max_unparsed_fraction: float = 0.1


@dataclass
class ApiJudgeKeys:
    """The ``judge: openai`` keys (a judge behind any OpenAI-compatible endpoint; docs/judges.md)."""

    judge_base_url: str | None = _f(None, "openai judge: the endpoint, e.g. https://api.openai.com/v1.")
    judge_model: str | None = _f(None, "openai judge: the model name the endpoint serves.")
    judge_api_key_env: str | None = _f(
        "OPENAI_API_KEY", "openai judge: environment variable holding the key (never logged); none: send no key."
    )
    judge_mode: Literal["alpaca_eval", "arena_hard", "grade"] = _f(
        "alpaca_eval",
        "openai judge: alpaca_eval (AlpacaEval's weighted annotator, P from two tokens' log-probs), arena_hard "
        "(5-way [[A>>B]] verdicts) or grade (a 1-10 rating per response, MT-Bench style).",
    )
    judge_template_file: str | None = _f(
        None,
        "openai judge: the judge prompt (arena_hard, grade: required for arena_hard): text, or YAML/JSON with "
        "system_prompt and prompt_template, or a JSONL of them picked by judge_template_name.",
    )
    judge_template_name: str | None = _f(
        None,
        "openai judge: alpaca_eval's annotator config (default weighted_alpaca_eval_gpt4_turbo), or a JSONL line.",
    )
    judge_max_tokens: int | None = _f(None, "openai judge: longest verdict (None: 1 / 4096 / 2048 per mode).")
    judge_temperature: float = _f(0.0, "openai judge: sampling temperature of the verdicts.")
    judge_extra_body: dict = _f({}, "openai judge: extra request fields (e.g. vLLM's chat_template_kwargs).")
    judge_max_concurrency: int = _f(8, "openai judge: requests in flight at once (per process).")
    judge_requests_per_minute: float | None = _f(None, "openai judge: request rate limit per process (None: none).")
    judge_tokens_per_minute: float | None = _f(None, "openai judge: token rate limit per process (None: none).")
    judge_max_retries: int = _f(
        6, "openai judge: retries of a request after 429, 5xx, a timeout or a lost connection."
    )
    judge_retry_backoff_s: float = _f(1.0, "openai judge: first retry wait; doubles each retry (jittered, max 60 s).")
    judge_timeout_s: float = _f(120.0, "openai judge: seconds one request may take.")
    judge_cache: bool = _f(True, "openai judge: keep every verdict on disk so a re-run judges nothing twice.")
    judge_cache_path: str | None = _f(
        None, "openai judge: the cache file (None: $PREFOPT_CACHE_DIR or ~/.cache/prefopt, judge_api.sqlite)."
    )
    judge_usage_log: str | None = _f(None, "openai judge: append one JSON line per request (tokens, cost, latency).")
    judge_price_input_per_million: float = _f(0.0, "openai judge: price of 1M prompt tokens, for the cost log.")
    judge_price_output_per_million: float = _f(0.0, "openai judge: price of 1M completion tokens, for the cost log.")
    judge_max_unparsed_fraction: float = _f(
        0.1, "openai judge: stop when more than this fraction of a call's verdicts cannot be read."
    )

    def api_options(self) -> ApiOptions:
        """The keys as :class:`ApiOptions`; a missing endpoint or model, or a value out of range, is a ConfigError."""
        for name in ("judge_base_url", "judge_model"):
            if not getattr(self, name):
                raise ConfigError(f"config key '{name}' is required with judge: openai")
        self._check_api_ranges()
        return ApiOptions(**{f.name[len("judge_") :]: getattr(self, f.name) for f in dataclasses.fields(ApiJudgeKeys)})

    def _check_api_ranges(self) -> None:  # not _check_ranges: TrainConfig, which mixes this in, has its own
        if self.judge_mode not in MODES:
            raise ConfigError(f"config key 'judge_mode' must be one of {', '.join(MODES)}, got {self.judge_mode!r}")
        require(
            self,
            [
                ("judge_max_concurrency", self.judge_max_concurrency >= 1, ">= 1"),
                ("judge_max_retries", self.judge_max_retries >= 0, ">= 0"),
                ("judge_retry_backoff_s", self.judge_retry_backoff_s >= 0, ">= 0"),
                ("judge_timeout_s", self.judge_timeout_s > 0, "> 0"),
                ("judge_temperature", self.judge_temperature >= 0, ">= 0"),
                ("judge_max_unparsed_fraction", 0 <= self.judge_max_unparsed_fraction <= 1, "in [0, 1]"),
                ("judge_max_tokens", self.judge_max_tokens is None or self.judge_max_tokens >= 1, ">= 1"),
                ("judge_requests_per_minute", (self.judge_requests_per_minute or 1) > 0, "> 0"),
                ("judge_tokens_per_minute", (self.judge_tokens_per_minute or 1) > 0, "> 0"),
            ],
        )
