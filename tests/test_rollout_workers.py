"""Rollout workers on Ray and asynchronous rollouts (prefopt.rollout.workers, prefopt.rollout.prefetch), on a local
Ray instance with real actors: the synchronous run reproduced bit for bit, staleness and weight versions accounted
for, resume equality, a worker that dies or hangs, the Ray-free error and the configurations refused."""

import json
import os
import signal

import datasets
import pytest
import torch
from helpers import DIGIT_TASK, PROMPTS, run_weights
from transformers import TrainerCallback

import prefopt
from prefopt.errors import ConfigError, PrefoptError

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray instance for the module (each run's engine then leaves it up); two CPUs for two workers."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


def grpo_config(out, **keys):
    values = dict(output_dir=str(out), dataset_name=str(DIGIT_TASK), judge="exact_match", answer_column="answer",
                  response_choices=[str(d) for d in range(10)], num_samples=4, prompts_per_iteration=32,
                  num_iterations=4, learning_rate=1e-2, per_device_train_batch_size=32, disable_tqdm=True,
                  torch_num_threads=1, seed=3)  # fmt: skip
    return prefopt.GRPOConfig(**(values | keys))


def sppo_config(out, **keys):
    values = dict(output_dir=str(out), dataset_name=str(PROMPTS), eta=20.0, num_samples=3, max_new_tokens=6,
                  prompts_per_iteration=8, disable_tqdm=True, learning_rate=1e-3, num_iterations=3,
                  per_device_train_batch_size=4, torch_num_threads=1)  # fmt: skip
    return prefopt.SPPOConfig(**(values | keys))


def train(trainer_cls, model, config, callbacks=None, resume=None):
    """Train, then stop the run's workers; returns the trainer."""
    trainer = trainer_cls(model, args=config, callbacks=callbacks)
    try:
        trainer.train(resume_from_checkpoint=resume)
    finally:
        close = getattr(getattr(trainer._run, "ctx", None), "rollout", None)
        if hasattr(close, "close"):
            close.close()
    return trainer


def rollout_rows(out, iteration):
    return datasets.load_from_disk(str(out / f"iterations/iter_{iteration:03d}/rollouts"))


def same_weights(one, two) -> bool:
    w1, w2 = run_weights(one), run_weights(two)
    return set(w1) == set(w2) and all(torch.equal(w1[k], w2[k]) for k in w1)


@pytest.mark.parametrize("algorithm", ["sppo", "grpo"])
def test_max_staleness_zero_reproduces_the_in_process_run_bit_for_bit(tiny_model_dir, tmp_path, algorithm):
    trainer_cls, config = (
        (prefopt.SPPOTrainer, sppo_config) if algorithm == "sppo" else (prefopt.GRPOTrainer, grpo_config)
    )
    train(trainer_cls, tiny_model_dir, config(tmp_path / "in_process"))
    workers = train(
        trainer_cls,
        tiny_model_dir,
        config(tmp_path / "workers", rollout_workers=1, async_rollouts=True, max_staleness=0),
    )
    assert same_weights(tmp_path / "in_process", tmp_path / "workers")
    rows = rollout_rows(tmp_path / "workers", 2)
    assert set(rows["policy_iteration"]) == {2}  # every sample drawn by the iteration's own policy
    # Version 0 (the initial weights) drew iteration 0; each later iteration's weights were published once.
    assert [rollout_rows(tmp_path / "workers", it)["weights_version"][0] for it in range(3)] == [0, 1, 2]
    assert [r["rollout/staleness_max"] for r in workers.log_history] == [0] * len(workers.log_history)


class Kill(TrainerCallback):
    """Kill (SIGKILL) or stop (SIGSTOP) rollout worker 0's process after iteration ``after``."""

    def __init__(self, trainer_ref, after, sig):
        self.trainer_ref, self.after, self.sig = trainer_ref, after, sig

    def on_iteration_end(self, args, state, control, iteration, **kw):
        if iteration == self.after:
            engine = self.trainer_ref[0]._run.ctx.rollout
            self.pid = engine.info()[0]["pid"]
            os.kill(self.pid, self.sig)


def test_staleness_and_weight_versions_are_accounted_for_per_sample(tiny_model_dir, tmp_path):
    """k = 2 with two workers: iteration 0 samples on the initial policy, iterations 1 and 2 on it too (submitted
    after iteration 0's collect), iteration 3 on iteration 1's; each published version loaded once by each worker,
    in order, none skipped."""
    config = grpo_config(tmp_path / "run", rollout_workers=2, async_rollouts=True, max_staleness=2, num_iterations=5)
    trainer = prefopt.GRPOTrainer(tiny_model_dir, args=config)
    trainer.train()
    engine = trainer._run.ctx.rollout
    info = engine.info()
    engine.close()
    policy = [set(rollout_rows(tmp_path / "run", it)["policy_iteration"]) for it in range(5)]
    assert policy == [{0}, {0}, {0}, {1}, {2}]
    staleness = [r["rollout/staleness_max"] for r in trainer.log_history]
    assert staleness == [0, 1, 2, 2, 2]
    versions = [set(rollout_rows(tmp_path / "run", it)["weights_version"]) for it in range(5)]
    assert versions == [{0}, {0}, {0}, {1}, {2}]
    assert engine.published == [0, 1, 2]  # the weights of iterations 0, 1 and 2, each published once
    assert [w["loaded"] for w in info] == [[0, 1, 2]] * 2
    hits = [(r["rollout/prefetch_hits"], r["rollout/prefetch_misses"]) for r in trainer.log_history]
    assert hits == [(0, 1), (1, 0), (1, 0), (1, 0), (1, 0)]


def test_an_async_run_resumed_ends_as_the_uninterrupted_one(tiny_model_dir, tmp_path):
    """The samples drawn ahead for the next iteration are kept in each checkpoint: a resume trains on them."""
    keys = dict(rollout_workers=1, async_rollouts=True, max_staleness=1)
    train(prefopt.GRPOTrainer, tiny_model_dir, grpo_config(tmp_path / "whole", **keys))

    class Stop(TrainerCallback):
        def on_iteration_end(self, args, state, control, iteration, **kw):
            control.should_training_stop = iteration == 1

    train(prefopt.GRPOTrainer, tiny_model_dir, grpo_config(tmp_path / "run", **keys), callbacks=[Stop()])
    assert (tmp_path / "run/checkpoints/iter_001/prefetched_0.pt").exists()
    train(prefopt.GRPOTrainer, tiny_model_dir, grpo_config(tmp_path / "run", **keys), resume=True)
    assert same_weights(tmp_path / "whole", tmp_path / "run")
    assert set(rollout_rows(tmp_path / "run", 2)["policy_iteration"]) == {1}


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP], ids=["dies", "hangs"])
def test_a_worker_that_dies_or_hangs_stops_the_run_resumably(tiny_model_dir, tmp_path, sig):
    keys = dict(rollout_workers=1, async_rollouts=True, max_staleness=0, rollout_timeout_s=5.0)
    holder = []
    kill = Kill(holder, after=0, sig=sig)
    trainer = prefopt.GRPOTrainer(tiny_model_dir, args=grpo_config(tmp_path / "run", **keys), callbacks=[kill])
    holder.append(trainer)
    expected = "did not answer within rollout_timeout_s=5 s" if sig == signal.SIGSTOP else "died"
    with pytest.raises(PrefoptError, match=f"rollout worker 0 {expected}.*--resume continues") as err:
        trainer.train()
    assert "\n" not in str(err.value)
    if sig == signal.SIGSTOP:
        os.kill(kill.pid, signal.SIGKILL)
    trainer._run.ctx.rollout.close()
    assert json.loads((tmp_path / "run/state.json").read_text())["last_completed_iteration"] == 0
    resumed = train(prefopt.GRPOTrainer, tiny_model_dir, grpo_config(tmp_path / "run", **keys), resume=True)
    assert [r["iteration"] for r in resumed.log_history] == [0, 1, 2, 3]


def test_a_stale_regression_run_recomputes_its_anchor_and_logs_the_gap(tiny_model_dir, tmp_path):
    """SPPO with k = 1: π_t's log-probs are one trainer pass with the current weights; the engine's are kept and
    their gap logged (zero on the fresh first iteration, the policy's change after it)."""
    config = sppo_config(tmp_path / "run", rollout_workers=1, async_rollouts=True, anchor_logps="recompute")
    trainer = train(prefopt.SPPOTrainer, tiny_model_dir, config)
    gaps = [r["rollout/logp_gap_max"] for r in trainer.log_history]
    assert gaps[0] < 1e-4 and all(g > 1e-3 for g in gaps[1:]), gaps
    for r in trainer.log_history:
        assert r["rollout/logp_checked_tokens"] == pytest.approx(r["rollout/samples"] * r["rollout/mean_length"])


def test_ray_missing_is_one_line_naming_the_extra(tiny_model_dir, tmp_path, monkeypatch, capsys):
    from prefopt.cli import main

    monkeypatch.setitem(__import__("sys").modules, "ray", None)
    code = main(["train", "grpo", "--model_name_or_path", tiny_model_dir, "--output_dir", str(tmp_path / "run"),
                 "--dataset_name", str(DIGIT_TASK), "--judge", "exact_match", "--answer_column", "answer",
                 "--rollout_workers", "1"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and "pip install 'prefopt[ray]'" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "trainer_cls, keys, message",
    [
        (prefopt.EGPOTrainer, dict(async_rollouts=True), "egpo needs samples of the current iterate"),
        (prefopt.SPPOTrainer, dict(async_rollouts=True), "set anchor_logps: recompute"),
        (prefopt.DPOTrainer, dict(async_rollouts=True), "dpo's loss is anchored at π_t"),  # reference: iterate
        (prefopt.SPPOTrainer, dict(vllm_importance_sampling_correction=True), "sppo's loss has none"),
        (prefopt.NashMDTrainer, dict(), "rollout workers do not hold"),
    ],
    ids=["egpo", "sppo-anchor", "dpo-anchor", "sppo-is", "nash_md"],
)
def test_configurations_an_algorithm_cannot_honour_are_refused(tiny_model_dir, tmp_path, trainer_cls, keys, message):
    config = trainer_cls.config_class(output_dir=str(tmp_path / "run"), dataset_name=str(PROMPTS), rollout_workers=1,
                                      **keys)  # fmt: skip
    with pytest.raises(ConfigError, match=message):
        trainer_cls(tiny_model_dir, args=config)


def test_async_rollouts_without_workers_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="async_rollouts: true needs rollout_workers >= 1"):
        prefopt.GRPOConfig(output_dir=str(tmp_path), dataset_name="x", model_name_or_path="m", async_rollouts=True)


def test_a_lora_worker_holds_the_trained_policys_merged_weights(tiny_model_dir, tmp_path):
    """After LoRA training the workers' model (a plain one, built from the base) holds W + s·BA of every adapted
    module and the base's other weights, as the trained peft model computes with."""
    from prefopt.rollout.weights import full_weights

    config = grpo_config(tmp_path / "run", rollout_workers=1, adapter="lora", lora_target_modules=["q_proj", "v_proj"])
    trainer = prefopt.GRPOTrainer(tiny_model_dir, args=config)
    trainer.train()
    engine = trainer._run.ctx.rollout
    engine.publish()  # the last optimisation's weights (the next request would publish them)
    held = ray.get(engine.workers[0].__ray_call__.remote(lambda w: {k: v.clone() for k, v in w.params.items()}))
    engine.close()
    expected = dict(full_weights(trainer._run.backend.unwrapped))
    assert set(held) == set(expected)
    assert all(torch.equal(held[k], expected[k]) for k in held)
    initial = prefopt.GRPOTrainer(tiny_model_dir, args=grpo_config(tmp_path / "x")).model.state_dict()
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(held[name], initial[name])  # trained: LoRA's B is no longer zero
