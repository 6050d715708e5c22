"""Which DeepSpeed config a run uses when ``accelerate launch`` passes a DeepSpeed accelerate config through the
environment (prefopt/deepspeed_config.py), one test per rule; the environment is what accelerate's launcher sets
(``prepare_deepspeed_cmd_env``). The real 2-process launch is in test_multiprocess.py."""

import json
import os

import pytest
from helpers import REPO

from prefopt.config import TrainConfig
from prefopt.deepspeed_config import inline_settings_read, launched_with_deepspeed, resolve_deepspeed_config
from prefopt.errors import ConfigError
from prefopt.zero_internals import load_deepspeed_config

ZERO2, ZERO3 = "configs/deepspeed/zero2.json", "configs/deepspeed/zero3.json"
# ACCELERATE_CONFIG_DS_FIELDS for an accelerate config with inline DeepSpeed settings.
INLINE_FIELDS = "zero_stage,offload_optimizer_device,gradient_accumulation_steps"
# The run config's values for DeepSpeed's "auto" entries, none of them DeepSpeed's or accelerate's defaults.
RUN = dict(per_device_train_batch_size=4, gradient_accumulation_steps=3, max_grad_norm=0.5, bf16=True)


@pytest.fixture(autouse=True)
def environment(monkeypatch):
    """No launcher variable from the test process; paths relative to the repository root, as a user runs."""
    for name in list(os.environ):
        if name.startswith("ACCELERATE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(REPO)


def run_config(tmp_path, **overrides) -> TrainConfig:
    return TrainConfig(model_name_or_path="m", dataset_name="d", output_dir=str(tmp_path), **{**RUN, **overrides})


def launch(monkeypatch, fields: str, **variables) -> None:
    """The environment ``accelerate launch`` gives a process for a DeepSpeed accelerate config."""
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_CONFIG_DS_FIELDS", fields)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    for name, value in variables.items():
        monkeypatch.setenv(f"ACCELERATE_{name}", value)


def launch_inline(monkeypatch, **variables) -> None:
    launch(monkeypatch, INLINE_FIELDS, **variables)


def test_not_launched_reads_the_deepspeed_key_or_uses_no_deepspeed(tmp_path, monkeypatch):
    assert resolve_deepspeed_config(run_config(tmp_path)) is None
    cfg = run_config(tmp_path, deepspeed=ZERO3)
    assert resolve_deepspeed_config(cfg) == load_deepspeed_config(ZERO3, cfg)
    # What an Accelerator with a DeepSpeed plugin leaves in its own process is not a launcher.
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    assert not launched_with_deepspeed()
    assert resolve_deepspeed_config(run_config(tmp_path)) is None


def test_the_accelerate_configs_json_file_is_read_as_if_given_with_deepspeed(tmp_path, monkeypatch):
    fields = "deepspeed_config_file,zero3_init_flag"
    launch(monkeypatch, fields, DEEPSPEED_CONFIG_FILE=ZERO2, DEEPSPEED_ZERO3_INIT="false")
    ds = resolve_deepspeed_config(run_config(tmp_path))
    assert ds["zero_optimization"] == json.loads((REPO / ZERO2).read_text())["zero_optimization"]
    assert ds["train_micro_batch_size_per_gpu"] == 4
    assert ds["gradient_accumulation_steps"] == 3
    assert ds["gradient_clipping"] == 0.5
    assert ds["bf16"] == {"enabled": True} and ds["fp16"] == {"enabled": False}
    assert ds == load_deepspeed_config(ZERO2, run_config(tmp_path))


def test_inline_settings_give_the_stage_and_offload_and_the_rest_from_the_run_config(tmp_path, monkeypatch):
    launch_inline(
        monkeypatch,
        DEEPSPEED_ZERO_STAGE="3",
        DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE="cpu",
        DEEPSPEED_OFFLOAD_PARAM_DEVICE="none",
        DEEPSPEED_ZERO3_SAVE_16BIT_MODEL="true",
        GRADIENT_ACCUMULATION_STEPS="3",
        GRADIENT_CLIPPING="0.5",
        MIXED_PRECISION="bf16",
    )
    assert resolve_deepspeed_config(run_config(tmp_path)) == {
        "zero_optimization": {
            "stage": 3,
            "offload_optimizer": {"device": "cpu"},
            "stage3_gather_16bit_weights_on_model_save": True,
        },
        "train_micro_batch_size_per_gpu": 4,
        "gradient_accumulation_steps": 3,
        "gradient_clipping": 0.5,
        "bf16": {"enabled": True},
        "fp16": {"enabled": False},
    }
    # Mixed precision is the run config's bf16 key, not the accelerate config's.
    assert resolve_deepspeed_config(run_config(tmp_path, bf16=False))["bf16"] == {"enabled": False}


def test_inline_settings_left_out_take_accelerates_defaults(tmp_path, monkeypatch):
    launch(monkeypatch, "")  # accelerate launch --use_deepspeed, nothing else
    ds = resolve_deepspeed_config(run_config(tmp_path))
    assert ds["zero_optimization"] == {"stage": 2}
    assert (ds["gradient_accumulation_steps"], ds["gradient_clipping"]) == (3, 0.5)


def test_an_explicit_deepspeed_file_wins_when_it_agrees(tmp_path, monkeypatch):
    # The same file under another spelling of its path.
    launch(monkeypatch, "deepspeed_config_file", DEEPSPEED_CONFIG_FILE=ZERO2)
    cfg = run_config(tmp_path, deepspeed=str(REPO / ZERO2))
    assert resolve_deepspeed_config(cfg) == load_deepspeed_config(ZERO2, cfg)
    # Another file with the same stage and offload devices: the explicit file's other settings are used.
    other = json.loads((REPO / ZERO2).read_text())
    other["zero_optimization"].update(overlap_comm=True, offload_param={"device": "none"})
    (tmp_path / "mine.json").write_text(json.dumps(other))
    cfg = run_config(tmp_path, deepspeed=str(tmp_path / "mine.json"))
    assert resolve_deepspeed_config(cfg)["zero_optimization"]["overlap_comm"] is True
    # Inline settings with the file's stage.
    monkeypatch.delenv("ACCELERATE_DEEPSPEED_CONFIG_FILE")
    launch_inline(monkeypatch, DEEPSPEED_ZERO_STAGE="3", DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE="none")
    cfg = run_config(tmp_path, deepspeed=ZERO3)
    assert resolve_deepspeed_config(cfg) == load_deepspeed_config(ZERO3, cfg)


def test_another_json_file_with_another_stage_is_a_conflict(tmp_path, monkeypatch):
    launch(monkeypatch, "deepspeed_config_file", DEEPSPEED_CONFIG_FILE=ZERO3)
    with pytest.raises(ConfigError) as err:
        resolve_deepspeed_config(run_config(tmp_path, deepspeed=ZERO2))
    assert str(err.value) == (
        "the accelerate config's deepspeed_config_file (configs/deepspeed/zero3.json) has zero_optimization.stage 3 "
        "but config key 'deepspeed' (configs/deepspeed/zero2.json) has zero_optimization.stage 2: make them match "
        "or drop one"
    )


def test_inline_settings_that_differ_from_the_json_file_are_a_conflict(tmp_path, monkeypatch):
    launch_inline(monkeypatch, DEEPSPEED_ZERO_STAGE="3")
    with pytest.raises(ConfigError) as err:
        resolve_deepspeed_config(run_config(tmp_path, deepspeed=ZERO2))
    assert str(err.value) == (
        "the accelerate config's zero_stage is 3 but config key 'deepspeed' (configs/deepspeed/zero2.json) has "
        "zero_optimization.stage 2: make them match or drop one"
    )
    launch_inline(monkeypatch, DEEPSPEED_ZERO_STAGE="2", DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE="cpu")
    with pytest.raises(ConfigError) as err:
        resolve_deepspeed_config(run_config(tmp_path, deepspeed=ZERO2))
    assert str(err.value) == (
        "the accelerate config's offload_optimizer_device is cpu but config key 'deepspeed' "
        "(configs/deepspeed/zero2.json) has zero_optimization.offload_optimizer.device none: make them match or "
        "drop one"
    )


@pytest.mark.parametrize(
    "variable, value, message",
    [
        (
            "GRADIENT_ACCUMULATION_STEPS",
            "8",
            "the accelerate config's gradient_accumulation_steps is 8 but config key 'gradient_accumulation_steps' "
            "is 3: set them equal or drop gradient_accumulation_steps from the accelerate config",
        ),
        (
            "GRADIENT_CLIPPING",
            "1.0",
            "the accelerate config's gradient_clipping is 1.0 but config key 'max_grad_norm' is 0.5: set them equal "
            "or drop gradient_clipping from the accelerate config",
        ),
    ],
)
def test_inline_accumulation_or_clipping_other_than_the_run_configs_is_an_error(
    tmp_path, monkeypatch, variable, value, message
):
    launch_inline(monkeypatch, **{variable: value})
    for deepspeed in (None, ZERO2):  # with or without an explicit file
        with pytest.raises(ConfigError) as err:
            resolve_deepspeed_config(run_config(tmp_path, deepspeed=deepspeed))
        assert str(err.value) == message


def test_accelerates_plugin_takes_the_config_built_from_inline_settings(tmp_path, monkeypatch):
    """accelerate's DeepSpeedPlugin refuses a config dict next to inline settings unless their list is hidden; the
    list is back afterwards, and stays for a JSON file in the accelerate config (accelerate's own check)."""
    from accelerate.utils import DeepSpeedPlugin

    launch_inline(monkeypatch, DEEPSPEED_ZERO_STAGE="3", GRADIENT_ACCUMULATION_STEPS="3")
    ds = resolve_deepspeed_config(run_config(tmp_path))
    with pytest.raises(ValueError, match="will be ignored"):
        DeepSpeedPlugin(hf_ds_config=dict(ds))
    with inline_settings_read():
        assert "ACCELERATE_CONFIG_DS_FIELDS" not in os.environ
        plugin = DeepSpeedPlugin(hf_ds_config=ds)
    assert plugin.zero_stage == 3 and plugin.deepspeed_config["gradient_accumulation_steps"] == 3
    assert os.environ["ACCELERATE_CONFIG_DS_FIELDS"] == INLINE_FIELDS
    launch(monkeypatch, "deepspeed_config_file,zero_stage", DEEPSPEED_CONFIG_FILE=ZERO2)
    with inline_settings_read():
        assert os.environ["ACCELERATE_CONFIG_DS_FIELDS"] == "deepspeed_config_file,zero_stage"
