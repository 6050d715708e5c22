"""Bradley-Terry fits by exact Newton steps: weighted logistic regression with soft targets and optional L2 penalty.

A battle i between models a_i and b_i with score y_i ∈ [0, 1] for a_i (1 win, ½ tie, 0 loss), weight c_i ≥ 0 and
style features z_i ∈ R^k (model a_i's minus model b_i's, standardised) has

    logit P(a_i ≻ b_i) = s (θ_{a_i} − θ_{b_i}) + γ · z_i                                    (Bradley & Terry 1952)

and (θ, γ) minimise the weighted cross-entropy plus an L2 penalty λ/2 (‖θ‖² + ‖γ‖²):

    F(θ, γ) = Σ_i c_i [softplus(η_i) − y_i η_i] + λ/2 ‖(θ, γ)‖²,    η_i the logit above.

A tie as y = ½ equals arena-hard-auto's encoding of a tie as one win for each side (``compute_mle_elo`` and
``construct_style_matrices`` duplicate every battle, labelling a tie's two copies 1 and 0): −½ log p − ½ log(1 − p)
per copy pair. ``s`` is the scale of the strengths: ln 10 for v0.1's Elo-style ratings (rating = 400 θ + anchor),
1 for v2.0's logits. Without a penalty the strengths are identified only up to a common shift, so the anchor's θ is
fixed at 0 (its column dropped); with one (v0.1's style control, scikit-learn's default C = 1, i.e. λ = 1) every θ
is penalised, as there, and the fit is reported relative to the anchor.

Newton's method with an Armijo backtracking line search converges quadratically from θ = 0; it stops when a step
moves no coefficient by more than ``tol``. No maximum-likelihood estimate exists when a model wins (or loses) all
its battles (complete separation): the iterates then diverge and the fit raises :class:`Separation` (a DataError)
instead of returning the large, arbitrary value an iterative solver stops at; a bootstrap replicate keeps the last
iterate (see there).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from prefopt.errors import DataError


def _objective(w: np.ndarray, X: np.ndarray, y: np.ndarray, c: np.ndarray, l2: float) -> float:
    eta = X @ w
    return float(np.sum(c * (np.logaddexp(0.0, eta) - y * eta)) + 0.5 * l2 * (w @ w))


def fit_logistic(
    X: np.ndarray, y: np.ndarray, c: np.ndarray, l2: float = 0.0, tol: float = 1e-10, max_iter: int = 100
) -> np.ndarray:
    """argmin_w Σ_i c_i [softplus(x_i·w) − y_i x_i·w] + λ/2 ‖w‖², no intercept.

    Args:
        X: [n, p] design. y: [n] targets in [0, 1]. c: [n] weights ≥ 0. l2: λ ≥ 0.

    Returns:
        w: [p] float64.
    """
    w = np.zeros(X.shape[1])
    value = _objective(w, X, y, c, l2)
    for _ in range(max_iter):
        eta = X @ w
        p, q = np.exp(-np.logaddexp(0.0, -eta)), np.exp(-np.logaddexp(0.0, eta))  # σ(η), σ(−η): no 1 − p rounding
        grad = X.T @ (c * ((1.0 - y) * p - y * q)) + l2 * w  # (1 − y) σ(η) − y σ(−η) = σ(η) − y
        hess = (X * (c * p * q)[:, None]).T @ X + l2 * np.eye(len(w))
        try:
            step = np.linalg.solve(hess, grad)
        except np.linalg.LinAlgError:
            raise DataError("Bradley-Terry fit: singular Hessian; a model has no battles with the others") from None
        t = 1.0
        while t > 1e-12:  # Armijo backtracking: F(w − t d) ≤ F(w) − 1e-4 t ∇F·d
            trial = _objective(w - t * step, X, y, c, l2)
            if trial <= value - 1e-4 * t * (grad @ step) or abs(trial - value) <= 1e-15 * abs(value):
                break
            t /= 2
        w, value = w - t * step, trial
        if np.max(np.abs(t * step)) <= tol * (1.0 + np.max(np.abs(w))):
            return w
    raise Separation(
        f"Bradley-Terry fit did not converge in {max_iter} Newton steps: a model won or lost all its battles, "
        "so its rating is infinite",
        w,
    )


class Separation(DataError):
    """The fit diverges (complete separation). ``w`` is the last Newton iterate: each step moves it about one logit
    further along the separating direction, so after ``max_iter`` steps it stands for the limit (a win rate of 0 or 1
    to within e^-max_iter), which is what a bootstrap replicate of such a sample keeps."""

    def __init__(self, message: str, w: np.ndarray):
        super().__init__(message)
        self.w = w


@dataclass(frozen=True)
class BTFit:
    """A Bradley-Terry fit.

    Attributes:
        models: [M] the models, sorted by name.
        strengths: [M] θ_m − θ_anchor, in units of the fit's scale (P(m ≻ anchor) = σ(s · strength)).
        style: [k] γ, the coefficients of the standardised style features (logits per feature unit).
    """

    models: list[str]
    strengths: np.ndarray
    style: np.ndarray


def design(
    a_idx: np.ndarray,
    b_idx: np.ndarray,
    n_models: int,
    anchor: int,
    features: np.ndarray | None,
    scale: float,
    penalised: bool,
) -> np.ndarray:
    """[n, M (or M − 1 without penalty: the anchor's column dropped) + k] design: +s for a, −s for b, then z."""
    n = len(a_idx)
    X = np.zeros((n, n_models))
    X[np.arange(n), a_idx] += scale
    X[np.arange(n), b_idx] -= scale
    if not penalised:
        X = np.delete(X, anchor, axis=1)
    return X if features is None else np.hstack([X, features])


def split_coefficients(w: np.ndarray, n_models: int, anchor: int, penalised: bool) -> tuple[np.ndarray, np.ndarray]:
    """(strengths [M] relative to the anchor, style [k]) from the fitted vector of :func:`design`'s columns."""
    if penalised:
        theta = w[:n_models] - w[anchor]
        return theta, w[n_models:]
    theta = np.insert(w[: n_models - 1], anchor, 0.0)
    return theta, w[n_models - 1 :]


def fit_bradley_terry(
    model_a: list[str],
    model_b: list[str],
    score_a: np.ndarray,
    anchor: str,
    *,
    weights: np.ndarray | None = None,
    features: np.ndarray | None = None,
    scale: float = 1.0,
    l2: float = 0.0,
) -> BTFit:
    """Fit θ (and γ) to battles (see the module docstring for the model and objective).

    Args:
        model_a, model_b: [n] the two models of each battle. score_a: [n] model a's score in [0, 1].
        anchor: the model whose strength is 0. weights: [n] c_i (default 1). features: [n, k] z_i.
        scale: s. l2: λ.
    """
    models = sorted(set(model_a) | set(model_b) | {anchor})
    index = {m: i for i, m in enumerate(models)}
    a_idx = np.array([index[m] for m in model_a])
    b_idx = np.array([index[m] for m in model_b])
    y = np.asarray(score_a, dtype=np.float64)
    c = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=np.float64)
    penalised = l2 > 0
    X = design(a_idx, b_idx, len(models), index[anchor], features, scale, penalised)
    w = fit_logistic(X, y, c, l2)
    theta, gamma = split_coefficients(w, len(models), index[anchor], penalised)
    return BTFit(models, theta, gamma)
