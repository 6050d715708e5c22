"""What ``collect`` sees: the rollout engine, the judge, the anchors and the iteration's settings."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from transformers import PreTrainedTokenizerBase

from prefopt import exact
from prefopt.anchors import Anchors
from prefopt.backend import Backend
from prefopt.config import TrainConfig
from prefopt.data import PromptExample, iteration_prompts
from prefopt.judges.base import PreferenceJudge
from prefopt.judges.selection import select_pairs
from prefopt.rollout.engine import RolloutBatch, RolloutEngine, Sample, SamplingParams, derive_seed
from prefopt.rollout.prefetch import Prefetcher, SampleRequest, sample_seeds
from prefopt.scoring import Scorer

if TYPE_CHECKING:
    from prefopt.batch import Batch
    from prefopt.optimise import Optimisation


def shard_bounds(n: int, world: int, rank: int, weights: Sequence[float] | None = None) -> tuple[int, int]:
    """[lo, hi) of process ``rank``'s contiguous block of n items: counts differing by at most one, or with
    ``weights``, each cut where the running weight comes nearest to k/world of the total (a process may get an
    empty block when one item outweighs a share)."""
    if weights is None or not sum(weights):
        return rank * n // world, (rank + 1) * n // world
    if len(weights) != n:
        raise ValueError(f"weights has {len(weights)} entries for {n} items")
    running = [0.0]
    for w in weights:
        running.append(running[-1] + float(w))

    def cut(k: int) -> int:
        if k in (0, world):
            return 0 if k == 0 else n
        target = running[-1] * k / world
        return min(range(n + 1), key=lambda i: (abs(running[i] - target), i))

    return cut(rank), cut(rank + 1)


def combine_metrics(parts: list[dict[str, tuple[float, float]]]) -> dict[str, float]:
    """Weighted means of per-process {metric: (mean, weight)}; a process without a metric counts with weight 0,
    and a metric whose weights are all 0 keeps the first process's value."""
    out = {}
    for key in dict.fromkeys(k for part in parts for k in part):
        pairs = [part[key] for part in parts if key in part]
        total = sum(w for _, w in pairs)
        out[key] = sum(v * w for v, w in pairs) / total if total else pairs[0][0]
    return out


class PairData(NamedTuple):
    """Training pairs with their targets [R], and each pair's weight [R] when the rows are an exact expectation
    (``game_exact``; None: sampled rows, each weighing the same)."""

    pairs: list[tuple[Sample, Sample]]
    targets: torch.Tensor
    weights: torch.Tensor | None = None


@dataclass
class Context:
    """Services for one iteration's ``collect`` (and the optional hooks).

    Attributes:
        cfg: the shared TrainConfig; algo_cfg: the algorithm's own config.
        sampling: default sampling parameters from the config (with a game's action set, if any).
        iteration: 0-based index of the current iteration; prompts: this process's block of its prompts (what
            collect received); iteration_prompts: all of them, every process's blocks in rank order.
        rollouts: every RolloutBatch sampled through :meth:`sample` this iteration (saved in the run directory).
        rollout_s: seconds spent sampling this iteration.
        algo_state: snapshots of trainable tensors (``Backend.snapshot``) an algorithm keeps from one iteration to
            the next, by name (APO's previous iterate, Nash-MP's prox centre); saved with every checkpoint and
            restored on --resume.
        optimisation: runs :meth:`optimise`.
        prefetcher: with asynchronous rollouts, the calls submitted ahead of their iteration (``None``: none).
        logp_gaps: this iteration's |log π_engine − log π_trainer| per checked token (``logp_check_fraction``, or
            every token when the trainer's log-probs replace the engine's).
    """

    cfg: TrainConfig
    algo_cfg: Any  # the algorithm's own config dataclass
    tokenizer: PreTrainedTokenizerBase
    rollout: RolloutEngine
    judge: PreferenceJudge
    anchors: Anchors
    backend: Backend
    sampling: SamplingParams
    optimisation: Optimisation
    iteration: int = 0
    prompts: list[PromptExample] = dataclasses.field(default_factory=list)
    iteration_prompts: list[PromptExample] = dataclasses.field(default_factory=list)
    rollouts: list[tuple[str, list[PromptExample], RolloutBatch]] = dataclasses.field(default_factory=list)
    rollout_s: float = 0.0
    algo_state: dict = dataclasses.field(default_factory=dict)
    prefetcher: Prefetcher | None = None
    logp_gaps: list[torch.Tensor] = dataclasses.field(default_factory=list)

    @property
    def scorer(self) -> Scorer:
        """The forward that scores responses: the policy's in training, the anchors' (``prefopt.scoring``)."""
        return self.anchors.scorer

    def optimise(self, batch: Batch) -> dict:
        """Epochs × minibatches of the algorithm's loss over ``batch`` (every process's rows), as the loop runs once
        per iteration; a ``train_step`` that optimises in phases (EGPO's extragradient, Nash-MP's mirror prox)
        calls it once per phase. Returns the loss metrics' means, the gradient norm and the learning rate."""
        return self.optimisation.optimise(self, batch)

    # -- several processes ----------------------------------------------------------------------------------
    def shard(self, items: list, weights: Sequence[float] | None = None) -> tuple[int, int]:
        """This process's contiguous block [lo, hi) of ``items``: equal counts, or with ``weights`` (e.g. GVM's
        sample budgets) near-equal total weight. Contiguous blocks gathered in rank order give back the list."""
        return shard_bounds(len(items), self.backend.world_size, self.backend.rank, weights)

    def gather(self, items: list) -> list:
        """Every process's ``items`` concatenated in rank order (the same list on every process)."""
        return [x for part in self.backend.all_gather_object(items) for x in part]

    def gather_metrics(self, batch) -> dict[str, float]:
        """The collect metrics of every process's ``batch`` combined into means over all of them: each metric
        weighted by its ``metric_weights`` entry, else by the number of prompts this process collected."""
        local = {k: (v, batch.metric_weights.get(k, len(self.prompts))) for k, v in batch.metrics.items()}
        return combine_metrics(self.backend.all_gather_object(local))

    def start_iteration(
        self, iteration: int, prompts: list[PromptExample], iteration_prompts: list[PromptExample] | None = None
    ) -> None:
        """``prompts``: this process's block; ``iteration_prompts``: every process's, in rank order (default: the
        block, as with one process)."""
        self.iteration, self.prompts, self.rollouts, self.rollout_s = iteration, prompts, [], 0.0
        self.logp_gaps = []
        self.iteration_prompts = prompts if iteration_prompts is None else iteration_prompts
        self.judge.elapsed_s = 0.0
        self.anchors.elapsed_s = 0.0

    def sample(self, prompts: list[PromptExample], n, stream: str = "policy", **overrides) -> RolloutBatch:
        """Sample from the current policy; ``overrides`` replace SamplingParams fields (e.g. temperature).

        The seed of each prompt's samples depends on (run seed, stream, iteration, dataset row), never on batch
        layout; give a second sampling in the same iteration its own ``stream`` name. With asynchronous rollouts
        the samples may have been drawn ahead by an earlier iteration's policy (``RolloutBatch.policy_iteration``;
        ``prefopt.rollout.prefetch``).
        """
        if self.cfg.game_exact:  # an algorithm declaring exact_expectation reads its data through the estimators
            raise RuntimeError("game_exact: collect drew samples outside the Context's estimators")
        params = dataclasses.replace(self.sampling, **overrides)
        start = time.perf_counter()
        batch = None
        if self.prefetcher is not None:
            request = SampleRequest(
                stream, tuple(p.index for p in prompts), n if isinstance(n, int) else tuple(n), params
            )
            batch = self.prefetcher.take(self.iteration, request, self.prompts)
        if batch is None:
            seeds = sample_seeds(self.cfg.seed, stream, self.iteration, prompts)
            batch = self.rollout.generate([p.prompt_ids for p in prompts], n, params, seeds)
            batch.policy_iteration = self.iteration
        self.rollout_s += time.perf_counter() - start
        self._check_logps(batch)
        self.rollouts.append((stream, prompts, batch))
        return batch

    def _check_logps(self, batch: RolloutBatch) -> None:
        """Compare the engine's log-probs with the trainer's on a seeded fraction of the samples
        (``logp_check_fraction``), or on all of them when the trainer's replace the engine's (``anchor_logps:
        recompute``, or the importance-sampling correction, which reads both: ``Sample.engine_logps``)."""
        cfg = self.cfg
        replace = cfg.anchor_logps == "recompute" or cfg.vllm_importance_sampling_correction
        samples = batch.samples
        if not replace:
            if cfg.logp_check_fraction <= 0:
                return
            gen = torch.Generator().manual_seed(
                derive_seed(cfg.seed, "logp_check", self.iteration, len(self.rollouts))
            )
            keep = (torch.rand(len(samples), generator=gen, dtype=torch.float64) < cfg.logp_check_fraction).tolist()
            samples = [s for s, k in zip(samples, keep) if k]
        # Called even with no samples: under lockstep forwards every process runs as many passes as the busiest.
        trainer = self.anchors.token_logps([s.prompt_ids for s in samples], [s.response_ids for s in samples])
        for s, logps in zip(samples, trainer):
            self.logp_gaps.append((s.token_logps.double() - logps.double()).abs())
            if replace:
                s.engine_logps, s.token_logps = s.token_logps, logps

    def references(self, prompts: list[PromptExample]) -> list | None:
        """Each prompt's reference answer (the ``answer_column`` of its row) for the judge, or None when unset."""
        column = self.cfg.answer_column
        return None if column is None else [p.extra[column] for p in prompts]

    def sample_pairs(self, prompts: list[PromptExample], k: int, mode: str) -> list[tuple[Sample, Sample]]:
        """K samples per prompt from the current policy, reduced to one (winner, loser) pair per prompt by the
        judge (``prefopt.judges.selection.select_pairs``); prompts without a strict pair are dropped."""
        groups = self.sample(prompts, k).groups()
        texts = [[s.text for s in g] for g in groups]
        choice = select_pairs(mode, self.judge, [p.prompt for p in prompts], texts, self.references(prompts))
        return [(g[w], g[lo]) for g, (w, lo, keep) in zip(groups, choice) if keep]

    def sample_labelled_pairs(self, prompts: list[PromptExample], k: int, labels: str) -> PairData:
        """⌊k/2⌋ pairs per prompt of independent samples from the current policy, (y_1, y_2), (y_3, y_4), …, and each
        pair's label: the judge's P(first ≻ second) (``soft``), or a draw of Bernoulli(P) (``bernoulli``, the binary
        preference a human gives; its seed depends on the run, the iteration and the row only). Under
        ``game_exact``: every pair of actions with its probability and the soft label (``prefopt.exact``)."""
        if self.cfg.game_exact:
            return PairData(*exact.labelled_pairs(self, prompts))
        groups = self.sample(prompts, k).groups()
        pairs = [(g[i], g[i + 1]) for g in groups for i in range(0, len(g) - 1, 2)]
        owner = [p for p, g in zip(prompts, groups) for _ in range(len(g) // 2)]
        refs = self.references(owner)
        probs = self.judge.preference(
            [p.prompt for p in owner], [a.text for a, _ in pairs], [b.text for _, b in pairs], refs
        )
        if labels == "soft":
            return PairData(pairs, probs.float())
        draws = []
        for p, g in zip(prompts, groups):
            gen = torch.Generator().manual_seed(derive_seed(self.cfg.seed, "pair_labels", self.iteration, p.index))
            draws.append(torch.rand(len(g) // 2, generator=gen, dtype=torch.float64))
        uniform = torch.cat(draws) if draws else torch.zeros(0, dtype=torch.float64)
        return PairData(pairs, (uniform < probs.double()).float())

    def pairs_against(
        self, prompts: list[PromptExample], stream: str, pair_sampling: dict, mixture: float = 0.0
    ) -> PairData:
        """One pair (y, y′) per prompt from the sampler with ``pair_sampling`` (SamplingParams overrides), one
        opponent y″ from the current policy (or with ``mixture`` = μ > 0 its geometric mixture with π_ref), and the
        target P(y ≻ y″) − P(y′ ≻ y″). Under ``game_exact``: every pair of actions with its probability and the
        target's expectation over y″ (``prefopt.exact``)."""
        if self.cfg.game_exact:
            pair_params = dataclasses.replace(self.sampling, **pair_sampling)
            opponent_params = dataclasses.replace(self.sampling, ref_mixture=mixture)
            return PairData(*exact.pairs_against(self, prompts, stream, pair_params, opponent_params))
        ys = self.sample(prompts, 2, stream=f"{stream}/pair", **pair_sampling).groups()
        y2 = [g[0].text for g in self.sample(prompts, 1, stream=f"{stream}/opponent", ref_mixture=mixture).groups()]
        refs = self.references(prompts)
        probs = self.judge.preference(
            [p.prompt for p in prompts] * 2,
            [g[0].text for g in ys] + [g[1].text for g in ys],
            y2 * 2,
            None if refs is None else refs * 2,
        )
        n = len(prompts)
        return PairData([(g[0], g[1]) for g in ys], (probs[:n] - probs[n:]).float())


def shard_prompts(ctx: Context, train_prompts: list[PromptExample], it: int) -> tuple[list, list]:
    """(iteration ``it``'s prompts, this process's contiguous block of them)."""
    cfg = ctx.cfg
    idx = iteration_prompts(len(train_prompts), cfg.prompts_per_iteration, it, cfg.num_iterations, cfg.seed)
    prompts = [train_prompts[i] for i in idx]
    lo, hi = ctx.shard(prompts)
    return prompts, prompts[lo:hi]


def collect_shard(ctx: Context, algorithm, train_prompts: list[PromptExample], it: int):
    """(this process's batch, seconds): iteration ``it``'s collect on this process's contiguous block of the
    iteration's prompts (``ctx.prompts`` is that block afterwards). With asynchronous rollouts, the next iterations'
    predicted calls are submitted to the workers as soon as it returns."""
    prompts, block = shard_prompts(ctx, train_prompts, it)
    ctx.start_iteration(it, block, prompts)
    start = time.perf_counter()
    prefetcher = ctx.prefetcher
    if prefetcher is not None:
        prefetcher.begin_collect(it)
    batch = algorithm.collect(ctx, block)
    if prefetcher is not None:
        prefetcher.end_collect()
        prefetcher.submit_ahead(it, ctx.cfg.num_iterations - 1, lambda k: shard_prompts(ctx, train_prompts, k)[1])
    return batch, time.perf_counter() - start
