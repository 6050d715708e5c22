"""Build the Arena-Hard-Auto test fixture and score it with arena-hard-auto's own code; write reference.json.

    .venv/bin/python scripts/arena_hard_reference.py \\
        --repo /work/.mirror/lmarena+arena-hard-auto/repo --out tests/data/arena_hard

(about 6 minutes on 2 CPU cores, mostly the 1000-round bootstraps of arena-hard-auto's own code).

1. A fixed fixture (``random.Random`` seeded by strings: the same files on every run) is written with prefopt's
   writers in both generations' layouts under ``OUT/v0.1`` and ``OUT/v2.0`` (``question.jsonl``, ``model_answer/``,
   ``model_judgment/<judge>/``): three models and the baseline(s), markdown-bearing answers with metadata, judgments
   with every verdict, ties, strong verdicts, mirrored v2.0 spellings, null and unparsed games. The two shortest rows
   of some of arena-hard-auto's own data files are copied unchanged to ``OUT/official_rows/`` (format tests).
2. ``git archive`` extracts the ``*.py`` files of commit 0489bf3 (v0.1) and 196f6b8 (v2.0, HEAD) into temporary
   folders; the fixture goes into their ``data/`` trees and each generation's own functions run in a child process
   of this Python (pandas, scikit-learn, torch). Two shims, nothing else changed: ``tiktoken`` (imported by
   ``add_markdown_info``, used only by its main) is an empty module, and numpy 2's removed alias ``np.NAN`` (used
   by v0.1's ``predict_win_rate``) is restored as ``np.nan``.
3. Recorded in ``OUT/reference.json`` (with this command, both commits, the library versions and the fixture's
   sha256):
   - v0.1: add_markdown_info's counts of every answer; the battles' standardised style features; the ratings and
     unrounded win rates of ``compute_mle_elo`` and, per style control, of ``construct_style_matrices`` +
     ``fit_bt`` with the arguments ``show_result.py`` passes (and again with scikit-learn's solver run to tolerance
     1e-12); 1000-round bootstraps (``get_bootstrap_result``, ``get_bootstrap_result_style_control``, numpy seeded
     42): percentiles 2.5/97.5 as win rates, their standard deviation, style coefficient quantiles; and the
     leaderboard CSV that ``show_result.py --output`` itself writes (100 rounds).
   - v2.0, per category (hard_prompt, creative_writing): ``print_leaderboard`` ten times (numpy seeded 0..9; its
     100 rounds are built in), captured at ``format_confidence_interval``; ``print_leaderboard_with_style_features``
     with ``length markdown`` (the official configuration) as printed, and its features; per style control the
     fit of ``fit_pairwise_model`` on all battles as it is (float32, 50 L-BFGS iterations, step 0.1) and to
     convergence (float64, step 1, up to 1000 iterations, tolerance 1e-12, with ``bt_loss_float64`` registered as
     "bt": the shipped loss casts the outcomes to float32 and so stalls), both losses in float64, and a 1000-round
     ``bootstrap_pairwise_model`` (numpy seeded 1). ``length`` or ``markdown`` alone is fitted by those functions
     on the intended columns: ``show_result.py`` slices the model columns instead (``all_features[:, :1]``,
     ``[:, 1:]``), which crashes for length and mislabels the models for markdown.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

LEGACY, HEAD = "0489bf384abd010906014dec7b903f7c438eabba", "196f6b826783b3da7310e361a805fa36f0be83f3"
V01_JUDGE, V2_JUDGE, V01_BASELINE = "gpt-4-1106-preview", "gpt-4.1", "gpt-4-0314"
# name: (strength in logits, verbosity, markdown rate)
MODELS = {"alpha-7b": (0.5, 2, 0.6), "beta-7b": (0.0, 1, 0.3), "gamma-7b": (-0.4, 0, 0.1)}
BASELINE_STYLE = (0.0, 1, 0.3)
WORDS = "the answer explains each step with care so that a reader can follow every idea and check it".split()
N_ROUNDS = 1000  # bootstrap rounds of the statistical comparison
# numpy 2 removed the alias np.NAN that v0.1's predict_win_rate uses; the only change made to arena-hard-auto's code.
NUMPY_SHIM = "import numpy; numpy.NAN = numpy.nan"


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def _block(rng: random.Random, markdown: float) -> str:
    """One paragraph: prose, or (with probability ``markdown``) a markdown element or one of the counting quirks."""
    if rng.random() > markdown:
        return " ".join(_sentence(rng, rng.randint(3, 8)) for _ in range(rng.randint(1, 2)))
    kind = rng.choice(["header", "ordered", "unordered", "bold", "code", "quirk"])
    if kind == "header":
        return "#" * rng.randint(1, 6) + " " + _sentence(rng, 3)[:-1]
    if kind == "ordered":
        return "\n".join(
            f"{' ' * rng.choice([0, 0, 3])}{i + 1}. {_sentence(rng, 4)}" for i in range(rng.randint(2, 4))
        )
    if kind == "unordered":
        return "\n".join(f"{rng.choice('-*+')} {_sentence(rng, 4)}" for _ in range(rng.randint(2, 4)))
    if kind == "bold":
        return f"**{_sentence(rng, 2)}** then __{rng.choice(WORDS)}__ and {_sentence(rng, 5)}"
    if kind == "code":
        return "```python\n# not a header\n- not a list\n**not bold**\nx = 1\n```"
    return rng.choice(
        [
            "Run ```pip install tool``` first; later pip install tool again.",  # inner text deleted outside too
            "```\nuse `x` here\n# kept header\n```",  # a backtick inside: not deleted
            "####### seven hashes\n#no space\n1.no space\n**open bold",  # none of these count
            "\n\n  - indented item after blank lines\n10. ten",
        ]
    )


def answer_text(model: str, uid: str, style: tuple) -> tuple[str, int]:
    """(answer, token_len) of ``model`` on ``uid``; token_len is a stand-in for tiktoken's count."""
    rng = random.Random(f"answer/{model}/{uid}")
    _, verbosity, markdown = style
    text = "\n\n".join(_block(rng, markdown) for _ in range(rng.randint(1 + verbosity, 1 + 2 * verbosity)))
    return text, int(1.3 * len(text.split())) + text.count("`")


# A verdict from the model's side (M) against the other answer (O), as the label of a game where the model is
# Assistant A or B; v2.0 also reads each label mirrored.
LABEL_OF = {
    "M>>O": ("A>>B", "B>>A"), "M>O": ("A>B", "B>A"), "M=O": ("A=B", "A=B"), "O>M": ("B>A", "A>B"),
    "O>>M": ("B>>A", "A>>B"),
}  # fmt: skip
MIRRORED = {"A>>B": "B<<A", "A>B": "B<A", "A=B": "B=A", "B>A": "A<B", "B>>A": "A<<B"}


def _label(q: float, model_is_a: bool, mirrored: bool) -> str:
    """The label for a model score q in (0, 1) in the game's orientation (and v2.0's mirrored spelling)."""
    verdict = "M>>O" if q > 0.85 else "M>O" if q > 0.6 else "M=O" if q > 0.4 else "O>M" if q > 0.15 else "O>>M"
    label = LABEL_OF[verdict][0 if model_is_a else 1]
    return MIRRORED[label] if mirrored else label


def verdicts(model: str, uid: str, meta_m: dict, meta_b: dict, v2: bool) -> list[str]:
    """Game 1's (baseline as A) and game 2's labels: strength, length and markdown differences and noise."""
    rng = random.Random(f"verdict/{model}/{uid}")
    strength = MODELS[model][0]
    length = (meta_m["token_len"] - meta_b["token_len"]) / (meta_m["token_len"] + meta_b["token_len"] + 1)
    md = sum(sum(meta_m[k].values()) - sum(meta_b[k].values()) for k in ("header_count", "list_count", "bold_count"))
    labels = []
    for model_is_a in (False, True):
        q = 1 / (1 + math.exp(-(strength + 1.5 * length + 0.1 * md + rng.gauss(0, 1.2))))
        labels.append(_label(q, model_is_a, v2 and rng.random() < 0.2))
    return labels


def build_fixture(out: Path) -> dict:
    """Write both generations' fixture files under ``out``; return {version: {model: {uid: text}}}."""
    from prefopt.eval.arena_hard import Question, answer_row, game, judgment_row, markdown_counts, question_row
    from prefopt.eval.arena_hard.formats import V2_BASELINES
    from prefopt.eval.formats import write_jsonl

    texts: dict = {}
    for version in ("v0.1", "v2.0"):
        root = out / version
        if root.exists():
            shutil.rmtree(root)
        if version == "v0.1":
            questions = [
                Question(f"q01-{i:03d}", _sentence(random.Random(f"q/{i}"), 8), "arena-hard-v0.1", version, "topic")
                for i in range(30)
            ]
            baselines = {q.uid: V01_BASELINE for q in questions}
        else:
            cats = [("hard_prompt", "coding" if i % 2 else "math") for i in range(30)]
            cats += [("creative_writing", "creative_writing")] * 16
            questions = [
                Question(f"q20-{i:03d}", _sentence(random.Random(f"q2/{i}"), 8), c, version, subcategory=s)
                for i, (c, s) in enumerate(cats)
            ]
            baselines = {q.uid: V2_BASELINES[q.category] for q in questions}
        write_jsonl(root / "question.jsonl", [question_row(q) for q in questions])
        meta: dict = {}
        for model in sorted(set(MODELS) | set(baselines.values())):
            rows, texts.setdefault(version, {})[model] = [], {}
            for q in questions:
                if model not in MODELS and baselines[q.uid] != model:
                    continue
                text, n_tokens = answer_text(model, q.uid, MODELS.get(model, BASELINE_STYLE))
                meta.setdefault(model, {})[q.uid] = markdown_counts(text, n_tokens)
                texts[version][model][q.uid] = text
                rows.append(
                    answer_row(
                        version,
                        q.uid,
                        model,
                        text,
                        meta[model][q.uid],
                        prompt=q.prompt,
                        answer_id=f"ans-{model}-{q.uid}",
                        tstamp=1.7e9,
                    )  # fmt: skip
                )
            write_jsonl(root / "model_answer" / f"{model}.jsonl", rows)
        judge = V01_JUDGE if version == "v0.1" else V2_JUDGE
        for model in MODELS:
            rows = []
            for i, q in enumerate(questions):
                base = baselines[q.uid]
                labels = verdicts(model, q.uid, meta[model][q.uid], meta[base][q.uid], version == "v2.0")
                labels = _special(version, model, i, labels)
                games = []
                for g, label in enumerate(labels):
                    verdict = f"My final verdict is [[{label}]]."
                    prompt = f"(question {q.uid}, {base if g == 0 else model} as A)"
                    judge_prompt = prompt if version == "v0.1" else [{"role": "user", "content": prompt}]
                    games.append(game(version, label, verdict if label else "No verdict.", judge_prompt))
                if version == "v2.0" and model == "beta-7b" and i == 3:
                    games[1] = None  # a judge call that failed (v2.0 writes null)
                rows.append(judgment_row(version, q, model, base, judge, games))
            write_jsonl(root / "model_judgment" / judge / f"{model}.jsonl", rows)
    return texts


def _special(version: str, model: str, i: int, labels: list[str]) -> list[str | None]:
    """Null and unparsed games at fixed places."""
    labels = list(labels)
    if (model, i) == ("beta-7b", 5):
        labels[1] = None  # no verdict read
    if version == "v0.1" and (model, i) == ("gamma-7b", 7):
        labels[0] = "A<B"  # a mirrored spelling: unparsed at v0.1
    if version == "v0.1" and (model, i) == ("alpha-7b", 9):
        labels[1] = "A>>>B"  # a malformed label: unparsed at v0.1
    if version == "v2.0" and (model, i) == ("alpha-7b", 35):
        labels[0] = None
    return labels


def copy_official_rows(repo: Path, out: Path) -> None:
    """The two shortest rows of each official data file kind, unchanged (arena-hard-auto's answers, questions)."""
    dest = out / "official_rows"
    dest.mkdir(parents=True, exist_ok=True)
    files = {
        "v0.1_question.jsonl": (LEGACY, "data/arena-hard-v0.1/question.jsonl"),
        "v0.1_answer.jsonl": (LEGACY, "data/arena-hard-v0.1/model_answer/gpt-4-0314.jsonl"),
        "v2.0_question.jsonl": (HEAD, "data/arena-hard-v2.0/question.jsonl"),
        "v2.0_answer.jsonl": (HEAD, "data/arena-hard-v2.0/model_answer/o3-mini-2025-01-31.jsonl"),
        "v2.0_layout_v0.1_question.jsonl": (HEAD, "data/arena-hard-v0.1/question.jsonl"),
    }
    for name, (commit, path) in files.items():
        text = subprocess.run(["git", "-C", str(repo), "show", f"{commit}:{path}"], capture_output=True, text=True)
        lines = sorted((line for line in text.stdout.split("\n") if line.strip()), key=len)[:2]
        (dest / name).write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def checkout(repo: Path, commit: str, dest: Path, version: str, fixture: Path) -> None:
    """``git archive`` of ``commit``'s code into ``dest`` and the fixture into its data/ tree."""
    dest.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", commit, "--", "*.py"], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    shutil.copytree(fixture / version, dest / "data" / f"arena-hard-{version}")
    (dest / "leaderboard").mkdir(exist_ok=True)


# ---- workers: run inside a child process, cwd = the extracted checkout, its folder first on sys.path ----


def _round(x: float) -> float:
    return float(f"{float(x):.9g}")


def _quantiles(values, qs) -> list[float]:
    import numpy as np

    return [float(v) for v in np.quantile(np.asarray(values, dtype=np.float64), qs)]


def _v01_markdown(work: Path) -> dict:
    """add_markdown_info's counts of every fixture answer (tiktoken stubbed: only its main uses it)."""
    import re
    import types

    sys.modules.setdefault("tiktoken", types.ModuleType("tiktoken"))
    import add_markdown_info

    pattern = re.compile("```([^`]*)```")
    texts = json.loads((work / "fixture_texts.json").read_text())
    out = {}
    for model, answers in texts.items():
        for uid, text in answers.items():
            counts = add_markdown_info.count_markdown_elements(add_markdown_info.remove_pattern(text, pattern), "")
            out[f"{model}/{uid}"] = [n for kind in counts.values() for n in kind.values()]  # h1..h6, lists, bold
    return out


def _v01_summary(ratings, boot) -> dict:
    """Ratings, unrounded win rates (predict_win_rate) and the bootstrap percentiles as show_result.py takes them."""
    import numpy as np
    import utils_math

    def rates(values: dict) -> dict:
        return {m: float(100 * p) for m, p in utils_math.predict_win_rate(values)[V01_BASELINE].fillna(0.5).items()}

    models = list(ratings.index)
    lower = {m: float(np.percentile(boot[m], 2.5)) for m in models}
    upper = {m: float(np.percentile(boot[m], 97.5)) for m in models}
    base = boot[V01_BASELINE].to_numpy()
    sd = {m: float(np.std(100 / (1 + 10 ** ((base - boot[m].to_numpy()) / 400)), ddof=1)) for m in models}
    return {
        "ratings": {m: float(r) for m, r in ratings.items()},
        "win_rates": rates(ratings.to_dict()),
        "lower": rates(lower),
        "upper": rates(upper),
        "sd": sd,
    }


def _v01_cli(work: Path, flag: str | None) -> dict:
    """show_result.py --output itself (100 rounds, numpy seeded 42 at import): its leaderboard CSV."""
    import pandas as pd

    argv = ["show_result.py", "--judge-name", V01_JUDGE, "--baseline", V01_BASELINE, "--output"] + (
        [flag] if flag else []
    )
    code = (
        f"{NUMPY_SHIM}; import runpy, sys; sys.argv = {argv!r}; runpy.run_path('show_result.py', run_name='__main__')"
    )
    subprocess.run([sys.executable, "-c", code], cwd=work, check=True, capture_output=True)
    csv = sorted((work / "leaderboard").glob("arena_hard_leaderboard_*.csv"))[-1]
    table = pd.read_csv(csv)
    csv.unlink()
    cols = {"score": "score", "lower": "rating_q025", "upper": "rating_q975", "avg_tokens": "avg_tokens"}
    return {row["model"]: {k: float(row[c]) for k, c in cols.items()} for _, row in table.iterrows()}


def run_v01(work: Path) -> dict:
    import numpy as np

    np.NAN = np.nan  # NUMPY_SHIM
    import show_result
    import sklearn.linear_model
    import utils_math

    out = {"markdown_counts": _v01_markdown(work)}
    battles = show_result.get_battles_from_judgment(
        "arena-hard-v0.1", V01_JUDGE, baseline_model=V01_BASELINE, style_control=True
    )
    out["n_battles"] = len(battles)
    ratings = utils_math.compute_mle_elo(battles, baseline_model=V01_BASELINE)
    np.random.seed(42)
    boot = utils_math.get_bootstrap_result(battles, utils_math.compute_mle_elo, N_ROUNDS, V01_BASELINE)
    out["none"] = _v01_summary(ratings, boot) | {"cli": _v01_cli(work, None)}
    modes = {
        "both": ({}, "--style-control"),
        "length": (
            {"apply_ratio": [1], "style_elements": utils_math.LENGTH_CONTROL_ELEMENTS},
            "--length-control-only",
        ),
        "markdown": (
            {"apply_ratio": [1, 1, 1], "style_elements": utils_math.MARKDOWN_CONTROL_ELEMENTS},
            "--markdown-control-only",
        ),
    }
    default = sklearn.linear_model.LogisticRegression
    for mode, (kwargs, flag) in modes.items():
        X, Y, models = utils_math.construct_style_matrices(battles, **kwargs)
        ratings, coef = utils_math.fit_bt(X, Y, models, baseline_model=V01_BASELINE)
        # the same fit with scikit-learn's solver run to convergence (fit_bt looks the class up when called)
        sklearn.linear_model.LogisticRegression = lambda **kw: default(**kw, tol=1e-12, max_iter=100_000)
        tight_ratings, tight_coef = utils_math.fit_bt(X, Y, models, baseline_model=V01_BASELINE)
        sklearn.linear_model.LogisticRegression = default
        np.random.seed(42)
        boot, coefs = utils_math.get_bootstrap_result_style_control(
            X, Y, battles, models, utils_math.fit_bt, num_round=N_ROUNDS, baseline_model=V01_BASELINE
        )
        coefs = np.array(coefs)
        if mode == "both":  # the standardised features of each battle (first copy), baseline minus model
            keys = battles[["model_b", "question_id", "winner"]].values.tolist()
            out["features"] = [key + [_round(z) for z in row] for key, row in zip(keys, X[: len(battles), -4:])]
        out[mode] = _v01_summary(ratings, boot) | {
            "converged": _v01_summary(tight_ratings, boot),
            "style": [float(c) for c in coef],
            "style_converged": [float(c) for c in tight_coef],
            "style_quantiles": [_quantiles(coefs[:, j], [0.025, 0.5, 0.975]) for j in range(coefs.shape[1])],
            "cli": _v01_cli(work, flag),
        }
    return out


def bt_loss_float64(logits, outcomes, **kwargs):
    """v2.0's bt_loss (summed binary cross-entropy with logits) without its cast of the outcomes to float32, which
    makes the loss float32 even for float64 logits and stalls L-BFGS at max |gradient| near 1e-3."""
    import torch.nn.functional as F

    return F.binary_cross_entropy_with_logits(logits, outcomes.double(), reduction="sum")


def _v20_style(mu, features, outcomes, models: list[str], baseline: str, style_cols: list[int]) -> dict:
    """fit_pairwise_model on all battles (as it is, and in float64 to convergence) and bootstrap_pairwise_model, on
    the one-hot columns and the chosen style columns of print_leaderboard_with_style_features' features."""
    import numpy as np
    import torch

    k = len(style_cols)
    features = features[:, list(range(len(models))) + [len(models) + j for j in style_cols]]

    def probs(coefs) -> np.ndarray:
        return mu.to_winrate_probabilities(coefs[:, :-k], models, baseline_model=baseline).numpy()

    logits, _ = mu.fit_pairwise_model(features, outcomes, "bt")
    torch.set_default_dtype(torch.float64)
    x64, y64 = features.double(), outcomes.double()
    shipped = mu.REGISTER_LOSSES["bt"]
    mu.REGISTER_LOSSES["bt"] = bt_loss_float64
    logits64, _ = mu.fit_pairwise_model(x64, y64, "bt", lr=1.0, max_epochs=1000, tol=1e-12)
    losses = [float(bt_loss_float64(x64 @ w.double(), y64)) for w in (logits, logits64)]
    mu.REGISTER_LOSSES["bt"] = shipped
    torch.set_default_dtype(torch.float32)
    np.random.seed(1)
    coefs, _ = mu.bootstrap_pairwise_model(features, outcomes, "bt", num_round=N_ROUNDS)
    boot = probs(coefs)
    return {
        "point_default": dict(zip(models, map(float, probs(logits[None])[0]))),
        "point_converged": dict(zip(models, map(float, probs(logits64[None])[0]))),
        "loss_default": losses[0],
        "loss_converged": losses[1],
        "style_default": [float(c) for c in logits[-k:]],
        "style_converged": [float(c) for c in logits64[-k:]],
        "quantiles": {m: _quantiles(boot[:, i], [0.05, 0.5, 0.95]) for i, m in enumerate(models)},
        "sd": {m: float(np.std(boot[:, i], ddof=1)) for i, m in enumerate(models)},
        "style_quantiles": [_quantiles(coefs[:, -k + j].numpy(), [0.05, 0.5, 0.95]) for j in range(k)],
    }


def _interval(captured: dict, key: str) -> dict:
    mean, lower, upper = captured["interval"]
    return {
        r["model"]: {key: float(r["scores"]), "lower": float(lo), "upper": float(up)}
        for (_, r), lo, up in zip(mean.iterrows(), lower["lower"], upper["upper"])
    }


def run_v20(work: Path) -> dict:
    import numpy as np
    import show_result as sr
    from utils import math_utils as mu

    captured: dict = {}
    format_interval, bootstrap = sr.format_confidence_interval, sr.bootstrap_pairwise_model

    def capture_interval(mean, lower, upper, baseline=None):
        captured["interval"] = (mean, lower, upper)
        return format_interval(mean, lower, upper, baseline)

    def capture_bootstrap(features, outcomes, loss_type="bt", num_round=100):
        captured["features"], captured["outcomes"] = features, outcomes
        return bootstrap(features, outcomes, loss_type, num_round)

    sr.format_confidence_interval, sr.bootstrap_pairwise_model = capture_interval, capture_bootstrap
    every = sr.load_judgments([V2_JUDGE], "arena-hard-v2.0")
    out = {}
    for category in ("hard_prompt", "creative_writing"):
        battles = every[every.category == category].reset_index(drop=True)
        runs = []
        for seed in range(10):  # print_leaderboard has 100 rounds built in: ten runs, numpy seeded 0..9
            np.random.seed(seed)
            sr.print_leaderboard(battles.copy(), category)
            runs.append(_interval(captured, "mean"))
        result = {"n_battles": len(battles), "none": runs}
        # The official configuration, --control-features markdown length, printed as it is (100 rounds).
        np.random.seed(0)
        sr.print_leaderboard_with_style_features(battles.copy(), "arena-hard-v2.0", category, ["length", "markdown"])
        result["printed_both"] = _interval(captured, "median")
        # length or markdown alone: show_result slices the model columns instead (all_features[:, :1], [:, 1:]), so
        # they are fitted here by the same functions on the intended columns.
        features, outcomes = captured["features"], captured["outcomes"]
        baseline = sr.JUDGE_SETTINGS[category]["baseline"]
        models = sorted(set(battles.model.tolist() + [baseline]))
        for name, cols in (("both", [0, 1, 2, 3]), ("length", [0]), ("markdown", [1, 2, 3])):
            result[name] = _v20_style(mu, features, outcomes, models, baseline, cols)
        rows = battles[["model", "uid", "scores"]].astype({"scores": float}).values.tolist()
        result["features"] = [r + [_round(z) for z in f] for r, f in zip(rows, features[:, -4:].tolist())]
        out[category] = result
    return out


def _versions() -> dict[str, str]:
    import platform
    from importlib.metadata import version

    return {"python": platform.python_version()} | {
        p: version(p) for p in ("numpy", "pandas", "scikit-learn", "torch")
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=Path("/work/.mirror/lmarena+arena-hard-auto/repo"))
    parser.add_argument("--out", type=Path, default=Path("tests/data/arena_hard"))
    parser.add_argument("--worker", choices=["v0.1", "v2.0"], help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        sys.path.insert(0, str(args.dir))
        result = run_v01(args.dir) if args.worker == "v0.1" else run_v20(args.dir)
        print(json.dumps(result))
        return
    texts = build_fixture(args.out)
    copy_official_rows(args.repo, args.out)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for version, commit in (("v0.1", LEGACY), ("v2.0", HEAD)):
            work = Path(tmp) / version
            checkout(args.repo, commit, work, version, args.out)
            (work / "fixture_texts.json").write_text(json.dumps(texts[version]))
            cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", version, "--dir", str(work)]
            done = subprocess.run(cmd, capture_output=True, text=True, cwd=work)
            if done.returncode:
                sys.exit(f"the {version} worker failed:\n{done.stderr[-4000:]}")
            results[version] = json.loads(done.stdout.strip().split("\n")[-1])
    fixture_files = sorted(p for p in args.out.rglob("*.jsonl"))
    reference = {
        "command": "python scripts/arena_hard_reference.py " + " ".join(sys.argv[1:]),
        "repository": "https://github.com/lmarena/arena-hard-auto",
        "commits": {"v0.1": LEGACY, "v2.0": HEAD},
        "bootstrap_rounds": N_ROUNDS,
        "versions": _versions(),
        "fixture_sha256": {
            str(p.relative_to(args.out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in fixture_files
        },
        **results,
    }
    (args.out / "reference.json").write_text(json.dumps(reference, separators=(",", ":")) + "\n")
    print(f"wrote {args.out / 'reference.json'}")


if __name__ == "__main__":
    main()
