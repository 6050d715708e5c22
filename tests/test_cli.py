"""Bad input through the CLI: one line naming what and where, exit status 2, nothing written."""

import json

import pytest
from helpers import REPO, prefopt

from prefopt.cli import main

PROMPTS = str(REPO / "configs/data/quickstart_prompts.jsonl")


def run_main(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def base(tiny_model_dir, tmp_path):
    return [
        "train",
        "sppo",
        "--model_name_or_path",
        tiny_model_dir,
        "--dataset_name",
        PROMPTS,
        "--output_dir",
        tmp_path / "run",
        "--disable_tqdm",
        "true",
        "--max_new_tokens",
        "4",
    ]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize(
    "extra, expected",
    [
        (
            ["--learnig_rate", "1e-3"],
            "unknown config key 'learnig_rate' (from the command line); did you mean 'learning_rate'?",
        ),
        (["--learning_rate", "fast"], "config key 'learning_rate' (from the command line) expects float, got 'fast'"),
        (["--num_iterations", "0"], "config key 'num_iterations' must be >= 1, got 0"),
        (["--eta", "-1"], "config key 'eta' must be > 0"),
        (["--judge", "oracle"], "unknown judge kind 'oracle'"),
        (["--config", "missing.yaml"], "config file 'missing.yaml' does not exist"),
        (["--model_name_or_path", "./no/such/model"], "model path './no/such/model' does not exist"),
        (["--dataset_name", "./no/such.jsonl"], "dataset file './no/such.jsonl' does not exist"),
    ],
)
def test_bad_config_is_one_line_exit_2_and_writes_nothing(capsys, base, tmp_path, extra, expected):
    code, _, err = run_main(capsys, *base, *extra)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prefopt: error: "), err
    assert expected in lines[0]
    assert not (tmp_path / "run").exists()


def test_unknown_algorithm(capsys):
    from prefopt.algorithms import ALGORITHMS

    code, _, err = run_main(capsys, "train", "dpo_plus_plus")
    assert code == 2 and f"unknown algorithm 'dpo_plus_plus'; available: {', '.join(sorted(ALGORITHMS))}" in err


def test_bad_rows_name_file_and_row(capsys, base, tmp_path):
    data = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "ok"}, {"prompt": "  "}])
    code, _, err = run_main(capsys, *base, "--dataset_name", data)
    assert code == 2 and f"{data}: line 2" in err and "empty" in err
    data = write_jsonl(tmp_path / "q.jsonl", [{"question": "no prompt column"}])
    code, _, err = run_main(capsys, *base, "--dataset_name", data)
    assert code == 2 and "missing column 'prompt'" in err and "question" in err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    code, _, err = run_main(capsys, *base, "--dataset_name", empty)
    assert code == 2 and "has no rows" in err
    assert not (tmp_path / "run").exists()


def test_sppo_hard_dataset_mode_needs_pairs(capsys, tiny_model_dir, tmp_path):
    code, _, err = run_main(
        capsys,
        "train",
        "sppo_hard",
        "--model_name_or_path",
        tiny_model_dir,
        "--dataset_name",
        PROMPTS,
        "--output_dir",
        tmp_path / "run",
        "--pairs_from",
        "dataset",
    )
    assert code == 2 and "chosen" in err


def test_judge_returning_nan_stops_with_the_row_and_leaves_no_run(tiny_model_dir, tmp_path):
    (tmp_path / "badjudge.py").write_text(
        "def prefer(prompts, a, b):\n    return [0.5 if i != 2 else float('nan') for i in range(len(a))]\n"
    )
    args = [
        "train",
        "sppo",
        "--model_name_or_path",
        tiny_model_dir,
        "--dataset_name",
        PROMPTS,
        "--output_dir",
        tmp_path / "run",
        "--judge",
        "python_preference",
        "--judge_function",
        f"{tmp_path}/badjudge.py:prefer",
        "--max_new_tokens",
        "4",
        "--num_samples",
        "2",
        "--prompts_per_iteration",
        "4",
        "--disable_tqdm",
        "true",
    ]
    result = prefopt(*args)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert (
        last
        == "prefopt: error: judge 'python_preference' returned nan for preference row 2; expected a "
        "probability in [0, 1]"
        or ("nan" in last and "row 2" in last)
    ), last
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_debug_shows_the_traceback(capsys, base):
    with pytest.raises(Exception, match="learnig_rate"):
        main([str(a) for a in base] + ["--learnig_rate", "1", "--debug"])


def test_help_keys_lists_both_configs(capsys):
    code, out, _ = run_main(capsys, "train", "sppo", "--help-keys")
    assert code == 0 and "--learning_rate" in out and "--eta" in out and "Hedge" in out


def test_tiny_model_and_generate(capsys, tmp_path):
    code, _, _ = run_main(capsys, "tiny-model", tmp_path / "m")
    assert code == 0
    code, _, err = run_main(capsys, "tiny-model", tmp_path / "m")
    assert code == 2 and "not empty" in err
    out = tmp_path / "gen.jsonl"
    generate = ["generate", "--model", tmp_path / "m", "--prompt", "hello", "--n", 3, "--max_new_tokens", 5]
    code, _, _ = run_main(capsys, *generate, "--output", out)
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert code == 0 and len(rows) == 3 and {r["sample_index"] for r in rows} == {0, 1, 2}
    out.unlink()
    run_main(capsys, *generate, "--output", out)
    assert [json.loads(x) for x in out.read_text().splitlines()] == rows  # seeded
    code, _, err = run_main(capsys, "generate", "--model", tmp_path / "m", "--prompt", "x", "--output", out)
    assert code == 2 and "exists" in err
