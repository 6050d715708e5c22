"""Log-probs of anchor policies (π_ref, π_t) on an iteration's sequences, once, under no_grad.

Where each anchor comes from, without a second full model on the accelerator:
- π_t (the policy at the start of the iteration): the rollout's own log-probs when the sequences were sampled
  from it, else one no-grad pass of the current weights (``policy="current"``) before any optimizer step.
- π_ref: with a LoRA adapter, the same model with the adapter disabled; with full fine-tuning, the initial
  trainable weights kept as a CPU snapshot and swapped in for the pass (``Backend.swapped``).

Decoding from a mixture with π_ref (Nash-MD's opponent) needs π_ref's next-token distribution at every step, next
to the policy's: with an adapter that is the same model with the adapter disabled for the π_ref call; with full
fine-tuning, swapping weights per token would cost a full copy per token, so a frozen copy of the initial model
is loaded once onto the device, the one case where a second model is the cheaper design (as TRL's ``ref_model``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from prefopt.errors import ConfigError
from prefopt.scoring import Scorer


class Anchors:
    """Batched no-grad log-prob passes for anchor policies.

    Args:
        backend: the run's :class:`prefopt.backend.Backend` (its model is the trained policy).
        scorer: the forward that scores responses (packed or padded; its pad id and action set).
        batch_size: sequences per forward pass.
        max_tokens: instead of ``batch_size``, as many sequences per pass as fit this many tokens (None: off).
        load_reference_model: loads π_ref as a model (full fine-tuning's mixture sampling; called at most once).
        reference_model: π_ref as its own model (a trainer's ``ref_model``, on the device), used for every π_ref
            pass instead of the disabled adapter or the snapshot of the initial weights.
    """

    def __init__(
        self,
        backend,
        scorer: Scorer,
        batch_size: int,
        max_tokens: int | None = None,
        show_progress=True,
        load_reference_model=None,
        reference_model=None,
    ):
        self.backend = backend
        self.load_reference_model = load_reference_model
        self.reference_model = reference_model
        self.scorer = scorer
        self.pad_token_id = scorer.pad_token_id
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self.show_progress = show_progress
        self.ref_snapshot: dict[str, torch.Tensor] | None = None
        self.elapsed_s = 0.0  # seconds in anchor passes (the loop's time/anchor_s)

    def keep_reference(self) -> None:
        """Remember the current weights as π_ref (free with an adapter, disabling it gives π_ref, or with an
        explicit reference model)."""
        if not self.backend.has_adapter and self.reference_model is None:
            self.ref_snapshot = self.backend.snapshot()

    @contextlib.contextmanager
    def reference_forward(self, model):
        """π_ref's forward for decoding next to ``model`` (the policy being sampled), as a context manager."""
        if self.backend.has_adapter and self.reference_model is None:

            def forward(**inputs):
                with model.disable_adapter():
                    return model(**inputs)

            yield forward
            return
        if self.reference_model is None:
            if self.backend.zero_stage == 3:
                raise ConfigError(
                    "sampling from a mixture with π_ref under ZeRO-3 needs a LoRA adapter (π_ref is then the "
                    "disabled adapter); with full fine-tuning use ZeRO-2 or no DeepSpeed"
                )
            if self.load_reference_model is None:
                raise RuntimeError("this Anchors was built without load_reference_model")
            self.reference_model = self.load_reference_model().to(self.backend.device).eval().requires_grad_(False)
        yield self.reference_model

    def _policy(self, policy):
        if isinstance(policy, dict):  # a snapshot of trainable tensors (e.g. the previous iterate π_{t−1})
            return self.backend.swapped(policy)
        if policy == "current":
            return contextlib.nullcontext()
        if policy != "reference":
            raise ValueError(f"policy must be 'current', 'reference' or a snapshot, got {policy!r}")
        if self.backend.has_adapter:
            return self.backend.unwrapped.disable_adapter()
        if self.ref_snapshot is None:
            raise RuntimeError("π_ref was not kept: the algorithm must declare needs_ref=True")
        return self.backend.swapped(self.ref_snapshot)

    @torch.no_grad()
    def token_logps(
        self, prompt_ids: Sequence[Sequence[int]], response_ids: Sequence[Sequence[int]], policy="current"
    ) -> list[torch.Tensor]:
        """Per-token log-probs of each response under the anchor policy.

        Args:
            policy: "current" (the weights now), "reference" (π_ref), or a snapshot from ``Backend.snapshot``.

        Returns:
            one float32 CPU tensor [len(response_ids[i])] per sequence.
        """
        start = time.perf_counter()
        results: dict[int, torch.Tensor] = {}
        with self._scoring_model(policy) as model:
            chunks, width = self._chunks(model, prompt_ids, response_ids)
            was_training = model.training
            model.eval()
            desc = f"logps ({policy if isinstance(policy, str) else 'snapshot'})"
            for idx in tqdm(chunks, desc=desc, disable=not self.show_progress, leave=False):
                if idx is None:  # a padding pass on a one-token dummy: its result is dropped
                    self.scorer.token_logps(model, [[self.pad_token_id]], [[self.pad_token_id]])
                    continue
                with self.scorer.row_width(width):
                    logps = self.scorer.token_logps(
                        model, [prompt_ids[i] for i in idx], [response_ids[i] for i in idx]
                    )
                logps = logps.float().cpu()
                for row, i in enumerate(idx):
                    results[i] = logps[row, : len(response_ids[i])].clone()
            model.train(was_training)
        self.elapsed_s += time.perf_counter() - start
        return [results[i] for i in range(len(prompt_ids))]

    def _chunks(self, model, prompt_ids, response_ids) -> tuple[list[list[int] | None], int]:
        """The passes and the packed rows' width planned for them (0: none): longest sequences first (similar
        lengths share a pass, and an out-of-memory error shows up at once), ``batch_size`` sequences each or, with
        ``max_tokens``, as many as fit that many tokens (``Scorer.bins``); under lockstep forwards, padded with
        spare passes (None) to the busiest process's count."""
        lengths = [len(p) + len(r) for p, r in zip(prompt_ids, response_ids)]
        width = 0
        if self.max_tokens:
            chunks, width = self.scorer.bins(model, [[n] for n in lengths], self.max_tokens)
        else:
            order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
            chunks = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if self.backend.lockstep_forwards:  # every forward is a collective: as many as the busiest process
            chunks += [None] * (self.backend.max_across(len(chunks)) - len(chunks))
        return chunks, width

    @contextlib.contextmanager
    def _scoring_model(self, policy):
        """The model that scores under ``policy``: π_ref's own model when there is one, else the weights to score
        with first (a swap acts on ZeRO-3's shards), then the model to run them in."""
        if policy == "reference" and self.reference_model is not None:
            yield self.reference_model
            return
        with self._policy(policy), self.backend.inference_model() as model:
            yield model

    def logps(self, prompt_ids, response_ids, policy="current") -> torch.Tensor:
        """Sequence log-probs log π(y | x), [N] float32."""
        token_logps = self.token_logps(prompt_ids, response_ids, policy)
        return torch.stack([t.sum() for t in token_logps]) if token_logps else torch.zeros(0)
