"""THE online loop: collect → optimise → end_iteration → checkpoint → log, for every algorithm.

Read ``train`` top to bottom (``prefopt.build`` has built the run, validating config and data before any compute); each
iteration asks the algorithm for its batch (``collect``), optimises it (the algorithm's ``train_step`` if it has
one, else epochs × minibatches of its ``loss``), runs its ``end_iteration`` hook, then commits the iteration's
data, a checkpoint and one metrics line. Nothing here knows any algorithm by name.
"""

from __future__ import annotations

import time

import torch

from prefopt.batch import Batch
from prefopt.callbacks import Events
from prefopt.context import Context, collect_shard
from prefopt.eval import win_rate
from prefopt.judges.base import RewardJudge
from prefopt.training_run import Run


def train(run: Run, events: Events | None = None) -> dict:
    """Run (or resume) the built ``run``, reporting to ``events``' callbacks; returns the last iteration's metrics.
    The final policy is saved in OUTPUT_DIR/final; the backend stays up (``Backend.finish`` ends it)."""
    ctx, algorithm, cfg = run.ctx, run.algorithm, run.cfg
    events = events or Events()
    events.bind(run)
    run.optimisation.on_step = events.step_end
    events.call("on_train_begin")
    metrics: dict = run.history[-1] if run.history else {}
    for it in range(run.start_iteration, cfg.num_iterations):
        started = time.perf_counter()
        events.call("on_iteration_begin", iteration=it)
        batch, collect_s = collect(run, it)  # this process's rows; optimise gathers every process's
        optimise_start = time.perf_counter()
        stats = algorithm.train_step(ctx, batch) if algorithm.train_step else ctx.optimise(batch)
        if algorithm.end_iteration is not None:
            algorithm.end_iteration(ctx)
        times = {"time/collect_s": collect_s, "time/optimise_s": time.perf_counter() - optimise_start}
        events.agree(run.backend)
        metrics = iteration_metrics(run, it, batch, stats, times, started, events)
        stop = _end_iteration(run, it, metrics, events)
        if stop:
            break
    run.save_final()
    events.call("on_train_end")
    return metrics


def _end_iteration(run: Run, it: int, metrics: dict, events: Events) -> bool:
    """Commit, log and checkpoint iteration ``it`` as scheduled and as the callbacks ask; returns whether a
    callback asked training to stop."""
    saved = run.commit_iteration(it, metrics, save=events.control.should_save)
    run.log(metrics)
    events.log(metrics)
    events.state.epoch = float(it + 1)
    events.call("on_iteration_end", iteration=it)
    events.agree(run.backend)
    stop = events.control.should_training_stop
    if (stop or events.control.should_save) and not saved:
        run.checkpoint(it)
        saved = True
    if saved:
        events.control.should_save = False
        events.call("on_save", checkpoint=str(run.rundir.checkpoint_dir(it)))
    return stop


def collect(run: Run, it: int) -> tuple[Batch, float]:
    """This process's batch and the seconds its collect took (building the run may have collected iteration 0
    already: LoRA-GA's gradient estimate reads the first iteration's objective, and that batch is trained on)."""
    if run.prefetched is not None:
        batch_and_seconds, run.prefetched = run.prefetched, None
        return batch_and_seconds
    run.judge_records.clear()
    return collect_shard(run.ctx, run.algorithm, run.train_prompts, it)


def iteration_metrics(
    run: Run, it: int, batch: Batch, stats: dict, times: dict, started: float, events: Events | None = None
) -> dict:
    """The iteration's metrics record: the optimisation's, collect's, the rollouts', the timings (``times`` and those
    the services kept), the game metrics with a matrix-game judge and the win rate on evaluation iterations (and
    when a callback asked for one); ``started`` is the iteration's perf_counter start."""
    ctx, cfg = run.ctx, run.cfg
    metrics = {"iteration": it, "step": run.state["global_step"], **stats, **ctx.gather_metrics(batch)}
    # Every process's rows, and the tokens its scorer's forwards (training and anchor passes) scored and ran on.
    gathered = run.backend.all_gather_object((batch.num_rows, *ctx.scorer.take_counts()))
    rows, real, positions = (sum(g[k] for g in gathered) for k in range(3))
    metrics.update(rollout_metrics(ctx))
    metrics.update(
        {
            **times,
            "time/rollout_s": ctx.rollout_s,
            "time/judge_s": ctx.judge.elapsed_s,
            "time/anchor_s": ctx.anchors.elapsed_s,
            "rows": rows,
            "forward/tokens": real,
            "forward/padding_fraction": 1 - real / positions if positions else 0.0,
        }
    )
    if run.game_monitor is not None:
        game, run.state["game_policy_sum"] = run.game_monitor.metrics(run.state.get("game_policy_sum"), it)
        metrics.update(game)
    scheduled = it == cfg.num_iterations - 1 or (cfg.eval_every and (it + 1) % cfg.eval_every == 0)
    asked = events is not None and events.control.should_evaluate
    if run.eval_prompts and (scheduled or asked):
        results = evaluate(run)
        metrics.update(results)
        if events is not None:
            events.control.should_evaluate = False
            events.call("on_evaluate", metrics=results)
    if run.benchmark is not None and (scheduled or asked):  # eval_benchmark: AlpacaEval, Arena-Hard or MT-Bench
        metrics.update(run.benchmark(run))
    judge_counts = ctx.judge.take_metrics()  # an API judge's requests, tokens, cost (training and evaluation)
    if judge_counts:  # every process has the same judge: all of them gather, or none
        per_process = run.backend.all_gather_object(judge_counts)
        metrics.update({k: sum(c[k] for c in per_process) for k in judge_counts})
    metrics["time/iteration_s"] = time.perf_counter() - started
    return metrics


def rollout_metrics(ctx: Context) -> dict:
    """Statistics of every sample drawn this iteration, by every process: lengths, stops, log-probs, how many
    iterations old the policy that drew them was (``staleness``), the asynchronous calls' hits and misses, and the
    engine/trainer log-prob gap on the checked tokens."""
    samples = [(s, ctx.iteration - rb.policy_iteration) for _, _, rb in ctx.rollouts for s in rb.samples]
    gaps = torch.cat(ctx.logp_gaps) if ctx.logp_gaps else torch.zeros(0, dtype=torch.float64)
    prefetch = ctx.prefetcher.take_counts() if ctx.prefetcher is not None else {}
    local = {
        "n": len(samples),
        "length": sum(len(s.response_ids) for s, _ in samples),
        "stops": sum(s.finish_reason == "stop" for s, _ in samples),
        "logp": sum(s.logp for s, _ in samples),
        "staleness": sum(j for _, j in samples),
        "max_staleness": max((j for _, j in samples), default=0),
        "gap_sum": float(gaps.sum()),
        "gap_max": float(gaps.max()) if len(gaps) else 0.0,
        "gap_tokens": len(gaps),
        **prefetch,
    }
    parts = ctx.backend.all_gather_object(local)
    # The prefetcher's counts are calls per process (each process makes its own): the busiest process's.
    most = {"gap_max", "max_staleness", *prefetch}
    total = {k: (max if k in most else sum)(p[k] for p in parts) for k in local}
    n = total["n"]
    if not n:
        return {}
    out = {
        "rollout/samples": n,
        "rollout/mean_length": total["length"] / n,
        "rollout/stop_fraction": total["stops"] / n,
        "rollout/mean_logp": total["logp"] / n,
        "rollout/staleness_mean": total["staleness"] / n,
        "rollout/staleness_max": total["max_staleness"],
    }
    if total["gap_tokens"]:
        out["rollout/logp_gap_mean"] = total["gap_sum"] / total["gap_tokens"]
        out["rollout/logp_gap_max"] = total["gap_max"]
        out["rollout/logp_checked_tokens"] = total["gap_tokens"]
    for key in prefetch:
        out[f"rollout/prefetch_{key}"] = total[key]
    return out


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
