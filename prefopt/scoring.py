"""Response log-probs of a causal LM: the one forward every training step and every anchor pass makes.

Two choices, each checked against the plain forward on the model itself before it is used (:meth:`Scorer.plan`):

- **Layout.** Padded: one row per sequence, left-padded to the longest (``prefopt.ops.build_sequence_batch``).
  Padding-free (``padding_free``, TRL's name): the sequences are packed back to back into rows with position ids
  restarting at 0 for each sequence and no attention mask, which transformers turns into attention that never
  crosses sequences (a block-diagonal causal mask for sdpa/eager, varlen kernels for flash-attention). For
  sdpa/eager the mask is dense, so sequences are packed best-fit decreasing into rows as long as the longest
  sequence (or as wide as :meth:`Scorer.row_width` says, for token-budget micro-batches planned by
  :meth:`Scorer.bins`): attention then costs no more than padded rows, and only the rows' tails are padding.
  Flash-attention reads sequence boundaries from the position ids of a single row only, so there everything
  goes into one row.
- **Output head.** With ``chunk_size`` > 0 the model is asked for no logits at all: its decoder's last hidden
  states are read by a forward hook, and log π(y_t) is computed from them and the output head ``chunk_size``
  tokens at a time, each chunk under activation checkpointing (its logits are recomputed in backward), so
  [tokens, V] float32 logits never exist at once; only the response-predicting positions are scored. With 0, the
  model's own logits for the response positions, as one tensor.

A model whose packed forward or head path does not reproduce its plain forward (a model without packed-sequence
masking, an output head with a logit transform such as soft-capping) falls back to padding or to its own logits,
with a printed notice naming the model type: training still runs, only slower.

**Reproduces, up to rounding** (:func:`rounding_bound`). A probe of three sequences is scored by the plain padded
forward (P), by each sequence alone (A: a batch of one, no padding, no mask) and by each requested path (X). A is
P's mathematics laid out otherwise (other matmul shapes, another attention kernel and mask, other reduction
orders), so φ = max_t |A_t − P_t| is what rounding costs this model, at its dtype, depth and weights, on this
hardware. A correct path is one more such layout, its deviation noise of the same size; it is kept where
max_t |X_t − P_t| ≤ τ = K·φ + c·ε·max(1, max_t |P_t|), K = 8, c = 8, ε = 2⁻²³: the log-probs are float32, and the
second term, c ulps of the log-prob scale, covers a model whose layouts round alike (φ = 0, as bfloat16 matmuls on
CPU do). Measured on SmolLM2-135M (30 layers) and random-init Qwen2 (24), Mistral and Gemma (4 layers) of their real
widths and vocabularies, float32 and bfloat16, eager and sdpa: a correct path's deviation is at most 1.1·φ (at most
4·φ on other token choices, hence K = 8), while attention that crosses sequences moves the probe's log-probs by 1
to 4, 1.4·10⁴·τ or more. No bound from the arithmetic alone does this: u·|log π|·depth is 6·10⁻⁸·25·30 ≈ 4.5·10⁻⁵
on SmolLM2 in float32, where φ reaches 9·10⁻⁴ on other token ids, since trained layers amplify rounding by a factor
the config does not give; and in bfloat16 the noise is O(0.1) (SmolLM2, sequences of 85 to 252 tokens: φ = 0.14,
τ = 1.1, crossing 14), which only a measurement sees.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

from prefopt.ops import build_sequence_batch, gather_token_logps, pad_sequences, response_token_logps


@dataclass(frozen=True)
class Plan:
    """How one model is scored: packed rows or padded ones, the chunked head or the model's logits, and whether
    packing must use a single row (flash-attention)."""

    packed: bool
    chunked: bool
    one_row: bool = False


# The probe: (prompt, response) lengths. Packed into rows as wide as the longest (10), the short two share a row with
# a padded tail, so the last sequence's 3 response tokens are scored where attention that crosses sequences would
# show them the one before it.
PROBE_LENGTHS = ((3, 7), (2, 3), (1, 3))
NOISE_MULTIPLE = 8  # K: a correct path's deviation measured up to 4·φ
NOISE_ULPS = 8  # c: float32 ulps of the log-prob scale, for φ = 0


def rounding_bound(plain: torch.Tensor, alone: torch.Tensor) -> float:
    """τ = K·φ + c·ε·max(1, max |P|): the most a path may change the padded forward's log-probs ``plain`` (P) and
    still be the same mathematics, φ = max |A − P| being this model's rounding noise, measured by scoring the same
    sequences one at a time (``alone``, A; see the module doc for the derivation and the measured margins)."""
    noise, scale = (float((alone - plain).abs().max()), float(plain.abs().max())) if plain.numel() else (0.0, 0.0)
    return NOISE_MULTIPLE * noise + NOISE_ULPS * torch.finfo(torch.float32).eps * max(1.0, scale)


def causal_lm(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers causal LM inside DDP/DeepSpeed wrappers and a peft model (whose adapter layers it holds)."""
    while isinstance(getattr(model, "module", None), torch.nn.Module):
        model = model.module
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def best_fit_rows(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Indices of ``lengths`` packed into rows of at most ``capacity`` tokens, best-fit decreasing (an item longer
    than ``capacity`` gets a row of its own)."""
    rows: list[list[int]] = []
    free: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        fits = [r for r in range(len(rows)) if free[r] >= lengths[i]]
        if fits:
            r = min(fits, key=lambda r: free[r])
            rows[r].append(i)
            free[r] -= lengths[i]
        else:
            rows.append([i])
            free.append(capacity - lengths[i])
    return rows


def pack_sequences(
    prompt_ids, response_ids, pad_token_id: int, one_row: bool = False, width: int = 0
) -> dict[str, torch.Tensor]:
    """prompt + response of every sequence packed into rows, position ids restarting per sequence: one row, or
    best-fit decreasing into rows of ``width`` tokens or the longest sequence's, whichever is more.

    Returns:
        input_ids, position_ids [R, C]; a row's tail is padding with its own positions 0, 1, … (a sequence of its
        own that no real token attends to); response_ids [B, L] (right-padded with 0), response_mask [B, L] bool;
        predict_at [M]: for each response token (row-major over response_mask), the flat index into [R·C] of the
        position whose output predicts it.
    """
    lengths = [len(p) + len(r) for p, r in zip(prompt_ids, response_ids)]
    if any(len(p) == 0 for p, r in zip(prompt_ids, response_ids) if r):
        raise ValueError("a response needs at least one prompt token before it")
    rows = [list(range(len(lengths)))] if one_row else best_fit_rows(lengths, max([width, *lengths]))
    width = max((sum(lengths[i] for i in row) for row in rows), default=0)
    tokens, positions, start = [], [], {}
    for r, row in enumerate(rows):
        ids, pos = [], []
        for i in row:
            start[i] = r * width + len(ids)
            ids += list(prompt_ids[i]) + list(response_ids[i])
            pos += range(lengths[i])
        tail = width - len(ids)
        tokens.append(ids + [pad_token_id] * tail)
        positions.append(pos + list(range(tail)))
    predict_at = [
        start[i] + len(prompt_ids[i]) - 1 + k for i in range(len(lengths)) for k in range(len(response_ids[i]))
    ]
    return {
        "input_ids": torch.tensor(tokens, dtype=torch.long).view(len(rows), width),
        "position_ids": torch.tensor(positions, dtype=torch.long).view(len(rows), width),
        "response_ids": pad_sequences(response_ids, 0, side="right"),
        "response_mask": pad_sequences([[1] * len(r) for r in response_ids], 0, side="right").bool(),
        "predict_at": torch.tensor(predict_at, dtype=torch.long),
    }


def token_bins(items: Sequence[Sequence[int]], budget: int, cost) -> list[list[int]]:
    """Indices of ``items`` (each a list of sequence lengths: a training row's S sequences, or one sequence)
    grouped longest first into bins whose forward costs at most ``budget`` tokens (``cost`` maps the sequence
    lengths of a bin to its tokens, e.g. :meth:`Scorer.forward_tokens`); an item over budget alone is a bin."""
    bins: list[list[int]] = []
    current: list[int] = []
    lengths: list[int] = []
    for i in sorted(range(len(items)), key=lambda i: -sum(items[i])):
        if current and cost(lengths + list(items[i])) > budget:
            bins.append(current)
            current, lengths = [], []
        current.append(i)
        lengths += list(items[i])
    return bins + [current] if current else bins


def padded_predict_at(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """[M] flat indices into [B·T] of the positions predicting each response token of a padded batch (response
    token k of a row sits at column T − L + k, so position T − L − 1 + k predicts it)."""
    b, t = batch["input_ids"].shape
    width = batch["response_ids"].shape[1]
    rows, cols = batch["response_mask"].nonzero(as_tuple=True)
    return rows * t + (t - width - 1) + cols


class Scorer:
    """Per-token log-probs of responses under a model, packed or padded, chunked or not (see the module doc).

    Args:
        pad_token_id: the tokenizer's pad id.
        device: where the model's inputs go.
        padding_free: pack sequences (when the model's plan allows).
        chunk_size: tokens per chunk of the output head (0: the model's own logits).
        allowed_token_ids: the action set when the policy is restricted to one (matrix games).
        notice: prints a fallback's reason (one line).
    """

    def __init__(self, pad_token_id: int, device, padding_free=True, chunk_size=1024, allowed_token_ids=None,
                 notice=print):  # fmt: skip
        self.pad_token_id = pad_token_id
        self.device = device
        self.padding_free = padding_free
        self.chunk_size = chunk_size
        self.allowed = None if allowed_token_ids is None else torch.as_tensor(allowed_token_ids)
        self.notice = notice
        self._plans: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.real_tokens = 0  # prompt + response tokens scored so far (the probe's not counted)
        self.forward_tokens_seen = 0  # the positions the model ran on for them, padding included
        self._width = 0  # packed rows' width, at least (0: the longest sequence of the forward)

    def token_logps(self, model: torch.nn.Module, prompt_ids, response_ids) -> torch.Tensor:
        """[B, L] float32 log π(y_t | x, y_<t) of each response (right-padded with 0), one forward of ``model``
        (with gradient when enabled)."""
        out, positions = self._forward(model, prompt_ids, response_ids, self.plan(model))
        self.real_tokens += sum(len(p) + len(r) for p, r in zip(prompt_ids, response_ids))
        self.forward_tokens_seen += positions
        return out

    @property
    def padding_fraction(self) -> float:
        """The share of the positions run so far that were padding."""
        return 1 - self.real_tokens / self.forward_tokens_seen if self.forward_tokens_seen else 0.0

    def take_counts(self) -> tuple[int, int]:
        """(real tokens, positions run) since the last call, and start counting afresh."""
        counts = (self.real_tokens, self.forward_tokens_seen)
        self.real_tokens = self.forward_tokens_seen = 0
        return counts

    def bins(self, model: torch.nn.Module, items: Sequence[Sequence[int]], budget: int) -> tuple[list[list[int]], int]:
        """Token-budget micro-batches: indices of ``items`` (each the lengths, prompt + response, of the sequences
        that must share a forward: a training row's S, or one) grouped so that each forward runs on at most
        ``budget`` positions (an item over budget alone is a bin), and the row width to pack them with (0: the
        longest sequence of each forward).

        Packed into rows of a dense mask, the items are first packed best-fit decreasing into rows as wide as the
        longest item (one packing over all of them, so only the last row's tail and the rows' gaps are padding),
        and ⌊budget / width⌋ rows make a bin; in one row (flash-attention) or padded, bins are filled longest first
        by the forward's positions (``token_bins``)."""
        plan = self.plan(model)
        if plan.packed and not plan.one_row and items:
            width = max(sum(item) for item in items)
            rows = best_fit_rows([sum(item) for item in items], width)
            per = max(1, budget // width)
            return [[i for row in rows[k : k + per] for i in row] for k in range(0, len(rows), per)], width
        cost = sum if plan.packed else (lambda ls: len(ls) * max(ls, default=0))
        return token_bins(items, budget, cost), 0

    @contextlib.contextmanager
    def row_width(self, width: int):
        """Pack the forwards inside into rows at least ``width`` tokens wide (as :meth:`bins` planned them)."""
        before, self._width = self._width, width
        try:
            yield
        finally:
            self._width = before

    def plan(self, model: torch.nn.Module) -> Plan:
        """This scorer's choices for ``model``, checked once per model on a tiny probe (then cached)."""
        lm = causal_lm(model)
        if lm not in self._plans:
            self._plans[lm] = self._check(model, lm)
        return self._plans[lm]

    # -- the forward ------------------------------------------------------------------------------------------
    def _forward(self, model, prompt_ids, response_ids, plan: Plan) -> tuple[torch.Tensor, int]:
        """(log-probs [B, L], the positions the model ran on)."""
        if plan.packed:
            batch = pack_sequences(prompt_ids, response_ids, self.pad_token_id, plan.one_row, self._width)
            inputs = {k: batch[k].to(self.device) for k in ("input_ids", "position_ids")}
            predict_at = batch["predict_at"].to(self.device)
        else:
            batch = build_sequence_batch(prompt_ids, response_ids, self.pad_token_id)
            if not plan.chunked:  # the model's own logits at the last L + 1 columns, as before packing existed
                batch = {k: v.to(self.device) for k, v in batch.items()}
                return response_token_logps(model, batch, self.allowed), batch["input_ids"].numel()
            inputs = {k: batch[k].to(self.device) for k in ("input_ids", "attention_mask", "position_ids")}
            predict_at = padded_predict_at(batch).to(self.device)
        mask = batch["response_mask"].to(self.device)
        targets = batch["response_ids"].to(self.device)[mask]
        if plan.chunked:
            flat = self._chunked(model, inputs, predict_at, targets)
        else:
            logits = model(**inputs, use_cache=False).logits
            flat = gather_token_logps(logits.reshape(-1, logits.shape[-1])[predict_at], targets, self.allowed)
        out = torch.zeros(mask.shape, dtype=flat.dtype, device=flat.device)
        return out.masked_scatter(mask, flat), inputs["input_ids"].numel()

    def _chunked(self, model, inputs, predict_at, targets) -> torch.Tensor:
        """[M] log-probs from the decoder's hidden states and the head, ``chunk_size`` positions at a time."""
        lm = causal_lm(model)
        captured = []
        handle = lm.get_decoder().register_forward_hook(lambda _m, _a, out: captured.append(out))
        try:  # no logits: the head sees zero positions
            model(**inputs, use_cache=False, logits_to_keep=torch.zeros(0, dtype=torch.long, device=self.device))
        finally:
            handle.remove()
        out = captured[-1]
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        hidden = hidden.reshape(-1, hidden.shape[-1])[predict_at]
        head = lm.get_output_embeddings()
        parts = []
        for s in range(0, hidden.shape[0], self.chunk_size):
            h, t = hidden[s : s + self.chunk_size], targets[s : s + self.chunk_size]
            if torch.is_grad_enabled():
                parts.append(checkpoint(_chunk_logps, head, h, t, self.allowed, use_reentrant=False))
            else:
                parts.append(_chunk_logps(head, h, t, self.allowed))
        return torch.cat(parts) if parts else hidden.new_zeros(0, dtype=torch.float32)

    # -- the check --------------------------------------------------------------------------------------------
    def _check(self, model, lm) -> Plan:
        """Score the probe with the plain padded forward, one sequence at a time (the rounding noise) and with each
        requested path; keep a path only where it agrees within :func:`rounding_bound`."""
        impl = str(getattr(lm.config, "_attn_implementation", None) or "")
        one_row = "flash" in impl
        wanted = Plan(self.padding_free, self.chunk_size > 0, one_row)
        if not (wanted.packed or wanted.chunked):
            return wanted
        prompts, responses = self._probe(lm)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                plain, _ = self._forward(model, prompts, responses, Plan(False, False))
                alone = torch.zeros_like(plain)
                for i, (p, r) in enumerate(zip(prompts, responses)):
                    alone[i, : len(r)] = self._forward(model, [p], [r], Plan(False, False))[0][0]
                tol = rounding_bound(plain, alone)
                paths = ((Plan(True, False, one_row), wanted.packed), (Plan(False, True), wanted.chunked))
                off = [self._deviation(model, prompts, responses, path, plain) if on else 0.0 for path, on in paths]
        finally:
            model.train(was_training)
        packed, chunked = wanted.packed and off[0] <= tol, wanted.chunked and off[1] <= tol
        name = getattr(lm.config, "model_type", type(lm).__name__)
        if wanted.packed and not packed:
            self.notice(f"[prefopt] padding_free: {name} (attn_implementation={impl or 'default'}) changes its "
                        f"outputs on packed sequences by {off[0]:.2g} in log-prob, over its rounding bound {tol:.2g} "
                        "(its attention crosses them); padding instead")  # fmt: skip
        if wanted.chunked and not chunked:
            self.notice(f"[prefopt] logprob_chunk_size: {name}'s logits are not its output head applied to its "
                        f"decoder's hidden states (by {off[1]:.2g} in log-prob, over its rounding bound {tol:.2g}: "
                        "a logit transform?); using its own logits")  # fmt: skip
        if chunked and _frozen_partitioned(lm.get_output_embeddings()):
            chunked = False
            self.notice("[prefopt] logprob_chunk_size: the output head is frozen and partitioned by ZeRO-3 (an "
                        "adapter run), and backward's recompute of a chunk would find it released; using the "
                        "model's own logits")  # fmt: skip
        return Plan(packed, chunked, one_row)

    def _probe(self, lm) -> tuple[list[list[int]], list[list[int]]]:
        """The probe's prompts and responses (:data:`PROBE_LENGTHS`), token ids spread evenly through the
        vocabulary's interior, away from the special tokens tokenizers keep at its ends (responses mapped into the
        action set, if any)."""
        vocab = lm.config.vocab_size if hasattr(lm.config, "vocab_size") else lm.get_output_embeddings().out_features
        n = sum(p + r for p, r in PROBE_LENGTHS)
        ids = [t * vocab // (n + 1) for t in range(1, n + 1)]
        pick = (lambda t: t) if self.allowed is None else (lambda t: int(self.allowed[t % len(self.allowed)]))
        prompts, responses, k = [], [], 0
        for p, r in PROBE_LENGTHS:
            prompts.append(ids[k : k + p])
            responses.append([pick(t) for t in ids[k + p : k + p + r]])
            k += p + r
        return prompts, responses

    def _deviation(self, model, prompts, responses, plan: Plan, plain: torch.Tensor) -> float:
        """max |Δ log-prob| of ``plan``'s path from the plain forward (inf where the path does not run)."""
        try:
            other, _ = self._forward(model, prompts, responses, plan)
        except (TypeError, ValueError, RuntimeError, IndexError, AttributeError):  # the path does not run on it
            return float("inf")
        return float((other - plain).abs().max()) if other.shape == plain.shape else float("inf")


def _chunk_logps(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor, allowed) -> torch.Tensor:
    return gather_token_logps(head(hidden), targets, allowed)


def _frozen_partitioned(head: torch.nn.Module) -> bool:
    """Whether the head's weights are ZeRO-3 partitions (DeepSpeed tags them with ``ds_id``) that take no gradient:
    DeepSpeed then gathers them for the module's forward only, not when the chunk's checkpoint recomputes it in
    backward (measured: the recomputed weight is the empty partition)."""
    params = list(head.parameters())
    return any(hasattr(p, "ds_id") for p in params) and not any(p.requires_grad for p in params)
