"""A scalar reward model as a judge, plus the batching helpers every model-based judge shares.

The reward of (x, y) is ``logits[:, 0]`` of a sequence classifier (`AutoModelForSequenceClassification`) run
on x and y formatted the way the reward model was trained: the tokenizer's chat template when the prompt is a
list of messages and the tokenizer has one, plain text otherwise (see :func:`encode_prompt_response`).

Shared mechanics (used by :mod:`prefopt.judges.pairwise` and :mod:`prefopt.judges.generative` too):

- inputs are truncated to ``max_length`` tokens keeping the END, so the responses survive a long prompt;
- rows are sorted by length and run in batches of ``batch_size`` under ``torch.inference_mode``, then put back
  in their original order;
- batches are left-padded with explicit ``position_ids`` (counted over real tokens only), so a row's score
  does not depend on what it was batched with. The classifier pools its logits at the rightmost token that is
  not the model's pad id, which with left padding is the last real token (unless the text itself ends with the
  pad id, e.g. pad = EOS and a template that ends in EOS: then the model's own convention applies).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import torch

from prefopt.errors import JudgeError
from prefopt.judges.base import Prompt, RewardJudge


def prompt_as_text(prompt: Prompt) -> str:
    """A prompt as plain text: a string as is, chat messages joined by their contents with newlines."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(str(message["content"]) for message in prompt)


def has_chat_template(tokenizer) -> bool:
    """Whether the tokenizer carries a chat template to format messages with."""
    return bool(getattr(tokenizer, "chat_template", None))


def encode_prompt_response(tokenizer, prompt: Prompt, response: str) -> list[int]:
    """Token ids of (prompt, response) as a reward model reads them.

    Chat prompts with a chat-template tokenizer: the template renders the messages plus the response as the
    assistant turn, and the text is tokenized without adding special tokens (the template already holds them;
    adding them again gives a double BOS, trl#4481). Otherwise: ``prompt_as_text(prompt) + "\\n" + response``,
    tokenized with the tokenizer's own special tokens.
    """
    if not isinstance(prompt, str) and has_chat_template(tokenizer):
        messages = list(prompt) + [{"role": "assistant", "content": response}]
        # transformers 5 returns a dict from tokenize=True; render text, then tokenize once.
        text = tokenizer.apply_chat_template(messages, tokenize=False)
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer(prompt_as_text(prompt) + "\n" + response)["input_ids"]


def truncate_left(ids: Sequence[int], max_length: int) -> list[int]:
    """Keep the last ``max_length`` tokens: the response (and a judge's question) sit at the end."""
    ids = list(ids)
    return ids[-max_length:] if len(ids) > max_length else ids


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, ...]:
    """Left-pad token id lists into a batch.

    Returns:
        input_ids [B, L], attention_mask [B, L] (1 on real tokens), position_ids [B, L] (0, 1, ... over the real
        tokens of each row, 0 on the padding), all on ``device``.
    """
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if len(seq):
            input_ids[row, width - len(seq) :] = torch.tensor(list(seq), dtype=torch.long)
            attention_mask[row, width - len(seq) :] = 1
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    return input_ids.to(device), attention_mask.to(device), position_ids.to(device)


def run_batched(
    sequences: Sequence[Sequence[int]], batch_size: int, forward: Callable[[list[list[int]]], torch.Tensor]
) -> torch.Tensor:
    """Run ``forward`` once per distinct sequence, in length-sorted batches; return rows in the input order.

    Sorting by length keeps padding (wasted compute) small; left padding with explicit positions makes the
    result independent of the batch composition up to float round-off. Two choices remove even that round-off
    where the judges' symmetry depends on it: identical sequences are run once and share one result (so
    P(a ≻ a) = ½ exactly), and length ties are broken by content, so the same set of rows is batched the same
    way whatever its order (scoring (a, b) and then (b, a) reuses the very same numbers).

    Args:
        sequences: N token id lists.
        forward: maps a batch of b id lists to a float tensor [b, ...] (any device).

    Returns:
        float32 CPU tensor [N, ...].
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    distinct = sorted({tuple(seq) for seq in sequences}, key=lambda seq: (-len(seq), seq))
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(distinct), batch_size):
            chunks.append(forward([list(seq) for seq in distinct[start : start + batch_size]]).float().cpu())
    sorted_out = torch.cat(chunks, dim=0)
    position = {seq: k for k, seq in enumerate(distinct)}
    return sorted_out[torch.tensor([position[tuple(seq)] for seq in sequences], dtype=torch.long)]


def model_device(model) -> torch.device:
    """The device of the model's parameters (where inputs must go)."""
    return next(model.parameters()).device


def forward_kwargs(model, attention_mask: torch.Tensor, position_ids: torch.Tensor) -> dict:
    """Keyword arguments for ``model(input_ids, **kwargs)``: the mask, and positions where the model takes them."""
    kwargs = {"attention_mask": attention_mask}
    if "position_ids" in inspect.signature(model.forward).parameters:
        kwargs["position_ids"] = position_ids
    return kwargs


def pad_token_id(model, tokenizer) -> int:
    """The id to pad with: the model's own pad id (which its classifier pooling skips), else the tokenizer's.

    A model without a pad id gets the tokenizer's, as TRL does, so its classifier can pool batches larger than 1.
    """
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    pad_id = getattr(config, "pad_token_id", None)
    if pad_id is None:
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad_id is None:
            pad_id = 0
        config.pad_token_id = pad_id
    return int(pad_id)


def classifier_logits(model, tokenizer, sequences: Sequence[Sequence[int]], batch_size: int) -> torch.Tensor:
    """Sequence-classifier logits for already-truncated token id lists.

    Returns:
        float32 CPU tensor [N, num_labels].
    """
    pad_id = pad_token_id(model, tokenizer)
    device = model_device(model)

    def forward(batch: list[list[int]]) -> torch.Tensor:
        input_ids, attention_mask, position_ids = left_pad(batch, pad_id, device)
        return model(input_ids, **forward_kwargs(model, attention_mask, position_ids)).logits

    return run_batched(sequences, batch_size, forward)


def load_judge_model(
    model_name_or_path: str | None,
    model,
    tokenizer,
    dtype: str,
    device: str,
    trust_remote_code: bool,
    loader,
    labels: tuple[tuple[int, ...], str] | None = None,
):
    """(model, tokenizer) from a path, or the already-loaded pair.

    ``labels``: (the classifier head sizes the judge reads, what it needs in words); any other ``num_labels`` is a
    JudgeError, raised from the config alone before the weights load. A model loaded here is put in eval mode
    without gradients; a model passed in is used as given (it may be shared with other code), so callers pass it in
    eval mode.
    """
    from prefopt.models import load_model_config, load_tokenizer

    if model is None and model_name_or_path is None:
        raise JudgeError("a model judge needs model_name_or_path (or an already-loaded model= and tokenizer=)")
    if labels is not None:
        config = (
            model.config
            if model is not None
            else load_model_config(model_name_or_path, "judge model", trust_remote_code)
        )
        if config.num_labels not in labels[0]:
            name = f"'{model_name_or_path}'" if model_name_or_path else "the model given"
            raise JudgeError(f"{labels[1]}; {name} has num_labels {config.num_labels}")
    if model is None:
        model = loader(model_name_or_path, dtype=dtype, trust_remote_code=trust_remote_code)
        model = model.to(device).eval().requires_grad_(False)
    if tokenizer is None:
        if model_name_or_path is None:
            raise JudgeError("a model judge given model= also needs tokenizer=")
        tokenizer = load_tokenizer(model_name_or_path, trust_remote_code=trust_remote_code)
    return model, tokenizer


class RewardModelJudge(RewardJudge):
    """r(x, y) = logits[:, 0] of a sequence classifier on the formatted (prompt, response).

    Args:
        model_name_or_path: Hub id or local folder of the reward model and its tokenizer.
        batch_size: rows per forward pass.
        max_length: tokens kept per row, counted from the end.
        dtype: ``float32``, ``bfloat16``, ``float16`` or ``auto`` (used when loading).
        device: where a loaded model is placed; inputs follow the model's device.
        trust_remote_code: allow custom model code from the checkpoint.
        model: an already-loaded sequence classifier, instead of loading one.
        tokenizer: its tokenizer (required with ``model=`` when no path is given).
    """

    name = "reward_model"

    def __init__(
        self,
        model_name_or_path: str | None = None,
        batch_size: int = 16,
        max_length: int = 1024,
        dtype: str = "float32",
        device: str = "cpu",
        trust_remote_code: bool = False,
        *,
        model=None,
        tokenizer=None,
    ):
        from prefopt.models import load_sequence_classifier

        need = ((1,), "reward_model needs a classifier with one output (num_labels 1), the reward r(x, y)")
        self.model, self.tokenizer = load_judge_model(
            model_name_or_path, model, tokenizer, dtype, device, trust_remote_code, load_sequence_classifier, need
        )
        self.batch_size = batch_size
        self.max_length = max_length
        self.name = f"reward_model:{model_name_or_path}" if model_name_or_path else "reward_model"

    def _reward(self, prompts: Sequence[Prompt], responses: Sequence[str], references=None) -> torch.Tensor:
        sequences = [
            truncate_left(encode_prompt_response(self.tokenizer, p, r), self.max_length)
            for p, r in zip(prompts, responses, strict=True)
        ]
        return classifier_logits(self.model, self.tokenizer, sequences, self.batch_size)[:, 0]
