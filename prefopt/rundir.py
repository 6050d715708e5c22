"""The run directory: everything a resume needs, written atomically (write elsewhere, then rename).

Layout::

    OUTPUT_DIR/
      config.yaml                 resolved config (algorithm + every key)
      metrics.jsonl               one line per iteration (steps.jsonl: one per logged optimizer step)
      state.json                  last completed iteration, global step, schedule length
      iterations/iter_000/        rollouts/ (a saved `datasets` dataset), judge.jsonl
      checkpoints/iter_000/       model (safetensors), optimizer, scheduler and RNG states (accelerate format)
      final/                      the trained policy, `save_pretrained` format, with its tokenizer

An iteration counts as completed once its checkpoint exists and state.json names it; a crash at any moment
leaves either the previous completed state or the new one, never a half-written file. The two JSON-lines logs
are the exception that keeps per-iteration I/O constant: they grow by one appended write each iteration, a last
line cut off by a crash is dropped on reading, and a resume rewrites them (atomically) without the records of
iterations after its checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import yaml

from prefopt.errors import ConfigError


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def refuse_non_empty(path: Path, overwrite: bool, what: str) -> None:
    """A ConfigError when ``path`` exists and is not an empty folder, unless ``overwrite``: nothing of the user's is
    replaced without asking."""
    if path.exists() and (not path.is_dir() or any(path.iterdir())) and not overwrite:
        raise ConfigError(f"{what} '{path}' exists and is not empty; pass --overwrite to replace it")


def atomic_dir(target: Path):
    """A fresh temporary folder beside ``target``; call ``commit_dir(tmp, target)`` once it is complete."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))


def commit_dir(tmp: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)


class RunDir:
    """Creation, resume checks and atomic writes of one run's output folder."""

    CONFIG_KEYS_FREE_ON_RESUME = frozenset(
        {
            "resume",
            "overwrite",
            "num_iterations",
            "report_to",
            "run_name",
            "disable_tqdm",
            "logging_steps",
            "generation_batch_size",
            "judge_batch_size",
            "logprob_batch_size",
            "save_total_limit",
            "ds3_gather_for_generation",
        }
    )

    def __init__(self, path: str, overwrite: bool = False, resume: bool = False):
        self.path = Path(path)
        self.overwrite = overwrite
        self.resume = resume

    def check(self, config: dict) -> None:
        """Refuse to touch an existing run unless asked; on resume, require the same config."""
        exists = self.path.exists() and any(self.path.iterdir())
        if exists and not (self.overwrite or self.resume):
            raise ConfigError(f"output_dir '{self.path}' exists and is not empty; pass --overwrite or --resume")
        if self.resume and (self.path / "config.yaml").exists():
            saved = yaml.safe_load((self.path / "config.yaml").read_text())
            changed = sorted(
                k
                for k in set(saved) | set(config)
                if k not in self.CONFIG_KEYS_FREE_ON_RESUME and saved.get(k) != config.get(k)
            )
            if changed:
                k = changed[0]
                raise ConfigError(
                    f"--resume: config key '{k}' differs from the run's config.yaml "
                    f"({saved.get(k)!r} there, {config.get(k)!r} now)"
                )

    def clear_for_overwrite(self) -> None:
        """--overwrite: delete the old run, once the new run's inputs have all been validated."""
        if self.overwrite and self.path.exists():
            shutil.rmtree(self.path)

    def create(self, config: dict) -> None:
        """Start the folder with its config.yaml."""
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path / "config.yaml", yaml.safe_dump(config, sort_keys=False))

    # -- state ------------------------------------------------------------------------------------------------
    def read_state(self) -> dict | None:
        f = self.path / "state.json"
        return json.loads(f.read_text()) if f.exists() else None

    def write_state(self, state: dict) -> None:
        atomic_write_text(self.path / "state.json", json.dumps(state, indent=2))

    def read_jsonl(self, name: str) -> list[dict]:
        """The records of a JSON-lines file; a last line cut off by a crash during an append is dropped."""
        f = self.path / name
        lines = [line for line in f.read_text().splitlines() if line.strip()] if f.exists() else []
        records = []
        for n, line in enumerate(lines):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                if n != len(lines) - 1:
                    raise
        return records

    def append_jsonl(self, name: str, records: list[dict]) -> None:
        """Append records in one write (per-iteration logs grow by appends, not by rewriting the whole file)."""
        if records:
            with open(self.path / name, "a") as f:
                f.write("".join(json.dumps(r) + "\n" for r in records))
                f.flush()
                os.fsync(f.fileno())

    def write_jsonl(self, name: str, records: list[dict]) -> None:
        atomic_write_text(self.path / name, "".join(json.dumps(r) + "\n" for r in records))

    # -- per-iteration data -----------------------------------------------------------------------------------
    def iteration_dir(self, iteration: int) -> Path:
        return self.path / "iterations" / f"iter_{iteration:03d}"

    def checkpoint_dir(self, iteration: int) -> Path:
        return self.path / "checkpoints" / f"iter_{iteration:03d}"

    def staging_dir(self, target: Path, clear: bool) -> Path:
        """A fixed staging folder for ``target`` that every process can name (cleared by the main process)."""
        staging = target.with_name(f".{target.name}.staging")
        if clear:
            shutil.rmtree(staging, ignore_errors=True)
            staging.parent.mkdir(parents=True, exist_ok=True)
        return staging

    def save_iteration_data(self, iteration: int, rollout_rows: dict[str, list], judge_rows: list[dict]) -> None:
        """The iteration's samples (a saved dataset) and judge outputs (JSON lines), committed together."""
        from datasets import Dataset
        from datasets.utils.logging import disable_progress_bar

        disable_progress_bar()  # a bookkeeping write: no bar in the training output
        target = self.iteration_dir(iteration)
        tmp = atomic_dir(target)
        Dataset.from_dict(rollout_rows).save_to_disk(str(tmp / "rollouts"))
        with open(tmp / "judge.jsonl", "w") as f:
            for row in judge_rows:
                f.write(json.dumps(row) + "\n")
        commit_dir(tmp, target)

    def prune_checkpoints(self, keep: int) -> None:
        ckpts = sorted((self.path / "checkpoints").glob("iter_*"))
        for old in ckpts[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
