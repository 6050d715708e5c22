"""Which DeepSpeed config a run uses: the run's ``deepspeed`` key, the DeepSpeed settings of the accelerate config
that launched the process, or both when they agree (``resolve_deepspeed_config``).

``accelerate launch`` with a DEEPSPEED accelerate config (accelerate 1.16, ``prepare_deepspeed_cmd_env``) passes its
settings to every process in the environment; accelerate's ``DeepSpeedPlugin`` reads them back:

- always ``ACCELERATE_USE_DEEPSPEED=true``, ``ACCELERATE_CONFIG_DS_FIELDS`` (the deepspeed_config keys the YAML set)
  and ``ACCELERATE_MIXED_PRECISION``;
- a YAML naming a JSON file (``deepspeed_config_file``): ``ACCELERATE_DEEPSPEED_CONFIG_FILE``, the path as written;
- inline settings, each only when the YAML sets it: ``ACCELERATE_DEEPSPEED_ZERO_STAGE``,
  ``ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE``, ``ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE``,
  ``ACCELERATE_GRADIENT_ACCUMULATION_STEPS``, ``ACCELERATE_GRADIENT_CLIPPING``,
  ``ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL`` and ``ACCELERATE_DEEPSPEED_ZERO3_INIT`` (the last read by
  accelerate's plugin itself, as for any run).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from prefopt.config import TrainConfig
from prefopt.errors import ConfigError
from prefopt.zero_internals import fill_auto, load_deepspeed_config

_FILE = "ACCELERATE_DEEPSPEED_CONFIG_FILE"
# accelerate's inline names of the settings that decide how a run is sharded (the keys of ``_sharding``).
_INLINE_NAMES = {
    "zero_optimization.stage": "zero_stage",
    "zero_optimization.offload_optimizer.device": "offload_optimizer_device",
    "zero_optimization.offload_param.device": "offload_param_device",
}
# Inline settings that must equal a run config key: the environment variable, the key, how to read the value.
_RUN_KEYS = {
    "gradient_accumulation_steps": ("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "gradient_accumulation_steps", int),
    "gradient_clipping": ("ACCELERATE_GRADIENT_CLIPPING", "max_grad_norm", float),
}


def launched_with_deepspeed() -> bool:
    """True when ``accelerate launch`` started this process with a DeepSpeed accelerate config, read when called.

    The launcher sets ``ACCELERATE_USE_DEEPSPEED`` and ``ACCELERATE_CONFIG_DS_FIELDS``; an Accelerator given a
    DeepSpeed plugin sets only the first, in its own process, so an earlier DeepSpeed run of this process (a
    notebook, a test) does not count as a launcher."""
    return (
        os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true"
        and "ACCELERATE_CONFIG_DS_FIELDS" in os.environ
    )


def resolve_deepspeed_config(cfg: TrainConfig) -> dict | None:
    """The DeepSpeed config of the run (its "auto" values filled from ``cfg``), or None for a run without DeepSpeed.

    - Not launched with a DeepSpeed accelerate config: the ``deepspeed`` key's JSON file, if set.
    - Launched with one and the key not set: the accelerate config's JSON file (``deepspeed_config_file``), read
      exactly as ``--deepspeed FILE`` would be; or a config built from its inline settings (zero_stage, offload
      devices, zero3_save_16bit_model), the rest filled from ``cfg`` like a shipped JSON's "auto" values.
    - Both: the ``deepspeed`` key's file wins when both name the same file (resolved paths) or agree on the ZeRO
      stage and both offload devices; otherwise a ConfigError names both sources and the first value that differs.
    - Inline gradient_accumulation_steps / gradient_clipping that differ from the run config's
      gradient_accumulation_steps / max_grad_norm are a ConfigError naming both keys: prefopt's loop steps and clips
      by the run config, so taking the accelerate value silently would change the optimisation.
    - Mixed precision is the run config's ``bf16`` key, whatever the accelerate config says (as without DeepSpeed).
    """
    if not launched_with_deepspeed():
        return load_deepspeed_config(cfg.deepspeed, cfg) if cfg.deepspeed else None
    if not cfg.deepspeed:
        return _launcher_config(cfg)
    explicit = load_deepspeed_config(cfg.deepspeed, cfg)
    launcher_file = os.environ.get(_FILE)
    if not (launcher_file and Path(launcher_file).resolve() == Path(cfg.deepspeed).resolve()):
        _check_agree(explicit, cfg.deepspeed, _launcher_config(cfg), launcher_file)
    return explicit


def _launcher_config(cfg: TrainConfig) -> dict:
    """The launcher's DeepSpeed config, its JSON file or its inline settings, filled from ``cfg``."""
    if os.environ.get(_FILE):
        return load_deepspeed_config(os.environ[_FILE], cfg)
    _check_inline_matches_run(cfg)
    return fill_auto(_inline_config(), cfg)


def _inline_config() -> dict:
    """The DeepSpeed config of the inline settings: stage (accelerate's default 2), offload devices, and under
    ZeRO-3 the 16-bit gather on save (default true, as configs/deepspeed/zero3.json: prefopt saves a whole model)."""
    zero = {"stage": int(os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", 2))}
    for part in ("optimizer", "param"):
        device = os.environ.get(f"ACCELERATE_DEEPSPEED_OFFLOAD_{part.upper()}_DEVICE", "none")
        if device != "none":
            zero[f"offload_{part}"] = {"device": device}
    if zero["stage"] == 3:
        save_16bit = os.environ.get("ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL", "true")
        zero["stage3_gather_16bit_weights_on_model_save"] = save_16bit.lower() == "true"
    return {"zero_optimization": zero}


def _check_inline_matches_run(cfg: TrainConfig) -> None:
    """ConfigError for an inline accumulation or clipping value other than the run config's."""
    for name, (variable, key, kind) in _RUN_KEYS.items():
        value = os.environ.get(variable, "auto")
        if value != "auto" and kind(value) != getattr(cfg, key):
            raise ConfigError(
                f"the accelerate config's {name} is {value} but config key '{key}' is {getattr(cfg, key)}: "
                f"set them equal or drop {name} from the accelerate config"
            )


def _sharding(ds: dict) -> dict:
    """The settings that decide how a run is sharded, with DeepSpeed's defaults for those not set."""
    zero = ds.get("zero_optimization", {})
    return {
        "zero_optimization.stage": int(zero.get("stage", 0)),
        "zero_optimization.offload_optimizer.device": zero.get("offload_optimizer", {}).get("device") or "none",
        "zero_optimization.offload_param.device": zero.get("offload_param", {}).get("device") or "none",
    }


def _check_agree(explicit: dict, path: str, launcher: dict, launcher_file: str | None) -> None:
    """ConfigError unless the ``deepspeed`` key's config and the launcher's shard the run the same way."""
    theirs = _sharding(launcher)
    for key, ours in _sharding(explicit).items():
        if ours != theirs[key]:
            inline = f"{_INLINE_NAMES[key]} is"
            said = f"deepspeed_config_file ({launcher_file}) has {key}" if launcher_file else inline
            raise ConfigError(
                f"the accelerate config's {said} {theirs[key]} but config key 'deepspeed' ({path}) has {key} "
                f"{ours}: make them match or drop one"
            )


@contextlib.contextmanager
def inline_settings_read():
    """For the block, hide from accelerate's DeepSpeedPlugin the list of inline settings the launcher passed.

    Given a config dict, the plugin refuses any such setting ("the following accelerate config variables will be
    ignored"), meant for a YAML that also names a JSON file. ``resolve_deepspeed_config`` built its dict from them
    or checked them against the ``deepspeed`` key, so they are not ignored. With a JSON file in the accelerate
    config the list stays, and accelerate still refuses inline settings next to it."""
    if not launched_with_deepspeed() or os.environ.get(_FILE):
        yield
        return
    fields = os.environ.pop("ACCELERATE_CONFIG_DS_FIELDS")
    try:
        yield
    finally:
        os.environ["ACCELERATE_CONFIG_DS_FIELDS"] = fields
