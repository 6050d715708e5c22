"""Rollout backend on ``transformers`` generate: batched, left-padded, KV-cached, each row stopped at EOS.

How per-row seeding fits into ``generate``: generate runs greedy decoding, and a logits processor draws each
row's token itself and masks every other token to −inf, so the greedy pick is the sampled token. The draw is by
inverse CDF over the temperature/top-k/top-p distribution: token t_k of a row is the first index whose cumulative
probability exceeds u_k, where u_1..u_N are that row's uniforms, drawn once per generate call from a generator
seeded with the row's own seed (one small draw per row, not a [V] draw per row and token; batched over rows as one
cumsum and one searchsorted per step). A row's tokens therefore depend only on its seed and its distribution,
never on the other rows of the batch. The same processor records log π(token) from the raw logits it receives,
on the device (one transfer at the end of the call, no sync per token), so no [steps, B, V] logits tensor is kept.

Sampling from the geometric mixture with π_ref (``SamplingParams.ref_mixture``): a second processor, ahead of the
sampler, runs π_ref on the same rows with its own KV cache (one prefill, then one token per step) and replaces the
scores by (1 − μ)·log π + μ·log π_ref, so the sampler draws from (and records) the mixture.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm

from prefopt.ops import pad_sequences, restricted_log_softmax
from prefopt.rollout.engine import RolloutBatch, RolloutEngine, Sample, SamplingParams, expand_requests


def filter_logits(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Temperature, top-k and top-p applied to [B, V] logits (−inf marks removed tokens)."""
    logits = logits / params.temperature
    if params.top_k > 0:
        kth = torch.topk(logits, min(params.top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
        # Drop a token when the tokens ranked above it already reach top_p (the first token always stays).
        drop_sorted = (cum - torch.softmax(sorted_logits, dim=-1)) >= params.top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def eos_token_ids(model, tokenizer) -> set[int]:
    """The tokenizer's EOS plus any end-of-turn ids in the model's generation config (Llama 3 lists several)."""
    ids = {tokenizer.eos_token_id}
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if config_eos is not None:
        ids |= set(config_eos) if isinstance(config_eos, (list, tuple)) else {config_eos}
    return {i for i in ids if i is not None}


class _SeededSampler:
    """A generate logits processor: picks each row's token with its own uniforms, records its log-prob.

    Args:
        row_seeds: one seed per row; row b's k-th token uses the k-th of ``steps`` uniforms drawn from a CPU
            generator seeded with ``row_seeds[b]`` (the same on every device).
        steps: the most tokens a row can draw (the call's max_new_tokens).
    """

    def __init__(self, params: SamplingParams, row_seeds: Sequence[int], device: torch.device, steps: int):
        self.params = params
        self.allowed = None if params.allowed_token_ids is None else torch.tensor(params.allowed_token_ids)
        draws = [torch.rand(steps, generator=torch.Generator().manual_seed(s), dtype=torch.float64) for s in row_seeds]
        self.uniforms = torch.stack(draws).to(device)
        self.step_logps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        logps = restricted_log_softmax(scores, self.allowed)  # the policy itself: temperature 1, no truncation
        if self.params.temperature == 0:
            chosen = logps.argmax(-1)
        else:
            sampling_logits = logps if self.allowed is not None else scores.float()
            cdf = torch.softmax(filter_logits(sampling_logits, self.params), dim=-1).double().cumsum(-1)
            u = self.uniforms[:, len(self.step_logps), None] * cdf[:, -1:]  # scaled to the sum's rounding
            chosen = torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp_(max=scores.shape[-1] - 1)
        self.step_logps.append(logps.gather(-1, chosen[:, None]).squeeze(-1))
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(-1, chosen[:, None], 0.0)
        return out


class _ReferenceMixer:
    """A generate logits processor: mixes the policy's scores with π_ref's next-token log-probs.

    Args:
        forward: π_ref's forward, called as ``forward(input_ids=, attention_mask=, position_ids=, past_key_values=,
            use_cache=True)`` and returning an output with ``logits`` and ``past_key_values``.
        attention_mask: [B, P] of the left-padded prompts (generated tokens are always attended).
    """

    def __init__(self, forward, attention_mask: torch.Tensor, mixture: float, allowed: torch.Tensor | None):
        self.forward, self.mask, self.mixture, self.allowed = forward, attention_mask, mixture, allowed
        self.past = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.past is None:  # prefill on the prompts
            ids = input_ids
            positions = (self.mask.cumsum(-1) - 1).clamp(min=0)
        else:  # the token the sampler just chose
            ids = input_ids[:, -1:]
            self.mask = torch.cat([self.mask, self.mask.new_ones(self.mask.shape[0], 1)], dim=-1)
            positions = self.mask.sum(-1, keepdim=True) - 1
        out = self.forward(
            input_ids=ids, attention_mask=self.mask, position_ids=positions, past_key_values=self.past, use_cache=True
        )
        self.past = out.past_key_values
        ref = restricted_log_softmax(out.logits[:, -1], self.allowed)
        mixed = (1 - self.mixture) * restricted_log_softmax(scores, self.allowed) + self.mixture * ref
        return torch.log_softmax(mixed, dim=-1)


class HFRolloutEngine(RolloutEngine):
    """Sampling with ``model.generate``.

    Args:
        model_context: a callable returning a context manager that yields the model to generate with (the
            backend's unwrapped model, with ZeRO-3 weights gathered once for the whole rollout).
        tokenizer: the policy tokenizer (pad and EOS ids, decoding).
        batch_size: rows per generate call.
        reference: for ``ref_mixture`` > 0 only: a callable taking the model being sampled and returning a context
            manager that yields π_ref's forward (``Anchors.reference_forward``: the same model with its adapter
            disabled, or a frozen copy under full fine-tuning).
        lockstep: when every forward is a collective (ZeRO-3 without the whole-model gather, several processes):
            a callable returning the largest of the processes' generate-call counts (``Backend.max_across``). This
            process then runs spare one-row calls up to that count, and every call passes ``synced_gpus`` so a
            process whose rows have stopped keeps stepping with the others.
    """

    def __init__(
        self,
        model_context: Callable[[], contextlib.AbstractContextManager],
        tokenizer,
        batch_size: int = 64,
        show_progress: bool = True,
        reference: Callable[[torch.nn.Module], contextlib.AbstractContextManager] | None = None,
        lockstep: Callable[[int], int] | None = None,
    ):
        self.model_context = model_context
        self.lockstep = lockstep
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.show_progress = show_progress
        self.reference = reference

    @torch.no_grad()
    def generate(self, prompt_ids, n, params: SamplingParams, seeds) -> RolloutBatch:
        requests = expand_requests(len(prompt_ids), n, seeds)
        # Sorting rows by prompt length keeps padding low; per-row seeds make the order irrelevant to results.
        order = sorted(range(len(requests)), key=lambda r: len(prompt_ids[requests[r][0]]))
        samples: list[Sample | None] = [None] * len(requests)
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if params.ref_mixture > 0 and self.reference is None:
            raise ValueError("sampling with ref_mixture > 0 needs an engine built with a reference")
        with contextlib.ExitStack() as stack:
            model = stack.enter_context(self.model_context())
            ref_forward = stack.enter_context(self.reference(model)) if params.ref_mixture > 0 else None
            was_training = model.training
            model.eval()
            for rows in tqdm(batches, desc="rollout", disable=not self.show_progress or not batches, leave=False):
                reqs = [requests[r] for r in rows]
                for r, sample in zip(rows, self._generate_rows(model, prompt_ids, reqs, params, ref_forward)):
                    samples[r] = sample
            spare = self.lockstep(len(batches)) - len(batches) if self.lockstep is not None else 0
            for _ in range(spare):  # a one-token prompt, a one-token response: results dropped
                self._generate_rows(model, [[self.tokenizer.pad_token_id]], [(0, 0, 0)], params, ref_forward, 1)
            model.train(was_training)
        return RolloutBatch(samples=samples, num_prompts=len(prompt_ids))

    def _generate_rows(
        self, model, prompt_ids, reqs, params: SamplingParams, ref_forward=None, max_new_tokens: int | None = None
    ) -> list[Sample]:
        from transformers import GenerationConfig

        tok = self.tokenizer
        device = next(model.parameters()).device
        prompts = [list(prompt_ids[i]) for i, _, _ in reqs]
        input_ids = pad_sequences(prompts, tok.pad_token_id, side="left").to(device)
        attention_mask = pad_sequences([[1] * len(p) for p in prompts], 0, side="left").to(device)
        steps = max_new_tokens or params.max_new_tokens
        sampler = _SeededSampler(params, [seed for _, _, seed in reqs], device, steps)
        processors = [sampler]
        if ref_forward is not None:
            processors.insert(0, _ReferenceMixer(ref_forward, attention_mask, params.ref_mixture, sampler.allowed))
        eos_ids = eos_token_ids(model, tok)
        config = GenerationConfig(
            do_sample=False,
            max_new_tokens=steps,
            eos_token_id=sorted(eos_ids),
            pad_token_id=tok.pad_token_id,
        )
        out = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            generation_config=config,
            logits_processor=processors,
            synced_gpus=self.lockstep is not None,
        )
        generated = out[:, input_ids.shape[1] :].cpu()
        step_logps = torch.stack(sampler.step_logps, dim=1).float().cpu()  # [B, steps]
        samples = []
        for row, (i, j, _) in enumerate(reqs):
            ids = generated[row].tolist()
            length, reason = len(ids), "length"
            stop = next((k for k, t in enumerate(ids) if t in eos_ids), None)
            if stop is not None:
                length, reason = stop + 1, "stop"
            response = ids[:length]
            samples.append(
                Sample(
                    prompt_index=i,
                    sample_index=j,
                    prompt_ids=prompts[row],
                    response_ids=response,
                    text=tok.decode(response, skip_special_tokens=True),
                    token_logps=step_logps[row, :length].clone(),
                    finish_reason=reason,
                )
            )
        return samples
