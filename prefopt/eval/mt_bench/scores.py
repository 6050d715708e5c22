"""MT-Bench scores from single-answer grades, as FastChat's show_result.py (``--mode single``) computes them, and
the leaderboard.

Per model, grades of −1 (no rating could be read) are dropped and counted (``n_unreadable``); then

- ``turn_1``, ``turn_2``: the mean grade of each turn;
- ``overall``: the mean of every remaining grade of both turns (show_result.py's "Average": a mean over grades,
  not the mean of the two turn means, which differ when a turn lost more unreadable grades);
- ``categories``: the mean grade per question category, both turns together (FastChat's radar plot's values).

Interval of ``overall`` (FastChat gives none): a percentile bootstrap over **questions**: the questions are
resampled with replacement ``n_bootstrap`` times (seeded), each resample's overall mean is (sum of its questions'
grades) / (number of its grades), and ``ci_low``/``ci_high`` are that distribution's 2.5% and 97.5% quantiles;
``se`` is its standard deviation (the bootstrap standard error). Questions, not grades, are resampled because a
question's two turns are graded on related answers, so grades are not independent within a question.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from prefopt.eval.mt_bench.formats import Question

LEVEL = 0.95


def question_bootstrap(
    sums: np.ndarray, counts: np.ndarray, n_bootstrap: int, seed: int, level: float = LEVEL
) -> tuple[float | None, float | None, float | None]:
    """(low, high, se) of Σ sums / Σ counts over resamples of the questions; ``sums`` [Q] and ``counts`` [Q] are
    each question's grade sum and number of grades. None each when there is nothing to resample."""
    if n_bootstrap < 1 or counts.sum() == 0:
        return None, None, None
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, len(sums), (n_bootstrap, len(sums)))
    numerators, denominators = sums[drawn].sum(axis=1), counts[drawn].sum(axis=1)
    means = numerators[denominators > 0] / denominators[denominators > 0]  # a resample of only unreadable: skipped
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high), float(means.std(ddof=1)) if len(means) > 1 else 0.0


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def model_scores(rows: list[dict], questions: list[Question], n_bootstrap: int = 2000, seed: int = 0) -> dict:
    """One model's scores from its judgment rows (see the module docstring)."""
    category = {q.question_id: q.category for q in questions}
    kept = [r for r in rows if r["score"] != -1]
    by_turn, by_category, by_question = defaultdict(list), defaultdict(list), defaultdict(list)
    for r in kept:
        by_turn[r["turn"]].append(float(r["score"]))
        by_category[category[r["question_id"]]].append(float(r["score"]))
        by_question[r["question_id"]].append(float(r["score"]))
    ids = [q.question_id for q in questions]
    sums = np.array([sum(by_question[i]) for i in ids], dtype=np.float64)
    counts = np.array([len(by_question[i]) for i in ids], dtype=np.float64)
    low, high, se = question_bootstrap(sums, counts, n_bootstrap, seed)
    order = list(dict.fromkeys(q.category for q in questions))
    return {
        "overall": _mean([float(r["score"]) for r in kept]),
        "ci_low": low,
        "ci_high": high,
        "se": se,
        "turn_1": _mean(by_turn[1]),
        "turn_2": _mean(by_turn[2]),
        "categories": {c: _mean(by_category[c]) for c in order},
        "n_graded": len(kept),
        "n_unreadable": len(rows) - len(kept),
        "n_questions": len(questions),
    }


def scores(rows: list[dict], questions: list[Question], n_bootstrap: int = 2000, seed: int = 0) -> dict[str, dict]:
    """Every model's scores from a judgment file's rows, models in order of first appearance."""
    by_model: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_model[r["model"]].append(r)
    return {model: model_scores(model_rows, questions, n_bootstrap, seed) for model, model_rows in by_model.items()}


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def to_markdown(all_scores: dict[str, dict], judge: str) -> str:
    """The leaderboard, best overall score first (a model without a readable grade last)."""
    overall = {m: s["overall"] for m, s in all_scores.items()}
    models = sorted(overall, key=lambda m: float("inf") if overall[m] is None else -overall[m])
    categories = list(dict.fromkeys(c for s in all_scores.values() for c in s["categories"]))
    head = ["model", "overall", "95% CI", "turn 1", "turn 2", *categories, "graded", "unreadable"]
    lines = [
        f"MT-Bench single-answer grades (1-10) by `{judge}`; unreadable grades dropped; 95% CI: percentile "
        "bootstrap over questions.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for m in models:
        s = all_scores[m]
        ci = f"{s['ci_low']:.2f}-{s['ci_high']:.2f}" if s["ci_low"] is not None else ""
        cells = [m, _cell(s["overall"]), ci, _cell(s["turn_1"]), _cell(s["turn_2"])]
        cells += [_cell(s["categories"].get(c)) for c in categories]
        lines.append("| " + " | ".join([*cells, str(s["n_graded"]), str(s["n_unreadable"])]) + " |")
    return "\n".join(lines) + "\n"
