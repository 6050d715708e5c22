"""THE online loop: collect → optimise → end_iteration → checkpoint → log, for every algorithm.

Read ``train`` top to bottom: setup builds everything and validates config and data before any compute; each
iteration asks the algorithm for its batch (``collect``), optimises it (the algorithm's ``train_step`` if it has
one, else epochs × minibatches of its ``loss``), runs its ``end_iteration`` hook, then commits the iteration's
data, a checkpoint and one metrics line. Nothing here knows any algorithm by name.
"""

from __future__ import annotations

import functools
import math
import time
from collections import defaultdict

import torch
from tqdm.auto import tqdm

from prefopt.batch import Batch
from prefopt.data import iteration_prompts
from prefopt.eval import win_rate
from prefopt.judges.base import RewardJudge
from prefopt.objective import loss_on_rows
from prefopt.optim import start_schedule
from prefopt.rollout.engine import derive_seed
from prefopt.setup import Run, setup_run


def train(algorithm_name: str, cfg, algo_cfg) -> dict:
    """Run (or resume) training and return the last iteration's metrics."""
    run: Run = setup_run(algorithm_name, cfg, algo_cfg)
    ctx, algorithm = run.ctx, run.algorithm
    ctx.optimise = functools.partial(optimise, run)
    metrics: dict = run.history[-1] if run.history else {}
    for it in range(run.start_iteration, cfg.num_iterations):
        t0 = time.perf_counter()
        batch, collect_s = collect(run, it)
        t1 = time.perf_counter()
        if run.state["steps_per_iteration"] == 0:  # the first iteration's data fixes the schedule's length
            steps = steps_per_iteration(batch.num_rows, cfg, run.world_size) * algorithm.phases
            run.state["steps_per_iteration"] = steps
            start_schedule(run.scheduler, run.state["steps_per_iteration"] * cfg.num_iterations)
        stats = algorithm.train_step(ctx, batch) if algorithm.train_step else ctx.optimise(batch)
        if algorithm.end_iteration is not None:
            algorithm.end_iteration(ctx)
        t2 = time.perf_counter()

        metrics = {"iteration": it, "step": run.state["global_step"], **stats, **batch.metrics, **rollout_metrics(ctx)}
        metrics.update(
            {
                "time/collect_s": collect_s,
                "time/rollout_s": ctx.rollout_s,
                "time/judge_s": ctx.judge.elapsed_s,
                "time/anchor_s": ctx.anchors.elapsed_s,
                "time/optimise_s": t2 - t1,
                "rows": batch.num_rows,
            }
        )
        if run.game_monitor is not None:
            game, run.state["game_policy_sum"] = run.game_monitor.metrics(run.state.get("game_policy_sum"), it)
            metrics.update(game)
        if run.eval_prompts and (it == cfg.num_iterations - 1 or (cfg.eval_every and (it + 1) % cfg.eval_every == 0)):
            metrics.update(evaluate(run))
        metrics["time/iteration_s"] = time.perf_counter() - t0
        run.commit_iteration(it, metrics)
        run.log(metrics)
    run.finish()
    return metrics


def collect(run: Run, it: int) -> tuple[Batch, float]:
    """The iteration's batch and the seconds its collect took (setup may have collected iteration 0 already:
    LoRA-GA's gradient estimate reads the first iteration's objective, and that batch is trained on, not redone)."""
    if run.prefetched is not None:
        batch_and_seconds, run.prefetched = run.prefetched, None
        return batch_and_seconds
    run.judge_records.clear()
    cfg = run.cfg
    idx = iteration_prompts(len(run.train_prompts), cfg.prompts_per_iteration, it, cfg.num_iterations, cfg.seed)
    prompts = [run.train_prompts[i] for i in idx]
    run.ctx.start_iteration(it, prompts)
    start = time.perf_counter()
    batch = run.algorithm.collect(run.ctx, prompts)
    return batch, time.perf_counter() - start


def steps_per_iteration(num_rows: int, cfg, world_size: int) -> int:
    global_batch = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * world_size
    return cfg.num_train_epochs * max(1, math.ceil(num_rows / global_batch))


def optimise(run: Run, batch: Batch) -> dict:
    """Epochs × shuffled minibatches of the algorithm's loss; one optimizer step per minibatch.

    A minibatch holds per_device_train_batch_size × gradient_accumulation_steps × world_size rows; each process
    takes every world_size-th row and accumulates over its micro-batches. Each row weighs the same: a micro-batch
    contributes sum(losses) / rows_in_minibatch (× world_size, since DDP/DeepSpeed average over processes).
    """
    cfg, backend = run.cfg, run.backend
    global_batch = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * run.world_size
    sums: dict[str, float] = defaultdict(float)
    count = 0
    grad_norms = []
    steps = steps_per_iteration(batch.num_rows, cfg, run.world_size)
    bar = tqdm(total=steps, desc=f"optimise (iteration {run.ctx.iteration})", disable=cfg.disable_tqdm, leave=False)
    backend.model.train()
    for epoch in range(cfg.num_train_epochs):
        gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "shuffle", run.ctx.iteration, epoch))
        order = torch.randperm(batch.num_rows, generator=gen).tolist()
        for start in range(0, batch.num_rows, global_batch):
            step_rows = order[start : start + global_batch]
            local = step_rows[run.rank :: run.world_size]
            micro = [
                local[i : i + cfg.per_device_train_batch_size]
                for i in range(0, len(local), cfg.per_device_train_batch_size)
            ]
            for k, rows in enumerate(micro):
                with backend.accumulation(is_last=k == len(micro) - 1):
                    losses, step_metrics = loss_on_rows(run.ctx, run.algorithm.loss, batch, rows)
                    backend.backward(losses.sum() * run.world_size / len(step_rows))
                for key, value in step_metrics.items():
                    sums[key] += float(value.detach().float().sum())
                count += len(rows)
            grad_norms.append(backend.step())
            run.scheduler.step()
            run.state["global_step"] += 1
            bar.update(1)
            run.maybe_log_step(grad_norms[-1], step_metrics)
    bar.close()
    out = {key: value / max(count, 1) for key, value in sums.items()}
    out["grad_norm"] = sum(grad_norms) / max(len(grad_norms), 1)
    out["lr"] = run.scheduler.get_last_lr()[0]
    return out


def rollout_metrics(ctx) -> dict:
    samples = [s for _, _, rb in ctx.rollouts for s in rb.samples]
    if not samples:
        return {}
    lengths = [len(s.response_ids) for s in samples]
    return {
        "rollout/samples": len(samples),
        "rollout/mean_length": sum(lengths) / len(lengths),
        "rollout/stop_fraction": sum(s.finish_reason == "stop" for s in samples) / len(samples),
        "rollout/mean_logp": sum(s.logp for s in samples) / len(samples),
    }


def evaluate(run: Run) -> dict[str, float]:
    """Win rate of the current policy against the initial one (or the fixed ``eval_baseline_outputs``) on the
    held-out prompts, under the run's judge, with its bootstrap interval and the outputs' length; with
    a reward judge also the mean reward of both (``eval/reward``, ``eval/initial_reward``: accuracy for a 0/1
    verifiable reward)."""
    current = run.sample_eval_responses(stream="eval")
    k = run.cfg.eval_samples_per_prompt
    prompts = [p.prompt for p in run.eval_prompts for _ in range(k)]
    refs = run.ctx.references(run.eval_prompts) if run.judge.needs_references else None
    refs = None if refs is None else [r for r in refs for _ in range(k)]
    recorder, run.judge.recorder = run.judge.recorder, None  # evaluation comparisons are not training data
    try:
        if isinstance(run.judge, RewardJudge):  # one reward per response; the baseline's are computed once
            rewards = run.judge.reward(prompts, current, refs)
            if run.initial_eval_rewards is None:
                run.initial_eval_rewards = run.judge.reward(prompts, run.initial_eval_responses, refs)
            probs = torch.sigmoid(rewards - run.initial_eval_rewards)
        else:
            probs = run.judge.preference(prompts, current, run.initial_eval_responses, refs)
        metrics = win_rate(probs.tolist(), seed=run.cfg.seed).as_metrics("eval/")
        metrics["eval/avg_length"] = sum(len(y) for y in current) / len(current)  # characters, as AlpacaEval
        if isinstance(run.judge, RewardJudge):
            metrics["eval/reward"] = float(rewards.mean())
            metrics["eval/initial_reward"] = float(run.initial_eval_rewards.mean())
    finally:
        run.judge.recorder = recorder
    return metrics
