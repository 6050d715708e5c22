"""Reading the ``openai`` judge's answers: AlpacaEval's log-prob preference, Arena-Hard's 5-way verdicts and
MT-Bench-style ratings. Each reader returns None for an answer it cannot read (counted by the judge, never
silently taken as a tie)."""

from __future__ import annotations

import math
import re

from prefopt.errors import JudgeError

# arena-hard-auto's verdict labels: (weight, score of Assistant A). A strong verdict counts as WEIGHT battles in
# its Bradley-Terry fit (show_result.py, WEIGHT = 3); a tie counts once, half a win each.
STRONG_WEIGHT = 3
ARENA_VERDICTS = {
    "A>>B": (STRONG_WEIGHT, 1.0),
    "A>B": (1, 1.0),
    "A=B": (1, 0.5),
    "B>A": (1, 0.0),
    "B>>A": (STRONG_WEIGHT, 0.0),
}
RATING_PATTERNS = (re.compile(r"\[\[(\d+\.?\d*)\]\]"), re.compile(r"\[(\d+\.?\d*)\]"))  # MT-Bench's, in order


def message_text(answer: dict) -> str:
    """The first choice's message content ("" when the endpoint returned none)."""
    message = answer["choices"][0].get("message") or {}
    return message.get("content") or ""


def token_logprobs(answer: dict, endpoint: str, index: int = 0) -> list[dict]:
    """``top_logprobs`` of generated token ``index`` (0: the first; -1: the last, after a chain of thought); an
    endpoint that returns none is a JudgeError (the mode needs ``logprobs``), not an unreadable verdict."""
    content = ((answer["choices"][0].get("logprobs") or {}).get("content")) or []
    if not content or not content[index].get("top_logprobs"):
        raise JudgeError(
            f"judge endpoint {endpoint} returned no top_logprobs; judge_mode alpaca_eval needs an endpoint and model "
            "that return log-probabilities (vLLM, OpenAI chat models)"
        )
    return content[index]["top_logprobs"]


def logprob_preference(top_logprobs: list[dict], numerator: str, tokens: list[str]) -> float | None:
    """AlpacaEval's weighted preference: P(numerator) / Σ P(tokens) over the first token's top log-probs.

    A listed token missing from the top log-probs has probability 0; when none is present the answer is
    unreadable (None). With AlpacaEval's annotator the numerator "m" names output_1, so this is P(output_1 wins).
    """
    found = {t["token"]: float(t["logprob"]) for t in top_logprobs if t.get("token") in set(tokens) | {numerator}}
    if not found:
        return None
    top = max(found.values())
    denominator = sum(math.exp(found[t] - top) for t in set(tokens) if t in found)
    return math.exp(found[numerator] - top) / denominator if numerator in found else 0.0


def arena_preference(verdict_ab: str | None, verdict_ba: str | None) -> float | None:
    """P(a ≻ b) from the two games (a shown as Assistant A, then b shown as A), each verdict weighted as
    arena-hard-auto weights its battles: Σ weight · score(a) / Σ weight over the readable games.

    E.g. [[A>>B]] then [[A>B]] (b better in the swapped game): (3·1 + 1·0) / 4 = 0.75.
    """
    num = den = 0.0
    for verdict, a_is_first in ((verdict_ab, True), (verdict_ba, False)):
        if verdict is None:
            continue
        weight, score_first = ARENA_VERDICTS[verdict]
        num += weight * (score_first if a_is_first else 1.0 - score_first)
        den += weight
    return num / den if den else None


def rating(text: str) -> float | None:
    """The grade in ``[[x]]`` (else ``[x]``), first match, as FastChat's MT-Bench judge reads it; None if absent."""
    for pattern in RATING_PATTERNS:
        match = pattern.search(text)
        if match:
            return float(match.group(1))
    return None
