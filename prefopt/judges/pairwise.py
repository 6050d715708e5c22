"""A pairwise preference model: one sequence classifier reads the prompt and both responses.

The classifier sees ``template.format(prompt=x, a=y, b=y')`` and answers p(x, y, y') = P(y ≻ y' | x):

- ``num_labels == 1``: p = σ(logit);
- ``num_labels == 2``: p = softmax(logits)[0], i.e. label 0 means "Response A is better", label 1 "B is better";
- any other head is rejected with a :class:`JudgeError`.

A pairwise model is rarely exactly antisymmetric (position bias), so every pair is scored in both orders in one
batched pass and symmetrised:

    P(y ≻ y' | x) = ½ [p(x, y, y') + 1 − p(x, y', y)],

which makes P(y ≻ y') + P(y' ≻ y) = 1 hold exactly and P(y ≻ y) = ½. Chat prompts fill ``{prompt}`` with
their messages' contents joined by newlines. This goes through the generic sequence-classifier interface that
prefopt owns (PairRM's own code breaks on transformers 5, trl#4918).

A folder written by ``prefopt train-judge`` holds the template it was trained with in ``prefopt_judge.json``; with no
``template`` given, the judge reads it from there (else the default below), so the model sees the layout it learnt.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from prefopt.errors import JudgeError
from prefopt.judges.base import PreferenceJudge, Prompt
from prefopt.judges.reward_model import classifier_logits, load_judge_model, prompt_as_text, truncate_left

DEFAULT_PAIRWISE_TEMPLATE = "{prompt}\n\n[Response A]\n{a}\n\n[Response B]\n{b}"
JUDGE_INFO_FILE = "prefopt_judge.json"  # written by `prefopt train-judge` beside the weights


def saved_template(model_name_or_path: str | None) -> str | None:
    """The ``template`` recorded in a local model folder's prefopt_judge.json, or None (no such file or key)."""
    if not model_name_or_path:
        return None
    path = Path(os.path.expanduser(model_name_or_path)) / JUDGE_INFO_FILE
    if not path.is_file():
        return None
    try:
        template = json.loads(path.read_text(encoding="utf-8")).get("template")
    except (OSError, ValueError, AttributeError) as err:
        raise JudgeError(f"pairwise_model: cannot read '{path}': {err}") from err
    if template is not None and not isinstance(template, str):
        raise JudgeError(f"pairwise_model: '{path}' has a template that is not a string: {template!r}")
    return template


def check_template(template: str, judge: str) -> str:
    """Return ``template`` if it formats with exactly the fields {prompt}, {a} and {b}, and uses {a} and {b}."""
    try:
        filled = template.format(prompt="\x00P", a="\x00A", b="\x00B")
    except (KeyError, IndexError, ValueError) as err:
        raise JudgeError(
            f"{judge} template {template!r} must use only the fields {{prompt}}, {{a}}, {{b}}: {err!r}"
        ) from err
    if "\x00A" not in filled or "\x00B" not in filled:
        raise JudgeError(f"{judge} template {template!r} must contain both {{a}} and {{b}}")
    return template


def symmetrise(p_ab: torch.Tensor, p_ba: torch.Tensor) -> torch.Tensor:
    """½ [p(x, a, b) + 1 − p(x, b, a)]: the two-order average, so that P(a ≻ b) + P(b ≻ a) = 1 exactly.

    Args:
        p_ab: [B] judged with a shown first. p_ba: [B] judged with b shown first.

    Returns:
        float64 tensor [B].
    """
    return 0.5 * (p_ab.double() + 1.0 - p_ba.double())


class PairwiseModelJudge(PreferenceJudge):
    """P(y ≻ y' | x) from a pairwise sequence classifier, symmetrised over both orders.

    Args:
        model_name_or_path: Hub id or local folder of the classifier and its tokenizer.
        batch_size: classifier rows per forward pass (each pair is two rows).
        max_length: tokens kept per row, counted from the end.
        dtype: ``float32``, ``bfloat16``, ``float16`` or ``auto`` (used when loading).
        device: where a loaded model is placed; inputs follow the model's device.
        trust_remote_code: allow custom model code from the checkpoint.
        template: text with the fields ``{prompt}``, ``{a}``, ``{b}``; None: the one a ``prefopt train-judge``
            folder records in its prefopt_judge.json, else :data:`DEFAULT_PAIRWISE_TEMPLATE`.
        model: an already-loaded sequence classifier, instead of loading one.
        tokenizer: its tokenizer (required with ``model=`` when no path is given).
    """

    name = "pairwise_model"

    def __init__(
        self,
        model_name_or_path: str | None = None,
        batch_size: int = 16,
        max_length: int = 1024,
        dtype: str = "float32",
        device: str = "cpu",
        trust_remote_code: bool = False,
        template: str | None = None,
        *,
        model=None,
        tokenizer=None,
    ):
        from prefopt.models import load_sequence_classifier

        template = template or saved_template(model_name_or_path) or DEFAULT_PAIRWISE_TEMPLATE
        self.template = check_template(template, "pairwise_model")
        need = ((1, 2), "pairwise_model needs a classifier with 1 label (σ(logit) = P(A ≻ B)) or 2 (label 0: A wins)")
        self.model, self.tokenizer = load_judge_model(
            model_name_or_path, model, tokenizer, dtype, device, trust_remote_code, load_sequence_classifier, need
        )
        self.num_labels = int(self.model.config.num_labels)
        self.batch_size = batch_size
        self.max_length = max_length
        self.name = f"pairwise_model:{model_name_or_path}" if model_name_or_path else "pairwise_model"

    def encode(self, prompt: Prompt, response_a: str, response_b: str) -> list[int]:
        """Token ids of the filled template (a shown as Response A), truncated to the last ``max_length``."""
        text = self.template.format(prompt=prompt_as_text(prompt), a=response_a, b=response_b)
        return truncate_left(self.tokenizer(text)["input_ids"], self.max_length)

    def first_wins(self, logits: torch.Tensor) -> torch.Tensor:
        """p(x, a, b) from classifier logits [N, num_labels] → [N]."""
        if self.num_labels == 1:
            return torch.sigmoid(logits[:, 0])
        return torch.softmax(logits, dim=-1)[:, 0]

    def _preference(
        self, prompts: Sequence[Prompt], responses_a: Sequence[str], responses_b: Sequence[str], references=None
    ) -> torch.Tensor:
        forward = [self.encode(x, a, b) for x, a, b in zip(prompts, responses_a, responses_b, strict=True)]
        swapped = [self.encode(x, b, a) for x, a, b in zip(prompts, responses_a, responses_b, strict=True)]
        # Both orders in one pass: the batches fill up and the two halves share the length sort.
        logits = classifier_logits(self.model, self.tokenizer, forward + swapped, self.batch_size)
        probs = self.first_wins(logits.double())
        n = len(prompts)
        return symmetrise(probs[:n], probs[n:])
