"""kill -9 at several points of a run, then --resume: the final weights are bit-equal to an uninterrupted run's,
the logs hold each iteration once, and no temporary entry of an atomic write is left behind (slow: one run per
kill point; tests/crash_run.py does the killing)."""

import json
import signal
import subprocess
import sys

import pytest
import torch
from helpers import BASE, LAUNCHER_VARIABLES, REPO, final_weights, train

pytestmark = pytest.mark.slow

ARGS = ["--num_iterations", "3", "--lr_scheduler_type", "linear", "--warmup_ratio", "0.2", "--logging_steps", "1"]

KILL_POINTS = [
    [("rollout", 2)],  # inside iteration 1's sampling
    [("step", 3)],  # in the middle of iteration 1's optimisation
    [("replace:iter_001", 1)],  # iteration 1's data written, not yet in place
    [("replace:iter_001", 2)],  # iteration 1's checkpoint staged, not yet in place
    [("replace:state.json", 2)],  # iteration 1's checkpoint in place, state.json not yet updated
    [("replace:final", 1)],  # every iteration done, final/ not yet in place
    [("rollout", 2), ("replace:metrics.jsonl", 1)],  # killed again while the resume rewrites the logs
]


def crash(model, out, point: str, n: int, *extra) -> None:
    import os

    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    args = ["train", "sppo", "--model_name_or_path", model, "--output_dir", out, *BASE, *ARGS, *extra]
    command = [sys.executable, str(REPO / "tests/crash_run.py"), point, str(n), *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]


def logs(out, name: str) -> list[dict]:
    records = [json.loads(x) for x in (out / name).read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in records]


@pytest.fixture(scope="module")
def uninterrupted(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("crash") / "full"
    train(tiny_model_dir, out, *ARGS)
    return out


@pytest.mark.parametrize("kills", KILL_POINTS, ids=["+".join(f"{p}#{n}" for p, n in k) for k in KILL_POINTS])
def test_resume_after_kill_9_is_bit_equal_and_leaves_no_temporaries(kills, uninterrupted, tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    for i, (point, n) in enumerate(kills):
        crash(tiny_model_dir, out, point, n, *(["--resume"] if i else []))
    train(tiny_model_dir, out, *ARGS, "--resume")
    full, resumed = final_weights(uninterrupted), final_weights(out)
    assert full.keys() == resumed.keys() and all(torch.equal(full[k], resumed[k]) for k in full)
    for name in ("metrics.jsonl", "steps.jsonl"):
        assert logs(out, name) == logs(uninterrupted, name), name
    assert sorted(p.relative_to(out) for p in out.rglob(".*")) == []
    assert sorted(p.name for p in (out / "iterations").iterdir()) == ["iter_000", "iter_001", "iter_002"]
