"""Every shipped config loads through the real loader, and the loader's errors name the key and the file.

Run configs (everything under configs/ but configs/accelerate) go through ``read_yaml`` + ``build_configs`` exactly as
``prefopt train`` does; relative paths in them (``deepspeed``, local datasets) are resolved from the repository root.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from prefopt.algorithms import get_algorithm
from prefopt.algorithms.sppo import SPPOParams
from prefopt.config import build_configs, parse_cli_overrides, read_yaml
from prefopt.data import FILE_BUILDERS
from prefopt.errors import ConfigError
from prefopt.judges import JUDGE_KINDS

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
ACCELERATE = CONFIGS / "accelerate"
RUN_CONFIGS = sorted(p for p in CONFIGS.rglob("*.yaml") if ACCELERATE not in p.parents)
ACCELERATE_CONFIGS = sorted(ACCELERATE.glob("*.yaml"))
MINIMAL = {"model_name_or_path": "m", "dataset_name": "d.jsonl", "output_dir": "out"}


def _ids(paths):
    return [str(p.relative_to(ROOT)) for p in paths]


@pytest.fixture
def at_root(monkeypatch):
    monkeypatch.chdir(ROOT)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "x.yaml"
    path.write_text(text)
    return path


def _load(tmp_path: Path, text: str, cli: list[str] = ()):
    path = _write(tmp_path, text)
    return build_configs(SPPOParams, read_yaml(path), parse_cli_overrides(list(cli)), str(path))


# ---------------------------------------------------------------------------------------------------------------
# The shipped configs


def test_configs_are_found():
    names = _ids(RUN_CONFIGS)
    assert "configs/quickstart.yaml" in names and "configs/tiny/sppo.yaml" in names
    assert {p.stem for p in ACCELERATE_CONFIGS} >= {"single_gpu", "multi_gpu", "zero2", "zero3"}


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=_ids(RUN_CONFIGS))
def test_run_config_builds(path, at_root):
    values = read_yaml(path)
    assert "algorithm" in values, "a config names its algorithm for readers"
    algorithm = get_algorithm(values["algorithm"])
    train, _ = build_configs(algorithm.config_class, values, {}, str(path))
    assert train.judge in JUDGE_KINDS
    local = Path(train.dataset_name)
    if local.suffix.lower() in FILE_BUILDERS:
        assert local.is_file(), f"{path}: dataset file {local} does not exist"


@pytest.mark.parametrize("path", RUN_CONFIGS + ACCELERATE_CONFIGS, ids=_ids(RUN_CONFIGS + ACCELERATE_CONFIGS))
def test_first_line_is_the_command(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("#") and ("prefopt" in first or "accelerate launch" in first), first
    if ACCELERATE not in path.parents:
        # The command runs this very file with the algorithm it names.
        algorithm = yaml.safe_load(path.read_text())["algorithm"]
        assert f"train {algorithm} --config {path.relative_to(ROOT)}" in first, first


@pytest.mark.parametrize("path", ACCELERATE_CONFIGS, ids=_ids(ACCELERATE_CONFIGS))
def test_accelerate_config_parses(path, at_root):
    from accelerate.commands.config.config_args import load_config_from_file

    raw = yaml.safe_load(path.read_text())
    config = load_config_from_file(str(path))
    assert raw["compute_environment"] == "LOCAL_MACHINE"
    assert config.num_processes == (1 if path.stem == "single_gpu" else 8)
    if raw["distributed_type"] == "DEEPSPEED":
        assert Path(raw["deepspeed_config"]["deepspeed_config_file"]).is_file()
        # accelerate rejects mixed_precision next to a deepspeed_config_file; bf16 lives in the JSON.
        assert "mixed_precision" not in raw
    else:
        assert raw["mixed_precision"] == "bf16"


@pytest.mark.parametrize("name", ["sppo_mistral-7b-instruct", "sppo_llama-3-8b-instruct"])
def test_gpu_recipes_carry_the_paper_settings(name, at_root):
    path = CONFIGS / "recipes" / f"{name}.yaml"
    train, algo = build_configs(SPPOParams, read_yaml(path), {}, str(path))
    assert (algo.eta, algo.num_samples, algo.train_on) == (1000.0, 5, "best_worst")
    assert (train.learning_rate, train.optim, train.lr_scheduler_type, train.warmup_ratio) == (
        5e-7,
        "rmsprop",
        "linear",
        0.1,
    )
    # Global batch 64 = 8 per device × 8 processes (configs/accelerate/zero3.yaml) × 1 accumulation step.
    assert train.per_device_train_batch_size * 8 * train.gradient_accumulation_steps == 64
    assert (train.num_iterations, train.num_train_epochs, train.prompts_per_iteration) == (3, 1, None)
    assert (train.temperature, train.top_p, train.max_new_tokens, train.max_prompt_length) == (0.7, 0.9, 2048, 512)
    assert train.bf16 and train.dtype == "bfloat16" and train.deepspeed == "configs/deepspeed/zero3.json"


def test_quickstart_preferences_are_reproducible_and_judged_right():
    spec = importlib.util.spec_from_file_location("make_prefs", ROOT / "scripts" / "make_quickstart_preferences.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.build_rows()
    lines = (CONFIGS / "data" / "quickstart_preferences.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == rows
    assert module.check_rows(rows) > 0.5  # NonTransitiveJudge prefers chosen on every row


# ---------------------------------------------------------------------------------------------------------------
# Loader errors and conversions


def test_unknown_key_suggests_the_close_match(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'learnig_rate'.*did you mean 'learning_rate'"):
        _load(tmp_path, "learnig_rate: 1.0e-3\n" + yaml.safe_dump(MINIMAL))


def test_wrong_type_names_the_key_and_the_file(tmp_path):
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, "learning_rate: abc\n" + yaml.safe_dump(MINIMAL))
    assert "'learning_rate'" in str(err.value) and str(tmp_path / "x.yaml") in str(err.value)


def test_exponent_without_dot_is_a_float(tmp_path):
    assert isinstance(yaml.safe_load("x: 5e-7")["x"], str)  # PyYAML's YAML 1.1 reading, the trap
    train, algo = _load(tmp_path, "learning_rate: 5e-7\neta: 1e3\n" + yaml.safe_dump(MINIMAL))
    assert train.learning_rate == 5e-7 and algo.eta == 1000.0


def test_cli_beats_yaml(tmp_path):
    train, algo = _load(
        tmp_path,
        "learning_rate: 1.0e-3\neta: 5.0\n" + yaml.safe_dump(MINIMAL),
        ["--learning_rate", "2e-4", "--eta=7", "--bf16"],
    )
    assert (train.learning_rate, algo.eta, train.bf16) == (2e-4, 7.0, True)


def test_list_field_from_cli(tmp_path):
    train, _ = _load(tmp_path, yaml.safe_dump(MINIMAL), ["--report_to", "tensorboard"])
    assert train.report_to == ["tensorboard"]
    train, _ = _load(tmp_path, yaml.safe_dump(MINIMAL), ["--report_to", "tensorboard,wandb"])
    assert train.report_to == ["tensorboard", "wandb"]


@pytest.mark.parametrize("value", ["none", "null", "None"])
def test_optional_fields_accept_none(tmp_path, value):
    text = f"prompts_per_iteration: 8\ntorch_num_threads: 2\n{yaml.safe_dump(MINIMAL)}"
    train, _ = _load(tmp_path, text, ["--prompts_per_iteration", value, "--torch_num_threads", value])
    assert train.prompts_per_iteration is None and train.torch_num_threads is None
    train, _ = _load(tmp_path, "deepspeed: null\n" + yaml.safe_dump(MINIMAL))
    assert train.deepspeed is None


def test_literal_rejects_values_outside_its_choices(tmp_path):
    with pytest.raises(ConfigError, match=r"'optim'.*must be one of adamw_torch, adam, rmsprop, sgd; got 'lion'"):
        _load(tmp_path, "optim: lion\n" + yaml.safe_dump(MINIMAL))
    with pytest.raises(ConfigError, match="'train_on'"):
        _load(tmp_path, yaml.safe_dump(MINIMAL), ["--train_on", "best"])


def test_missing_required_key_is_named(tmp_path):
    with pytest.raises(ConfigError, match="'model_name_or_path' is required"):
        _load(tmp_path, "dataset_name: d.jsonl\noutput_dir: out\n")
    with pytest.raises(ConfigError, match="'output_dir' is required"):
        _load(tmp_path, "model_name_or_path: m\ndataset_name: d.jsonl\n")


def test_resume_and_overwrite_exclude_each_other(tmp_path):
    with pytest.raises(ConfigError, match="--resume and --overwrite"):
        _load(tmp_path, "resume: true\n" + yaml.safe_dump(MINIMAL), ["--overwrite"])


def test_missing_deepspeed_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="'deepspeed': file 'nope.json' does not exist"):
        _load(tmp_path, "deepspeed: nope.json\n" + yaml.safe_dump(MINIMAL))
