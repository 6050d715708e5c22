"""Asynchronous rollouts: the next iterations' samples drawn on the rollout workers while this iteration trains.

An algorithm's ``collect`` asks for samples through ``ctx.sample(prompts, n, stream, **overrides)``. Which prompts an
iteration gets is fixed in advance (``prefopt.data.iteration_prompts``) and each sample's seed depends only on (run
seed, stream, iteration, dataset row), so iteration t + j's requests are known before it starts: the calls its
collect makes are those iteration t's collect made (same streams, sample counts and sampling parameters) on
iteration t + j's prompts. With ``max_staleness: k``, once iteration t's collect has returned, the
:class:`Prefetcher` submits iterations t + 1 .. t + k's predicted calls to the workers on the weights of the moment
(the policy of iteration t) and the trainer goes on optimising. When iteration t + j's collect makes a call that
matches a submitted one exactly (stream, prompts, counts, parameters), it takes those samples, drawn by the policy
of iteration t: staleness j ≤ k. A call that matches nothing (a first iteration, per-prompt counts decided by the
data such as GVM's allocation, a call made inside ``train_step`` with that phase's weights) is sampled then, on the
current weights (staleness 0), so the predicted calls are an optimisation and never change what an algorithm asks.

``max_staleness: 0`` submits nothing ahead: every call is sampled on the current weights, as in the synchronous
loop. A checkpoint keeps the samples already drawn for later iterations (:meth:`Prefetcher.state`), so a resumed run
trains on the same samples as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from prefopt.data import PromptExample
from prefopt.rollout.engine import RolloutBatch, SamplingParams, derive_seed, pack_samples, unpack_samples


@dataclass(frozen=True)
class SampleRequest:
    """One ``ctx.sample`` call: its stream, its prompts' dataset rows, the samples per prompt and the parameters."""

    stream: str
    rows: tuple[int, ...]
    n: int | tuple[int, ...]
    params: SamplingParams


def sample_seeds(run_seed: int, stream: str, iteration: int, prompts: list[PromptExample]) -> list[int]:
    """Each prompt's seed for ``stream`` in ``iteration`` (its samples' streams derive from it)."""
    return [derive_seed(run_seed, stream, iteration, p.index) for p in prompts]


class _Drawn:
    """Samples already drawn (restored from a checkpoint): a pending rollout that is already complete."""

    def __init__(self, batch: RolloutBatch):
        self.batch = batch

    def result(self) -> RolloutBatch:
        return self.batch


class Prefetcher:
    """The calls submitted ahead of their iteration, and the shape of the calls each collect makes.

    Args:
        engine: a rollout engine with ``submit`` (the Ray workers' engine).
        max_staleness: k, how many iterations ahead calls are submitted.
        run_seed: the run's seed (each sample's seed derives from it).
    """

    def __init__(self, engine, max_staleness: int, run_seed: int):
        self.engine, self.max_staleness, self.run_seed = engine, max_staleness, run_seed
        self.pending: dict[tuple[int, SampleRequest], tuple[object, int]] = {}  # (iteration, request) → (rollout, s)
        self.shapes: list[tuple[str, int, SamplingParams]] = []  # the current collect's predictable calls
        self.recording = False
        self.counts = {"hits": 0, "misses": 0, "unused": 0}

    def begin_collect(self, iteration: int) -> None:
        """Iteration ``iteration``'s collect starts: submitted calls for earlier iterations are dropped (unused)."""
        for key in [key for key in self.pending if key[0] < iteration]:
            del self.pending[key]
            self.counts["unused"] += 1
        self.shapes, self.recording = [], True

    def end_collect(self) -> None:
        self.recording = False

    def take(self, iteration: int, request: SampleRequest, block: list[PromptExample]) -> RolloutBatch | None:
        """The samples submitted ahead for this call (with ``policy_iteration`` set), or None; a collect's call on
        this process's whole block with one count for every prompt is remembered as the shape to predict."""
        if self.recording and isinstance(request.n, int) and request.rows == tuple(p.index for p in block):
            self.shapes.append((request.stream, request.n, request.params))
        entry = self.pending.pop((iteration, request), None)
        if entry is None:
            self.counts["misses"] += 1
            return None
        self.counts["hits"] += 1
        pending, policy_iteration = entry
        batch = pending.result()
        batch.policy_iteration = policy_iteration
        return batch

    def submit_ahead(
        self, iteration: int, last_iteration: int, block_of: Callable[[int], list[PromptExample]]
    ) -> None:
        """After iteration ``iteration``'s collect: submit the predicted calls of iterations ``iteration`` + 1 ..
        ``iteration`` + k (up to ``last_iteration``) not submitted yet; ``block_of(it)`` is this process's prompts of
        iteration it."""
        submitted = {it for it, _ in self.pending}
        for it in range(iteration + 1, min(iteration + self.max_staleness, last_iteration) + 1):
            if it in submitted:
                continue
            block = block_of(it)
            for stream, n, params in self.shapes:
                seeds = sample_seeds(self.run_seed, stream, it, block)
                request = SampleRequest(stream, tuple(p.index for p in block), n, params)
                rollout = self.engine.submit([p.prompt_ids for p in block], n, params, seeds)
                self.pending[(it, request)] = (rollout, iteration)

    def take_counts(self) -> dict[str, int]:
        """This iteration's hits, misses and dropped calls (then reset)."""
        counts, self.counts = self.counts, dict.fromkeys(self.counts, 0)
        return counts

    # -- checkpoints ----------------------------------------------------------------------------------------------
    def state(self) -> list[tuple]:
        """Every call submitted ahead, with its samples (waits for the workers): what a resume continues with."""
        saved = []
        for (it, req), (pending, s) in self.pending.items():
            batch = pending.result()
            saved.append((it, req, s, batch.num_prompts, batch.weights_version, pack_samples(batch.samples)))
        return saved

    def load_state(self, saved: list[tuple]) -> None:
        self.pending = {
            (it, req): (_Drawn(RolloutBatch(unpack_samples(packed), num_prompts, version)), s)
            for it, req, s, num_prompts, version, packed in saved
        }
