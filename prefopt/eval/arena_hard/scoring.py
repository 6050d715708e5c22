"""Arena-Hard-Auto leaderboards from judgment rows: battles, Bradley-Terry or mean scores, bootstrap intervals.

**Battles** (one row per unit battle, as both generations explode them): each game's label gives Assistant A's score
(``formats.LABELS``); game 1 shows the baseline as A, so the model scores 1 − s there, game 2 (swapped) s. A strong
verdict (``A>>B``, ``B>>A``, and at v2.0 ``A<<B``, ``B<<A``) repeats its row ``weight`` = 3 times.
v0.1 (``show_result.get_battles_from_row``, commit 0489bf3) drops each game whose label is not one of its five;
v2.0 (``show_result.load_judgments``, HEAD 196f6b8) drops the whole judgment row when either game or its label is
null.

**v0.1 leaderboard** (``show_result.py`` + ``utils_math.py``): a Bradley-Terry fit (:mod:`.bt`, s = ln 10, ratings
400 θ + 1000 with the baseline at 1000; no penalty, ``compute_mle_elo``), or with style control the fit with the style
features and scikit-learn's default L2 penalty (λ = 1 on the duplicated rows, i.e. weight 2 per battle; ``fit_bt``,
baseline at 1114). Score: the win rate against the baseline, 100 / (1 + 10^((R_b − R_m)/400)) %; interval: the
2.5 and 97.5 percentiles of each model's rating over bootstrap refits on battle rows resampled with replacement,
turned into win rates the same way. ``avg_tokens``: the mean token_len of the model's answers, truncated.
With a single baseline every model meets only the baseline, so without style control the fit decouples and the
win rate is exactly the weighted mean score of the model's battles.

**v2.0 leaderboard** (``show_result.py`` + ``utils/math_utils.py``): without style control, each model's battle rows
are resampled with replacement, per model, and averaged; the score is the mean of the bootstrap means, the interval
their 5 and 95 percentiles. With style control a Bradley-Terry fit in logits (s = 1, no penalty) with the features,
P(m ≻ b) = σ(θ_m − θ_b), refitted on battle rows resampled jointly; score = the median win probability, interval its
5 and 95 percentiles, style coefficients their medians. The baseline is listed at 50 with no spread.

Several judges (v2.0's ensemble, ``--judge-names gpt-4.1 gemini-2.5``) are scored by passing all their judgment rows:
their battles are pooled, as there.

Departures (none changes the estimate arena-hard-auto's code means to compute):
- Random numbers come from ``numpy.random.default_rng(seed)``, so intervals match arena-hard-auto's only
  statistically (theirs use numpy's global state, seeded to 42 at v0.1 and not at all at v2.0).
- Fits are exact (Newton to 1e-10). arena-hard-auto's stop early: v2.0's torch L-BFGS after 50 iterations of step
  0.1 on a float32 loss, v0.1's style fit at scikit-learn's tolerance 1e-4 (on the test fixture the gaps reach 0.7
  win-rate points at v2.0 and 0.01 at v0.1; both fits run to convergence agree with ours to 1e-6, see
  ``tests/data/arena_hard/reference.json``). Scores are not rounded (v0.1 prints win rates to 2 decimals).
- v0.1's bootstrap anchors every refit on the given baseline; arena-hard-auto anchors on ``gpt-4-0314`` only (a bug
  in passing its baseline), which changes nothing when that is the baseline and shifts the interval otherwise.
- A model that wins or loses every battle has no finite Bradley-Terry rating: its win rate is the limit, 0 or 100 %
  (its rating where Newton stopped, far out), and ``separated`` is true (arena-hard-auto returns whatever value its
  solver stopped at). A bootstrap resample where this happens also keeps the limit and is counted in
  ``n_bootstrap_diverged``; arena-hard-auto keeps where its solver stopped (100 scikit-learn or 50 torch
  iterations), as close to the limit as those allow. Either way only a tail beyond that share moves.
- A label v2.0 does not know is a DataError when read (it raises KeyError); a v0.1 game that is null, not just its
  label (a TypeError there), is dropped as unparsed.
- v2.0's ``--control-features length`` or ``markdown`` alone slices away the model columns in ``show_result.py``
  (``all_features[:, :1]``, ``[:, 1:]``: it crashes, or mislabels every model); here they fit the intended model.
- Model names are kept whole (v2.0's show_result drops an ``org/`` prefix). ``avg_tokens`` is also given at v2.0
  (which does not print it), from the metadata's token_len (v0.1 prefers the answer turn's own token_len; the two
  are the same tiktoken count in its files).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from prefopt.errors import ConfigError, DataError
from prefopt.eval.arena_hard import bt
from prefopt.eval.arena_hard.formats import LABELS, V01_LABELS, V2_BASELINES, VERSIONS, Answers, Judgment
from prefopt.eval.arena_hard.style import STYLE_CONTROLS, style_features

QUANTILES = {"v0.1": (0.025, 0.975), "v2.0": (0.05, 0.95)}
V01_DEFAULT_BASELINE = "gpt-4-0314"  # show_result.py's default --baseline


@dataclass(frozen=True)
class Battles:
    """Unit battle rows of models against one baseline.

    Attributes:
        models: [n] the judged model of each row. uids: [n] its question. scores: [n] the model's score
        (1, ½, 0). baseline: the baseline. n_dropped: games (v0.1) or judgment rows (v2.0) dropped as unparsed.
    """

    models: list[str]
    uids: list[str]
    scores: np.ndarray
    baseline: str
    n_dropped: int


def _baseline(version: str, rows: list[Judgment], baseline: str | None) -> str:
    if version == "v0.1":
        return baseline or V01_DEFAULT_BASELINE
    found = set()
    for j in rows:
        expected = baseline or V2_BASELINES.get(j.category)
        if expected is None:
            raise ConfigError(
                f"{j.where}: category '{j.category}' has no baseline in arena-hard-auto's JUDGE_SETTINGS "
                f"({', '.join(V2_BASELINES)}); pass baseline="
            )
        if j.baseline != expected:
            raise DataError(f"{j.where}: field 'baseline' is '{j.baseline}' but this leaderboard's is '{expected}'")
        found.add(expected)
    if len(found) > 1:
        raise ConfigError(f"the judgments' categories have different baselines {sorted(found)}; pass category=")
    return found.pop()


def battles(
    version: str,
    judgments: Sequence[Judgment],
    baseline: str | None = None,
    *,
    category: str | None = None,
    weight: int = 3,
) -> Battles:
    """The unit battle rows of ``judgments`` (see the module docstring), v2.0 rows filtered to ``category``.

    ``baseline`` defaults to gpt-4-0314 at v0.1 and to each category's baseline at v2.0 (``formats.V2_BASELINES``).
    """
    if version not in VERSIONS:
        raise ConfigError(f"version must be one of {', '.join(VERSIONS)}; got {version!r}")
    rows = [j for j in judgments if category is None or j.category == category]
    if not rows:
        raise DataError(f"no judgments{f' in category {category!r}' if category else ''} to score")
    if any(j.version != version for j in rows):
        bad = next(j for j in rows if j.version != version)
        raise DataError(f"{bad.where}: a {bad.version} judgment row in a {version} leaderboard")
    base = _baseline(version, rows, baseline)
    models, uids, scores, dropped = [], [], [], 0
    for j in rows:
        if j.model == base:
            raise DataError(f"{j.where}: field 'model' is the baseline '{base}' itself")
        if version == "v2.0" and None in j.labels:
            dropped += 1
            continue
        # v2.0 lists game 2's rows first (show_result.load_judgments); the order changes nothing.
        for g in (0, 1) if version == "v0.1" else (1, 0):
            label = j.labels[g]
            if version == "v0.1" and label not in V01_LABELS:
                dropped += 1
                continue
            score_a, strong = LABELS[label]
            copies = weight if strong else 1
            models += [j.model] * copies
            uids += [j.uid] * copies
            scores += [score_a if g == 1 else 1.0 - score_a] * copies
    if not scores:
        raise DataError(f"every one of the {len(rows)} judgment rows lacks a verdict; nothing to score")
    return Battles(models, uids, np.asarray(scores, dtype=np.float64), base, dropped)


@dataclass
class _Replicates:
    """Point estimates and bootstrap replicates of one leaderboard, by model (win rates as fractions)."""

    models: list[str]
    point: np.ndarray  # [M]
    replicates: np.ndarray | None  # [B, M]: v0.1 ratings, v2.0 win rates / mean scores
    style_names: list[str]
    style_point: np.ndarray  # [k]
    style_replicates: np.ndarray | None  # [B, k]
    n_diverged: int = 0  # bootstrap refits that diverged (a model won or lost all its resampled battles)
    separated: bool = False  # the fit on all the battles diverged: its estimates are the limits (0 or 100 %)


def _bt_replicates(
    b: Battles, z: np.ndarray | None, names: list[str], version: str, n_bootstrap: int, rng: np.random.Generator
) -> _Replicates:
    """v0.1 (ratings) and v2.0 style control (win probabilities): the full fit and ``n_bootstrap`` refits."""
    models = sorted(set(b.models) | {b.baseline})
    index = {m: i for i, m in enumerate(models)}
    anchor, a_idx = index[b.baseline], np.array([index[m] for m in b.models])
    penalised = version == "v0.1" and z is not None  # fit_bt's LogisticRegression() keeps the default L2, C = 1
    scale = math.log(10) if version == "v0.1" else 1.0
    X = bt.design(a_idx, np.full(len(a_idx), anchor), len(models), anchor, z, scale, penalised)
    base_weight = 2.0 if version == "v0.1" else 1.0  # v0.1 fits each battle twice (ties as a win and a loss)

    def fit(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        present = np.bincount(a_idx, weights=counts, minlength=len(models))
        if not penalised and np.any(np.delete(present, anchor) == 0):
            raise DataError("a bootstrap sample holds no battle of some model; it needs more judgments")
        try:
            w = bt.fit_logistic(X, b.scores, base_weight * counts, l2=1.0 if penalised else 0.0)
        except bt.Separation as err:  # a model won or lost everything (in the data or a resample): its limit
            (separated if counts is point_counts else diverged).append(1)
            w = err.w
        theta, gamma = bt.split_coefficients(w, len(models), anchor, penalised)
        if version == "v0.1":
            return 400.0 * theta + (1114.0 if penalised else 1000.0), gamma  # fit_bt anchors the baseline at 1114
        return 1.0 / (1.0 + np.exp(-theta)), gamma

    diverged: list[int] = []
    separated: list[int] = []
    point_counts = np.ones(len(a_idx))
    point, style_point = fit(point_counts)
    if n_bootstrap <= 0:
        return _Replicates(models, point, None, names, style_point, None, 0, bool(separated))
    runs = [fit(np.bincount(rng.integers(0, len(a_idx), len(a_idx)), minlength=len(a_idx)).astype(float))
            for _ in range(n_bootstrap)]  # fmt: skip
    reps, style_reps = np.array([r[0] for r in runs]), np.array([r[1] for r in runs])
    return _Replicates(models, point, reps, names, style_point, style_reps, len(diverged), bool(separated))


def _mean_replicates(b: Battles, n_bootstrap: int, rng: np.random.Generator) -> _Replicates:
    """v2.0 without style control: mean scores and their per-model bootstrap (the baseline at ½)."""
    models = sorted(set(b.models) | {b.baseline})
    point, reps = np.empty(len(models)), np.empty((max(n_bootstrap, 0), len(models)))
    model_of = np.asarray(b.models, dtype=object)
    for i, m in enumerate(models):
        s = b.scores[model_of == m] if m != b.baseline else np.array([0.5])
        point[i] = s.mean()
        if n_bootstrap > 0:
            reps[:, i] = s[rng.integers(0, len(s), (n_bootstrap, len(s)))].mean(axis=1)
    return _Replicates(models, point, reps if n_bootstrap > 0 else None, [], np.empty(0), None)


def _metadata_by_model(
    answers: Mapping[str, Mapping[str, dict | None]] | Sequence[Answers] | None,
) -> dict[str, Mapping[str, dict | None]] | None:
    if answers is None or isinstance(answers, Mapping):
        return None if answers is None else dict(answers)
    return {a.model: a.metadata for a in answers}


def _avg_tokens(metadata: Mapping[str, Mapping[str, dict | None]] | None, model: str) -> int | None:
    """Mean token_len over the model's answers, truncated as show_result.py prints it (None without metadata)."""
    lengths = [m["token_len"] for m in (metadata or {}).get(model, {}).values() if m and "token_len" in m]
    return int(sum(lengths) / len(lengths)) if lengths else None


def _percent(x) -> float:
    return round(float(100.0 * x), 10)


def _model_rows(version: str, reps: _Replicates, b: Battles, metadata) -> list[dict]:
    """One JSON-ready row per model (percentages), best score first. The baseline comes out at 50 with no spread:
    its rating is the anchor in every fit (v0.1), its win probability σ(0) (v2.0 style) or its score ½ (v2.0)."""
    low_q, high_q = QUANTILES[version]
    counts = Counter(b.models)
    anchor = reps.point[reps.models.index(b.baseline)]

    def rate(x: float) -> float:  # v0.1: rating → win rate against the baseline (predict_win_rate); v2.0: as is
        return 1.0 / (1.0 + 10 ** ((anchor - x) / 400)) if version == "v0.1" else x

    rows = []
    for i, model in enumerate(reps.models):
        point, lower, upper = rate(reps.point[i]), None, None
        score = point
        if reps.replicates is not None:
            col = reps.replicates[:, i]
            lower, upper = (rate(q) for q in np.quantile(col, [low_q, high_q]))  # linear, as np.percentile/pandas
            if version == "v2.0":  # the mean of the bootstrap means, or the median win probability
                score = np.median(col) if reps.style_names else np.mean(col)
        values = {"score": score, "lower": lower, "upper": upper, "point": point}
        rows.append(
            {"model": model}
            | {k: None if v is None else _percent(v) for k, v in values.items()}
            | {"rating": float(reps.point[i]) if version == "v0.1" else None, "n_battles": counts[model]}
            | {"avg_tokens": _avg_tokens(metadata, model)}
        )
    return sorted(rows, key=lambda r: (-r["score"], r["model"]))


def _style_rows(version: str, reps: _Replicates) -> dict[str, dict]:
    low_q, high_q = QUANTILES[version]
    out = {}
    for j, name in enumerate(reps.style_names):
        entry = {"point": float(reps.style_point[j]), "median": None, "lower": None, "upper": None}
        if reps.style_replicates is not None:
            col = reps.style_replicates[:, j]
            entry |= dict(zip(("median", "lower", "upper"), map(float, np.quantile(col, [0.5, low_q, high_q]))))
        out[name] = entry
    return out


METHODS = {
    ("v0.1", False): "Bradley-Terry (compute_mle_elo) win rate vs the baseline; 2.5-97.5% bootstrap percentiles",
    ("v0.1", True): "Bradley-Terry with style features, L2 C=1 (fit_bt) win rate; 2.5-97.5% bootstrap percentiles",
    ("v2.0", False): "mean battle score: mean of per-model bootstrap means; 5-95% bootstrap percentiles",
    ("v2.0", True): "Bradley-Terry with style features: median bootstrap win probability; 5-95% percentiles",
}


def scored_category(categories: list[str] | None) -> str | None:
    """The category a leaderboard scores for ``--categories``: the one asked for, when exactly one is; else None
    (all rows, which must then share one baseline)."""
    return categories[0] if categories and len(categories) == 1 else None


def leaderboard(
    version: str,
    judgments: Sequence[Judgment],
    answers: Mapping[str, Mapping[str, dict | None]] | Sequence[Answers] | None = None,
    baseline: str | None = None,
    *,
    category: str | None = None,
    style_control: str = "none",
    n_bootstrap: int = 100,
    seed: int = 0,
    weight: int = 3,
) -> dict:
    """An Arena-Hard-Auto leaderboard of ``version`` (see the module docstring), as a JSON-ready dict.

    Args:
        judgments: :func:`~prefopt.eval.arena_hard.formats.read_judgments`' rows.
        answers: metadata by model and question uid (or :class:`Answers` s): for style control and ``avg_tokens``.
        baseline: default gpt-4-0314 (v0.1) or the categories' baseline (v2.0).
        category: v2.0 only: score the rows of this category (arena-hard-auto scores one category at a time).
        style_control: ``none``, ``length``, ``markdown`` or ``both``.
        n_bootstrap: bootstrap rounds (arena-hard-auto: 100); 0 gives point estimates only (lower/upper None).
        seed: seeds ``numpy.random.default_rng``. weight: copies of a strong verdict's battle.

    Returns:
        ``{"version", "baseline", "category", "style_control", "method", "quantiles", "n_bootstrap", "seed",
        "weight", "n_battles", "n_dropped", "n_bootstrap_diverged", "separated" (a model won or lost every battle:
        its estimates are the limits), "models": [{"model", "score", "lower", "upper",
        "point", "rating", "n_battles", "avg_tokens"}, ...], "style_coefficients": {feature: {"point", "median",
        "lower", "upper"}}}``,
        percentages for scores; ``point`` is the estimate without bootstrap (the full-data fit or mean), ``score``
        the version's reported statistic, ``rating`` v0.1's Elo-scale rating.
    """
    if style_control not in STYLE_CONTROLS:
        raise ConfigError(f"style_control must be one of {', '.join(STYLE_CONTROLS)}; got {style_control!r}")
    if isinstance(weight, bool) or not isinstance(weight, int) or weight < 1:
        raise ConfigError(f"weight must be an integer >= 1; got {weight!r}")
    metadata = _metadata_by_model(answers)
    b = battles(version, judgments, baseline, category=category, weight=weight)
    rng = np.random.default_rng(seed)
    controlled = style_control != "none"
    if controlled and metadata is None:
        raise ConfigError("style control needs the answers' metadata (answers=)")
    if controlled:
        z, names = style_features(version, b.models, b.uids, b.baseline, metadata, style_control)
        reps = _bt_replicates(b, z, names, version, n_bootstrap, rng)
    elif version == "v0.1":
        reps = _bt_replicates(b, None, [], version, n_bootstrap, rng)
    else:
        reps = _mean_replicates(b, n_bootstrap, rng)
    return {
        "version": version, "baseline": b.baseline, "category": category, "style_control": style_control,
        "method": METHODS[(version, controlled)], "quantiles": list(QUANTILES[version]),
        "n_bootstrap": max(n_bootstrap, 0), "seed": seed, "weight": weight,
        "n_battles": len(b.scores), "n_dropped": b.n_dropped, "n_bootstrap_diverged": reps.n_diverged,
        "separated": reps.separated,
        "models": _model_rows(version, reps, b, metadata), "style_coefficients": _style_rows(version, reps),
    }  # fmt: skip
