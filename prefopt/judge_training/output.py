"""The output folder of ``prefopt train-judge``: checks before anything loads, and the final judge written last.

Layout::

    OUTPUT_DIR/
      config.json, model.safetensors, tokenizer files   the trained judge, LoRA merged: loads as judge: reward_model
                                                        or judge: pairwise_model with model_name_or_path OUTPUT_DIR
      prefopt_judge.json       the judge kind, and for a pairwise model the template and head it was trained with
      metrics.json             held-out metrics (written last: a folder with it holds a finished judge)
      train_judge_config.yaml  the resolved config (what --resume compares against)
      checkpoints/checkpoint-N transformers Trainer checkpoints (model, optimizer, scheduler, RNG), for --resume

Rules (as ``prefopt train``'s run directory): an existing non-empty folder is only replaced with ``--overwrite``;
``--resume`` continues from the newest checkpoint, refuses a folder ``train-judge`` did not write and a config that
changed in anything but bookkeeping keys; every check runs before the model loads and nothing is written until the
data has been validated.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import yaml

from prefopt.errors import ConfigError
from prefopt.judge_training.config import FREE_ON_RESUME
from prefopt.judges.pairwise import JUDGE_INFO_FILE
from prefopt.rundir import atomic_write_text, check_writable

CONFIG_FILE = "train_judge_config.yaml"
METRICS_FILE = "metrics.json"
CHECKPOINTS = "checkpoints"
STAGING = ".final-staging"


def _same(a, b) -> bool:
    """Equal values, or two spellings of one existing path."""
    if a == b:
        return True
    return (
        isinstance(a, str) and isinstance(b, str) and os.path.exists(a) and os.path.realpath(a) == os.path.realpath(b)
    )


def latest_checkpoint(path: Path) -> Path | None:
    """The checkpoint-N folder with the largest N under ``path/checkpoints``, or None."""
    found = [
        (int(m.group(1)), p) for p in (path / CHECKPOINTS).glob("checkpoint-*") if (m := re.search(r"-(\d+)$", p.name))
    ]
    return max(found)[1] if found else None


def check_output_dir(path: Path, config: dict, overwrite: bool, resume: bool) -> Path | None:
    """Refuse to touch an existing folder unless asked, check it can be written, and on ``resume`` check the
    config against the saved one. Returns the checkpoint a resume continues from (None: start from the beginning).

    Raises:
        ConfigError: a non-empty folder without --overwrite/--resume, a resume of a folder train-judge did not write
            or with a changed config key (named, with both values).
    """
    if path.exists() and not path.is_dir():
        raise ConfigError(f"output_dir '{path}' is a file")
    exists = path.is_dir() and any(path.iterdir())
    if exists and not (overwrite or resume):
        raise ConfigError(f"output_dir '{path}' exists and is not empty; pass --overwrite or --resume")
    check_writable(path)
    if not (resume and exists):
        return None
    saved_file = path / CONFIG_FILE
    if not saved_file.is_file():
        raise ConfigError(f"--resume: output_dir '{path}' is not a train-judge run (no {CONFIG_FILE})")
    saved = yaml.safe_load(saved_file.read_text()) or {}
    for key in sorted(set(saved) | set(config)):
        if key not in FREE_ON_RESUME and not _same(saved.get(key), config.get(key)):
            raise ConfigError(
                f"--resume: config key '{key}' differs from the run's {CONFIG_FILE} "
                f"({saved.get(key)!r} there, {config.get(key)!r} now)"
            )
    return latest_checkpoint(path)


def prepare_output_dir(path: Path, config: dict, overwrite: bool) -> None:
    """Once every input is valid: ``--overwrite`` removes the old folder; write the config; clear old staging."""
    if overwrite and path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(path / STAGING, ignore_errors=True)
    atomic_write_text(path / CONFIG_FILE, yaml.safe_dump(config, sort_keys=False))


def judge_info(cfg) -> dict:
    """What ``prefopt_judge.json`` records: the kind, and for a pairwise model its template and head."""
    from prefopt.judges.pairwise import DEFAULT_PAIRWISE_TEMPLATE

    info = {"judge": cfg.judge, "max_length": cfg.max_length}
    if cfg.judge == "pairwise_model":
        info.update(template=cfg.template or DEFAULT_PAIRWISE_TEMPLATE, num_labels=cfg.num_labels)
    return info


def commit_judge(model_dir: Path, path: Path, info: dict) -> None:
    """Move the merged model and tokenizer files of ``model_dir`` (inside the staging folder) into ``path``, each by
    rename, then write prefopt_judge.json and remove the staging folder. metrics.json is written after this, last."""
    (path / METRICS_FILE).unlink(missing_ok=True)  # a resumed run's old metrics describe the old weights
    for entry in sorted(model_dir.iterdir()):
        if entry.name == "training_args.bin":  # the Trainer's pickled arguments: train_judge_config.yaml says it all
            continue
        target = path / entry.name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(entry, target)
    shutil.rmtree(path / STAGING, ignore_errors=True)
    atomic_write_text(path / JUDGE_INFO_FILE, json.dumps(info, indent=2) + "\n")


def write_metrics(path: Path, metrics: dict) -> None:
    atomic_write_text(path / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
