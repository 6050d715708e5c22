"""Judging a model's Arena-Hard answers against the baseline's: two games per question, as arena-hard-auto plays
them (game 1: the baseline is Assistant A; game 2: the model is).

- The ``openai`` judge in ``arena_hard`` mode plays both games with arena-hard-auto's own prompt and verdict rule
  (:meth:`prefopt.judges.api.judges.OpenAIPreferenceJudge.arena_games`): the games hold its verdict labels and
  judgment texts.
- Any other prefopt judge gives p = P(model ≻ baseline | question) (symmetrised, or σ(r − r') for a reward judge),
  and each game's label is that probability read on the 5-way scale (:func:`label_of`, prefopt's own mapping:
  arena-hard-auto has none), so the scorers, ours and arena-hard-auto's, read the same files either way.
"""

from __future__ import annotations

from collections.abc import Sequence

from tqdm.auto import tqdm

from prefopt.eval.arena_hard.formats import Question, game, judgment_row
from prefopt.judges import PreferenceJudge

CHUNK = 32  # questions per judge call: a moving progress bar, and full batches for the API judge's concurrency
# P(Assistant A ≻ Assistant B) → label: "significantly better" from 0.9, "slightly better" from 0.6 (mirrored for
# B), a tie strictly between 0.4 and 0.6.
STRONG, SLIGHT = 0.9, 0.6


def label_of(p: float) -> str:
    """A probability that Assistant A's answer is better, as a 5-way verdict label (symmetric: label_of(1 − p)
    is the mirror of label_of(p))."""
    if p < 0.5:
        return MIRROR[label_of(1.0 - p)]
    return "A>>B" if p >= STRONG else "A>B" if p >= SLIGHT else "A=B"


MIRROR = {"A>>B": "B>>A", "A>B": "B>A", "A=B": "A=B"}


def plays_arena_games(judge: PreferenceJudge) -> bool:
    return callable(getattr(judge, "arena_games", None)) and getattr(judge, "arena", None) is not None


def _probability_games(judge: PreferenceJudge, questions, model_answers, baseline_answers) -> list[list[dict]]:
    probs = judge.preference(questions, list(model_answers), list(baseline_answers)).tolist()
    games = []
    for p in probs:
        games.append(
            [
                {"label": label_of(1 - p), "judgment": f"{judge.name}: P(A better) = {1 - p:.6f}", "messages": None},
                {"label": label_of(p), "judgment": f"{judge.name}: P(A better) = {p:.6f}", "messages": None},
            ]
        )
    return games


def judge_games(
    judge: PreferenceJudge,
    questions: Sequence[str],
    categories: Sequence[str | None],
    model_answers: Sequence[str],
    baseline_answers: Sequence[str],
    desc: str = "judging",
    progress: bool = True,
) -> list[list[dict]]:
    """Both games of every question: ``[game 1 (baseline as A), game 2 (model as A)]``, each game
    ``{"label": verdict or None, "judgment": text, "messages": the judge's prompt or None}``."""
    prompts = [[{"role": "user", "content": q}] for q in questions]
    games: list[list[dict]] = []
    with tqdm(total=len(prompts), desc=desc, unit="question", disable=None if progress else True) as bar:
        for start in range(0, len(prompts), CHUNK):
            part = slice(start, start + CHUNK)
            if plays_arena_games(judge):
                pairs = judge.arena_games(prompts[part], baseline_answers[part], model_answers[part], categories[part])
                games += [list(pair) for pair in pairs]
            else:
                games += _probability_games(judge, prompts[part], model_answers[part], baseline_answers[part])
            bar.update(len(prompts[part]))
    return games


def judgment_rows(questions: Sequence[Question], model: str, baseline: str, judge: str, games) -> list[dict]:
    """:func:`judge_games`' games as judgment rows in the questions' generation's layout."""
    rows = []
    for q, pair in zip(questions, games):
        played = []
        for g in pair:
            messages = g["messages"] or []
            user = next((m["content"] for m in messages if m["role"] == "user"), "")
            played.append(game(q.version, g["label"], g["judgment"], user if q.version == "v0.1" else messages))
        rows.append(judgment_row(q.version, q, model, baseline, judge, played))
    return rows
