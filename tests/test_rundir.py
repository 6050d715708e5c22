"""RunDir: JSON-lines logs (a last line cut off by a crash is dropped on reading), what a resume clears and checks,
and an iteration's commit rolled back when the file system refuses a write."""

import json
import os
import zipfile

import pytest
import torch
from safetensors.torch import save_file

from prefopt.errors import ConfigError, StorageError
from prefopt.rundir import RunDir, atomic_dir, damaged_file


def test_append_and_read_back_with_a_truncated_last_line(tmp_path):
    run = RunDir(str(tmp_path))
    run.append_jsonl("metrics.jsonl", [{"iteration": 0}])
    run.append_jsonl("metrics.jsonl", [{"iteration": 1}, {"iteration": 2}])
    run.append_jsonl("metrics.jsonl", [])
    assert [r["iteration"] for r in run.read_jsonl("metrics.jsonl")] == [0, 1, 2]
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"iteration": 3, "loss/to')  # a crash in the middle of an append
    assert [r["iteration"] for r in run.read_jsonl("metrics.jsonl")] == [0, 1, 2]
    run.write_jsonl("metrics.jsonl", run.read_jsonl("metrics.jsonl")[:2])  # what a resume does
    assert (tmp_path / "metrics.jsonl").read_text() == "".join(json.dumps({"iteration": i}) + "\n" for i in (0, 1))


def test_a_corrupt_line_before_the_end_is_an_error(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"iteration": 0}\nnot json\n{"iteration": 2}\n')
    with pytest.raises(StorageError, match=f"^{tmp_path / 'metrics.jsonl'}: line 2: not a JSON record"):
        RunDir(str(tmp_path)).read_jsonl("metrics.jsonl")
    assert RunDir(str(tmp_path)).read_jsonl("missing.jsonl") == []


def test_damaged_file_finds_a_cut_safetensors_file_and_a_cut_torch_save_file(tmp_path):
    save_file({"w": torch.ones(4, 4)}, tmp_path / "model.safetensors")
    torch.save({"step": 1}, tmp_path / "optimizer.bin")
    assert damaged_file(tmp_path) is None
    whole = (tmp_path / "model.safetensors").stat().st_size
    os.truncate(tmp_path / "model.safetensors", whole - 1)  # the header promises 64 bytes of data; 63 are there
    assert damaged_file(tmp_path) == tmp_path / "model.safetensors"
    save_file({"w": torch.ones(4, 4)}, tmp_path / "model.safetensors")
    os.truncate(tmp_path / "optimizer.bin", (tmp_path / "optimizer.bin").stat().st_size - 10)
    assert not zipfile.is_zipfile(tmp_path / "optimizer.bin")
    assert damaged_file(tmp_path) == tmp_path / "optimizer.bin"


def write_run(path, last: int, checkpoints=(0, 1), leftovers=True):
    """A run folder as prefopt leaves it after committing iteration ``last``, plus a killed process's temporaries."""
    run = RunDir(str(path), resume=True)
    run.create({"seed": 1})
    for i in range(last + 1):
        (run.iteration_dir(i) / "rollouts").mkdir(parents=True)
    for i in checkpoints:
        run.checkpoint_dir(i).mkdir(parents=True)
        save_file({"w": torch.full((2,), float(i))}, run.checkpoint_dir(i) / "model.safetensors")
        (run.checkpoint_dir(i) / "state.json").write_text(json.dumps({"last_completed_iteration": i}))
    run.write_state({"last_completed_iteration": last, "global_step": 2 * (last + 1), "steps_per_iteration": 2})
    for leftover in (".iter_002.staging", ".state.json.x1y2", ".metrics.jsonl.abc") if leftovers else ():
        (path / ("checkpoints" if "iter" in leftover else "") / leftover).mkdir()
        (path / "iterations" / ".iter_002.k3").mkdir(exist_ok=True)
    return run


def test_resume_clears_temporaries_and_the_iterations_after_the_one_it_continues_from(tmp_path):
    run = write_run(tmp_path / "run", last=1)
    run.check({"seed": 1})
    run.prepare(json.loads((run.checkpoint_dir(0) / "state.json").read_text()))  # --resume_from_iteration 0
    names = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert names == ["checkpoints", "config.yaml", "iterations", "state.json"]
    assert [p.name for p in (tmp_path / "run/checkpoints").iterdir()] == ["iter_000"]
    assert [p.name for p in (tmp_path / "run/iterations").iterdir()] == ["iter_000"]
    assert run.read_state() == {"last_completed_iteration": 0}


def test_resume_names_the_damaged_checkpoint_and_an_intact_earlier_one(tmp_path):
    run = write_run(tmp_path / "run", last=1)
    weights = run.checkpoint_dir(1) / "model.safetensors"
    os.truncate(weights, weights.stat().st_size - 4)
    with pytest.raises(StorageError) as err:
        run.check({"seed": 1})
    assert str(err.value) == (
        f"--resume: '{weights}' is damaged (truncated or not a checkpoint file); checkpoint "
        f"'{run.checkpoint_dir(0)}' is intact: resume from it with --resume_from_iteration 0"
    )
    run.check({"seed": 1}, resume_from=0)  # the intact one passes


def test_resume_with_nothing_completed_starts_over_but_never_clears_a_foreign_folder(tmp_path):
    run = RunDir(str(tmp_path / "run"), resume=True)
    run.create({"seed": 1})
    (tmp_path / "run" / "metrics.jsonl").write_text('{"iteration": 0}\n')  # killed before its first checkpoint
    run.check({"seed": 2})
    assert run.fresh_resume
    run.prepare(None)
    assert not (tmp_path / "run").exists()  # the partial run is gone; the new one writes a fresh folder
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    with pytest.raises(ConfigError, match="is not a prefopt run"):
        RunDir(str(foreign), resume=True).check({})
    assert (foreign / "notes.txt").read_text() == "keep"


def test_a_failed_commit_puts_the_run_directory_back(tmp_path):
    run = write_run(tmp_path / "run", last=1, checkpoints=(1,), leftovers=False)
    run.append_jsonl("metrics.jsonl", [{"iteration": 0}, {"iteration": 1}])
    tree = lambda: {p: p.is_file() and p.read_bytes() for p in (tmp_path / "run").rglob("*")}  # noqa: E731
    before = tree()
    with pytest.raises(StorageError, match="while committing iteration 2: No space left on device; the run"):
        with run.rollback_on_failure(2):
            run.append_jsonl("metrics.jsonl", [{"iteration": 2}])
            (run.iteration_dir(2) / "rollouts").mkdir(parents=True)
            with atomic_dir(run.checkpoint_dir(2)) as staging:
                (staging / "model.safetensors").write_bytes(b"partial")
                raise OSError(28, "No space left on device")
    assert tree() == before


def test_resume_compares_paths_resolved_and_lets_the_run_folder_move(tmp_path, monkeypatch):
    data = tmp_path / "data.jsonl"
    data.write_text("{}\n")
    write_run(tmp_path / "old", last=1, leftovers=False)
    (tmp_path / "old/config.yaml").write_text(f"dataset_name: {data}\noutput_dir: {tmp_path / 'old'}\nseed: 1\n")
    (tmp_path / "old").rename(tmp_path / "moved")
    monkeypatch.chdir(tmp_path)
    moved = RunDir("moved", resume=True)
    moved.check({"dataset_name": "./data.jsonl", "output_dir": "moved", "seed": 1})  # the same file, another way
    with pytest.raises(ConfigError, match="config key 'dataset_name' differs"):
        moved.check({"dataset_name": "./other.jsonl", "output_dir": "moved", "seed": 1})
