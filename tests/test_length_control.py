"""Length-controlled win rate: agreement with alpaca_eval, hand-checkable cases, the L1 solver, LCData.from_csv."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from prefopt.errors import DataError
from prefopt.eval.length_control import (
    CS,
    LC_VARIANTS,
    LCData,
    _penalised_loss,
    fit_l1_logistic,
    length_controlled_win_rate,
)


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _synthetic(seed: int, n: int = 300, log_ratio: float = 0.0):
    """Annotations where the model wins more often when longer: p [n], model and baseline lengths [n], difficulty [n].

    ``log_ratio`` is the mean log length ratio model/baseline. A fifth of the judgements are hard: a win, a loss or a
    draw (p = 1, 0, ½).
    """
    rng = np.random.default_rng(seed)
    baseline = rng.integers(200, 2000, n)
    model = np.maximum(1, baseline * rng.lognormal(log_ratio, 0.4, n)).astype(int)
    difficulty = rng.normal(0.0, 1.0, n)
    s = (model - baseline) / np.std(model - baseline, ddof=1)
    p = _sigmoid(0.5 + 1.2 * np.tanh(s) - 0.6 * difficulty + rng.normal(0.0, 1.0, n))
    hard = rng.random(n) < 0.2
    p[hard] = rng.choice([0.0, 1.0, 0.5], hard.sum())
    return p, model, baseline, difficulty


def _write_gamed(path, baseline, difficulty, seed: int):
    """A df_gamed.csv like AlpacaEval's: a concise and a verbose gamed baseline per instruction, model by model."""
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(seed + 100)
    frames = []
    for name, factor in (("gpt4_concise", 0.5), ("gpt4_verbose", 2.0)):
        delta = baseline - (baseline * factor).astype(int)
        s = delta / np.std(delta, ddof=1)
        pref = _sigmoid(-0.8 * np.tanh(s) - 0.6 * difficulty + rng.normal(0.0, 0.5, len(baseline)))
        frames.append(
            pd.DataFrame(
                dict(
                    model=name,
                    preference=pref,
                    index=np.arange(len(baseline)),
                    std_delta_len=s,
                    instruction_difficulty=difficulty,
                    not_gamed_baseline=False,
                )
            )
        )
    # alpaca_eval looks difficulties up by row label, so the first N rows must be indices 0..N-1 in order.
    pd.concat(frames, ignore_index=True).to_csv(path, index=False)


@pytest.fixture
def alpaca_lc(monkeypatch):
    """alpaca_eval's get_length_controlled_winrate(p, model_lengths, baseline_lengths, variant, gamed_csv)."""
    pytest.importorskip("alpaca_eval")
    pd = pytest.importorskip("pandas")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pkg_resources deprecation at import
        from alpaca_eval.metrics import glm_winrate

    def run(p, model_lengths, baseline_lengths, variant, gamed_csv):
        monkeypatch.setattr(glm_winrate, "hf_hub_download", lambda **kw: str(gamed_csv))
        preference = 1.0 + p
        preference[p == 0.5] = np.where(np.arange((p == 0.5).sum()) % 2, 1.5, 0.0)  # both draw encodings
        annotations = pd.DataFrame(
            dict(
                output_1=["b" * k for k in baseline_lengths],
                output_2=["m" * k for k in model_lengths],
                preference=preference,
                generator_1="baseline",
                generator_2="model",
                annotator="judge",
            )
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scikit-learn's deprecations of the arguments alpaca_eval passes
            return glm_winrate.get_length_controlled_winrate(annotations, glm_name=variant, save_weights_dir=None)

    return run


@pytest.mark.parametrize("seed, log_ratio", [(0, 0.0), (1, 0.7), (2, -0.4)])
def test_matches_alpaca_eval(alpaca_lc, tmp_path, seed, log_ratio):
    p, model, baseline, difficulty = _synthetic(seed, log_ratio=log_ratio)
    gamed_csv = tmp_path / "df_gamed.csv"
    _write_gamed(gamed_csv, baseline, difficulty, seed)
    data = LCData.from_csv(gamed_csv)
    for variant in LC_VARIANTS:
        theirs = alpaca_lc(p, model, baseline, variant, gamed_csv)
        ours = length_controlled_win_rate(p, model, baseline, variant, data)
        assert abs(100 * ours.win_rate - theirs["length_controlled_winrate"]) < 0.5, variant
        assert abs(100 * ours.se - theirs["lc_standard_error"]) < 0.5, variant
        assert theirs["win_rate"] == pytest.approx(100 * p.mean())
        if log_ratio != 0:  # a longer (shorter) model: length control must lower (raise) the win rate by points
            assert 100 * (p.mean() - ours.win_rate) * np.sign(log_ratio) > 4, variant


def test_no_length_effect_gives_the_fitted_intercept():
    rng = np.random.default_rng(0)
    n = 200
    p = np.full(n, 0.7)
    for model, baseline in [(rng.integers(100, 900, n), rng.integers(100, 900, n)), (np.full(n, 50), np.full(n, 50))]:
        lc = length_controlled_win_rate(p, model, baseline)
        theta = lc.coefficients["not_gamed_baseline"]
        # p does not vary with length: the L1 kink holds the length coefficient at exactly 0.
        assert lc.coefficients["tanh(std_delta_len)"] == 0.0
        assert lc.win_rate == pytest.approx(_sigmoid(theta), abs=1e-12)
        # Stationarity in θ > 0: 1 + C Σ_i (σ(θ) − 0.7) = 0, and the largest C fits a constant p best.
        assert lc.C == CS[-1]
        assert lc.win_rate == pytest.approx(0.7 - 1 / (lc.C * n), abs=1e-9)
        assert lc.se == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("variant", ["length_controlled_minimal", "length_controlled_noreg"])
def test_swapping_model_and_baseline_gives_one_minus_lc(variant):
    p, model, baseline, difficulty = _synthetic(3, n=250, log_ratio=0.3)
    data = LCData(difficulty)
    lc = length_controlled_win_rate(p, model, baseline, variant, data)
    swapped = length_controlled_win_rate(1 - p, baseline, model, variant, data)
    # θ' = (θ_len, −θ_d, −θ_ng) turns every row's loss into the same one, so the fits (and the C chosen) mirror.
    assert swapped.C == lc.C
    assert swapped.win_rate == pytest.approx(1 - lc.win_rate, abs=1e-6)
    assert swapped.se == pytest.approx(lc.se, abs=1e-6)
    assert swapped.coefficients["tanh(std_delta_len)"] == pytest.approx(lc.coefficients["tanh(std_delta_len)"])
    assert swapped.coefficients["not_gamed_baseline"] == pytest.approx(-lc.coefficients["not_gamed_baseline"])


def _small_problem(seed: int = 0, n: int = 80):
    rng = np.random.default_rng(seed)
    X = np.column_stack([np.tanh(rng.normal(size=n)), rng.normal(size=n), np.ones(n)])
    p = _sigmoid(X @ np.array([-1.0, 0.05, 0.4]) + rng.normal(0.0, 0.7, n))
    p[:10] = np.round(p[:10])  # some hard labels: one duplicate gets weight 0
    w = np.where(np.arange(n) < 20, 0.1, 1.0)
    return X, p, w


def _sklearn_fit(X, p, w, C):
    """liblinear's L1 logistic regression on the rows duplicated as label 1 (weight w p) and 0 (weight w (1 − p))."""
    linear_model = pytest.importorskip("sklearn.linear_model")
    clf = linear_model.LogisticRegression(
        C=C, l1_ratio=1.0, solver="liblinear", fit_intercept=False, tol=1e-12, max_iter=100_000
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y = np.r_[np.ones(len(p)), np.zeros(len(p))]
        clf.fit(np.vstack([X, X]), y, sample_weight=np.r_[w * p, w * (1 - p)])
    return clf.coef_[0]


@pytest.mark.parametrize("C", [0.05, 1.0, 100.0])
def test_solver_matches_liblinear(C):
    X, p, w = _small_problem()
    ours, theirs = fit_l1_logistic(X, p, w, C), _sklearn_fit(X, p, w, C)
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
    assert _penalised_loss(ours, X, p, w, C) <= _penalised_loss(theirs, X, p, w, C) + 1e-9  # ours is the minimum


def test_large_penalty_zeroes_coefficients_exactly():
    X, p, w = _small_problem()
    theta = fit_l1_logistic(X, p, w, 0.2)
    assert theta[1] == 0.0 and theta[0] != 0.0  # the weak feature is cut, the strong one kept
    q = _sigmoid(X @ theta)
    assert abs(0.2 * X[:, 1] @ (w * (q - p))) <= 1.0  # KKT at a zero coefficient: |∂ loss| ≤ 1
    assert _sklearn_fit(X, p, w, 0.2)[1] == 0.0
    np.testing.assert_array_equal(fit_l1_logistic(X, p, w, 1e-4), np.zeros(3))


def test_variants_that_need_data_say_so():
    p, model, baseline, difficulty = _synthetic(4, n=50)
    with pytest.raises(DataError, match="length_controlled_noreg.*df_gamed.csv"):
        length_controlled_win_rate(p, model, baseline, "length_controlled_noreg")
    with pytest.raises(DataError, match="49 instruction difficulties for 50"):
        length_controlled_win_rate(p, model, baseline, "length_controlled_noreg", LCData(difficulty[:49]))
    with pytest.raises(DataError, match="length_controlled_v1 needs the gamed"):
        length_controlled_win_rate(p, model, baseline, "length_controlled_v1", LCData(difficulty))


HEADER = "model,preference,index,std_delta_len,instruction_difficulty,not_gamed_baseline\n"


def test_lcdata_round_trip(tmp_path):
    path = tmp_path / "df_gamed.csv"
    path.write_text(
        HEADER
        + "concise,0.25,0,-0.5,1.5,False\n"
        + "concise,0.75,1,0.5,-2.0,False\n"
        + "verbose,0.5,0,1.25,1.5,False\n"
        + "other,,2,,0.125,True\n"  # an instruction with no gamed rows: a difficulty only
    )
    data = LCData.from_csv(path)
    np.testing.assert_array_equal(data.instruction_difficulty, [1.5, -2.0, 0.125])
    np.testing.assert_array_equal(data.gamed_preference, [0.25, 0.75, 0.5])
    np.testing.assert_array_equal(data.gamed_std_delta_len, [-0.5, 0.5, 1.25])
    np.testing.assert_array_equal(data.gamed_index, [0, 1, 0])
    assert data.gamed_index.dtype == np.int64


def test_lcdata_errors_name_the_file_column_and_row(tmp_path):
    path = tmp_path / "df_gamed.csv"
    path.write_text("model,preference,index,std_delta_len,not_gamed_baseline\nconcise,0.2,0,0.1,False\n")
    with pytest.raises(DataError, match=r"df_gamed\.csv: missing column 'instruction_difficulty'"):
        LCData.from_csv(path)
    path.write_text(HEADER + "concise,0.2,0,0.1,1.0,False\nconcise,1.5,1,0.1,1.0,False\n")  # 1..2 scale, not 0..1
    with pytest.raises(DataError, match=r"df_gamed\.csv: line 3: column 'preference': expected a number in \[0, 1\]"):
        LCData.from_csv(path)
    path.write_text(HEADER + "concise,0.2,0,0.1,hard,False\n")
    with pytest.raises(DataError, match="line 2: column 'instruction_difficulty'.*'hard'"):
        LCData.from_csv(path)
    path.write_text(HEADER + "concise,0.2,0,0.1,1.0,False\nconcise,0.2,2,0.1,1.0,False\n")
    with pytest.raises(DataError, match="instruction index 1 missing"):
        LCData.from_csv(path)
    with pytest.raises(DataError, match="nothing.csv: cannot read"):
        LCData.from_csv(tmp_path / "nothing.csv")
