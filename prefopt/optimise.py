"""One iteration's optimisation: epochs × shuffled minibatches of the algorithm's loss, one optimizer step each.

``Context.optimise`` calls :meth:`Optimisation.optimise`; the loop does once per iteration, a two-phase
``train_step`` (EGPO, Nash-MP) twice. The schedule's length is fixed by the first iteration's data.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from prefopt.algorithms import Algorithm
from prefopt.backend import Backend
from prefopt.batch import Batch
from prefopt.config import TrainConfig
from prefopt.objective import loss_on_rows
from prefopt.optim import start_schedule
from prefopt.rollout.engine import derive_seed

if TYPE_CHECKING:
    from prefopt.context import Context


def fresh_state() -> dict:
    """A run's progress before its first iteration (state.json; a resume replaces it with the saved one)."""
    return {"last_completed_iteration": -1, "global_step": 0, "steps_per_iteration": 0}


@dataclass
class Optimisation:
    """Drives the backend's optimizer over a batch's rows and keeps the run's step count and per-step records.

    Attributes:
        state: the run's progress (``global_step``, ``steps_per_iteration``), the same dict the Run saves.
        step_history: steps.jsonl records, one every ``logging_steps`` optimizer steps.
        on_step: called after every optimizer step with its steps.jsonl record (None on steps without one): the
            callbacks' step event.
    """

    cfg: TrainConfig
    backend: Backend
    algorithm: Algorithm
    state: dict = field(default_factory=fresh_state)
    step_history: list[dict] = field(default_factory=list)
    on_step: Callable[[dict | None], None] | None = None

    def steps_per_iteration(self, num_rows: int) -> int:
        """Optimizer steps of one optimisation of ``num_rows`` rows (every process's)."""
        return self.cfg.num_train_epochs * max(1, math.ceil(num_rows / self.global_batch))

    @property
    def global_batch(self) -> int:
        cfg = self.cfg
        return cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * self.backend.world_size

    def optimise(self, ctx: Context, local_batch: Batch) -> dict:
        """Epochs × shuffled minibatches of the algorithm's loss over every process's rows; one optimizer step per
        minibatch. Returns the loss metrics' means, the mean gradient norm and the learning rate.

        The processes' batches are gathered (in rank order: with contiguous prompt blocks, the rows of a one-process
        run), so every process shuffles the same rows. A minibatch holds per_device_train_batch_size ×
        gradient_accumulation_steps × world_size rows; each process takes every world_size-th row and accumulates
        over its micro-batches. Each row weighs the same (or its ``Batch.weights()`` entry, mean 1): a micro-batch
        contributes sum(weight · loss) / rows_in_minibatch (× world_size, since DDP/DeepSpeed average over
        processes). Every process runs as many micro-batches as the busiest one (a spare one on a repeated row with
        weight 0), so DeepSpeed's collectives stay in step.
        """
        cfg, backend = self.cfg, self.backend
        batch = Batch.concat(backend.all_gather_object(local_batch))
        if self.state["steps_per_iteration"] == 0:  # the first iteration's data fixes the schedule's length
            self.state["steps_per_iteration"] = self.steps_per_iteration(batch.num_rows) * self.algorithm.phases
            start_schedule(backend.scheduler, self.state["steps_per_iteration"] * cfg.num_iterations)
        weights = batch.weights()  # [R], mean 1
        totals = _MetricSums()  # the iteration's loss-metric sums over this process's rows
        grad_norms = []
        bar = tqdm(total=self.steps_per_iteration(batch.num_rows), desc=f"optimise (iteration {ctx.iteration})",
                   disable=cfg.disable_tqdm, leave=False)  # fmt: skip
        backend.model.train()
        for epoch in range(cfg.num_train_epochs):
            gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "shuffle", ctx.iteration, epoch))
            order = torch.randperm(batch.num_rows, generator=gen).tolist()
            for start in range(0, batch.num_rows, self.global_batch):
                step = self._step(ctx, batch, weights, order[start : start + self.global_batch])
                grad_norms.append(backend.step())
                backend.scheduler.step()
                self.state["global_step"] += 1
                bar.update(1)
                record = None
                if cfg.logging_steps and self.state["global_step"] % cfg.logging_steps == 0:
                    record = self._log_step(grad_norms[-1], step.means(backend))
                totals.add(step)
                if self.on_step is not None:
                    self.on_step(record)
        bar.close()
        out = totals.means(backend)
        out["grad_norm"] = sum(grad_norms) / max(len(grad_norms), 1)
        out["lr"] = backend.scheduler.get_last_lr()[0]
        return out

    def _step(self, ctx: Context, batch: Batch, weights: torch.Tensor, step_rows: list[int]) -> _MetricSums:
        """Forward and backward of one minibatch's rows, accumulated over this process's micro-batches."""
        backend = self.backend
        cut = self._cutter(ctx, batch)
        micro = _micro_batches(step_rows, backend.rank, backend.world_size, lambda rows: cut(rows)[0])
        sums = _MetricSums()
        with ctx.scorer.row_width(cut(step_rows[backend.rank :: backend.world_size])[1]):
            for k, (rows, weight) in enumerate(micro):
                with backend.accumulation(is_last=k == len(micro) - 1):
                    losses, metrics = loss_on_rows(ctx, self.algorithm.loss, batch, rows)
                    w = weights[rows]
                    backend.backward((losses * w.to(losses)).sum() * (weight * backend.world_size / len(step_rows)))
                if weight:
                    sums.add_rows(metrics, w)
        return sums

    def _cutter(self, ctx: Context, batch: Batch) -> Callable[[list[int]], tuple[list[list[int]], int]]:
        """How a process's rows of a minibatch become micro-batches, and the packed rows' width they were planned
        with (0: none): per_device_train_batch_size rows each, or with ``max_tokens_per_micro_batch`` as many as
        the policy's forward fits in that budget (``Scorer.bins``)."""
        budget, size = self.cfg.max_tokens_per_micro_batch, self.cfg.per_device_train_batch_size
        if budget is None:
            return lambda rows: ([rows[i : i + size] for i in range(0, len(rows), size)], 0)
        s = batch.seqs_per_row
        lengths = [len(p) + len(r) for p, r in zip(batch.prompt_ids, batch.response_ids)]

        def cut(rows: list[int]) -> tuple[list[list[int]], int]:
            bins, width = ctx.scorer.bins(self.backend.model, [lengths[r * s : (r + 1) * s] for r in rows], budget)
            return [[rows[i] for i in b] for b in bins], width

        return cut

    def _log_step(self, grad_norm: float, loss_metrics: dict[str, float]) -> dict:
        """Keep the step's record (its loss metrics are means over the minibatch's rows on every process); the Run
        writes it with the iteration's commit."""
        lr = self.backend.scheduler.get_last_lr()[0]
        record = {"step": self.state["global_step"], "grad_norm": grad_norm, "lr": lr} | loss_metrics
        self.step_history.append(record)
        return record


class _MetricSums:
    """Weighted sums of per-row loss metrics and the total row weight they are over, on one process."""

    def __init__(self):
        self.sums: dict[str, float] = defaultdict(float)
        self.weight = 0.0

    def add_rows(self, metrics: dict[str, torch.Tensor], w: torch.Tensor) -> None:
        for key, value in metrics.items():  # summed where the value is: one scalar leaves the device
            weight = w.to(value.device, torch.float64).view(-1, *[1] * (value.dim() - 1))
            self.sums[key] += float((value.detach().double() * weight).sum())
        self.weight += float(w.sum())

    def add(self, other: _MetricSums) -> None:
        for key, value in other.sums.items():
            self.sums[key] += value
        self.weight += other.weight

    def means(self, backend: Backend) -> dict[str, float]:
        """Each metric's mean over every process's rows (collective)."""
        parts = backend.all_gather_object((dict(self.sums), self.weight))
        total = sum(c for _, c in parts)
        keys = dict.fromkeys(k for s, _ in parts for k in s)  # a process that had no rows has no sums
        return {key: sum(s.get(key, 0.0) for s, _ in parts) / (total or 1) for key in keys}


def _micro_batches(
    step_rows: list[int], rank: int, world: int, cut: Callable[[list[int]], list[list[int]]]
) -> list[tuple[list[int], float]]:
    """(rows, weight) of this process's micro-batches of one minibatch: its every world-th row, cut into
    micro-batches by ``cut``, padded to the busiest process's count with weight-0 repeats of the minibatch's first
    row (every process has the minibatch, so each counts the others' micro-batches itself)."""
    counts = [len(cut(step_rows[r::world])) for r in range(world)]
    micro = [(rows, 1.0) for rows in cut(step_rows[rank::world])]
    return micro + [(step_rows[:1], 0.0)] * (max(counts) - len(micro))
