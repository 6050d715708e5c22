"""THE online loop: collect → optimise → end_iteration → checkpoint → log, for every algorithm.

Read ``train`` top to bottom: ``build_run`` builds everything and validates config and data before any compute; each
iteration asks the algorithm for its batch (``collect``), optimises it (the algorithm's ``train_step`` if it has
one, else epochs × minibatches of its ``loss``), runs its ``end_iteration`` hook, then commits the iteration's
data, a checkpoint and one metrics line. Nothing here knows any algorithm by name.
"""

from __future__ import annotations

import time

import torch

from prefopt.batch import Batch
from prefopt.build import build_run
from prefopt.config import TrainConfig
from prefopt.context import Context, collect_shard
from prefopt.eval import win_rate
from prefopt.judges.base import RewardJudge
from prefopt.training_run import Run


def train(algorithm_name: str, cfg: TrainConfig, algo_cfg) -> dict:
    """Run (or resume) training and return the last iteration's metrics."""
    run = build_run(algorithm_name, cfg, algo_cfg)
    ctx, algorithm = run.ctx, run.algorithm
    metrics: dict = run.history[-1] if run.history else {}
    for it in range(run.start_iteration, cfg.num_iterations):
        started = time.perf_counter()
        batch, collect_s = collect(run, it)  # this process's rows; optimise gathers every process's
        optimise_start = time.perf_counter()
        stats = algorithm.train_step(ctx, batch) if algorithm.train_step else ctx.optimise(batch)
        if algorithm.end_iteration is not None:
            algorithm.end_iteration(ctx)
        times = {"time/collect_s": collect_s, "time/optimise_s": time.perf_counter() - optimise_start}
        metrics = iteration_metrics(run, it, batch, stats, times, started)
        run.commit_iteration(it, metrics)
        run.log(metrics)
    run.finish()
    return metrics


def collect(run: Run, it: int) -> tuple[Batch, float]:
    """This process's batch and the seconds its collect took (building the run may have collected iteration 0
    already: LoRA-GA's gradient estimate reads the first iteration's objective, and that batch is trained on)."""
    if run.prefetched is not None:
        batch_and_seconds, run.prefetched = run.prefetched, None
        return batch_and_seconds
    run.judge_records.clear()
    return collect_shard(run.ctx, run.algorithm, run.train_prompts, it)


def iteration_metrics(run: Run, it: int, batch: Batch, stats: dict, times: dict, started: float) -> dict:
    """The iteration's metrics record: the optimisation's, collect's, the rollouts', the timings (``times`` and those
    the services kept), the game metrics with a matrix-game judge and the win rate on evaluation iterations;
    ``started`` is the iteration's perf_counter start."""
    ctx, cfg = run.ctx, run.cfg
    metrics = {"iteration": it, "step": run.state["global_step"], **stats, **ctx.gather_metrics(batch)}
    metrics.update(rollout_metrics(ctx))
    metrics.update(
        {
            **times,
            "time/rollout_s": ctx.rollout_s,
            "time/judge_s": ctx.judge.elapsed_s,
            "time/anchor_s": ctx.anchors.elapsed_s,
            "rows": sum(run.backend.all_gather_object(batch.num_rows)),
        }
    )
    if run.game_monitor is not None:
        game, run.state["game_policy_sum"] = run.game_monitor.metrics(run.state.get("game_policy_sum"), it)
        metrics.update(game)
    if run.eval_prompts and (it == cfg.num_iterations - 1 or (cfg.eval_every and (it + 1) % cfg.eval_every == 0)):
        metrics.update(evaluate(run))
    metrics["time/iteration_s"] = time.perf_counter() - started
    return metrics


def rollout_metrics(ctx: Context) -> dict:
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
