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
iterations after its checkpoint. An iteration's metrics line comes last, after its checkpoint (and final/) and its
evaluation; until then state.json keeps its record, so a resume that finds no line for the iteration it continues
after writes it, evaluating first (``prefopt.loop``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import zipfile
from pathlib import Path

import yaml

from prefopt.errors import ConfigError, StorageError, describe_storage_error, storage_errors

# What atomic_write_text, atomic_dir and staging_dir leave beside their target when a process is killed mid-write.
_LEFTOVER = re.compile(
    r"^\.(iter_\d+|final|state\.json|config\.yaml|metrics\.jsonl|steps\.jsonl|prefopt-write-check)\..+"
)


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` whole with ``text``; on an error (a full disk) the old file stays and no temporary does."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def refuse_non_empty(path: Path, overwrite: bool, what: str) -> None:
    """A ConfigError when ``path`` exists and is not an empty folder, unless ``overwrite``: nothing of the user's is
    replaced without asking."""
    if path.exists() and (not path.is_dir() or any(path.iterdir())) and not overwrite:
        raise ConfigError(f"{what} '{path}' exists and is not empty; pass --overwrite to replace it")


@contextlib.contextmanager
def atomic_dir(target: Path):
    """Yield a fresh temporary folder beside ``target``: once the block ends it replaces ``target`` whole; on an
    error it is removed and ``target`` is left as it was."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    commit_dir(tmp, target)


def commit_dir(tmp: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)


def check_writable(path: Path) -> None:
    """Create and delete a file in ``path`` (or the nearest folder above it that exists); a StorageError if refused."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".prefopt-write-check.")
        os.close(fd)
        os.remove(tmp)
    except OSError as err:
        raise StorageError(f"output_dir '{path}': cannot write in '{probe}': {err.strerror}") from None


class RunDir:
    """Creation, resume checks and atomic writes of one run's output folder."""

    CONFIG_KEYS_FREE_ON_RESUME = frozenset(
        {
            "resume",
            "resume_from_iteration",
            "overwrite",
            "output_dir",  # the folder being resumed, wherever it now is (a moved run resumes)
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
        self.fresh_resume = False  # --resume on a folder with no completed iteration: it starts over

    def check(self, config: dict, resume_from: int | None = None) -> dict | None:
        """Before any compute: refuse to touch an existing run unless asked, make sure the folder can be written,
        and on resume require the same config and an intact checkpoint to resume from. Returns the state a resume
        continues from (the last completed iteration's, or ``resume_from``'s), None when there is nothing to resume."""
        exists = self.path.exists() and any(self.path.iterdir())
        if exists and not (self.overwrite or self.resume):
            raise ConfigError(f"output_dir '{self.path}' exists and is not empty; pass --overwrite or --resume")
        check_writable(self.path)
        if not self.resume:
            return None
        state = self.read_state() if exists else None
        if state is None or state["last_completed_iteration"] < 0:
            ours = not exists or (self.path / "config.yaml").exists() or all(map(_is_leftover, self.path.iterdir()))
            if not ours:  # never clear a folder prefopt did not write
                raise ConfigError(f"--resume: output_dir '{self.path}' is not a prefopt run (no config.yaml)")
            self.fresh_resume, self.overwrite = exists, True
            return None
        if (self.path / "config.yaml").exists():
            saved = yaml.safe_load((self.path / "config.yaml").read_text())
            changed = sorted(
                k
                for k in set(saved) | set(config)
                if k not in self.CONFIG_KEYS_FREE_ON_RESUME and not _same_value(saved.get(k), config.get(k))
            )
            if changed:
                k = changed[0]
                raise ConfigError(
                    f"--resume: config key '{k}' differs from the run's config.yaml "
                    f"({saved.get(k)!r} there, {config.get(k)!r} now)"
                )
        last = state["last_completed_iteration"]
        if resume_from is not None and resume_from > last:
            raise ConfigError(
                f"config key 'resume_from_iteration' is {resume_from}, but the run completed iterations up to {last}"
            )
        chosen = last if resume_from is None else resume_from
        self._check_checkpoint(chosen)
        if chosen == last:
            return state
        kept = self.checkpoint_dir(chosen) / "state.json"
        if not kept.is_file():
            raise StorageError(f"--resume_from_iteration {chosen}: checkpoint '{kept.parent}' has no state.json")
        return json.loads(kept.read_text())

    def _check_checkpoint(self, iteration: int) -> None:
        """The checkpoint a resume loads must be whole; name an intact earlier one otherwise."""
        checkpoint = self.checkpoint_dir(iteration)
        if not checkpoint.is_dir():
            kept = ", ".join(p.name for p in self.checkpoints()) or "none"
            raise StorageError(f"--resume: no checkpoint '{checkpoint}' (checkpoints kept: {kept})")
        broken = damaged_file(checkpoint)
        if broken is None:
            return
        intact = [p for p in self.checkpoints() if p.name < checkpoint.name and damaged_file(p) is None]
        hint = (
            f"; checkpoint '{intact[-1]}' is intact: resume from it with --resume_from_iteration "
            f"{int(intact[-1].name.split('_')[1])}"
            if intact
            else "; no earlier checkpoint is intact: start over with --overwrite"
        )
        raise StorageError(f"--resume: '{broken}' is damaged (truncated or not a checkpoint file){hint}")

    def checkpoints(self) -> list[Path]:
        return sorted((self.path / "checkpoints").glob("iter_*"))

    def prepare(self, resumed: dict | None) -> None:
        """Once the new run's inputs have all been validated (main process): --overwrite deletes the old run; a
        resume (from state ``resumed``) removes what a killed process left of its atomic writes, and the data and
        checkpoints of the iterations after the one it continues from, which it redoes."""
        if self.fresh_resume:
            print(f"[prefopt] --resume: '{self.path}' holds no completed iteration; starting from the beginning")
        if self.overwrite and self.path.exists():
            shutil.rmtree(self.path)
        if resumed is None or not self.path.exists():
            return
        if resumed != self.read_state():  # resume_from_iteration: name it first, so a crash now resumes from it too
            self.write_state(resumed)
        self._remove_leftovers(resumed["last_completed_iteration"])

    def _remove_leftovers(self, last: int | None) -> None:
        """Temporary entries of atomic writes, and (unless ``last`` is None) the iteration folders after ``last``."""
        for folder in (self.path, self.path / "iterations", self.path / "checkpoints"):
            for entry in sorted(folder.iterdir()) if folder.is_dir() else ():
                iteration = entry.name.startswith("iter_") and folder != self.path
                if (iteration and last is not None and int(entry.name[5:]) > last) or _is_leftover(entry):
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()

    def create(self, config: dict) -> None:
        """Start the folder with its config.yaml."""
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path / "config.yaml", yaml.safe_dump(config, sort_keys=False))

    @contextlib.contextmanager
    def rollback_on_failure(self, iteration: int):
        """An iteration's commit: on a storage error (a full disk, a folder made read-only) put the run directory back
        as it was before (none at all if the commit would have created it), then stop with a one-line StorageError."""
        existed = self.path.exists()
        logs = {name: _size(self.path / name) for name in ("metrics.jsonl", "steps.jsonl")}
        new = [d for d in (self.iteration_dir(iteration), self.checkpoint_dir(iteration)) if not d.exists()]
        state = (self.path / "state.json").read_bytes() if (self.path / "state.json").exists() else None
        try:
            yield
        except storage_errors() as err:
            with contextlib.suppress(OSError):
                self._roll_back(existed, logs, new, state)
            raise StorageError(
                f"cannot write while committing iteration {iteration}: {describe_storage_error(err)}; "
                f"the run directory '{self.path}' is as it was before"
            ) from None

    def _roll_back(self, existed: bool, logs: dict, new: list[Path], state: bytes | None) -> None:
        if not existed:
            shutil.rmtree(self.path, ignore_errors=True)
            return
        for name, size in logs.items():
            if size is None:
                (self.path / name).unlink(missing_ok=True)
            else:
                os.truncate(self.path / name, size)
        for folder in new:
            shutil.rmtree(folder, ignore_errors=True)
        if state is not None and (self.path / "state.json").read_bytes() != state:
            (self.path / "state.json").write_bytes(state)
        self._remove_leftovers(None)

    # -- state ------------------------------------------------------------------------------------------------
    def read_state(self) -> dict | None:
        f = self.path / "state.json"
        if not f.exists():
            return None
        try:
            return json.loads(f.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            hint = "name a checkpoint to resume from with --resume_from_iteration N"
            raise StorageError(f"'{f}' is damaged ({err}); {hint}") from None

    def write_state(self, state: dict) -> None:
        atomic_write_text(self.path / "state.json", json.dumps(state, indent=2))

    def saved_steps(self, saved: dict | None) -> list[dict]:
        """The steps.jsonl records up to the resumed state's optimizer step (none for a fresh run)."""
        if saved is None:
            return []
        return [r for r in self.read_jsonl("steps.jsonl") if r["step"] <= saved["global_step"]]

    def read_jsonl(self, name: str) -> list[dict]:
        """The records of a JSON-lines file; a last line cut off by a crash during an append is dropped."""
        f = self.path / name
        text = f.read_text() if f.exists() else ""
        lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
        records = []
        for n, line in lines:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                if n != lines[-1][0]:
                    raise StorageError(f"{f}: line {n}: not a JSON record ({err.msg})") from None
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
        with atomic_dir(self.iteration_dir(iteration)) as tmp:
            Dataset.from_dict(rollout_rows).save_to_disk(str(tmp / "rollouts"))
            with open(tmp / "judge.jsonl", "w") as f:
                for row in judge_rows:
                    f.write(json.dumps(row) + "\n")

    def prune_checkpoints(self, keep: int) -> None:
        ckpts = self.checkpoints()
        for old in ckpts[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)


def _is_leftover(entry: Path) -> bool:
    return bool(_LEFTOVER.match(entry.name))


def _same_value(a, b) -> bool:
    """Config values are the same, or both are paths to the same existing file or folder (./runs/x, an absolute
    path)."""
    if a == b:
        return True
    return (
        isinstance(a, str) and isinstance(b, str) and os.path.exists(a) and os.path.realpath(a) == os.path.realpath(b)
    )


def damaged_file(folder: Path) -> Path | None:
    """The first file under ``folder`` that is cut short: a safetensors file shorter than its header says, or a
    torch.save file (a zip archive) without its closing directory. Reads headers only, not the tensors."""
    for path in sorted(folder.rglob("*")):
        if path.suffix == ".safetensors" and not _whole_safetensors(path):
            return path
        if path.suffix in (".pt", ".pkl", ".bin", ".pth") and not zipfile.is_zipfile(path):
            return path
    return None


def _whole_safetensors(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(size))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        return path.stat().st_size == 8 + size + end
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _size(path: Path) -> int | None:
    return path.stat().st_size if path.exists() else None
