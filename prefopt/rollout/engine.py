"""The one rollout interface every algorithm samples through.

An engine takes tokenised prompts, a number of samples per prompt (which may differ per prompt: GVM's budgets)
and sampling parameters, and returns for each sample its token ids, text, finish reason and the sampling
policy's per-token log-probs. Those log-probs are log π(y_t | x, y_<t) of the policy itself (temperature 1, no
top-k/top-p truncation; restricted to the allowed tokens when a set is given), i.e. log π_t: algorithms use them
as the π_t anchor without another forward pass. Temperature, top-k and top-p shape only which tokens are drawn.
With a reference mixture (``SamplingParams.ref_mixture``) they are the mixture's log-probs, the distribution the
tokens were drawn from.

Reproducibility: sample j of prompt i is drawn with its own random stream seeded by (seeds[i], j), so the
result does not depend on batch size, on the order of prompts or on how prompts are split across processes.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import torch


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from any tuple of ints/strings (stable across runs and platforms)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


@dataclass(frozen=True)
class SamplingParams:
    """How responses are drawn. ``temperature == 0`` is greedy decoding.

    ``ref_mixture`` = μ > 0 draws from the token-level geometric mixture of the policy and π_ref,
    π^μ(y_t | x, y_<t) ∝ π(y_t | ·)^{1−μ} π_ref(y_t | ·)^μ (Nash-MD's opponent; the engine needs a reference then).
    """

    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    allowed_token_ids: tuple[int, ...] | None = None
    ref_mixture: float = 0.0

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        if not 0 <= self.ref_mixture <= 1:
            raise ValueError("ref_mixture must be in [0, 1]")
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0:
            raise ValueError("need temperature >= 0, 0 < top_p <= 1, top_k >= 0")


@dataclass
class Sample:
    """One sampled response.

    Attributes:
        prompt_index: position of its prompt in the list given to ``generate``.
        sample_index: j for the j-th sample of that prompt.
        prompt_ids: the prompt's token ids.
        response_ids: generated ids, ending with EOS when finish_reason is "stop"; no padding.
        text: the response decoded without special tokens.
        token_logps: [len(response_ids)] float32, log π(y_t | x, y_<t) of the sampling policy.
        finish_reason: "stop" (EOS emitted) or "length" (max_new_tokens reached).
        engine_logps: when the trainer's log-probs replaced the engine's in ``token_logps`` (``anchor_logps:
            recompute``), the engine's own; None otherwise.
    """

    prompt_index: int
    sample_index: int
    prompt_ids: list[int]
    response_ids: list[int]
    text: str
    token_logps: torch.Tensor
    finish_reason: str
    engine_logps: torch.Tensor | None = None

    @property
    def logp(self) -> float:
        """log π(y | x): the sum of the token log-probs."""
        return float(self.token_logps.sum())


@dataclass
class RolloutBatch:
    """All samples of one ``generate`` call, ordered by (prompt_index, sample_index).

    Attributes:
        weights_version: the published weights version that drew them (rollout workers; None: the training model).
        policy_iteration: the iteration whose policy drew them (set by ``Context.sample``; an asynchronous run's
            prefetched samples come from an earlier iteration's policy than the one they train in).
    """

    samples: list[Sample]
    num_prompts: int
    weights_version: int | None = None
    policy_iteration: int | None = None

    def groups(self) -> list[list[Sample]]:
        """The samples of each prompt, in prompt order (an empty list for a prompt with n = 0)."""
        out: list[list[Sample]] = [[] for _ in range(self.num_prompts)]
        for s in self.samples:
            out[s.prompt_index].append(s)
        return out


def pack_samples(samples: Sequence[Sample]) -> dict:
    """Samples as a few flat lists and one log-prob tensor (what crosses processes and goes into checkpoints:
    pickling thousands of small tensors one by one costs more than the sampling of a small model)."""
    logps = [s.token_logps for s in samples]
    engine = [s.engine_logps for s in samples]
    return {
        "index": [(s.prompt_index, s.sample_index) for s in samples],
        "prompt_ids": [s.prompt_ids for s in samples],
        "response_ids": [s.response_ids for s in samples],
        "text": [s.text for s in samples],
        "finish_reason": [s.finish_reason for s in samples],
        "token_logps": torch.cat(logps) if logps else torch.zeros(0),
        "engine_logps": torch.cat(engine) if engine and all(e is not None for e in engine) else None,
    }


def unpack_samples(packed: dict) -> list[Sample]:
    """The samples :func:`pack_samples` packed."""
    lengths = [len(r) for r in packed["response_ids"]]
    logps = torch.split(packed["token_logps"], lengths)
    engine = torch.split(packed["engine_logps"], lengths) if packed["engine_logps"] is not None else None
    return [
        Sample(i, j, p, r, text, lp, reason, None if engine is None else engine[k])
        for k, ((i, j), p, r, text, reason, lp) in enumerate(
            zip(packed["index"], packed["prompt_ids"], packed["response_ids"], packed["text"],
                packed["finish_reason"], logps)
        )
    ]  # fmt: skip


class RolloutEngine(ABC):
    """Draws samples from the current policy."""

    @abstractmethod
    def generate(
        self,
        prompt_ids: Sequence[Sequence[int]],
        n: int | Sequence[int],
        params: SamplingParams,
        seeds: Sequence[int],
    ) -> RolloutBatch:
        """Sample ``n`` (or ``n[i]``) responses for each prompt.

        Args:
            prompt_ids: tokenised prompts.
            n: samples per prompt, one int for all or one per prompt (0 allowed).
            params: sampling parameters.
            seeds: one seed per prompt; sample j of prompt i uses the stream derive_seed(seeds[i], j).
        """


def expand_requests(num_prompts: int, n: int | Sequence[int], seeds: Sequence[int]) -> list[tuple[int, int, int]]:
    """(prompt_index, sample_index, row_seed) for every requested sample, in prompt order."""
    counts = [n] * num_prompts if isinstance(n, int) else list(n)
    if len(counts) != num_prompts or len(seeds) != num_prompts:
        raise ValueError("n (when a list) and seeds must have one entry per prompt")
    if any(c < 0 for c in counts):
        raise ValueError("sample counts must be >= 0")
    return [(i, j, derive_seed(int(seeds[i]), j)) for i, c in enumerate(counts) for j in range(c)]
