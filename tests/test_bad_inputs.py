"""A catalogue of bad inputs, each through the CLI's entry point as a user types it.

Every case must end with exit status 2, one stderr line ``prefopt: error: ...`` that names the key, file or row
(``expected`` is a part of that line), no traceback, and the test's folder (inputs and output location alike)
byte-identical before and after. Cases that can be known before a model loads run in this process
(``prefopt.cli.main``, the console script's function: milliseconds each); the few that need a loaded policy or a
process limit (a judge that fails when called, a full disk) run ``python -m prefopt.cli`` in a subprocess.

Each case is ``(id, build, expected)``: ``build(w)`` writes the case's inputs with the :class:`Inputs` helper and
returns the command line.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers import LAUNCHER_VARIABLES, PROMPTS, REPO
from safetensors.torch import load_file, save_file

from prefopt.cli import main

QUICKSTART_SET = REPO / "eval/sets/quickstart.json"


class Inputs:
    """Writes a case's inputs under the test's folder and builds its command lines."""

    def __init__(self, root: Path, model: str):
        self.root, self.model = root, model
        self.out = root / "run"

    def file(self, name: str, text: str | bytes) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text, encoding="utf-8")
        return path

    def jsonl(self, name: str, rows: list) -> Path:
        return self.file(name, "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))

    def train(self, *extra, algorithm="sppo", data=PROMPTS, out=None) -> list:
        return ["train", algorithm, "--model_name_or_path", self.model, "--dataset_name", data,
                "--output_dir", out or self.out, "--max_new_tokens", 4, "--disable_tqdm", "true", *extra]  # fmt: skip

    def model_copy(self, name: str, **config) -> Path:
        """The tiny policy's files (tokenizer and config; weights only where ``weights``) with config.json edited."""
        folder = self.root / name
        shutil.copytree(self.model, folder, ignore=shutil.ignore_patterns("*.safetensors"))
        data = json.loads((folder / "config.json").read_text()) | config
        (folder / "config.json").write_text(json.dumps(data))
        return folder

    def run_dir(self, *extra, last=0, checkpoint_bytes: int | None = None) -> Path:
        """A run folder as `prefopt train` leaves it after iteration ``last`` of the run ``train(*extra)`` would
        start (its checkpoint's weights cut to ``checkpoint_bytes`` when given)."""
        from prefopt.algorithms import get_algorithm
        from prefopt.config import build_configs, config_to_dict, parse_cli_overrides

        args = [str(a) for a in self.train(*extra)[2:]]
        cfg, algo = build_configs(get_algorithm("sppo").config_class, {}, parse_cli_overrides(args))
        self.out.mkdir()
        (self.out / "config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg, algo, "sppo")))
        (self.out / "state.json").write_text(json.dumps({"last_completed_iteration": last, "global_step": 1}))
        (self.out / "metrics.jsonl").write_text(json.dumps({"iteration": 0, "step": 1}) + "\n")
        checkpoint = self.out / "checkpoints" / f"iter_{last:03d}"
        checkpoint.mkdir(parents=True)
        save_file({"w": torch.zeros(64)}, checkpoint / "model.safetensors")
        if checkpoint_bytes is not None:
            os.truncate(checkpoint / "model.safetensors", checkpoint_bytes)
        return self.out

    def outputs(self, name: str, instructions: list[str], generator: str) -> Path:
        rows = [
            {"instruction": x, "output": f"answer {i}", "generator": generator} for i, x in enumerate(instructions)
        ]
        return self.file(name, json.dumps(rows))

    def exportable_run(self, state: str = '{"last_completed_iteration": 0, "global_step": 1}') -> Path:
        """A finished LoRA run folder for `prefopt export` (for the checks that come before its weights load)."""
        run = self.root / "done"
        (run / "final").mkdir(parents=True)
        config = {"algorithm": "sppo", "model_name_or_path": self.model, "adapter": "lora"}
        (run / "config.yaml").write_text(json.dumps(config))
        (run / "state.json").write_text(state)
        return run


def read_only_folder(root: Path) -> Path:
    """A folder no one may write in: a chmod 555 folder, or (as root, who may write anywhere) /sys."""
    if os.geteuid() != 0:
        folder = root / "locked"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    return Path("/sys")


def eval_set(w, rows) -> Path:
    return w.file("set.json", json.dumps([{"instruction": x} for x in rows]))


# ------------------------------------------------------------------------------------------------ the catalogue
TRAIN_CONFIG = [
    ("yaml-algorithm-clash", lambda w: w.train("--config", w.file("c.yaml", "algorithm: egpo\n")),
     "config key 'algorithm' (from {root}/c.yaml) is 'egpo', but the command trains 'sppo'"),
    ("yaml-syntax", lambda w: w.train("--config", w.file("c.yaml", "seed: 1\n  beta: [\n")),
     "c.yaml"),
    ("unknown-key", lambda w: w.train("--learnig_rate", "1e-5"), "learnig_rate"),
    ("wrong-type", lambda w: w.train("--learning_rate", "fast"), "learning_rate"),
    ("resume-and-overwrite", lambda w: w.train("--resume", "--overwrite"), "--resume and --overwrite exclude"),
    ("resume-from-without-resume", lambda w: w.train("--resume_from_iteration", "1"),
     "config key 'resume_from_iteration' needs --resume"),
    ("zero-iterations", lambda w: w.train("--num_iterations", "0"), "num_iterations"),
    ("negative-lr", lambda w: w.train("--learning_rate", "-1"), "learning_rate"),
    ("prompts-per-iteration", lambda w: w.train("--prompts_per_iteration", "100000"),
     "config key 'prompts_per_iteration' is 100000, but the training set has 240 prompts: each would be used about"),
    ("positions", lambda w: w.train("--max_new_tokens", "100000"),
     "more than the 1024 positions of model"),
    ("deepspeed-file", lambda w: w.train("--deepspeed", w.root / "ds.json"), "ds.json"),
    ("unknown-algorithm", lambda w: ["train", "dpo_plus_plus"], "unknown algorithm 'dpo_plus_plus'"),
    ("unknown-judge", lambda w: w.train("--judge", "oracle"), "judge"),
    ("answer-column-needed", lambda w: w.train("--judge", "exact_match"), "set answer_column"),
]

RUN_DIRECTORY = [
    ("existing-output", lambda w: w.train(out=w.file("run/notes.txt", "mine").parent),
     "output_dir '{root}/run' exists and is not empty; pass --overwrite or --resume"),
    ("read-only-output", lambda w: w.train(out=read_only_folder(w.root) / "run"), "cannot write in"),
    ("output-is-a-file", lambda w: w.train(out=w.file("taken", "a file") / "run"), "output_dir"),
    ("resume-foreign-folder", lambda w: w.train("--resume", out=w.file("mine/notes.txt", "keep").parent),
     "--resume: output_dir '{root}/mine' is not a prefopt run (no config.yaml)"),
    ("resume-changed-config", lambda w: [*w.train(), "--resume", "--learning_rate", "0.5"]
     if w.run_dir() else None, "config key 'learning_rate' differs"),
    ("resume-truncated-checkpoint", lambda w: [*w.train(), "--resume"] if w.run_dir(checkpoint_bytes=100) else None,
     "checkpoints/iter_000/model.safetensors' is damaged (truncated or not a checkpoint file); no earlier"),
    ("resume-from-later-iteration",
     lambda w: [*w.train(), "--resume", "--resume_from_iteration", "3"] if w.run_dir() else None,
     "config key 'resume_from_iteration' is 3, but the run completed iterations up to 0"),
    ("resume-damaged-state", lambda w: [*w.train(), "--resume"] if w.run_dir() and w.file("run/state.json", "{\"la")
     else None, "state.json' is damaged"),
]

DATA = [
    ("missing-file", lambda w: w.train(data=w.root / "nope.jsonl"), "nope.jsonl"),
    ("latin-1",
     lambda w: w.train(data=w.file("p.jsonl", '{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n'.encode("latin-1"))),
     "p.jsonl: line 2: not UTF-8"),
    ("malformed-line", lambda w: w.train(data=w.jsonl("p.jsonl", [{"prompt": "a"}, {"prompt": "b"}, '{"prompt": "c'])),
     "p.jsonl: line 3"),
    ("null-prompt", lambda w: w.train(data=w.jsonl("p.jsonl", [{"prompt": "a"}] * 6 + [{"prompt": None}])),
     "p.jsonl: line 7"),
    ("empty-prompt", lambda w: w.train(data=w.jsonl("p.jsonl", [{"prompt": "a"}, {"prompt": "  "}])),
     "p.jsonl: line 2: column 'prompt' is empty"),
    ("missing-column", lambda w: w.train(data=w.jsonl("p.jsonl", [{"question": "a"}])), "missing column 'prompt'"),
    ("unknown-role", lambda w: w.train(data=w.jsonl("p.jsonl", [{"prompt": [{"role": "wizard", "content": "hi"}]}])),
     "p.jsonl: line 1"),
    ("empty-messages", lambda w: w.train(data=w.jsonl("p.jsonl", [{"prompt": "a"}, {"prompt": []}])),
     "p.jsonl: line 2"),
    ("empty-file", lambda w: w.train(data=w.file("p.jsonl", "")), "p.jsonl"),
    ("row-not-an-object", lambda w: w.train(data=w.jsonl("p.jsonl", [{"prompt": "a"}, "[1, 2]"])), "p.jsonl: line 2"),
    ("hub-dataset-offline", lambda w: w.train(data="no-such-org/no-such-data"), "no-such-org/no-such-data"),
    ("too-long-prompt", lambda w: w.train("--max_prompt_length", "2", "--truncation_mode", "error"),
     "line 1"),
    ("grao-reference-not-a-response",
     lambda w: w.train("--reference_column", "answer", "--judge", "exact_match", "--answer_column", "answer",
                       "--response_choices", "0,1,2,3,4,5,6,7,8,9", algorithm="grao",
                       data=w.jsonl("d.jsonl", [{"prompt": "1+1", "answer": "2"}, {"prompt": "5+5", "answer": "X"}])),
     "d.jsonl: line 2: reference 'X' is not one of the allowed responses"),  # fmt: skip
    ("missing-split", lambda w: w.train("--dataset_train_split", "validation"), "validation"),
    ("game-exact-sampling-algorithm",
     lambda w: w.train("--judge", "matrix_game", "--game", "rps", "--game_exact"),
     "config key 'game_exact': sppo"),  # fmt: skip
    ("game-exact-free-text", lambda w: w.train("--game_exact", algorithm="egpo"),
     "config key 'game_exact' needs single-token actions"),  # fmt: skip
]

MODEL_AND_JUDGE = [
    ("model-path-missing", lambda w: w.train("--model_name_or_path", w.root / "no-model"), "no-model"),
    ("hub-model-offline", lambda w: w.train("--model_name_or_path", "no-such-org/no-such-model"),
     "no-such-org/no-such-model"),
    ("no-pad-no-eos", lambda w: w.train("--tokenizer_name_or_path", _no_special_tokens(w)),
     "has neither a pad token nor an EOS token"),
    ("reward-model-two-labels",
     lambda w: w.train("--judge", "reward_model", "--judge_model_name_or_path",
                       w.model_copy("rm2", architectures=["LlamaForSequenceClassification"],
                                    id2label={"0": "a", "1": "b"}, label2id={"a": 0, "b": 1})),
     "reward_model needs a classifier with one output (num_labels 1)"),  # fmt: skip
    ("judge-function-missing", lambda w: w.train("--judge", "python_reward", "--judge_function",
                                                 f"{w.root}/nope.py:score"), "nope.py"),
    ("bad-dtype", lambda w: w.train("--dtype", "float8"), "dtype"),
]

EVAL_EXPORT_GENERATE = [
    ("eval-duplicate-instructions",
     lambda w: ["eval", "--eval_set", eval_set(w, ["a", "b", "a"]), "--models",
                w.outputs("x.json", ["a", "b"], "x"), w.outputs("y.json", ["a", "b"], "y"),
                "--judge", "nontransitive", "--output_dir", w.root / "results"],
     "repeats row 0"),  # fmt: skip
    ("eval-missing-outputs",
     lambda w: ["eval", "--eval_set", QUICKSTART_SET, "--models", w.root / "gone.json", w.root / "gone2.json",
                "--judge", "nontransitive", "--output_dir", w.root / "results"], "gone.json"),  # fmt: skip
    ("eval-missing-eval-set", lambda w: ["eval", "--eval_set", w.root / "set.json", "--models", "a.json", "b.json",
                                         "--judge", "nontransitive", "--output_dir", w.root / "results"], "set.json"),
    ("eval-output-not-empty",
     lambda w: ["eval", "--eval_set", QUICKSTART_SET, "--models", "a.json", "b.json", "--judge", "nontransitive",
                "--output_dir", w.file("results/mine.txt", "keep").parent], "not empty"),  # fmt: skip
    ("export-not-a-run", lambda w: ["export", w.root / "nothing", "--out", w.root / "o"], "not a prefopt run"),
    ("export-foreign-eval-results",
     lambda w: ["export", w.exportable_run(), "--out", w.root / "o", "--eval_results",
                w.file("results.json", json.dumps({"win_rate": 0.5}))],
     "is not a prefopt eval results.json"),  # fmt: skip
    ("export-onto-another-base",
     lambda w: ["export", w.exportable_run(), "--out", w.root / "o", "--adapter-only", "--base_model",
                w.model_copy("other-base", hidden_size=128)],
     "is not the run's base model"),  # fmt: skip
    ("export-out-not-empty",
     lambda w: ["export", w.exportable_run(), "--out", w.file("o/notes.txt", "keep").parent], "not empty"),
    ("export-damaged-state",
     lambda w: ["export", w.exportable_run(state="{"), "--out", w.root / "o"], "state.json' is damaged"),
    ("generate-missing-model", lambda w: ["generate", "--model", w.root / "gone", "--prompt", "hi", "--output",
                                          w.root / "g.jsonl"], "gone"),
    ("generate-output-exists",
     lambda w: ["generate", "--model", w.model, "--prompt", "hi", "--output", w.file("g.jsonl", "mine\n")],
     "g.jsonl"),  # fmt: skip
]

CATALOGUE = TRAIN_CONFIG + RUN_DIRECTORY + DATA + MODEL_AND_JUDGE + EVAL_EXPORT_GENERATE


def _no_special_tokens(w) -> Path:
    """A copy of the tiny tokenizer with neither a pad nor an EOS token."""
    folder = w.model_copy("bare-tokenizer")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    for key in ("pad_token", "eos_token"):
        config.pop(key, None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    special = folder / "special_tokens_map.json"
    if special.exists():
        special.unlink()
    return folder


def tree(root: Path) -> dict:
    """Every path under ``root`` with its bytes (None for a folder)."""
    return {str(p.relative_to(root)): None if p.is_dir() else p.read_bytes() for p in sorted(root.rglob("*"))}


def test_the_catalogue_is_at_least_forty_cases():
    assert len(CATALOGUE) >= 40 and len({case[0] for case in CATALOGUE}) == len(CATALOGUE)


@pytest.mark.parametrize("name,build,expected", CATALOGUE, ids=[case[0] for case in CATALOGUE])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(name, build, expected, capsys, tmp_path, tiny_model_dir):
    w = Inputs(tmp_path, tiny_model_dir)
    argv = [str(a) for a in build(w)]
    before = tree(tmp_path)
    code = main(argv)
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert code == 2, (code, err[-2000:])
    assert len(lines) == 1 and lines[0].startswith("prefopt: error: "), err[-2000:]
    assert expected.format(root=tmp_path) in lines[0], lines[0]
    assert tree(tmp_path) == before


def test_eval_help_is_the_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["eval", "--help"])
    assert exit_.value.code == 0 and "--lc_variant" in capsys.readouterr().out


# ------------------------------------------------------------------------- cases that need the policy loaded
def cli(*args, limit_file_bytes: int | None = None) -> subprocess.CompletedProcess:
    """`python -m prefopt.cli`, optionally under a file-size limit (a full disk: writes past it fail with EFBIG;
    Python ignores the SIGXFSZ signal that would otherwise kill it)."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    prefix = ["prlimit", f"--fsize={limit_file_bytes}"] if limit_file_bytes else []
    command = [*prefix, sys.executable, "-m", "prefopt.cli", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)


AFTER_LOAD = [
    ("judge-raises", "def score(prompts, responses):\n    raise RuntimeError('grader offline')\n",
     ("myjudge.py:score' raised RuntimeError: grader offline",)),
    ("judge-wrong-length", "def score(prompts, responses):\n    return [1.0]\n",
     ("myjudge.py:score' returned 1 values; expected", "(one per row)")),
]


@pytest.mark.parametrize("name,code,expected", AFTER_LOAD, ids=[case[0] for case in AFTER_LOAD])
def test_a_judge_that_fails_when_called_stops_with_one_line_and_leaves_no_run(name, code, expected, tmp_path,
                                                                              tiny_model_dir):
    w = Inputs(tmp_path, tiny_model_dir)
    judge = w.file("myjudge.py", code)
    args = w.train(
        "--judge", "python_reward", "--judge_function", f"{judge}:score", "--prompts_per_iteration", "4",
        "--num_samples", "2", "--eval_num_prompts", "0", algorithm="rebel")  # fmt: skip
    before = tree(tmp_path)
    result = cli(*args)
    lines = result.stderr.splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("prefopt: error: "), result.stderr
    assert all(part in lines[0] for part in expected), lines[0]
    assert tree(tmp_path) == before


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs prlimit (util-linux)")
def test_a_full_disk_at_the_first_checkpoint_leaves_no_run_directory(tmp_path, tiny_model_dir):
    w = Inputs(tmp_path, tiny_model_dir)
    args = w.train("--num_iterations", "1", "--prompts_per_iteration", "4", "--num_samples", "2",
                   "--eval_num_prompts", "0")  # fmt: skip
    weights = (Path(tiny_model_dir) / "model.safetensors").stat().st_size
    before = tree(tmp_path)
    result = cli(*args, limit_file_bytes=weights // 2)  # the iteration's data fits; the checkpoint's weights do not
    lines = result.stderr.splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
    assert all(part in lines[0] for part in ("while committing iteration 0: ", "File too large", "as it was before"))
    assert tree(tmp_path) == before  # the run directory was new: none is left


def test_a_benchmark_that_fails_in_the_final_evaluation_keeps_the_trained_run(tmp_path, tiny_model_dir):
    """The evaluation runs once the iteration is committed and final/ written: its failure is one line that says
    where the policy is and how to evaluate it again, and the run folder keeps the trained policy."""
    from transformers import AutoModelForCausalLM

    from prefopt.eval.arena_hard import answer_row, markdown_counts, write_jsonl

    w = Inputs(tmp_path, tiny_model_dir)
    questions = [{"question_id": f"q{i}", "category": "arena-hard-v0.1", "turns": [{"content": f"Q{i}?"}]}
                 for i in range(2)]  # fmt: skip
    write_jsonl(tmp_path / "question.jsonl", questions)
    write_jsonl(tmp_path / "base.jsonl", [answer_row("v0.1", f"q{i}", "base", "x", markdown_counts("x", 1))
                                          for i in range(2)])  # fmt: skip
    judge = w.file("offline.py", "def judge(prompts, a, b):\n    raise RuntimeError('judge offline')\n")
    options = {"questions": str(tmp_path / "question.jsonl"), "baseline": f"base={tmp_path / 'base.jsonl'}",
               "judge": "python_preference", "judge_function": f"{judge}:judge", "max_new_tokens": 4}  # fmt: skip
    args = w.train("--num_iterations", "1", "--prompts_per_iteration", "4", "--num_samples", "2",
                   "--eval_benchmark", "arena_hard", "--eval_benchmark_options", json.dumps(options))  # fmt: skip
    result = cli(*args)
    assert result.returncode == 2 and result.stderr.splitlines() == [
        f"prefopt: error: evaluation of iteration 0 failed: judge function '{judge}:judge' raised RuntimeError: judge "
        f"offline; the trained policy is saved in '{w.out / 'final'}' and checkpoint "
        f"'{w.out / 'checkpoints/iter_000'}': once the cause is fixed, run the same command with --resume (Python: "
        "train(resume_from_checkpoint=True)) to evaluate it"
    ], result.stderr[-3000:]
    assert json.loads((w.out / "state.json").read_text())["last_completed_iteration"] == 0
    assert not (w.out / "metrics.jsonl").exists()  # the iteration's line waits for its evaluation (--resume)
    trained = AutoModelForCausalLM.from_pretrained(w.out / "final").state_dict()  # final/ loads
    checkpoint = load_file(str(w.out / "checkpoints/iter_000/model.safetensors"))
    assert all(torch.equal(trained[k], checkpoint[k]) for k in checkpoint)
