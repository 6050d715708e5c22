"""Two processes (torchrun, gloo on CPU) against one: the same global batch and seed give the same run.

Each case trains the tiny model twice, once in one process with per_device_train_batch_size 2 and once in two
processes with 1 each (gradient accumulation 2 in both: a global batch of 4 rows). Seven prompts per iteration
split 3 + 4 across the processes, so the blocks are uneven, the last minibatch has 3 rows and one process runs a
spare micro-batch. Five held-out prompts are evaluated 2 + 3.

Tolerances follow from fp32 arithmetic, not from what one CPU measured. Both runs sum the same per-row terms in
another order (micro-batch split, DeepSpeed's flat buffers, the all-reduce over two processes), which changes a sum
by a small multiple of fp32's unit roundoff u = 6e-8 relative to the size of its terms; another CPU's kernels (AVX-512,
AVX2, scalar) change the order again, by the same kind of amount.
- Metrics, per iteration and per optimizer step (``logging_steps 1``: every step's loss and gradient norm):
  relative 1e-5, or absolute 1e-5 for differences of sequence log-probs (EGPO's h, INPO's log-ratios: terms of
  magnitude ~20 keep their absolute error, ~1e-6).
- Weights: max |Δw| <= 1e-4 × lr × optimizer steps, the most an entry can move (helpers.assert_same_weights). The
  optimizer is chosen so that a gradient change δg moves an update by a bounded multiple of δg: SGD (update −lr·g:
  |Δw| <= lr·Σ_t |δg_t| plus the smooth feedback of the weights into later gradients), or AdamW with ε = 1e-3 (the
  update lr·m̂/(√v̂ + ε) is Lipschitz in the gradients with constant ≲ 2·lr/ε). Rounding-level δg then gives ~1e-6 of
  the update (measured worst, against the largest entry of w_T − w_0: SGD 3.0e-6, EGPO; AdamW 6.7e-6, INPO; alike
  with ATEN_CPU_CAPABILITY unset and avx2); a real mismatch (a row dropped or counted twice, a wrong weight) moves
  the weights by a sizeable fraction of the update (>= 1e-2).
- Why not Adam's default ε = 1e-8: for an entry whose gradient is rounding-level noise (a sum that cancels, an
  embedding row of a token that barely occurs) m̂/√v̂ is the noise's sign, so two correct runs can differ by up to
  2·lr per step per entry, and how many entries do so depends on the CPU's kernels (REBEL: 2823 entries, 0.03 of the
  update, here; 2463 with AVX2 kernels). Those entries then feed into later losses (REBEL's per-step losses off by
  15-28× the tolerance above). The only bound is |Δw| <= 2·lr per step, too loose to find anything; so the runs here
  use SGD (the trainers' own steps) or ε = 1e-3 (EGPO's and GVM's cases, where Adam's moments are part of the state
  that is snapshot and partitioned under ZeRO).

One more run starts 2 processes with ``accelerate launch`` and configs/accelerate/zero2.yaml alone (no
``--deepspeed``): the DeepSpeed settings come from the accelerate config.

Slow (each pair takes 40-60 s on 2 cores), and run by .ci/run with ``pytest -m multiprocess``.
"""

import json
import os
import subprocess
import sys

import pytest
import torch
from helpers import ADAM_ARGS, LAUNCHER_VARIABLES, REPO, SGD_ARGS, assert_same_weights, final_weights, roll_back_to

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]

COMMON = [
    "--num_iterations",
    "2",
    "--prompts_per_iteration",
    "7",
    "--eval_num_prompts",
    "5",
    "--eval_samples_per_prompt",
    "2",
    "--max_new_tokens",
    "4",
    "--gradient_accumulation_steps",
    "2",
    "--num_train_epochs",
    "1",
    "--logging_steps",
    "1",
]

GVM = ["--num_samples", "4", "--probe_samples", "4"]


def launch(
    processes: int, algorithm: str, model, out, *extra, launcher=None, module=True
) -> subprocess.CompletedProcess:
    """``prefopt train`` with the algorithm's tiny config, in one process, under torchrun, or under ``launcher``
    (the module and arguments that start ``processes`` processes running ``-m prefopt.cli``, or with ``module``
    false a script that takes the same arguments)."""
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    launcher = launcher or (torchrun if processes > 1 else [])
    cli = ["-m", "prefopt.cli", "train"] if module else []
    command = [sys.executable, *launcher, *cli, algorithm]
    args = ["--config", f"configs/tiny/{algorithm}.yaml", "--model_name_or_path", model, "--output_dir", out]
    per_device = ["--per_device_train_batch_size", str(2 // processes)]
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1")
    result = subprocess.run(
        [*command, *map(str, [*args, *COMMON, *per_device, *extra])],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def metrics(out) -> list[dict]:
    rows = [(out / name).read_text().splitlines() for name in ("metrics.jsonl", "steps.jsonl")]
    return [json.loads(line) for lines in rows for line in lines]


def assert_same_run(one, two) -> None:
    """The two runs' weights and every metric but the timings and the forwards' counts (``forward/*``: the processes'
    spare forwards and other cuts are work the 1-process run does not do), per iteration and per step, agree within
    the tolerances above."""
    assert_same_weights(one, two)
    m1, m2 = metrics(one), metrics(two)
    assert len(m1) == len(m2) and len(m1) > 2
    for r1, r2 in zip(m1, m2):
        keys = {k for k in r1 if not k.startswith(("time/", "forward/"))}
        assert keys == {k for k in r2 if not k.startswith(("time/", "forward/"))}
        for key in keys:
            # GRPO's k3 estimate e^d − d − 1 sums per-token terms of log-ratios d of order 1, whose rounding e^d
            # amplifies: 1.2e-5 relative at step 15 of the asynchronous run on one 2-core machine (below 1e-5 on
            # others).
            rel = 1e-4 if key == "kl/k3" else 1e-5
            assert r2[key] == pytest.approx(r1[key], rel=rel, abs=1e-5), (r1.get("iteration", r1["step"]), key)


@pytest.mark.parametrize(
    "algorithm,stage",
    [
        ("egpo", "ddp"),  # plain data parallel (configs/accelerate/multi_gpu.yaml's setting), no DeepSpeed
        ("egpo", "zero2"),
        ("egpo", "zero3"),
        # ZeRO-3 without the whole-model gather: every forward is a collective, so the processes run as many
        # generate calls and anchor passes as the busiest one.
        ("egpo", "zero3-per-token"),
        ("gvm_raft", "zero2"),
        ("gvm_raft", "zero3"),
    ],
)
def test_two_processes_match_one(tiny_model_dir, tmp_path, algorithm, stage):
    extra = [] if stage == "ddp" else ["--deepspeed", REPO / f"configs/deepspeed/{stage.split('-')[0]}.json"]
    extra += ADAM_ARGS + (GVM if algorithm == "gvm_raft" else [])
    extra += ["--ds3_gather_for_generation", "false"] if stage.endswith("per-token") else []
    launch(1, algorithm, tiny_model_dir, tmp_path / "one", *extra)
    launch(2, algorithm, tiny_model_dir, tmp_path / "two", *extra)
    assert_same_run(tmp_path / "one", tmp_path / "two")
    # The iteration's data is written once, with every process's samples (probes and final samples).
    from datasets import load_from_disk

    rows = [load_from_disk(str(tmp_path / run / "iterations/iter_001/rollouts")) for run in ("one", "two")]
    key = ["stream", "prompt_index", "sample_index", "response"]
    assert sorted(zip(*(rows[0][k] for k in key))) == sorted(zip(*(rows[1][k] for k in key)))


@pytest.mark.parametrize(
    "algorithm,stage,extra",
    [
        ("sppo", "zero2", []),
        ("nash_mp", "zero3", ["--prox_step", "pg", "--ema", "0.5"]),  # both phases reuse π_k's samples; EMA centre
        ("apo", "zero2", []),  # extrapolates from the previous iterate after each iteration
        ("inpo", "zero3", []),  # keeps past iterates as snapshots (ZeRO-3 shards)
        ("rebel", "zero2", []),
        ("grao", "zero3", []),
        # Token-budget micro-batches: the two processes' rows bin into different counts (spare micro-batches
        # keep ZeRO-3's per-forward collectives in step), and the one process bins the same rows otherwise.
        ("sppo", "zero3", ["--max_tokens_per_micro_batch", "48"]),
    ],
)
def test_every_trainer_takes_the_same_steps_on_two_processes(tiny_model_dir, tmp_path, algorithm, stage, extra):
    """The other trainers' own mechanisms (hooks, snapshots, phases) under sharding, one ZeRO stage each."""
    extra = ["--deepspeed", REPO / f"configs/deepspeed/{stage}.json", *SGD_ARGS, *extra]
    launch(1, algorithm, tiny_model_dir, tmp_path / "one", *extra)
    launch(2, algorithm, tiny_model_dir, tmp_path / "two", *extra)
    assert_same_run(tmp_path / "one", tmp_path / "two")


def test_resumed_two_process_run_matches_the_uninterrupted_one(tiny_model_dir, tmp_path):
    """EGPO (algorithm state and optimizer snapshots) under ZeRO-2: stop after iteration 1, resume with --resume."""
    extra = ["--deepspeed", REPO / "configs/deepspeed/zero2.json", "--num_iterations", "3", *ADAM_ARGS]
    launch(2, "egpo", tiny_model_dir, tmp_path / "full", *extra)
    launch(2, "egpo", tiny_model_dir, tmp_path / "crashed", *extra)
    roll_back_to(tmp_path / "crashed", 1)
    launch(2, "egpo", tiny_model_dir, tmp_path / "crashed", *extra, "--resume", "true", "--overwrite", "false")
    full, resumed = final_weights(tmp_path / "full"), final_weights(tmp_path / "crashed")
    assert all(torch.equal(full[k], resumed[k]) for k in full)
    losses = [[m["loss/total"] for m in metrics(tmp_path / run)] for run in ("full", "crashed")]  # steps too
    assert losses[0] == losses[1]
    # Each process saved its own shard of the optimizer state (DeepSpeed's per-rank files).
    assert len(list((tmp_path / "crashed/checkpoints/iter_002/pytorch_model").glob("*optim_states.pt"))) == 2


def test_a_deepspeed_accelerate_config_alone_is_enough(tiny_model_dir, tmp_path):
    """``accelerate launch --config_file configs/accelerate/zero2.yaml`` without ``--deepspeed``: the run reads the
    accelerate config's JSON file (configs/deepspeed/zero2.json) from the environment. The YAML's 8 processes are
    overridden with 2; no ``--cpu``, which drops DeepSpeed (DeepSpeed picks its CPU accelerator itself)."""
    accelerate = ["-m", "accelerate.commands.launch", "--config_file", "configs/accelerate/zero2.yaml"]
    accelerate += ["--num_processes", "2", "--main_process_port", "0"]
    result = launch(2, "sppo", tiny_model_dir, tmp_path / "run", *SGD_ARGS, launcher=accelerate)
    assert "2 process(es)" in result.stdout and "DeepSpeed ZeRO-2" in result.stdout, result.stdout[-3000:]
    assert json.loads((tmp_path / "run/state.json").read_text())["last_completed_iteration"] == 1  # the second of 2
    assert (tmp_path / "run/final/model.safetensors").is_file()
    # Each process saved its own shard of the optimizer state (DeepSpeed's per-rank files).
    assert len(list((tmp_path / "run/checkpoints/iter_001/pytorch_model").glob("*optim_states.pt"))) == 2


@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_a_script_building_a_trainer_runs_under_torchrun_as_prefopt_train_does(tiny_model_dir, tmp_path, stage):
    """tests/trainer_script.py (a trainer on an in-memory dataset) on 2 processes ends with the weights of
    ``prefopt train`` on 2 processes, bit for bit."""
    extra = ["--deepspeed", REPO / f"configs/deepspeed/{stage}.json", *ADAM_ARGS]
    launch(2, "sppo", tiny_model_dir, tmp_path / "cli", *extra)
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "tests/trainer_script.py"]
    result = launch(2, "sppo", tiny_model_dir, tmp_path / "script", *extra, launcher=torchrun, module=False)
    assert f"DeepSpeed ZeRO-{stage[-1]}" in result.stdout
    cli, script = final_weights(tmp_path / "cli"), final_weights(tmp_path / "script")
    assert all(torch.equal(cli[k], script[k]) for k in cli)
    assert "sha256" in (tmp_path / "script/config.yaml").read_text()  # the in-memory dataset's digest


def test_rollout_workers_under_two_zero3_processes_sample_what_the_processes_would(tiny_model_dir, tmp_path):
    """Two ZeRO-3 processes, each with its own rollout worker (its own local Ray instance) fed weights gathered one
    module at a time: the run ends with the in-process run's weights bit for bit."""
    extra = ["--deepspeed", REPO / "configs/deepspeed/zero3.json", *ADAM_ARGS]
    launch(2, "grpo", tiny_model_dir, tmp_path / "in_process", *extra)
    launch(2, "grpo", tiny_model_dir, tmp_path / "workers", *extra, "--rollout_workers", "1")
    one, two = final_weights(tmp_path / "in_process"), final_weights(tmp_path / "workers")
    assert all(torch.equal(one[k], two[k]) for k in one)


def test_an_async_two_process_run_trains_on_the_one_process_runs_stale_samples(tiny_model_dir, tmp_path):
    """max_staleness 1 on 2 processes: each process prefetches its block of the next iteration's prompts; the run
    is the 1-process asynchronous run (the same samples, drawn by the same earlier policies)."""
    extra = [*ADAM_ARGS, "--rollout_workers", "1", "--async_rollouts", "true", "--num_iterations", "3"]
    launch(1, "grpo", tiny_model_dir, tmp_path / "one", *extra)
    launch(2, "grpo", tiny_model_dir, tmp_path / "two", *extra, "--deepspeed", REPO / "configs/deepspeed/zero2.json")
    assert_same_run(tmp_path / "one", tmp_path / "two")
    assert [m["rollout/staleness_max"] for m in metrics(tmp_path / "two") if "iteration" in m] == [0, 1, 1]


def test_two_processes_share_an_api_judge_and_sum_its_counts(tiny_model_dir, tmp_path):
    """The openai judge in a 2-process run: each process asks for its own pairs, the iteration's judge/* counts are
    summed over them, and the run ends with the 1-process run's weights (same verdicts, same global batch)."""
    from api_replay import ReplayServer
    from test_api_judge import prefer_longer

    with ReplayServer(prefer_longer) as server:
        api = ["--judge", "openai", "--judge_base_url", server.url, "--judge_model", "judge"]
        api += ["--judge_api_key_env", "none", "--judge_cache", "false"]
        launch(1, "sppo", tiny_model_dir, tmp_path / "one", *SGD_ARGS, *api)
        sent_by_one = len(server.bodies)
        launch(2, "sppo", tiny_model_dir, tmp_path / "two", *SGD_ARGS, *api)
        sent_by_two = len(server.bodies) - sent_by_one
    assert_same_weights(tmp_path / "one", tmp_path / "two")
    one, two = (metrics(tmp_path / name)[:2] for name in ("one", "two"))  # the two iterations' records
    asked = [[m["judge/requests"] + m["judge/cached"] for m in run] for run in (one, two)]
    assert asked[0] == asked[1] and all(n > 0 for n in asked[0])
    assert [sum(m["judge/requests"] for m in run) for run in (one, two)] == [sent_by_one, sent_by_two]


@pytest.mark.parametrize("benchmark", ["arena_hard", "mt_bench"])
def test_a_benchmark_in_training_on_two_zero3_processes(tiny_model_dir, tmp_path, benchmark):
    """eval_benchmark under ZeRO-3 with a collective per forward: Arena-Hard's answers sharded (one generate call per
    process), MT-Bench's whole on every process (one call per turn and temperature): no process waits on another,
    and the answers, hence the judges' verdicts and the logged scores, are the one-process run's."""
    from api_replay import ReplayServer, with_text
    from test_benchmark_in_training import arena_files, mt_bench_files

    def grader(body):  # the grade follows the answer's length: equal answers, equal grades
        graded = body["messages"][-1]["content"].rsplit("[ANSWER]\n", 1)[1]
        return with_text(f"[[{len(graded) % 10 + 1}]]")

    with ReplayServer(grader) as server:
        files = arena_files(tmp_path) if benchmark == "arena_hard" else mt_bench_files(tmp_path, server.url)
        extra = ["--deepspeed", REPO / "configs/deepspeed/zero3.json", "--ds3_gather_for_generation", "false"]
        extra += [*SGD_ARGS, "--num_iterations", 1, "--eval_benchmark", benchmark]
        extra += ["--eval_benchmark_options", json.dumps(files)]
        launch(1, "sppo", tiny_model_dir, tmp_path / "one", *extra)
        launch(2, "sppo", tiny_model_dir, tmp_path / "two", *extra)
    one, two = (metrics(tmp_path / run)[0] for run in ("one", "two"))
    scores = sorted(k for k in one if k.startswith(f"eval/{benchmark}/") and "/judge/" not in k)
    assert scores and [one[k] for k in scores] == [two[k] for k in scores]
