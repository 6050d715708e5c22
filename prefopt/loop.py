"""THE online loop: collect → optimise → end_iteration → commit → evaluate → log, for every algorithm.

Read ``train`` top to bottom (``prefopt.build`` has built the run, validating config and data before any compute); each
iteration asks the algorithm for its batch (``collect``), optimises it (the algorithm's ``train_step`` if it has
one, else epochs × minibatches of its ``loss``), runs its ``end_iteration`` hook, then commits the iteration's
data and its checkpoint (as scheduled; after the last iteration also ``final/``), and only then evaluates it (when
due) and writes its metrics line, the evaluation's metrics in it. An evaluation that fails loses no training: the
iteration is checkpointed (whatever ``save_every`` says), the run stops with one line that says where the policy is
and that ``--resume`` runs the evaluation again (``Run.unlogged_iteration``) before going on. Nothing here knows
any algorithm by name.
"""

from __future__ import annotations

import contextlib
import random
import sys
import time

import numpy as np
import torch

from prefopt.batch import Batch
from prefopt.callbacks import Events
from prefopt.context import Context, collect_shard
from prefopt.errors import PrefoptError, StorageError, describe_storage_error, first_line, storage_errors
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
    if run.start_iteration >= cfg.num_iterations:  # a finished run resumed: final/ (it may have stopped before it)
        run.save_final()
    unlogged = run.unlogged_iteration()  # resumed after its evaluation failed (or was killed): evaluate it first
    if unlogged is not None:
        metrics = evaluate_and_log(run, *unlogged, events)
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
        metrics = iteration_metrics(run, it, batch, stats, times, started)
        metrics, stop = _end_iteration(run, it, metrics, events)
        if stop:
            if it < cfg.num_iterations - 1:  # after the last one, final/ is written already
                run.save_final()
            break
    events.call("on_train_end")
    return metrics


def _end_iteration(run: Run, it: int, metrics: dict, events: Events) -> tuple[dict, bool]:
    """Commit iteration ``it`` (its data; its checkpoint as scheduled and as the callbacks ask; after the last
    iteration ``final/``), then evaluate it when due and log it; returns its metrics line and whether a callback
    asked training to stop."""
    evaluate = evaluation_due(run, it, events)
    saved = run.commit_iteration(it, metrics, evaluate, save=events.control.should_save)
    if it == run.cfg.num_iterations - 1:
        run.save_final()
    metrics = evaluate_and_log(run, metrics, evaluate, events, checkpointed=saved)
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
    return metrics, stop


def evaluation_due(run: Run, it: int, events: Events | None = None) -> bool:
    """Whether iteration ``it`` is evaluated: every ``eval_every`` iterations, after the last and when a callback
    asked, if there is something to evaluate (held-out prompts, an ``eval_benchmark``)."""
    cfg = run.cfg
    scheduled = it == cfg.num_iterations - 1 or bool(cfg.eval_every and (it + 1) % cfg.eval_every == 0)
    asked = events is not None and events.control.should_evaluate
    return (scheduled or asked) and bool(run.eval_prompts or run.benchmark is not None)


def evaluate_and_log(run: Run, record: dict, evaluate: bool, events: Events, checkpointed: bool = True) -> dict:
    """The committed iteration of ``record`` (its metrics so far) evaluated when ``evaluate``, then its metrics line
    written (metrics.jsonl, the trackers, the callbacks' ``on_log``); returns that line. When the evaluation or the
    line fails, the iteration is checkpointed if it was not (``checkpointed``) and the run stops with one line
    saying where the policy is and how to evaluate it again (``evaluation_failed``)."""
    metrics = dict(record)
    try:
        if evaluate:
            started = time.perf_counter()
            metrics.update(evaluation(run, events))
            for key, count in judge_counts(run).items():  # the evaluation's calls join the iteration's
                metrics[key] = metrics.get(key, 0) + count
            metrics["time/iteration_s"] = record["time/iteration_s"] + time.perf_counter() - started
        run.append_metrics(metrics)
    except Exception as err:
        if not checkpointed:
            run.checkpoint(record["iteration"])  # the training stays: --resume evaluates this iteration
        failure = evaluation_failed(run, record["iteration"], evaluate, err)
        if failure is err:
            raise
        raise failure from err
    run.log(metrics)
    events.log(metrics)
    return metrics


def evaluation(run: Run, events: Events) -> dict:
    """The evaluation's metrics: the win rate on the held-out prompts (``evaluate``, reported to the callbacks'
    ``on_evaluate``) and the ``eval_benchmark``'s scores. The global random states are put back afterwards, so that
    training goes on (and a resume from the checkpoint written before the evaluation continues) with the same random
    numbers as a run that does not evaluate."""
    metrics: dict = {}
    with _random_states_kept(run.backend.device):
        if run.eval_prompts:
            metrics.update(evaluate(run))
            events.call("on_evaluate", metrics=dict(metrics))
        if run.benchmark is not None:  # eval_benchmark: AlpacaEval, Arena-Hard or MT-Bench
            metrics.update(run.benchmark(run))
    events.control.should_evaluate = False
    return metrics


def evaluation_failed(run: Run, it: int, evaluated: bool, err: Exception) -> Exception:
    """The one-line error of an evaluation (or metrics line) that failed after iteration ``it`` was saved: what
    failed, where the policy is, and how to run the evaluation again. A bug (not a user's error) keeps its
    traceback, with the same words printed first."""
    last = it == run.cfg.num_iterations - 1
    what = f"evaluation of iteration {it}" if evaluated else f"writing iteration {it}'s metrics line"
    saved = f"'{run.rundir.path / 'final'}' and checkpoint" if last else "checkpoint"
    line = (
        f"{what} failed: {{}}; the trained policy is saved in {saved} '{run.rundir.checkpoint_dir(it)}': once the "
        "cause is fixed, run the same command with --resume (Python: train(resume_from_checkpoint=True)) to "
        + ("evaluate it" if evaluated else "log it")
        + ("" if last else " and go on training")
    )
    if isinstance(err, storage_errors()):
        return StorageError(line.format(describe_storage_error(err)))
    if isinstance(err, PrefoptError):  # the same kind (its class of prefopt.errors: JudgeError, DataError, ...)
        kind = next(k for k in type(err).__mro__ if k.__module__ == PrefoptError.__module__)
        return kind(line.format(first_line(err)))
    if run.backend.is_main:
        print(f"prefopt: {line.format(f'{type(err).__name__}: {first_line(err)}')}", file=sys.stderr, flush=True)
    return err


@contextlib.contextmanager
def _random_states_kept(device: torch.device):
    """Put back the global random states (Python, NumPy, torch, the run's CUDA device) on leaving the block."""
    states = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        try:
            yield
        finally:
            random.setstate(states[0])
            np.random.set_state(states[1])


def collect(run: Run, it: int) -> tuple[Batch, float]:
    """This process's batch and the seconds its collect took (building the run may have collected iteration 0
    already: LoRA-GA's gradient estimate reads the first iteration's objective, and that batch is trained on)."""
    if run.prefetched is not None:
        batch_and_seconds, run.prefetched = run.prefetched, None
        return batch_and_seconds
    run.judge_records.clear()
    return collect_shard(run.ctx, run.algorithm, run.train_prompts, it)


def iteration_metrics(run: Run, it: int, batch: Batch, stats: dict, times: dict, started: float) -> dict:
    """The iteration's metrics record before its evaluation: the optimisation's, collect's, the rollouts', the
    timings (``times`` and those the services kept), the game metrics with a matrix-game judge and the judge's
    counters; ``started`` is the iteration's perf_counter start."""
    ctx = run.ctx
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
    metrics.update(judge_counts(run))
    metrics["time/iteration_s"] = time.perf_counter() - started
    return metrics


def judge_counts(run: Run) -> dict:
    """An API judge's requests, tokens and cost since the last call, summed over processes (none for a local
    judge); every process has the same judge: all of them gather, or none."""
    counts = run.ctx.judge.take_metrics()
    if not counts:
        return {}
    per_process = run.backend.all_gather_object(counts)
    return {k: sum(c[k] for c in per_process) for k in counts}


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
    # The references as training passes them (Context.references: the rows' answer_column, whenever it is set),
    # whether the judge requires them or only takes them; a fixed baseline's outputs file holds instructions only.
    refs = None if run.cfg.eval_baseline_outputs else run.ctx.references(local_prompts)
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
