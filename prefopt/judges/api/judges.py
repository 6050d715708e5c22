"""``judge: openai``: an LLM judge behind any OpenAI-compatible endpoint (GPT-4-class annotators, or a large open
judge served with ``vllm serve`` on its own GPUs).

Modes (``judge_mode``):

- ``alpaca_eval``: AlpacaEval 2.0's weighted annotator. One token is generated; from its top log-probs,
  p(x, y, y') = P("m") / (P("m") + P("M")) with y shown as output_1 ("m"). Both orders are asked, and
  P(y ≻ y' | x) = ½ [p(x, y, y') + 1 − p(x, y', y)] (AlpacaEval randomises the order instead).
- ``arena_hard``: Arena-Hard-Auto's 5-way verdict ``[[A>>B]]`` … ``[[B>>A]]`` in both orders, strong verdicts
  weighted 3 as arena-hard-auto weights its battles (:func:`verdicts.arena_preference`). The prompt, the verdict
  rule and the attempts come from arena-hard-auto's own v0.1 or v2.0 config (:mod:`prefopt.judges.api.arena`);
  :meth:`OpenAIPreferenceJudge.arena_games` returns the games themselves (``prefopt arena-hard`` writes them).
- ``grade``: a 1–10 rating per response (MT-Bench's single-answer grading), a reward judge whose preference is
  σ(r − r'); with ``{ref_answer_1}`` in the template each row's reference answer is shown.

An unreadable answer (no verdict; neither token among the top log-probs) is counted in ``judge/unparsed``: a pair
with one readable order takes that order's value, a pair with none ½ and a grade the mean of the call's readable
grades (in arena_hard mode each game counts); once 10 or more rows have been judged and more than
``judge_max_unparsed_fraction`` of them were unreadable, the judge stops the run with a JudgeError.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import torch

from prefopt.api_judge_config import ApiOptions
from prefopt.errors import JudgeError
from prefopt.judges.api.arena import LABELS, read_arena_settings
from prefopt.judges.api.client import ApiClient
from prefopt.judges.api.templates import judge_prompt
from prefopt.judges.api.verdicts import (
    arena_preference,
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
        if options.mode == "arena_hard":
            if not options.template_file:
                raise JudgeError("judge_mode arena_hard needs judge_template_file (arena-hard-auto's judge config)")
            self.arena, self.prompt, self.settings = read_arena_settings(options.template_file), None, {}
        else:
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
        """AlpacaEval's annotator prompt with ``first`` as output_1."""
        return self.prompt.fill(instruction=prompt_as_text(prompt), output_1=first, output_2=second)

    def arena_games(
        self,
        questions: Sequence[Prompt],
        first: Sequence[str],
        second: Sequence[str],
        categories: Sequence[str | None] | None = None,
    ) -> list[tuple[dict, dict]]:
        """Arena-Hard-Auto's two games per row: ``first`` shown as Assistant A, then swapped.

        Each game is ``{"label": verdict or None, "judgment": text, "messages": the judge's first prompt}``; a
        judgment without any label is asked again in the same conversation up to the settings' attempts, the
        texts joined as arena-hard-auto v0.1 joins them. Unreadable games are counted in ``judge/unparsed``.
        """
        n, settings = len(questions), self.arena
        cats = list(categories) if categories is not None else [None] * n
        texts = [prompt_as_text(x) for x in questions]
        conversations = [settings.messages(x, a, b, c) for x, a, b, c in zip(texts, first, second, cats)]
        conversations += [settings.messages(x, b, a, c) for x, a, b, c in zip(texts, first, second, cats)]
        prompts = [list(c) for c in conversations]
        judgments = [""] * (2 * n)
        pending = list(range(2 * n))
        for attempt in range(settings.attempts):
            if attempt:  # no label yet: ask again in the same conversation
                for i in pending:
                    conversations[i] = conversations[i] + [{"role": "user", "content": FOLLOW_UP}]
            answers = self.client.complete([self.body(conversations[i]) for i in pending])
            for i, answer in zip(pending, answers):
                text = message_text(answer)
                judgments[i] = f"{judgments[i]}\n{text}" if settings.attempts > 1 else text
                conversations[i] = conversations[i] + [{"role": "assistant", "content": text}]
            pending = [i for i in pending if not settings.has_label(judgments[i])]
            if not pending:
                break
        games = [{"label": settings.verdict(j), "judgment": j, "messages": m} for j, m in zip(judgments, prompts)]
        self._count_unparsed(2 * n, sum(g["label"] is None for g in games))
        return list(zip(games[:n], games[n:]))

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
        if self.options.mode == "arena_hard":
            games = self.arena_games(prompts, responses_a, responses_b)
            probs = [arena_preference(LABELS.get(ab["label"]), LABELS.get(ba["label"])) for ab, ba in games]
        else:
            pairs = list(zip(prompts, responses_a, responses_b))
            conversations = [self._messages(x, a, b) for x, a, b in pairs] + [
                self._messages(x, b, a) for x, a, b in pairs
            ]
            probs = self._alpaca_probs(conversations, len(prompts))
            self._count_unparsed(len(prompts), sum(p is None for p in probs))
        return torch.tensor([0.5 if p is None else p for p in probs], dtype=torch.float64)


class OpenAIGradeJudge(_ApiJudging, RewardJudge):
    """r(x, y): the judge's 1–10 grade of each response (``grade`` mode); see :class:`OpenAIPreferenceJudge`."""

    def __init__(self, options: ApiOptions, *, preflight: bool = True):
        if options.mode != "grade":
            raise JudgeError(f"judge_mode {options.mode} compares two responses: use OpenAIPreferenceJudge")
        self._setup(options, preflight)
        self.needs_references = self.prompt.uses_reference

    def grade_fields(self, rows: Sequence[dict[str, str]], prompt=None) -> list[tuple[float | None, str, str]]:
        """Grade each row of template fields (e.g. ``{"question": ..., "answer": ...}``) with ``prompt``.

        Args:
            rows: one dict of ``{field}`` values per grade to ask.
            prompt: a :class:`prefopt.judges.api.templates.JudgePrompt` (None: this judge's own template), e.g.
                one line of FastChat's judge_prompts.jsonl chosen per MT-Bench question and turn.

        Returns:
            per row (the grade read as ``[[x]]`` then ``[x]``, None when unreadable; the judge's answer text; the
            user message sent). The requests go through this judge's client (cache, retries, limits,
            concurrency), and unreadable grades count towards ``judge/unparsed`` and the stop rule.
        """
        prompt = prompt or self.prompt
        conversations = [prompt.fill(**row) for row in rows]
        texts = [message_text(a) for a in self.client.complete([self.body(m) for m in conversations])]
        grades = [rating(text) for text in texts]
        self._count_unparsed(len(grades), sum(g is None for g in grades))
        return [(g, text, m[-1]["content"]) for g, text, m in zip(grades, texts, conversations)]

    def _reward(self, prompts: Sequence[Prompt], responses: Sequence[str], references=None) -> torch.Tensor:
        refs = references if references is not None else [None] * len(prompts)
        rows = [
            {"question": prompt_as_text(x), "answer": y, **({"ref_answer_1": r} if r is not None else {})}
            for x, y, r in zip(prompts, responses, refs)
        ]
        grades = [grade for grade, _, _ in self.grade_fields(rows)]
        readable = [g for g in grades if g is not None]
        fill = sum(readable) / len(readable) if readable else 5.5  # the middle of the 1–10 scale
        return torch.tensor([fill if g is None else g for g in grades], dtype=torch.float64)


def build_api_judge(options: ApiOptions, preflight: bool = True) -> PreferenceJudge:
    """The ``openai`` judge of ``options.mode``."""
    cls = OpenAIGradeJudge if options.mode == "grade" else OpenAIPreferenceJudge
    return cls(options, preflight=preflight)
