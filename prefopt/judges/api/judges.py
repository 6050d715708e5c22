"""``judge: openai``: an LLM judge behind any OpenAI-compatible endpoint (GPT-4-class annotators, or a large open
judge served with ``vllm serve`` on its own GPUs).

Modes (``judge_mode``):

- ``alpaca_eval``: AlpacaEval 2.0's weighted annotator. One token is generated; from its top log-probs,
  p(x, y, y') = P("m") / (P("m") + P("M")) with y shown as output_1 ("m"). Both orders are asked, and
  P(y ≻ y' | x) = ½ [p(x, y, y') + 1 − p(x, y', y)] (AlpacaEval randomises the order instead).
- ``arena_hard``: Arena-Hard-Auto's 5-way verdict ``[[A>>B]]`` … ``[[B>>A]]`` in both orders, strong verdicts
  weighted 3 as arena-hard-auto weights its battles (:func:`verdicts.arena_preference`). An answer without a
  verdict gets one follow-up turn asking for it, as arena-hard-auto's second judgment attempt does.
- ``grade``: a 1–10 rating per response (MT-Bench's single-answer grading), a reward judge whose preference is
  σ(r − r'); with ``{ref_answer_1}`` in the template each row's reference answer is shown.

An unreadable answer (no verdict; neither token among the top log-probs) is counted in ``judge/unparsed``: a pair
with one readable order takes that order's value, a pair with none ½ and a grade the mean of the call's readable
grades; once 10 or more rows have been judged and more than ``judge_max_unparsed_fraction`` of them were
unreadable, the judge stops the run with a JudgeError.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import torch

from prefopt.api_judge_config import ApiOptions
from prefopt.errors import JudgeError
from prefopt.judges.api.client import ApiClient
from prefopt.judges.api.templates import judge_prompt
from prefopt.judges.api.verdicts import (
    arena_preference,
    arena_verdict,
    logprob_preference,
    message_text,
    rating,
    token_logprobs,
)
from prefopt.judges.base import PreferenceJudge, Prompt, RewardJudge
from prefopt.judges.reward_model import prompt_as_text

DEFAULT_MAX_TOKENS = {"alpaca_eval": 1, "arena_hard": 4096, "grade": 2048}
FOLLOW_UP = "Finish your judgment: state your final verdict as one of the labels in double brackets, e.g. [[A=B]]."
MIN_ROWS_FOR_STOP = 10


class _ApiJudging:
    """What both API judges share: the client, the prompt, request bodies and the unreadable-answer count."""

    def _setup(self, options: ApiOptions, preflight: bool) -> None:
        self.options = options
        self.prompt, self.settings = judge_prompt(options.mode, options.template_file, options.template_name)
        self.client = ApiClient(options)
        if preflight:
            self.client.preflight()
        self.name = f"openai:{options.model}:{options.mode}"
        self.judged = self.unparsed = self._unparsed_since = 0

    def body(self, messages: list[dict]) -> dict:
        body = {
            "model": self.options.model,
            "messages": messages,
            "max_tokens": self.options.max_tokens
            or self.settings.get("max_tokens")
            or DEFAULT_MAX_TOKENS[self.options.mode],
            "temperature": self.options.temperature,
        }
        if self.options.mode == "alpaca_eval":
            body.update(logprobs=True, top_logprobs=self.settings["top_logprobs"])
        return {**body, **self.options.extra_body}

    def _count_unparsed(self, rows: int, unparsed: int) -> None:
        self.judged += rows
        self.unparsed += unparsed
        self._unparsed_since += unparsed
        if unparsed:
            print(f"prefopt: judge {self.name}: {unparsed} of {rows} verdicts unreadable", file=sys.stderr)
        if self.judged >= MIN_ROWS_FOR_STOP and self.unparsed > self.options.max_unparsed_fraction * self.judged:
            raise JudgeError(
                f"judge {self.name}: {self.unparsed} of {self.judged} verdicts unreadable, more than "
                f"judge_max_unparsed_fraction={self.options.max_unparsed_fraction}; check the template and judge_model"
            )

    def take_metrics(self) -> dict[str, float]:
        usage = self.client.take_usage()
        metrics = {f"judge/{k}": float(v) for k, v in usage.items()}
        metrics["judge/unparsed"], self._unparsed_since = float(self._unparsed_since), 0
        return metrics


class OpenAIPreferenceJudge(_ApiJudging, PreferenceJudge):
    """P(y ≻ y' | x) from an API judge in ``alpaca_eval`` or ``arena_hard`` mode, both orders asked.

    Args:
        options: the endpoint, mode, template, limits and cache (:class:`ApiOptions`).
        preflight: check the endpoint, key and model at once (before any training compute).
    """

    def __init__(self, options: ApiOptions, *, preflight: bool = True):
        if options.mode == "grade":
            raise JudgeError("judge_mode grade scores single responses: use OpenAIGradeJudge")
        self._setup(options, preflight)

    def _messages(self, prompt: Prompt, first: str, second: str) -> list[dict]:
        x = prompt_as_text(prompt)
        if self.options.mode == "alpaca_eval":
            return self.prompt.fill(instruction=x, output_1=first, output_2=second)
        return self.prompt.fill(question_1=x, answer_1=first, answer_2=second)

    def _arena_verdicts(self, conversations: list[list[dict]]) -> list[str | None]:
        answers = self.client.complete([self.body(m) for m in conversations])
        verdicts = [arena_verdict(message_text(a)) for a in answers]
        retry = [i for i, (v, a) in enumerate(zip(verdicts, answers)) if v is None and "[[" not in message_text(a)]
        if retry:  # no label at all (not several): ask once more in the same conversation
            follow = [
                conversations[i]
                + [{"role": "assistant", "content": message_text(answers[i])}]
                + [{"role": "user", "content": FOLLOW_UP}]
                for i in retry
            ]
            for i, answer in zip(retry, self.client.complete([self.body(m) for m in follow])):
                verdicts[i] = arena_verdict(message_text(answer))
        return verdicts

    def _alpaca_probs(self, conversations: list[list[dict]], n: int) -> list[float | None]:
        """½ [p(a, b) + 1 − p(b, a)] from the log-probs of the 2n answers (a pair with one readable order: that
        order's value; with none: None)."""
        index, numerator, tokens = self.settings["token_index"], self.settings["numerator"], self.settings["tokens"]
        answers = self.client.complete([self.body(m) for m in conversations])
        first = [
            logprob_preference(token_logprobs(a, self.client.base_url, index), numerator, tokens) for a in answers
        ]
        probs = []
        for ab, ba in zip(first[:n], first[n:]):
            readable = [p for p in (ab, None if ba is None else 1.0 - ba) if p is not None]
            probs.append(sum(readable) / len(readable) if readable else None)
        return probs

    def _preference(
        self, prompts: Sequence[Prompt], responses_a: Sequence[str], responses_b: Sequence[str], references=None
    ) -> torch.Tensor:
        n = len(prompts)
        conversations = [self._messages(x, a, b) for x, a, b in zip(prompts, responses_a, responses_b)]
        conversations += [self._messages(x, b, a) for x, a, b in zip(prompts, responses_a, responses_b)]
        if self.options.mode == "arena_hard":
            verdicts = self._arena_verdicts(conversations)
            probs = [arena_preference(verdicts[i], verdicts[n + i]) for i in range(n)]
        else:
            probs = self._alpaca_probs(conversations, n)
        self._count_unparsed(n, sum(p is None for p in probs))
        return torch.tensor([0.5 if p is None else p for p in probs], dtype=torch.float64)


class OpenAIGradeJudge(_ApiJudging, RewardJudge):
    """r(x, y): the judge's 1–10 grade of each response (``grade`` mode); see :class:`OpenAIPreferenceJudge`."""

    def __init__(self, options: ApiOptions, *, preflight: bool = True):
        if options.mode != "grade":
            raise JudgeError(f"judge_mode {options.mode} compares two responses: use OpenAIPreferenceJudge")
        self._setup(options, preflight)
        self.needs_references = self.prompt.uses_reference

    def _reward(self, prompts: Sequence[Prompt], responses: Sequence[str], references=None) -> torch.Tensor:
        refs = references if references is not None else [None] * len(prompts)
        conversations = [
            self.prompt.fill(question=prompt_as_text(x), answer=y, **({"ref_answer_1": r} if r is not None else {}))
            for x, y, r in zip(prompts, responses, refs)
        ]
        grades = [rating(message_text(a)) for a in self.client.complete([self.body(m) for m in conversations])]
        readable = [g for g in grades if g is not None]
        self._count_unparsed(len(grades), len(grades) - len(readable))
        fill = sum(readable) / len(readable) if readable else 5.5  # the middle of the 1–10 scale
        return torch.tensor([fill if g is None else g for g in grades], dtype=torch.float64)


def build_api_judge(options: ApiOptions, preflight: bool = True) -> PreferenceJudge:
    """The ``openai`` judge of ``options.mode``."""
    cls = OpenAIGradeJudge if options.mode == "grade" else OpenAIPreferenceJudge
    return cls(options, preflight=preflight)
