"""Pure tensor helpers shared by the rollout engine, the anchors and the losses.

Nothing here touches a model's weights, a config or the backend: every function maps tensors to tensors, so
each one is tested on hand-made inputs. Shapes: B = sequences, T = tokens of prompt + response, L = response
tokens (left-aligned, padded on the right).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def restricted_log_softmax(logits: torch.Tensor, allowed_token_ids: torch.Tensor | None = None) -> torch.Tensor:
    """log-softmax over the vocabulary, or over the allowed tokens only (−inf elsewhere).

    A policy restricted to an action set (a matrix game's single-token actions) is the softmax of the model's
    logits over that set; sampling and training must both use this same restriction.

    Args:
        logits: [..., V].
        allowed_token_ids: [A] long, or None for the full vocabulary.
    """
    logits = logits.float()
    if allowed_token_ids is None:
        return torch.log_softmax(logits, dim=-1)
    masked = torch.full_like(logits, float("-inf"))
    idx = allowed_token_ids.to(logits.device)
    masked[..., idx] = logits[..., idx]
    return torch.log_softmax(masked, dim=-1)


def gather_token_logps(
    logits: torch.Tensor, labels: torch.Tensor, allowed_token_ids: torch.Tensor | None = None
) -> torch.Tensor:
    """log π(label_t | ·) for every position.

    Args:
        logits: [B, L, V] logits whose position t predicts labels[:, t].
        labels: [B, L] token ids (any value where masked; it is clamped to a valid index).
    Returns:
        [B, L] float32 token log-probs.
    """
    logps = restricted_log_softmax(logits, allowed_token_ids)
    return torch.gather(logps, -1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = -1) -> torch.Tensor:
    """Mean of values where mask is true; 0 where the mask is empty (instead of NaN)."""
    mask = mask.to(values.dtype)
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def group_advantages(values: torch.Tensor, scale: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """Â = (x − mean) / (std + ε) along the last dim, population std (GRPO's and GRAO's advantages); x − mean
    without ``scale`` (Dr. GRPO).

    Args:
        values: [..., G].
    """
    centred = values - values.mean(-1, keepdim=True)
    return centred / (values.std(-1, unbiased=False, keepdim=True) + eps) if scale else centred


def pad_sequences(seqs: Sequence[Sequence[int]], pad_value: int, side: str = "right") -> torch.Tensor:
    """Stack ragged int lists into a [B, max_len] long tensor."""
    width = max((len(s) for s in seqs), default=0)
    out = torch.full((len(seqs), width), pad_value, dtype=torch.long)
    for i, s in enumerate(seqs):
        if len(s) == 0:
            continue
        if side == "right":
            out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
        else:
            out[i, width - len(s) :] = torch.as_tensor(s, dtype=torch.long)
    return out


def pad_float_sequences(seqs: Sequence[torch.Tensor], width: int | None = None) -> torch.Tensor:
    """Stack ragged 1-D float tensors into [B, width], zero-padded on the right."""
    width = max((len(s) for s in seqs), default=0) if width is None else width
    out = torch.zeros(len(seqs), width, dtype=torch.float32)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s[:width]
    return out


def build_sequence_batch(
    prompt_ids: Sequence[Sequence[int]], response_ids: Sequence[Sequence[int]], pad_token_id: int
) -> dict[str, torch.Tensor]:
    """Concatenate prompt + response per row, left-padded, for one causal-LM forward pass.

    Left padding puts every response at the same columns (the last L of the row), so its logits are one slice.

    Returns:
        input_ids [B, T], attention_mask [B, T], position_ids [B, T] (counting real tokens only),
        response_ids [B, L] (right-padded with 0), response_mask [B, L] bool.
    """
    full = [list(p) + list(r) for p, r in zip(prompt_ids, response_ids)]
    max_resp = max((len(r) for r in response_ids), default=0)
    # Pad each row on the right so every response has width max_resp, then left-pad to a common length:
    # response token k of every row then sits at column T - max_resp + k.
    right_pad = [max_resp - len(r) for r in response_ids]
    rows = [f + [pad_token_id] * rp for f, rp in zip(full, right_pad)]
    input_ids = pad_sequences(rows, pad_token_id, side="left")
    mask_rows = [[1] * len(f) + [0] * rp for f, rp in zip(full, right_pad)]
    attention_mask = pad_sequences(mask_rows, 0, side="left")
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    response = pad_sequences(response_ids, 0, side="right")
    response_mask = pad_sequences([[1] * len(r) for r in response_ids], 0, side="right").bool()
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "position_ids": position_ids,
        "response_ids": response,
        "response_mask": response_mask,
    }


def response_token_logps(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], allowed_token_ids: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-token log-probs of the responses under ``model`` (one forward pass, gradients kept if enabled).

    Args:
        batch: the output of :func:`build_sequence_batch`, on the model's device.
    Returns:
        [B, L] float32; zero where response_mask is false.
    """
    width = batch["response_ids"].shape[1]
    if width == 0:
        return torch.zeros(batch["input_ids"].shape[0], 0, device=batch["input_ids"].device)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids")}
    # Position t predicts token t+1: the L response tokens need the logits at columns T-L-1 .. T-2 only, so ask
    # the model for the last L+1 positions instead of materialising [B, T, V].
    try:
        out = model(**inputs, use_cache=False, logits_to_keep=width + 1)
    except TypeError:  # architectures without logits_to_keep
        out = model(**inputs, use_cache=False)
    logits = out.logits[:, -width - 1 : -1, :]
    token_logps = gather_token_logps(logits, batch["response_ids"], allowed_token_ids)
    return torch.where(batch["response_mask"], token_logps, 0.0)  # not a product: −inf outside an action set
