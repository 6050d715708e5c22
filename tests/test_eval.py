"""The evaluation module: metric values by hand, AlpacaEval's files and arithmetic, the `prefopt eval` command."""

import json
import math
import sys

import numpy as np
import pytest
from helpers import REPO, prefopt

from prefopt.errors import DataError
from prefopt.eval import win_rate
from prefopt.eval.formats import align_outputs, annotation_rows, outputs_rows, read_outputs, write_json

QUICKSTART_SET = REPO / "eval/sets/quickstart.json"


def test_win_rate_by_hand():
    # p = 1, 0, ½, ¾: mean 0.5625; discrete (1 + 0 + ½ + 1) / 4 = 0.625; squared deviations sum to 0.546875,
    # so s² = 0.546875 / 3 and SE = s / 2 = 0.213478.
    r = win_rate([1.0, 0.0, 0.5, 0.75])
    assert r.win_rate == pytest.approx(0.5625)
    assert r.discrete_win_rate == pytest.approx(0.625)
    assert r.se == pytest.approx(math.sqrt(0.546875 / 3) / 2)
    assert (r.n_wins, r.n_draws, r.n_losses, r.n) == (2, 1, 1, 4)
    assert 0.0 <= r.ci_low < r.win_rate < r.ci_high <= 1.0
    unanimous = win_rate([1.0] * 10)
    assert (unanimous.ci_low, unanimous.ci_high, unanimous.se) == (1.0, 1.0, 0.0)


def test_bootstrap_interval_matches_normal_theory_on_a_large_sample():
    probs = np.random.default_rng(0).binomial(1, 0.3, 2000).astype(float)
    r = win_rate(probs.tolist(), n_bootstrap=4000, seed=1)
    assert r.ci_low == pytest.approx(r.win_rate - 1.96 * r.se, abs=0.004)
    assert r.ci_high == pytest.approx(r.win_rate + 1.96 * r.se, abs=0.004)
    assert win_rate(probs.tolist(), seed=1) == win_rate(probs.tolist(), seed=1)  # seeded: reproducible


def _annotations(n=60, seed=0):
    rng = np.random.default_rng(seed)
    probs = np.round(rng.uniform(0, 1, n), 3)
    probs[::7] = 0.5  # draws
    probs[::5] = 1.0
    instructions = [f"instruction {i}" for i in range(n)]
    base = [("b" * int(k)) for k in rng.integers(1, 80, n)]
    model = [("m" * int(k)) for k in rng.integers(0, 120, n)]
    return annotation_rows(instructions, ("base", base), ("model", model), probs.tolist(), "judge"), probs


def test_win_rates_agree_with_alpaca_eval(tmp_path):
    metrics = pytest.importorskip("alpaca_eval.metrics")
    rows, probs = _annotations()
    write_json(tmp_path / "annotations.json", rows)
    theirs = metrics.get_winrate(json.loads((tmp_path / "annotations.json").read_text()))
    ours = win_rate(probs.tolist())
    assert ours.win_rate * 100 == pytest.approx(theirs["win_rate"], abs=1e-9)
    assert ours.se * 100 == pytest.approx(theirs["standard_error"], abs=1e-9)
    assert ours.discrete_win_rate * 100 == pytest.approx(theirs["discrete_win_rate"], abs=1e-9)
    assert (ours.n_wins, ours.n_losses, ours.n_draws) == (theirs["n_wins"], theirs["n_wins_base"], theirs["n_draws"])


def test_outputs_round_trip_and_alignment(tmp_path):
    eval_set = [{"instruction": f"q{i}", "dataset": "d"} for i in range(4)]
    path = tmp_path / "model_outputs.json"
    write_json(path, outputs_rows(eval_set, ["a", "", "c", "d"], "m"))
    name, outputs, order = read_outputs(path)
    assert name == "m" and order == ["q0", "q1", "q2", "q3"]
    instructions = [row["instruction"] for row in eval_set]
    assert align_outputs(instructions[::-1], outputs, order, path) == ["d", "c", "", "a"]  # matched by text


def test_mismatched_outputs_name_the_offenders(tmp_path):
    path = tmp_path / "outputs.json"
    rows = [{"instruction": x, "output": "y", "generator": "m"} for x in ["q0", "q1", "q1", "extra one"]]
    write_json(path, rows)
    _, outputs, order = read_outputs(path)
    with pytest.raises(DataError) as err:
        align_outputs(["q0", "q1", "q2", "q3"], outputs, order, path)
    message = str(err.value)
    assert "2 missing (first: 'q2', 'q3')" in message
    assert "1 duplicated (first: 'q1')" in message
    assert "1 not in the eval set (first: 'extra one')" in message
    write_json(path, [{"instruction": "q0", "generator": "m"}])
    with pytest.raises(DataError, match=r"row 0: field 'output' must be a string; got missing"):
        read_outputs(path)


JUDGE_FILE = """
def prefer_longer(prompts, a, b):
    return [1.0 if len(x) > len(y) else 0.5 if len(x) == len(y) else 0.0 for x, y in zip(a, b)]
"""


def _write_generators(tmp_path, eval_set):
    """Three outputs files with hand-picked lengths: long > medium > short on every instruction, except that
    `short` is empty on two instructions (counted, not dropped) and ties `medium` on one."""
    paths = {}
    for name, length in (("short", 5), ("medium", 20), ("long", 40)):
        outs = [("x" * length) for _ in eval_set]
        if name == "short":
            outs[0] = outs[1] = ""
            outs[2] = "x" * 20
        paths[name] = tmp_path / f"{name}.json"
        write_json(paths[name], outputs_rows(eval_set, outs, name))
    return paths


def test_eval_command_on_outputs_files(tmp_path):
    eval_set = json.loads(QUICKSTART_SET.read_text())
    paths = _write_generators(tmp_path, eval_set)
    (tmp_path / "judge.py").write_text(JUDGE_FILE)
    out = tmp_path / "results"
    result = prefopt(
        "eval", "--eval_set", QUICKSTART_SET, "--models", paths["short"], paths["long"], "--baseline",
        paths["medium"], "--judge", "python_preference", "--judge_function", f"{tmp_path}/judge.py:prefer_longer",
        "--output_dir", out, "--pairs", "all",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    n = len(eval_set)
    results = json.loads((out / "results.json").read_text())
    assert results["baseline"] == "medium" and results["judge"]["kind"] == "python_preference"
    board = {row["generator"]: row for row in results["leaderboard"]}
    assert [row["generator"] for row in results["leaderboard"]][0] == "long"
    assert board["long"]["win_rate"] == 1.0 and board["long"]["avg_length"] == 40
    assert board["short"]["win_rate"] == pytest.approx(0.5 / n)  # one tie, every other instruction lost
    assert board["short"]["n_empty"] == 2 and board["short"]["n_draws"] == 1
    matrix = results["pairwise_win_rate"]["matrix"]
    assert results["pairwise_win_rate"]["generators"] == ["medium", "short", "long"]
    assert matrix[2][1] == 1.0 and matrix[1][2] == 0.0  # long vs short, and its reverse
    assert set(results["versions"]) >= {"prefopt", "torch", "transformers", "python"}
    for file in ("leaderboard.md", "leaderboard.csv", "win_rates.png", "short/model_outputs.json"):
        assert (out / file).is_file(), file
    annotations = json.loads((out / "long/vs_short/annotations.json").read_text())
    assert {a["generator_1"] for a in annotations} == {"short"} and {a["preference"] for a in annotations} == {2.0}
    pair = json.loads((out / "short/vs_medium/metrics.json").read_text())
    assert pair["win_rate"] == board["short"]["win_rate"] and pair["bootstrap"] == {"n": 2000, "seed": 0}
    assert "| long |" in (out / "leaderboard.md").read_text()


def test_eval_annotations_rescored_by_alpaca_eval(tmp_path, monkeypatch):
    """The annotations we write are AlpacaEval's: its own metrics (LC included) agree with ours on them."""
    glm = pytest.importorskip("alpaca_eval.metrics.glm_winrate")
    rows, _ = _annotations(n=120, seed=3)
    path = tmp_path / "annotations.json"
    write_json(path, rows)
    result = prefopt("eval", "--annotations", path)
    assert result.returncode == 0, result.stderr
    ours = json.loads(result.stdout)
    gamed = tmp_path / "df_gamed.csv"
    gamed.write_text("model,index,instruction_difficulty\n" + "".join(f"x,{i},0.0\n" for i in range(120)))
    monkeypatch.setattr(glm, "hf_hub_download", lambda **kwargs: str(gamed))  # the minimal GLM needs only the index
    theirs = glm.get_length_controlled_winrate(json.loads(path.read_text()), "length_controlled_minimal", None)
    assert ours["lc_variant"] == "length_controlled_minimal"
    assert ours["lc_win_rate"] * 100 == pytest.approx(theirs["length_controlled_winrate"], abs=0.5)
    assert ours["win_rate"] * 100 == pytest.approx(theirs["win_rate"], abs=1e-9)


def test_eval_generates_with_a_model(tmp_path, tiny_model_dir):
    """A model against a baseline outputs file: greedy outputs for every instruction, the decoding recorded."""
    eval_set = json.loads(QUICKSTART_SET.read_text())
    baseline = tmp_path / "baseline.json"
    write_json(baseline, outputs_rows(eval_set, ["" for _ in eval_set], "empty"))
    (tmp_path / "judge.py").write_text(JUDGE_FILE)
    out = tmp_path / "results"
    args = ["eval", "--eval_set", QUICKSTART_SET, "--models", f"tiny={tiny_model_dir}", "--baseline", baseline]
    args += ["--judge", "python_preference", "--judge_function", f"{tmp_path}/judge.py:prefer_longer"]
    args += ["--max_new_tokens", 6, "--output_dir", out]
    result = prefopt(*args)
    assert result.returncode == 0, result.stderr
    outputs = json.loads((out / "tiny/model_outputs.json").read_text())
    assert [o["instruction"] for o in outputs] == [row["instruction"] for row in eval_set]
    assert {o["generator"] for o in outputs} == {"tiny"}
    results = json.loads((out / "results.json").read_text())
    decoding = results["generators"]["tiny"]["decoding"]
    assert decoding["temperature"] == 0.0 and decoding["max_new_tokens"] == 6 and decoding["seed"] == 0
    n_nonempty = sum(bool(o["output"]) for o in outputs)
    assert results["leaderboard"][0]["win_rate"] == pytest.approx((n_nonempty + (len(outputs) - n_nonempty) / 2) / 64)
    assert prefopt(*args[:-1], tmp_path / "again").returncode == 0
    assert json.loads((tmp_path / "again/tiny/model_outputs.json").read_text()) == outputs  # greedy: the same


def test_eval_bad_input_is_one_line_and_writes_nothing(tmp_path):
    eval_set = json.loads(QUICKSTART_SET.read_text())
    paths = _write_generators(tmp_path, eval_set)
    rows = json.loads(paths["long"].read_text())
    write_json(paths["long"], rows[:-1] + [{**rows[0], "output": "again"}])  # last one missing, first duplicated
    out = tmp_path / "results"
    args = ["eval", "--eval_set", QUICKSTART_SET, "--models", paths["short"], paths["long"]]
    args += ["--judge", "nontransitive"]
    result = prefopt(*args, "--output_dir", out)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "1 missing" in result.stderr and "1 duplicated" in result.stderr
    assert not out.exists()
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    write_json(paths["long"], rows)
    result = prefopt(*args, "--output_dir", out)
    assert result.returncode == 2 and "not empty" in result.stderr
    assert [p.name for p in out.iterdir()] == ["mine.txt"]


def test_eval_full_lc_variant_without_its_data_stops_before_any_work(tmp_path):
    from prefopt.errors import ConfigError
    from prefopt.eval.run import EvalRequest, run_eval

    request = EvalRequest(str(QUICKSTART_SET), ["a.json", "b.json"], str(tmp_path / "out"))
    request.lc_variant = "length_controlled_v1"
    with pytest.raises(ConfigError, match="lc_variant length_controlled_v1 needs --lc_data"):
        run_eval(request)
    assert not (tmp_path / "out").exists()


def test_eval_module_imports_no_training_code():
    runs = "prefopt.eval.run, prefopt.eval.arena_hard.run, prefopt.eval.mt_bench.run, prefopt.eval.in_training"
    code = f"import {runs}, sys; print(sorted(m for m in sys.modules if m.startswith('prefopt.')))"
    import subprocess

    modules = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO).stdout
    for training in ("prefopt.loop", "prefopt.build", "prefopt.algorithms", "prefopt.backend", "prefopt.anchors"):
        assert f"'{training}" not in modules, modules


PAIRING_JUDGE = """
def baseline_is_paired(prompts, a, b):
    # 1 when the baseline output shown is the one written for this prompt's instruction, else 0
    return [1.0 if y == "baseline for " + p[-1]["content"] else 0.0 for p, y in zip(prompts, b)]
"""


def test_in_training_win_rate_against_a_baseline_outputs_file(tmp_path, tiny_model_dir):
    """eval_baseline_outputs: its instructions are the held-out prompts and its outputs the baseline, each paired
    with its own instruction (the judge gives 1 only then), logged every iteration with the interval."""
    from helpers import train

    eval_set = json.loads(QUICKSTART_SET.read_text())[:12]
    baseline = tmp_path / "baseline.json"
    rows = outputs_rows(eval_set, [f"baseline for {row['instruction']}" for row in eval_set], "fixed")
    write_json(baseline, rows[::-1])  # any order: matched by instruction
    (tmp_path / "judge.py").write_text(PAIRING_JUDGE)
    out = tmp_path / "run"
    train(
        tiny_model_dir, out, "--num_iterations", 2, "--eval_every", 1, "--eval_baseline_outputs", baseline,
        "--eval_samples_per_prompt", 2, "--judge", "python_preference",
        "--judge_function", f"{tmp_path}/judge.py:baseline_is_paired",
    )  # fmt: skip
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["eval/win_rate"] for m in metrics] == [1.0, 1.0]
    assert all(m["eval/n"] == 24 and m["eval/ci_low"] == 1.0 and m["eval/avg_length"] >= 0 for m in metrics)
    both = prefopt("train", "sppo", "--model_name_or_path", tiny_model_dir, "--output_dir", tmp_path / "x",
                   "--dataset_name", REPO / "configs/data/quickstart_prompts.jsonl", "--eval_num_prompts", 8,
                   "--eval_baseline_outputs", baseline)  # fmt: skip
    assert both.returncode == 2 and "give one of eval_num_prompts and eval_baseline_outputs" in both.stderr


COUNTING_JUDGE = """
def prefer_longer(prompts, a, b):
    import os
    with open(os.environ["PREFOPT_TEST_JUDGE_LOG"], "a") as f:
        f.write(f"{len(a)}\\n")
    return [1.0 if len(x) > len(y) else 0.5 if len(x) == len(y) else 0.0 for x, y in zip(a, b)]
"""


def _request(tmp_path, paths, names, out="results", **kwargs):
    from prefopt.eval.run import EvalRequest

    judge = {"kind": "python_preference", "function": f"{tmp_path}/judge.py:prefer_longer"}
    generators = [str(paths[n]) for n in names[1:]]
    request = EvalRequest(str(QUICKSTART_SET), generators, str(tmp_path / out), str(paths[names[0]]), judge)
    request.progress = False
    for key, value in kwargs.items():
        setattr(request, key, value)
    return request


def _judged(log) -> int:
    """Instructions the counting judge has seen so far (and the log emptied)."""
    n = sum(int(line) for line in log.read_text().split()) if log.exists() else 0
    log.unlink(missing_ok=True)
    return n


def test_eval_pairs_baseline_is_the_default_and_only_judged_cells_are_filled(tmp_path, monkeypatch):
    from prefopt.eval import leaderboard as lb
    from prefopt.eval.run import run_eval

    paths = _write_generators(tmp_path, json.loads(QUICKSTART_SET.read_text()))
    (tmp_path / "judge.py").write_text(COUNTING_JUDGE)
    monkeypatch.setenv("PREFOPT_TEST_JUDGE_LOG", str(tmp_path / "log"))
    results = run_eval(_request(tmp_path, paths, ["medium", "short", "long"]))
    assert results["pairs"] == "baseline" and _judged(tmp_path / "log") == 2 * 64  # 2 pairs, not 3
    assert [(c["model"], c["baseline"]) for c in results["comparisons"]] == [("short", "medium"), ("long", "medium")]
    matrix = results["pairwise_win_rate"]["matrix"]
    assert matrix[2][1] is None and matrix[1][2] is None  # long vs short: not judged
    assert matrix[2][0] == 1.0 and matrix[0][2] == 0.0 and matrix[1][1] == 0.5
    assert all(row["mean_pairwise"] is None for row in results["leaderboard"])
    markdown = (tmp_path / "results/leaderboard.md").read_text()
    assert "mean vs all" not in markdown and "| long | " in markdown
    every = run_eval(_request(tmp_path, paths, ["medium", "short", "long"], out="all", pairs="all"))
    assert every["pairwise_win_rate"]["matrix"][2][1] == 1.0 and len(every["comparisons"]) == 3
    # a new folder: all 3 pairs judged, except that long vs short on instruction 2, where short's output is
    # medium's, is long vs medium's judgment again (identical key) and is judged once
    assert _judged(tmp_path / "log") == 3 * 64 - 1 and every["judge"]["reused"] == 1
    long_row = next(r for r in every["leaderboard"] if r["generator"] == "long")
    assert long_row["mean_pairwise"] == 1.0 and "mean vs all" in lb.to_markdown(every["leaderboard"], "medium", "j")


def test_eval_reuses_identical_judgments_only(tmp_path, monkeypatch):
    """A re-run into the same folder with one more model judges only the new pair; a changed judge or output
    is judged again, and --no_reuse judges everything."""
    from prefopt.eval.run import run_eval

    eval_set = json.loads(QUICKSTART_SET.read_text())
    paths = _write_generators(tmp_path, eval_set)
    (tmp_path / "judge.py").write_text(COUNTING_JUDGE)
    log = tmp_path / "log"
    monkeypatch.setenv("PREFOPT_TEST_JUDGE_LOG", str(log))
    first = run_eval(_request(tmp_path, paths, ["medium", "short"]))
    assert _judged(log) == 64 and (first["judge"]["judged"], first["judge"]["reused"]) == (64, 0)
    again = run_eval(_request(tmp_path, paths, ["medium", "short", "long"], overwrite=True))
    assert _judged(log) == 64 and (again["judge"]["judged"], again["judge"]["reused"]) == (64, 64)
    assert again["comparisons"][0]["win_rate"] == first["comparisons"][0]["win_rate"]
    rows = json.loads(paths["long"].read_text())
    rows[5]["output"] = "y" * 40  # one output changed: only that instruction is judged again
    write_json(paths["long"], rows)
    changed = run_eval(_request(tmp_path, paths, ["medium", "short", "long"], overwrite=True))
    assert _judged(log) == 1 and changed["judge"]["reused"] == 127
    (tmp_path / "judge.py").write_text(COUNTING_JUDGE + "\n# edited\n")  # another judge: nothing reused
    assert run_eval(_request(tmp_path, paths, ["medium", "short"], overwrite=True))["judge"]["reused"] == 0
    no_reuse = _request(tmp_path, paths, ["medium", "short"], overwrite=True, reuse=False)  # would reuse all 64
    assert run_eval(no_reuse)["judge"]["reused"] == 0
    assert _judged(log) == 128


def test_eval_max_instances_and_lc_named_only_when_computed(tmp_path):
    """--max_instances 5: five instructions judged and written (an outputs file may cover all of the set or only
    those); with under 10 instructions no LC is computed, so no LC column or variant is named anywhere."""
    eval_set = json.loads(QUICKSTART_SET.read_text())
    paths = _write_generators(tmp_path, eval_set)
    write_json(paths["short"], json.loads(paths["short"].read_text())[:5])  # covers only the first five
    (tmp_path / "judge.py").write_text(JUDGE_FILE)
    out = tmp_path / "results"
    args = ["eval", "--eval_set", QUICKSTART_SET, "--models", paths["short"], paths["long"], "--baseline"]
    args += [paths["medium"], "--judge", "python_preference", "--judge_function", f"{tmp_path}/judge.py:prefer_longer"]
    result = prefopt(*args, "--max_instances", 5, "--output_dir", out)
    assert result.returncode == 0, result.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["eval_set"]["n"] == 5 and results["eval_set"]["max_instances"] == 5
    assert results["eval_set"]["n_in_file"] == len(eval_set)
    assert [r["n"] for r in results["leaderboard"]] == [5, 5]
    assert len(json.loads((out / "long/model_outputs.json").read_text())) == 5
    assert results["length_control"]["variant"] is None
    markdown = (out / "leaderboard.md").read_text()
    assert "LC win rate" not in markdown and "length_controlled" not in markdown
    assert "no length-controlled win rate" in markdown and "lc_" not in (out / "leaderboard.csv").read_text()
    result = prefopt(*args, "--max_instances", 12, "--output_dir", out, "--overwrite")
    assert result.returncode == 2 and "1 missing" not in result.stderr and "7 missing" in result.stderr
    write_json(paths["short"], outputs_rows(eval_set, ["x" * 5] * len(eval_set), "short"))
    assert prefopt(*args, "--max_instances", 12, "--output_dir", out, "--overwrite").returncode == 0
    markdown = (out / "leaderboard.md").read_text()
    assert "LC: length_controlled_minimal" in markdown and "LC win rate" in markdown
    assert "lc_variant" in (out / "leaderboard.csv").read_text()


def test_annotations_with_null_preferences_are_dropped_and_counted(tmp_path):
    rows, probs = _annotations(n=20)
    rows[3]["preference"] = None
    rows[7]["preference"] = None
    path = tmp_path / "annotations.json"
    write_json(path, rows)
    result = prefopt("eval", "--annotations", path)
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["n_dropped_null"] == 2 and metrics["n"] == 18
    kept = [p for i, p in enumerate(probs) if i not in (3, 7)]
    assert metrics["win_rate"] == pytest.approx(sum(kept) / 18)
    write_json(path, [{**row, "preference": None} for row in rows])
    result = prefopt("eval", "--annotations", path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "every one of its 20 rows" in result.stderr


def test_a_mistyped_local_path_is_a_missing_path_not_a_hub_download(tmp_path, monkeypatch):
    from prefopt.eval.run import looks_like_path

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    for source in ("./runs/typo", "../x", "/abs/model", "~/m", "runs/typo/final", "runs/typo", "outputs.json"):
        assert looks_like_path(source), source
    for source in ("gpt2", "meta-llama/Llama-3.1-8B", "org/name"):
        assert not looks_like_path(source), source
    baseline = tmp_path / "b.json"
    write_json(baseline, outputs_rows(json.loads(QUICKSTART_SET.read_text()), ["y"] * 64, "b"))
    for typo in ("runs/typo/final", "./runs/typo"):
        args = ["eval", "--eval_set", QUICKSTART_SET, "--models", f"m={typo}", "--baseline", baseline]
        result = prefopt(*args, "--judge", "nontransitive", "--output_dir", tmp_path / "out")
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert f"no such file or folder '{typo}'" in result.stderr and "Hub" not in result.stderr
        assert not (tmp_path / "out").exists()


def test_judging_in_chunks_with_a_progress_bar_gives_the_same_preferences():
    """The judge sees at most JUDGE_CHUNK instructions per call; the bar counts every instruction judged."""
    import io

    from tqdm import tqdm

    from prefopt.eval.compare import JUDGE_CHUNK, Generator, PairJudge
    from prefopt.judges import build_judge

    judge = build_judge("nontransitive")
    n = 2 * JUDGE_CHUNK + 7
    instructions = [f"q{i}" for i in range(n)]
    model = Generator("m", [f"answer {i % 5}" for i in range(n)], {})
    baseline = Generator("b", [f"other {i % 3}" for i in range(n)], {})
    pair_judge = PairJudge(judge, instructions)
    whole = judge.preference(pair_judge.prompts, model.outputs, baseline.outputs).tolist()
    stream = io.StringIO()
    with tqdm(total=n, file=stream, disable=False, mininterval=0) as bar:
        assert pair_judge(model, baseline, bar=bar) == whole
        assert bar.n == n
    assert f"{n}/{n}" in stream.getvalue()
    assert pair_judge(model, baseline, [5, 1]) == [whole[5], whole[1]]


def test_judge_agreement_by_hand(tmp_path):
    """Six shared rows (B shows row 4's outputs swapped) and one row only in A.

    Labels in A's orientation: A = W W L T L W, B = W L L T W W (W: output_2 better, L: output_1, T: tie).
    Agreement 4/6. Label frequencies are 3/6, 2/6, 1/6 for both, so p_e = (9 + 4 + 1) / 36 = 14/36 and
    κ = (24/36 − 14/36) / (1 − 14/36) = 10/22. Position bias in each file's own order: A prefers output_1 in
    2 of its 6 decisive verdicts (the extra row is W); B, with row 4 swapped (preference 1), in 3 of 5."""
    a_prefs, b_prefs = [2, 2, 1, 1.5, 1, 2], [2, 1, 1, 1.5, 2, 2]
    a_rows, b_rows = [], []
    for i, (pa, pb) in enumerate(zip(a_prefs, b_prefs)):
        row = {"instruction": f"q{i}", "output_1": f"x{i}", "output_2": f"y{i}", "generator_1": "g"}
        row["generator_2"] = "h"
        a_rows.append({**row, "preference": pa})
        swapped = {**row, "output_1": row["output_2"], "output_2": row["output_1"], "preference": 3 - pb}
        b_rows.append(swapped if i == 4 else {**row, "preference": pb})
    a_rows.append({**a_rows[0], "instruction": "only in a"})
    b_rows.append({**b_rows[0], "instruction": "null", "preference": None})
    write_json(tmp_path / "a.json", a_rows)
    write_json(tmp_path / "b.json", b_rows)
    result = prefopt("eval", "--agreement", tmp_path / "a.json", tmp_path / "b.json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["n_matched"], report["n_only_a"], report["n_only_b"]) == (6, 1, 0)
    assert report["agreement"] == pytest.approx(4 / 6) and report["cohen_kappa"] == pytest.approx(10 / 22)
    assert report["a"]["position_bias"] == {"prefers_output_1": 2 / 6, "n_decisive": 6, "n_ties": 1, "n": 7}
    assert report["b"]["position_bias"]["prefers_output_1"] == pytest.approx(3 / 5)
    assert report["b"]["n_dropped_null"] == 1


def test_plot_draws_the_win_rate_interval_and_the_lc_point_apart():
    """The win rate is a dot on its interval line, the LC win rate a diamond on a row of its own, both in the
    legend; without an LC win rate there is no LC marker or legend entry."""
    pytest.importorskip("matplotlib")
    from prefopt.eval.leaderboard import figure

    row = {"generator": "m", "baseline": "b", "win_rate": 0.6, "ci_low": 0.5, "ci_high": 0.7}
    matrix = [[0.5, 0.4], [0.6, 0.5]]
    fig = figure(["b", "m"], matrix, [{**row, "lc_win_rate": 0.55, "lc_variant": "length_controlled_minimal"}], "b")
    right = fig.axes[1]
    labels = [t.get_text() for t in right.get_legend().get_texts()]
    assert sorted(labels) == ["LC win rate (length_controlled_minimal)", "win rate with its 95% CI"]
    (lc_points,) = right.collections[-1:]
    (lc_x, lc_y), wr_y = lc_points.get_offsets()[0], right.lines[0].get_ydata()[0]
    assert lc_x == pytest.approx(55.0) and right.lines[0].get_xdata()[0] == pytest.approx(60.0)
    assert abs(lc_y - wr_y) >= 0.25  # its own row: the diamond never sits on the interval line
    fig = figure(["b", "m"], [[0.5, None], [None, 0.5]], [{**row, "lc_win_rate": None, "lc_variant": None}], "b")
    assert [t.get_text() for t in fig.axes[1].get_legend().get_texts()] == ["win rate with its 95% CI"]
