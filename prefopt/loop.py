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
from prefopt.build import build_run
from prefopt.context import collect_shard
from prefopt.eval import win_rate
from prefopt.judges.base import RewardJudge
from prefopt.objective import loss_on_rows
from prefopt.optim import start_schedule
from prefopt.rollout.engine import derive_seed
from prefopt.training_run import Run


def train(algorithm_name: str, cfg, algo_cfg) -> dict:
    """Run (or resume) training and return the last iteration's metrics."""
    run: Run = build_run(algorithm_name, cfg, algo_cfg)
    ctx, algorithm = run.ctx, run.algorithm
    ctx.optimise = functools.partial(optimise, run)
    metrics: dict = run.history[-1] if run.history else {}
    for it in range(run.start_iteration, cfg.num_iterations):
        t0 = time.perf_counter()
        batch, collect_s = collect(run, it)  # this process's rows; optimise gathers every process's
        t1 = time.perf_counter()
        stats = algorithm.train_step(ctx, batch) if algorithm.train_step else ctx.optimise(batch)
        if algorithm.end_iteration is not None:
            algorithm.end_iteration(ctx)
        t2 = time.perf_counter()

        metrics = {"iteration": it, "step": run.state["global_step"], **stats, **ctx.gather_metrics(batch)}
        metrics.update(rollout_metrics(ctx))
        metrics.update(
            {
                "time/collect_s": collect_s,
                "time/rollout_s": ctx.rollout_s,
                "time/judge_s": ctx.judge.elapsed_s,
                "time/anchor_s": ctx.anchors.elapsed_s,
                "time/optimise_s": t2 - t1,
                "rows": sum(run.backend.all_gather_object(batch.num_rows)),
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
    """This process's batch and the seconds its collect took (setup may have collected iteration 0 already:
    LoRA-GA's gradient estimate reads the first iteration's objective, and that batch is trained on, not redone)."""
    if run.prefetched is not None:
        batch_and_seconds, run.prefetched = run.prefetched, None
        return batch_and_seconds
    run.judge_records.clear()
    return collect_shard(run.ctx, run.algorithm, run.train_prompts, it)


def steps_per_iteration(num_rows: int, cfg, world_size: int) -> int:
    global_batch = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * world_size
    return cfg.num_train_epochs * max(1, math.ceil(num_rows / global_batch))


def optimise(run: Run, local_batch: Batch) -> dict:
    """Epochs × shuffled minibatches of the algorithm's loss over every process's rows; one optimizer step per
    minibatch.

    The processes' batches are gathered (in rank order: with contiguous prompt blocks, the rows of a one-process
    run), so every process shuffles the same rows. A minibatch holds per_device_train_batch_size ×
    gradient_accumulation_steps × world_size rows; each process takes every world_size-th row and accumulates over
    its micro-batches. Each row weighs the same (or its ``Batch.weights()`` entry, mean 1): a micro-batch contributes
    sum(weight · loss) / rows_in_minibatch (× world_size, since DDP/DeepSpeed average over processes). Every process
    runs as many micro-batches as the busiest one (a spare one on a repeated row with weight 0), so DeepSpeed's
    collectives stay in step.
    """
    cfg, backend = run.cfg, run.backend
    batch = Batch.concat(backend.all_gather_object(local_batch))
    row_weights = batch.weights()  # [R], mean 1
    if run.state["steps_per_iteration"] == 0:  # the first iteration's data fixes the schedule's length
        steps = steps_per_iteration(batch.num_rows, cfg, run.world_size) * run.algorithm.phases
        run.state["steps_per_iteration"] = steps
        start_schedule(run.scheduler, run.state["steps_per_iteration"] * cfg.num_iterations)
    global_batch = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * run.world_size
    sums: dict[str, float] = defaultdict(float)  # the iteration's loss-metric sums over this process's rows
    step_sums: dict[str, float] = defaultdict(float)  # the same over the current step's rows
    count = step_count = 0
    grad_norms = []
    steps = steps_per_iteration(batch.num_rows, cfg, run.world_size)
    bar = tqdm(total=steps, desc=f"optimise (iteration {run.ctx.iteration})", disable=cfg.disable_tqdm, leave=False)
    backend.model.train()
    for epoch in range(cfg.num_train_epochs):
        gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "shuffle", run.ctx.iteration, epoch))
        order = torch.randperm(batch.num_rows, generator=gen).tolist()
        for start in range(0, batch.num_rows, global_batch):
            step_rows = order[start : start + global_batch]
            micro = _micro_batches(step_rows, run.rank, run.world_size, cfg.per_device_train_batch_size)
            for k, (rows, weight) in enumerate(micro):
                with backend.accumulation(is_last=k == len(micro) - 1):
                    scale = weight * run.world_size / len(step_rows)
                    step_count += _backward_micro_batch(run, batch, rows, row_weights[rows], scale, step_sums)
            grad_norms.append(backend.step())
            run.scheduler.step()
            run.state["global_step"] += 1
            bar.update(1)
            if run.logs_step():
                run.log_step(grad_norms[-1], mean_over_processes(backend, step_sums, step_count))
            for key, value in step_sums.items():
                sums[key] += value
            count += step_count
            step_sums, step_count = defaultdict(float), 0
    bar.close()
    out = mean_over_processes(backend, sums, count)
    out["grad_norm"] = sum(grad_norms) / max(len(grad_norms), 1)
    out["lr"] = run.scheduler.get_last_lr()[0]
    return out


def _backward_micro_batch(run: Run, batch: Batch, rows: list[int], w: torch.Tensor, scale: float, sums) -> float:
    """Backward of scale · Σ w · loss over the rows; a counted micro-batch (scale > 0) adds its loss metrics'
    weighted sums to ``sums`` and returns its total weight (0 for a padding one)."""
    losses, step_metrics = loss_on_rows(run.ctx, run.algorithm.loss, batch, rows)
    run.backend.backward((losses * w.to(losses)).sum() * scale)
    if not scale:
        return 0.0
    for key, value in step_metrics.items():
        sums[key] += float((value.detach().double().cpu() * w.view(-1, *[1] * (value.dim() - 1))).sum())
    return float(w.sum())


def mean_over_processes(backend, sums: dict[str, float], count: float) -> dict[str, float]:
    """Each metric's mean over every process's rows, from each process's sums and row count (its total row weight:
    a count, or a sum of ``Batch.weights()``; collective)."""
    parts = backend.all_gather_object((dict(sums), count))
    total = sum(c for _, c in parts)
    keys = dict.fromkeys(k for s, _ in parts for k in s)  # a process that had no rows has no sums
    return {key: sum(s.get(key, 0.0) for s, _ in parts) / (total or 1) for key in keys}


def _micro_batches(step_rows: list[int], rank: int, world: int, size: int) -> list[tuple[list[int], float]]:
    """(rows, weight) of this process's micro-batches of one minibatch: its every world-th row, cut into micro-batches,
    padded to the busiest process's count with weight-0 repeats of the minibatch's first row."""
    local = step_rows[rank::world]
    micro = [(local[i : i + size], 1.0) for i in range(0, len(local), size)]
    busiest = math.ceil(math.ceil(len(step_rows) / world) / size)  # rank 0 holds the most rows
    return micro + [(step_rows[:1], 0.0)] * (busiest - len(micro))


def rollout_metrics(ctx) -> dict:
    """Statistics of every sample drawn this iteration, by every process."""
    samples = [s for _, _, rb in ctx.rollouts for s in rb.samples]
    local = (len(samples), sum(len(s.response_ids) for s in samples), sum(s.finish_reason == "stop" for s in samples))
    parts = ctx.backend.all_gather_object((*local, sum(s.logp for s in samples)))
    n, length, stops, logp = (sum(column) for column in zip(*parts))
    if not n:
        return {}
    return {
        "rollout/samples": n,
        "rollout/mean_length": length / n,
        "rollout/stop_fraction": stops / n,
        "rollout/mean_logp": logp / n,
    }


def evaluate(run: Run) -> dict[str, float]:
    """Win rate of the current policy against the initial one (or the fixed ``eval_baseline_outputs``) on the
    held-out prompts, under the run's judge, with its bootstrap interval and the outputs' length; with
    a reward judge also the mean reward of both (``eval/reward``, ``eval/initial_reward``: accuracy for a 0/1
    verifiable reward)."""
    current = run.sample_eval_responses(stream="eval")  # this process's block of the held-out prompts
    k, local_prompts = run.cfg.eval_samples_per_prompt, run.local_eval_prompts
    prompts = [p.prompt for p in local_prompts for _ in range(k)]
    refs = run.ctx.references(local_prompts) if run.judge.needs_references else None
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
        gather = run.ctx.gather
        metrics = win_rate(gather(probs.tolist()), seed=run.cfg.seed).as_metrics("eval/")
        lengths = gather([len(y) for y in current])
        metrics["eval/avg_length"] = sum(lengths) / len(lengths)  # characters, as AlpacaEval
        if isinstance(run.judge, RewardJudge):
            metrics["eval/reward"] = _mean(gather(rewards.tolist()))
            metrics["eval/initial_reward"] = _mean(gather(run.initial_eval_rewards.tolist()))
    finally:
        run.judge.recorder = recorder
    return metrics


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)
