"""A causal LM as a pairwise judge: ask which response is better and read the next-token probabilities.

The judge LM is shown ``template.format(prompt=x, a=y, b=y')`` (by default the RLHFlow pair-preference
layout); a tokenizer with a chat template gets that text as a single user message with the generation prompt.
From the next-token distribution at the last position, with p_A and p_B the probabilities of the first token of
each choice string:

    P(x, y, y') = p_A / (p_A + p_B) = σ(z_A − z_B),

where z are the next-token logits (the softmax normaliser cancels; the σ form cannot underflow to 0/0). Both
orders are scored in one batched pass and averaged so that the position bias of the judge cancels:

    P(y ≻ y' | x) = ½ [P(x, y, y') + 1 − P(x, y', y)].

Batches are left-padded with explicit positions, so the last position is every row's next token.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch

from prefopt.errors import JudgeError
from prefopt.judges.base import PreferenceJudge, Prompt
from prefopt.judges.pairwise import check_template, symmetrise
from prefopt.judges.reward_model import (
    forward_kwargs,
    has_chat_template,
    left_pad,
    load_judge_model,
    model_device,
    prompt_as_text,
    run_batched,
    truncate_left,
)

DEFAULT_GENERATIVE_TEMPLATE = (
    "[CONTEXT] {prompt} [RESPONSE A] {a} [RESPONSE B] {b}\nWhich response is better? Answer A or B: "
)


def choice_token_ids(tokenizer, choices: Sequence[str]) -> tuple[int, int]:
    """The first token id of each of the two choice strings; they must exist and differ."""
    if len(choices) != 2:
        raise JudgeError(f"generative judge needs exactly two choices, got {list(choices)}")
    ids = []
    for choice in choices:
        tokens = tokenizer(choice, add_special_tokens=False)["input_ids"]
        if not tokens:
            raise JudgeError(f"generative judge choice {choice!r} encodes to no token")
        ids.append(int(tokens[0]))
    if ids[0] == ids[1]:
        raise JudgeError(
            f"generative judge choices {list(choices)} start with the same token (id {ids[0]}); "
            "pick choices whose first tokens differ"
        )
    return ids[0], ids[1]


class GenerativeJudge(PreferenceJudge):
    """P(y ≻ y' | x) from a causal LM's next-token probabilities of "A" vs "B", averaged over both orders.

    Args:
        model_name_or_path: Hub id or local folder of the judge LM and its tokenizer.
        batch_size: LM rows per forward pass (each pair is two rows).
        max_length: tokens kept per row, counted from the end (the question stays).
        dtype: ``float32``, ``bfloat16``, ``float16`` or ``auto`` (used when loading).
        device: where a loaded model is placed; inputs follow the model's device.
        trust_remote_code: allow custom model code from the checkpoint.
        template: text with the fields ``{prompt}``, ``{a}``, ``{b}``.
        choices: the answers meaning "A is better" and "B is better"; their first tokens are compared.
        model: an already-loaded causal LM, instead of loading one.
        tokenizer: its tokenizer (required with ``model=`` when no path is given).
    """

    name = "generative"

    def __init__(
        self,
        model_name_or_path: str | None = None,
        batch_size: int = 16,
        max_length: int = 1024,
        dtype: str = "float32",
        device: str = "cpu",
        trust_remote_code: bool = False,
        template: str | None = None,
        choices: Sequence[str] = ("A", "B"),
        *,
        model=None,
        tokenizer=None,
    ):
        from prefopt.models import load_causal_lm

        self.template = check_template(template or DEFAULT_GENERATIVE_TEMPLATE, "generative")
        self.model, self.tokenizer = load_judge_model(
            model_name_or_path, model, tokenizer, dtype, device, trust_remote_code, load_causal_lm
        )
        self.choices = tuple(choices)
        self.choice_ids = choice_token_ids(self.tokenizer, self.choices)
        self.batch_size = batch_size
        self.max_length = max_length
        self.name = f"generative:{model_name_or_path}" if model_name_or_path else "generative"
        params = inspect.signature(self.model.forward).parameters
        # Only the last position's logits are needed: skip the [B, L, V] projection where the model allows.
        self._extra = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        if "use_cache" in params:
            self._extra["use_cache"] = False

    def encode(self, prompt: Prompt, response_a: str, response_b: str) -> list[int]:
        """Token ids of the judge question (a shown as Response A), truncated to the last ``max_length``."""
        text = self.template.format(prompt=prompt_as_text(prompt), a=response_a, b=response_b)
        if has_chat_template(self.tokenizer):
            messages = [{"role": "user", "content": text}]
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        else:
            ids = self.tokenizer(text)["input_ids"]
        return truncate_left(ids, self.max_length)

    def choice_logit_gap(self, sequences: Sequence[Sequence[int]]) -> torch.Tensor:
        """z_A − z_B of the next token after each sequence.

        Returns:
            float32 CPU tensor [N].
        """
        pad_id = self.tokenizer.pad_token_id
        pad_id = self.tokenizer.eos_token_id if pad_id is None else pad_id
        device = model_device(self.model)
        id_a, id_b = self.choice_ids

        def forward(batch: list[list[int]]) -> torch.Tensor:
            input_ids, attention_mask, position_ids = left_pad(batch, 0 if pad_id is None else pad_id, device)
            kwargs = forward_kwargs(self.model, attention_mask, position_ids)
            next_logits = self.model(input_ids, **kwargs, **self._extra).logits[:, -1, :].float()  # [b, V]
            return next_logits[:, id_a] - next_logits[:, id_b]

        return run_batched(sequences, self.batch_size, forward)

    def _preference(
        self, prompts: Sequence[Prompt], responses_a: Sequence[str], responses_b: Sequence[str], references=None
    ) -> torch.Tensor:
        forward = [self.encode(x, a, b) for x, a, b in zip(prompts, responses_a, responses_b, strict=True)]
        swapped = [self.encode(x, b, a) for x, a, b in zip(prompts, responses_a, responses_b, strict=True)]
        probs = torch.sigmoid(self.choice_logit_gap(forward + swapped).double())
        n = len(prompts)
        return symmetrise(probs[:n], probs[n:])
