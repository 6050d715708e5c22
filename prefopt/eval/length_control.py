"""Length-controlled (LC) win rate of AlpacaEval 2.0, reimplemented with numpy.

Method of Dubois et al., "Length-Controlled AlpacaEval: A Simple Way to Debias Automatic Evaluators"
(arXiv 2404.04475), as computed by ``alpaca_eval.metrics.glm_winrate.get_length_controlled_winrate``
(alpaca_eval 0.6.6). Row i is instruction i, p_i = P(model ≻ baseline) ∈ [0, 1], m_i and b_i the model's and the
baseline's output lengths in characters:

    s_i = (b_i − m_i) / std(b − m)            (sample std, ddof = 1, over the n rows)
    x_i = [tanh(s_i), d_i, 1],  q_i = σ(θ · x_i)

with d_i the instruction difficulty (AlpacaEval's table) and the last feature ``not_gamed_baseline`` = 1, which acts
as the intercept (the formula has none). ``length_controlled_minimal`` drops d; ``length_controlled_noreg`` keeps it;
``length_controlled_v1`` also trains on AlpacaEval's gamed-baseline rows g (concise and verbose GPT-4 vs the
baseline), x_g = [tanh(s_g), d_g, 0], each weighted w_g = λ/2 = 0.1 (λ = 0.2, two gamed baselines; w_i = 1). θ
minimises liblinear's L1 objective on the rows duplicated as label 1 (weight w p) and label 0 (weight w (1 − p)):

    F(θ) = ‖θ‖₁ + C Σ_j w_j [−p_j log q_j − (1 − p_j) log(1 − q_j)].

C ∈ logspace(−4, 4, 10) is chosen by k-fold cross-validation on the held-out loss (1/n_test) Σ_j w_j CE(p_j, q_j)
(q clipped to [1e-15, 1 − 1e-15]; fold losses summed; the first best C wins); θ is then refit on all rows. The LC
win rate predicts each of the model's rows with no length difference (s = 0):

    LC = (1/n) Σ_i σ(θ_d d_i + θ_ng),    SE = std_ddof=1(σ(θ_d d_i + θ_ng)) / √n.

Departures from alpaca_eval:
- Folds: training row g of G goes to fold (G − 1 − g) mod k: what the GroupKFold of scikit-learn 1.9 (stable argsort)
  gives alpaca_eval for its equal-size groups; scikit-learn versions with an unstable argsort may differ.
- Solver: exact proximal Newton (each step's L1 quadratic model solved exactly over sign patterns, then a
  backtracking line search) instead of liblinear (tolerance 1e-4), so θ differs by liblinear's inexactness
  (about 1e-4; LC within 0.01 points in the tests) and a near-tie between two Cs' held-out losses may go the other way.
- Zero std: if all length differences are equal (std 0), s_i = 0 for every row; alpaca_eval divides by zero.
- df_gamed.csv: d_i comes from the first row with index i, and all rows of an index must agree (alpaca_eval takes
  the difficulty of file row i; the two agree when the file starts with indices 0..N-1 in order). Rows with
  not_gamed_baseline True or no preference only give a difficulty; v1 in alpaca_eval would also train on the former
  (AlpacaEval builds its file from the gamed baselines' rows only).
"""

from __future__ import annotations

import csv
import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prefopt.errors import DataError

LC_VARIANTS = ("length_controlled_minimal", "length_controlled_noreg", "length_controlled_v1")
GAMED_WEIGHT = 0.2 / 2  # alpaca_eval's regularize_to_baseline_lambda, split over its two gamed baselines
CS = np.logspace(-4, 4, 10)  # scikit-learn's default LogisticRegressionCV grid
_COLUMNS = ("index", "preference", "std_delta_len", "instruction_difficulty", "not_gamed_baseline")
_BOOLS = {"true": True, "1": True, "1.0": True, "false": False, "0": False, "0.0": False}


@dataclass(frozen=True)
class LCData:
    """AlpacaEval's precomputed per-instruction data (their df_gamed.csv).

    Attributes:
        instruction_difficulty: [N] float64, by instruction index 0..N-1.
        gamed_preference: [M] P(gamed baseline ≻ baseline) in [0, 1] (the file's own scale), or None if no gamed rows.
        gamed_std_delta_len: [M] standardised length differences of the gamed rows, or None.
        gamed_index: [M] int instruction index of each gamed row, or None.
    """

    instruction_difficulty: np.ndarray
    gamed_preference: np.ndarray | None = None
    gamed_std_delta_len: np.ndarray | None = None
    gamed_index: np.ndarray | None = None

    @classmethod
    def from_csv(cls, path: str | Path) -> LCData:
        """Read df_gamed.csv (columns index, preference, std_delta_len, instruction_difficulty, not_gamed_baseline).

        The file's preference is already on the [0, 1] scale: alpaca_eval concatenates it with the model's rows after
        mapping those to [0, 1]. A row with not_gamed_baseline True or an empty preference only gives a difficulty.
        """
        try:
            with open(path, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                missing = [c for c in _COLUMNS if c not in (reader.fieldnames or [])]
                if missing:
                    raise DataError(f"{path}: missing column {missing[0]!r}; expected columns {', '.join(_COLUMNS)}")
                rows = [_parse_row(row, f"{path}: line {reader.line_num}") for row in reader]
        except (OSError, UnicodeDecodeError, csv.Error) as err:
            raise DataError(f"{path}: cannot read the file ({type(err).__name__}: {err})") from err
        difficulty: dict[int, float] = {}
        for where, index, diff, _ in rows:
            if abs(difficulty.setdefault(index, diff) - diff) > 1e-9 * max(1.0, abs(diff)):
                raise DataError(
                    f"{where}: instruction_difficulty {diff} differs from {difficulty[index]} for index {index}"
                )
        if not difficulty:
            raise DataError(f"{path}: no data rows; expected one or more rows per instruction")
        n = max(difficulty) + 1
        if len(difficulty) != n:
            gap = min(set(range(n)) - set(difficulty))
            raise DataError(f"{path}: instruction index {gap} missing; expected every index 0..{n - 1}")
        table = np.array([difficulty[i] for i in range(n)], dtype=np.float64)
        gamed = [(g[0], g[1], index) for _, index, _, g in rows if g is not None]
        if not gamed:
            return cls(table)
        pref, delta, index = (np.array(col) for col in zip(*gamed))
        return cls(table, pref.astype(np.float64), delta.astype(np.float64), index.astype(np.int64))


def _parse_row(row: dict, where: str) -> tuple[str, int, float, tuple[float, float] | None]:
    """One csv row: (where, index, difficulty, (preference, std_delta_len) of a gamed row or None)."""
    index = int(_number(row, "index", where, integer=True))
    diff = _number(row, "instruction_difficulty", where)
    flag = _BOOLS.get(str(row["not_gamed_baseline"]).strip().lower())
    if flag is None:
        raise DataError(
            f"{where}: column 'not_gamed_baseline': expected True or False, got {row['not_gamed_baseline']!r}"
        )
    if flag or str(row["preference"]).strip().lower() in ("", "nan"):
        return where, index, diff, None  # a difficulty only (see the module docstring)
    return where, index, diff, (_number(row, "preference", where, unit=True), _number(row, "std_delta_len", where))


def _number(row: dict, col: str, where: str, integer: bool = False, unit: bool = False) -> float:
    """Parse row[col] as a finite float (an index ≥ 0 when ``integer``, a value in [0, 1] when ``unit``)."""
    text = str(row.get(col) or "").strip()
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    bad_int = integer and not (value >= 0 and value.is_integer())
    if not math.isfinite(value) or bad_int or (unit and not 0 <= value <= 1):
        want = "an integer ≥ 0" if integer else "a finite number"
        if unit:  # AlpacaEval's annotations use 1..2; this file stores preference − 1
            want = "a number in [0, 1] (P(gamed baseline wins), AlpacaEval's 1..2 preference minus 1)"
        raise DataError(f"{where}: column {col!r}: expected {want}, got {text!r}")
    return value


@dataclass(frozen=True)
class LengthControlled:
    """An LC win rate.

    Attributes:
        win_rate: the LC win rate, a fraction in [0, 1].
        se: its standard error (fraction).
        variant: one of ``LC_VARIANTS``.
        coefficients: θ by feature: "tanh(std_delta_len)", "instruction_difficulty" (not for minimal),
            "not_gamed_baseline".
        C: the inverse regularisation strength chosen by cross-validation.
    """

    win_rate: float
    se: float
    variant: str
    coefficients: dict[str, float]
    C: float


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """σ(z) without overflow warnings for large |z|."""
    return np.exp(-np.logaddexp(0.0, -z))


def _penalised_loss(theta: np.ndarray, X: np.ndarray, p: np.ndarray, w: np.ndarray, C: float) -> float:
    """F(θ); CE(p, σ(z)) = softplus(z) − p z, stable for any z."""
    z = X @ theta
    return float(np.abs(theta).sum() + C * np.sum(w * (np.logaddexp(0.0, z) - p * z)))


def _l1_quadratic_step(g: np.ndarray, H: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """argmin_d gᵀd + ½ dᵀHd + ‖θ + d‖₁ [k], exactly, by trying every sign pattern of u = θ + d.

    In u the model is cᵀu + ½ uᵀHu + ‖u‖₁ (c = g − Hθ). On the face of sign pattern s (u_j = 0 where s_j = 0) it is
    smooth with minimiser H_SS u_S = −(c_S + s_S); the minimiser of the model is the best of the 3^k (≤ 27) face
    minimisers whose signs agree with s. Unlike coordinate descent this does not slow down with correlated features.
    """
    c = g - H @ theta
    best, best_value = np.zeros_like(theta), 0.0  # the face u = 0
    for signs in itertools.product((-1.0, 0.0, 1.0), repeat=len(theta)):
        s = np.array(signs)
        S = s != 0
        if not S.any():
            continue
        u = np.zeros_like(theta)
        u[S] = np.linalg.solve(H[np.ix_(S, S)], -(c[S] + s[S]))
        if np.all(u[S] * s[S] > 0):
            value = c @ u + 0.5 * u @ H @ u + np.abs(u).sum()
            if value < best_value:
                best, best_value = u, value
    return best - theta


def fit_l1_logistic(
    X: np.ndarray, p: np.ndarray, w: np.ndarray, C: float, theta0: np.ndarray | None = None
) -> np.ndarray:
    """Minimise F(θ) = ‖θ‖₁ + C Σ_j w_j CE(p_j, σ(x_j·θ)) exactly (no intercept) by proximal Newton.

    Args:
        X: [G, k] features. p: [G] targets in [0, 1]. w: [G] row weights ≥ 0. C: inverse penalty strength.
        theta0: [k] starting point (a warm start along a C path).

    Returns:
        θ [k]: the minimiser, to about machine precision.
    """
    theta = np.zeros(X.shape[1]) if theta0 is None else np.array(theta0, dtype=float)
    value = _penalised_loss(theta, X, p, w, C)
    for _ in range(100):
        q = _sigmoid(X @ theta)
        g = C * X.T @ (w * (q - p))
        H = C * (X.T * (w * q * (1.0 - q))) @ X
        H[np.diag_indices_from(H)] += 1e-12 * (1.0 + H.diagonal().max())  # keeps the model strictly convex
        d = _l1_quadratic_step(g, H, theta)
        if np.abs(d).max() <= 1e-12 * (1.0 + np.abs(theta).max()):
            break
        decrease = g @ d + np.abs(theta + d).sum() - np.abs(theta).sum()  # < 0: d is a descent direction
        t = 1.0
        while (new := _penalised_loss(theta + t * d, X, p, w, C)) > value + 1e-4 * t * decrease and t > 1e-10:
            t /= 2  # backtracking (Armijo) on the true objective
        if new >= value:
            break  # no decrease left at floating-point precision
        theta, value = theta + t * d, new
    return theta


def _select_C(X: np.ndarray, p: np.ndarray, w: np.ndarray, n_splits: int) -> float:
    """The C of ``CS`` with the least summed held-out loss over ``n_splits`` folds (first one on ties)."""
    fold = (len(p) - 1 - np.arange(len(p))) % n_splits  # see the module docstring
    losses = np.zeros(len(CS))
    for f in range(n_splits):
        train, test = fold != f, fold == f
        theta = None
        for c, C in enumerate(CS):
            theta = fit_l1_logistic(X[train], p[train], w[train], C, theta0=theta)
            q = np.clip(_sigmoid(X[test] @ theta), 1e-15, 1 - 1e-15)
            ce = -(p[test] * np.log(q) + (1 - p[test]) * np.log(1 - q))
            losses[c] += np.mean(w[test] * ce)
    return float(CS[int(np.argmin(losses))])


def _design(
    variant: str, s: np.ndarray, p: np.ndarray, data: LCData | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Training rows of a variant: X [G, k], p [G], w [G]; the model's difficulties d [n]; the k feature names."""
    n = len(p)
    names = ["tanh(std_delta_len)", "not_gamed_baseline"]
    if variant == "length_controlled_minimal":
        return np.column_stack([np.tanh(s), np.ones(n)]), p, np.ones(n), np.zeros(n), names
    if data is None:
        raise DataError(
            f"{variant} needs per-instruction difficulties (LCData): pass AlpacaEval's df_gamed.csv "
            "(Hub dataset tatsu-lab/alpaca_eval), or use length_controlled_minimal"
        )
    if len(data.instruction_difficulty) != n:
        raise DataError(
            f"{variant}: LCData has {len(data.instruction_difficulty)} instruction difficulties for {n} comparisons"
        )
    diff = np.asarray(data.instruction_difficulty, dtype=np.float64)
    X, w = np.column_stack([np.tanh(s), diff, np.ones(n)]), np.ones(n)
    names.insert(1, "instruction_difficulty")
    if variant == "length_controlled_noreg":
        return X, p, w, diff, names
    if data.gamed_preference is None or len(data.gamed_preference) == 0:
        raise DataError(
            f"{variant} needs the gamed baselines' rows (not_gamed_baseline False) of AlpacaEval's df_gamed.csv; "
            "this LCData has none"
        )
    g_diff = diff[data.gamed_index]
    X_g = np.column_stack([np.tanh(data.gamed_std_delta_len), g_diff, np.zeros(len(g_diff))])
    # Gamed rows first, as alpaca_eval concatenates them: the order sets the folds.
    p_train = np.concatenate([data.gamed_preference, p])
    w_train = np.concatenate([np.full(len(g_diff), GAMED_WEIGHT), w])
    return np.vstack([X_g, X]), p_train, w_train, diff, names


def length_controlled_win_rate(
    probs,
    model_lengths,
    baseline_lengths,
    variant: str = "length_controlled_minimal",
    data: LCData | None = None,
    n_splits: int = 5,
) -> LengthControlled:
    """AlpacaEval 2.0's LC win rate of a model against a baseline (see the module docstring).

    Args:
        probs: [n] P(model ≻ baseline | instruction i) in [0, 1]; row i is instruction i.
        model_lengths: [n] model output lengths in characters.
        baseline_lengths: [n] baseline output lengths in characters.
        variant: one of ``LC_VARIANTS``.
        data: AlpacaEval's df_gamed.csv (``LCData.from_csv``); needed by the noreg and v1 variants.
        n_splits: cross-validation folds for choosing C.

    Returns:
        The LC win rate, its standard error, the fitted coefficients and the chosen C.
    """
    if variant not in LC_VARIANTS:
        raise DataError(f"unknown length-control variant {variant!r}; expected one of {', '.join(LC_VARIANTS)}")
    p, m, b = (np.asarray(x, dtype=np.float64) for x in (probs, model_lengths, baseline_lengths))
    if p.ndim != 1 or m.shape != p.shape or b.shape != p.shape:
        raise DataError(
            f"length control: probs {p.shape} and lengths {m.shape}, {b.shape} must be equal-length vectors"
        )
    if not (np.all((p >= 0) & (p <= 1)) and np.isfinite(m).all() and np.isfinite(b).all()):
        raise DataError("length control expects probabilities in [0, 1] and finite lengths")
    n, delta = len(p), b - m
    if n_splits < 2 or n < n_splits:
        raise DataError(f"length control: n_splits must be ≥ 2 and ≤ the {n} comparisons, got {n_splits}")
    std = delta.std(ddof=1)
    s = delta / std if std > 0 else np.zeros(n)  # all differences equal: no length signal to remove
    X, p_train, w, diff, names = _design(variant, s, p, data)
    C = _select_C(X, p_train, w, n_splits)
    coef = dict(zip(names, fit_l1_logistic(X, p_train, w, C).tolist()))
    # The counterfactual with no length difference: tanh(0) = 0 drops the length term.
    pred = _sigmoid(coef.get("instruction_difficulty", 0.0) * diff + coef["not_gamed_baseline"])
    return LengthControlled(float(pred.mean()), float(pred.std(ddof=1) / math.sqrt(n)), variant, coef, C)
