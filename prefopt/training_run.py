"""One training run's objects and bookkeeping: what the loop reads, and how an iteration is committed.

``prefopt.build.build_run`` builds a :class:`Run`; the loop (``prefopt.loop``) drives it. Under several processes
every process holds its own Run; the main process alone writes the run directory, from data gathered to it.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from prefopt.adapters import save_adapter
from prefopt.algorithms import Algorithm
from prefopt.backend import Backend
from prefopt.config import TrainConfig
from prefopt.context import Context
from prefopt.data import PromptExample
from prefopt.eval.in_training import BenchmarkEval
from prefopt.game_metrics import GameMonitor
from prefopt.judges.base import PreferenceJudge
from prefopt.optimise import Optimisation
from prefopt.rollout.engine import derive_seed
from prefopt.rundir import RunDir, atomic_dir, commit_dir


def eval_responses(ctx: Context, prompts: list[PromptExample], stream: str) -> list[str]:
    """Responses of the current policy on this process's block of held-out ``prompts`` (fixed seeds: the same every
    evaluation, and the same however the prompts are split across processes)."""
    cfg = ctx.cfg
    seeds = [derive_seed(cfg.seed, stream, p.index) for p in prompts]
    batch = ctx.rollout.generate([p.prompt_ids for p in prompts], cfg.eval_samples_per_prompt, ctx.sampling, seeds)
    return [s.text for s in batch.samples]


@dataclass
class Run:
    """One training run's objects and bookkeeping, built once by ``build_run``.

    Attributes:
        config: the run's config as saved in config.yaml.
        state: progress (state.json: last completed iteration, optimizer steps, the game's policy sum, the last
            committed iteration's metrics before its evaluation), the dict ``optimisation`` counts steps in; with
            --resume the saved one.
        history: metrics.jsonl, one record per logged iteration (with --resume, the saved ones).
        judge_records: the judge's outputs of the current iteration (the judge appends to this list).
        local_eval_prompts: this process's contiguous block of ``eval_prompts``; initial_eval_responses: the
            baseline's responses on them (the initial policy's, or the fixed baseline outputs).
        prefetched: (batch, collect seconds) of iteration 0 when building collected it (LoRA-GA), else None.
    """

    cfg: TrainConfig
    config: dict
    algorithm: Algorithm
    ctx: Context
    backend: Backend
    optimisation: Optimisation
    tokenizer: PreTrainedTokenizerBase
    judge: PreferenceJudge
    rundir: RunDir
    train_prompts: list[PromptExample]
    eval_prompts: list[PromptExample]
    local_eval_prompts: list[PromptExample]
    initial_eval_responses: list[str]
    state: dict
    history: list[dict]
    judge_records: list[dict]
    game_monitor: GameMonitor | None = None
    prefetched: tuple | None = None
    initial_eval_rewards: torch.Tensor | None = None  # a reward judge's rewards of the baseline (computed once)
    benchmark: BenchmarkEval | None = None  # eval_benchmark: scored every eval_every iterations
    steps_written: int = field(init=False)  # step records already appended to steps.jsonl

    def __post_init__(self):
        self.steps_written = len(self.optimisation.step_history)

    @property
    def start_iteration(self) -> int:
        return self.state["last_completed_iteration"] + 1

    @property
    def step_history(self) -> list[dict]:
        """steps.jsonl: a record every ``logging_steps`` optimizer steps."""
        return self.optimisation.step_history

    def sample_eval_responses(self, stream: str) -> list[str]:
        """The current policy's responses on this process's held-out prompts."""
        return eval_responses(self.ctx, self.local_eval_prompts, stream)

    def commit_iteration(self, iteration: int, metrics: dict, evaluate: bool = False, save: bool = False) -> bool:
        """The iteration's data and step records every iteration; every save_every iterations, after the last and when
        ``save`` (a callback's request) also the checkpoint, then state.json: a resume continues after the last
        iteration that has all of them. Its metrics line comes after its evaluation (``evaluate``: whether it has
        one, ``append_metrics``); until then state.json keeps ``metrics``, so that a resume writes the line (and
        evaluates) when the run stopped before it did. Returns whether the iteration was checkpointed."""
        main = self.backend.is_main
        self.state["metrics"], self.state["evaluate"] = metrics, evaluate  # saved with any checkpoint of it
        with self.rundir.rollback_on_failure(iteration) if main else contextlib.nullcontext():
            self._commit_data(iteration)
            last = iteration == self.cfg.num_iterations - 1
            if not (save or last or (iteration + 1) % self.cfg.save_every == 0):
                return False
            self._save_checkpoint(iteration)
        return True

    def checkpoint(self, iteration: int) -> None:
        """Checkpoint a committed iteration that its commit did not (a callback asked afterwards, or its evaluation
        failed)."""
        with self.rundir.rollback_on_failure(iteration) if self.backend.is_main else contextlib.nullcontext():
            self._save_checkpoint(iteration)

    def append_metrics(self, metrics: dict) -> None:
        """The iteration's metrics line (its evaluation's metrics in it), appended to metrics.jsonl."""
        self.history.append(metrics)
        if self.backend.is_main:
            self.rundir.append_jsonl("metrics.jsonl", [metrics])

    def unlogged_iteration(self) -> tuple[dict, bool] | None:
        """A resumed run's last completed iteration when metrics.jsonl has no line for it (its evaluation failed, or
        the run stopped between its checkpoint and its line): its metrics as committed and whether it is evaluated;
        None otherwise."""
        last, record = self.state["last_completed_iteration"], self.state.get("metrics")
        if last < 0 or not record or record.get("iteration") != last:
            return None
        if any(r["iteration"] == last for r in self.history):
            return None
        return record, bool(self.state.get("evaluate"))

    def _commit_data(self, iteration: int) -> None:
        main = self.backend.is_main
        if main and not (self.rundir.path / "config.yaml").exists():
            self.rundir.create(self.config)  # only now: a run that fails before its first iteration leaves nothing
        rows = self.backend.gather_to_main((rollout_rows(self.ctx), self.judge_records))  # written once, by main
        if main:
            columns = {k: [v for samples, _ in rows for v in samples[k]] for k in rows[0][0]}
            self.rundir.save_iteration_data(iteration, columns, [r for _, judged in rows for r in judged])
            self.rundir.append_jsonl("steps.jsonl", self.step_history[self.steps_written :])
        self.steps_written = len(self.step_history)

    def _save_checkpoint(self, iteration: int) -> None:
        main = self.backend.is_main
        target = self.rundir.checkpoint_dir(iteration)
        staging = self.rundir.staging_dir(target, clear=main)
        self.backend.wait()
        self.backend.save_state(str(staging))  # every process writes its part (RNG states, ZeRO shards)
        if self.ctx.algo_state:  # snapshots are per process (a shard under ZeRO-3)
            torch.save(self.ctx.algo_state, staging / f"algo_state_{self.backend.rank}.pt")
        if self.ctx.prefetcher is not None:  # samples drawn ahead for later iterations: a resume trains on them
            torch.save(self.ctx.prefetcher.state(), staging / f"prefetched_{self.backend.rank}.pt")
        self.backend.wait()
        self.state["last_completed_iteration"] = iteration
        if main:  # the checkpoint keeps its own state too: --resume_from_iteration continues from it
            (staging / "state.json").write_text(json.dumps(self.state))
            commit_dir(staging, target)
            self.rundir.write_state(self.state)
            self.rundir.prune_checkpoints(self.cfg.save_total_limit)

    def log(self, metrics: dict) -> None:
        self.backend.log_metrics(metrics, step=metrics["iteration"])
        if self.backend.is_main:
            keys = [k for k in ("loss/total", "grad_norm", "rollout/mean_length", "eval/win_rate") if k in metrics]
            shown = "  ".join(f"{k}={metrics[k]:.4g}" for k in keys)
            print(
                f"[prefopt] iteration {metrics['iteration']}: {shown}  ({metrics['time/iteration_s']:.1f}s)",
                flush=True,
            )

    def save_final(self) -> None:
        """Save the final policy into OUTPUT_DIR/final (``save_policy``)."""
        save_policy(self.backend, self.tokenizer, self.rundir.path / "final")


def save_policy(backend: Backend, tokenizer, path) -> None:
    """The policy as ``save_pretrained`` writes it (safetensors; under LoRA the adapter alone, for the original base
    model, LoRA-GA's offset folded in) with its tokenizer, into ``path`` atomically (every process takes part: ZeRO-3
    gathers the weights)."""
    state_dict = backend.state_dict_for_saving()
    if backend.is_main:
        with atomic_dir(Path(path)) as tmp:
            if backend.has_adapter:
                save_adapter(backend.unwrapped, tmp, state_dict)
            else:
                backend.unwrapped.save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
    backend.wait()


def rollout_rows(ctx: Context) -> dict[str, list]:
    """Every sample of the iteration as dataset columns."""
    cols: dict[str, list] = {
        k: []
        for k in (
            "stream",
            "prompt_index",
            "sample_index",
            "prompt",
            "response",
            "prompt_ids",
            "response_ids",
            "token_logps",
            "finish_reason",
            "policy_iteration",
            "weights_version",
        )
    }
    for stream, prompts, batch in ctx.rollouts:
        for s in batch.samples:
            row = {
                "stream": stream,
                "prompt_index": prompts[s.prompt_index].index,
                "sample_index": s.sample_index,
                "prompt": json.dumps(prompts[s.prompt_index].prompt),
                "response": s.text,
                "prompt_ids": s.prompt_ids,
                "response_ids": s.response_ids,
                "token_logps": s.token_logps.tolist(),
                "finish_reason": s.finish_reason,
                "policy_iteration": batch.policy_iteration,
                "weights_version": -1 if batch.weights_version is None else batch.weights_version,
            }
            for k, v in row.items():
                cols[k].append(v)
    return cols
