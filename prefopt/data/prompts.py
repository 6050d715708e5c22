"""Validated prompt and preference examples: every row is checked before anything is returned."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from prefopt.data.encoding import as_chat, encode_prompt, encode_response, prompt_problem
from prefopt.data.sources import load_dataset_rows
from prefopt.errors import DataError
from prefopt.judges.base import Prompt

logger = logging.getLogger("prefopt.data")

TRUNCATION_MODES = ("keep_end", "error")


def _check_truncation_mode(truncation_mode: str) -> None:
    if truncation_mode not in TRUNCATION_MODES:
        raise DataError(f"truncation_mode must be one of {', '.join(TRUNCATION_MODES)}; got {truncation_mode!r}")


def _check_columns(source: str, present: Sequence[str], required: Sequence[str]) -> None:
    for column in required:
        if column not in present:
            raise DataError(f"{source}: missing column '{column}'; columns present: {', '.join(present)}")


def encode_row_prompt(where, prompt, tokenizer, max_prompt_length, truncation_mode) -> tuple[list[int], bool]:
    """(prompt ids, whether they were truncated); keep_end keeps the last tokens, as TRL does: they hold the ask.
    ``where`` names the row in errors (``FILE: line N``)."""
    try:
        ids = encode_prompt(tokenizer, prompt)
    except DataError as err:
        raise DataError(f"{where}: {err}") from err
    if len(ids) <= max_prompt_length:
        return ids, False
    if truncation_mode == "error":
        raise DataError(f"{where}: prompt has {len(ids)} tokens, more than max_prompt_length={max_prompt_length}")
    return ids[-max_prompt_length:], True


@dataclass
class PromptExample:
    """One validated prompt.

    Attributes:
        index: 0-based row in the loaded split.
        prompt: the raw prompt (a string or a list of messages), what judges receive.
        prompt_ids: encoded prompt [L], truncated to max_prompt_length.
        extra: every other column of the row (``chosen``, ``reference``, ``answer``, ...).
        where: the row as error messages name it (``FILE: line N``, ``SOURCE: row N (counting from 0)``).
    """

    index: int
    prompt: Prompt
    prompt_ids: list[int]
    extra: dict = field(default_factory=dict)
    where: str = ""

    def __post_init__(self):
        self.where = self.where or f"row {self.index} (counting from 0)"


def reference_text(prompt: PromptExample, column: str) -> str:
    """A row's reference response: a string, or the last assistant message of a conversational completion (TRL's
    ``chosen`` of HH-RLHF, a list of messages)."""
    value = prompt.extra[column]
    if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
        answers = [m.get("content") for m in value if m.get("role") == "assistant"]
        value = answers[-1] if answers else None
    if not isinstance(value, str):
        raise DataError(f"{prompt.where}: column '{column}' must be a string or messages with an assistant turn")
    return value


def load_prompts(
    source,
    tokenizer,
    *,
    split: str = "train",
    config_name: str | None = None,
    prompt_column: str = "prompt",
    max_prompt_length: int = 512,
    truncation_mode: str = "keep_end",
    require_columns: Sequence[str] = (),
    text_prompts_as_chat: bool = False,
) -> list[PromptExample]:
    """Load, validate and encode every prompt of a dataset.

    Args:
        truncation_mode: ``keep_end`` keeps the last ``max_prompt_length`` tokens of a long prompt (the count of
            truncated prompts is logged); ``error`` rejects the row.
        require_columns: further columns every row must have, e.g. ``("chosen", "rejected")``.
        text_prompts_as_chat: turn a string prompt into one user message, so that the chat template applies
            (instruct models prompted from a dataset of plain-text prompts, as SPPO's UltraFeedback runs are).

    Raises:
        DataError: naming the source, the row and the problem, for the first bad row.
    """
    _check_truncation_mode(truncation_mode)
    dataset, where = load_dataset_rows(source, split=split, config_name=config_name)
    _check_columns(source, dataset.column_names, [prompt_column, *require_columns])
    examples, num_truncated = [], 0
    for row, record in enumerate(dataset):
        prompt = record[prompt_column]
        problem = prompt_problem(prompt, prompt_column)
        if problem:
            raise DataError(f"{where(row)}: {problem}")
        prompt = as_chat(prompt) if text_prompts_as_chat else prompt
        ids, truncated = encode_row_prompt(where(row), prompt, tokenizer, max_prompt_length, truncation_mode)
        num_truncated += truncated
        extra = {key: value for key, value in record.items() if key != prompt_column}
        examples.append(PromptExample(index=row, prompt=prompt, prompt_ids=ids, extra=extra, where=where(row)))
    logger.info(
        "%s: %d rows, %d prompts cut to their last %d tokens", source, len(examples), num_truncated, max_prompt_length
    )
    return examples


@dataclass
class PreferenceExample:
    """One validated preference pair; ``chosen_ids``/``rejected_ids`` follow ``prompt_ids`` and end with EOS."""

    index: int
    prompt: Prompt
    prompt_ids: list[int]
    chosen: str
    rejected: str
    chosen_ids: list[int]
    rejected_ids: list[int]


def _response_text(value: Any, column: str) -> tuple[str | None, str | None]:
    """(text, problem) for an explicit-prompt response: a string or a list of one assistant message."""
    if isinstance(value, list):
        problem = prompt_problem(value, column)
        if problem:
            return None, problem
        if len(value) != 1 or value[0]["role"] != "assistant":
            return None, f"column '{column}' must hold exactly one assistant message"
        value = value[0]["content"]
    if not isinstance(value, str):
        return None, f"column '{column}' must be a string or a list of messages, got {type(value).__name__}"
    if not value.strip():
        return None, f"column '{column}' is empty"
    return value, None


def _split_implicit(chosen: Any, rejected: Any) -> tuple[tuple[list, str, str] | None, str | None]:
    """((prompt, chosen text, rejected text), problem) for conversations sharing all but the last message."""
    for value, column in ((chosen, "chosen"), (rejected, "rejected")):
        problem = prompt_problem(value, column)
        if problem is None and not isinstance(value, list):
            problem = f"column '{column}' must be a conversation when there is no 'prompt' column"
        if problem is None and (len(value) < 2 or value[-1]["role"] != "assistant"):
            problem = f"column '{column}' must end with an assistant message after at least one prompt message"
        if problem is None and not value[-1]["content"].strip():
            problem = f"column '{column}' has an empty last assistant message"
        if problem:
            return None, problem

    def turns(messages):
        return [(m["role"], m["content"]) for m in messages[:-1]]

    if turns(chosen) != turns(rejected):
        return None, "chosen and rejected do not share a prompt: they differ before their last message"
    return (chosen[:-1], chosen[-1]["content"], rejected[-1]["content"]), None


def _parse_preference(record: dict, explicit: bool) -> tuple[tuple[Prompt, str, str] | None, str | None]:
    def whole_conversation(value) -> bool:
        return isinstance(value, list) and len(value) > 1

    # Implicit prompt; also HuggingFaceH4/ultrafeedback_binarized's shape: a 'prompt' string beside chosen and
    # rejected that are whole conversations (their shared prefix is the prompt, in its chat form).
    if not explicit or (whole_conversation(record["chosen"]) and whole_conversation(record["rejected"])):
        return _split_implicit(record["chosen"], record["rejected"])
    problem = prompt_problem(record["prompt"], "prompt")
    chosen, chosen_problem = _response_text(record["chosen"], "chosen")
    rejected, rejected_problem = _response_text(record["rejected"], "rejected")
    problem = problem or chosen_problem or rejected_problem
    return (None, problem) if problem else ((record["prompt"], chosen, rejected), None)


def load_preferences(
    source,
    tokenizer,
    *,
    split: str = "train",
    config_name: str | None = None,
    max_prompt_length: int = 512,
    truncation_mode: str = "keep_end",
    text_prompts_as_chat: bool = False,
    completion_end: str = "eos",
) -> list[PreferenceExample]:
    """Load, validate and encode preference pairs in TRL's explicit- or implicit-prompt format.

    Explicit: columns ``prompt``, ``chosen``, ``rejected``; responses are strings or lists of one assistant
    message. Implicit (no ``prompt`` column): ``chosen`` and ``rejected`` are whole conversations that share
    every message but the last assistant one, and that shared prefix is the prompt. ``completion_end``: see
    :func:`prefopt.data.encoding.encode_response`.

    Raises:
        DataError: naming the source, the row and the problem, for the first bad row.
    """
    _check_truncation_mode(truncation_mode)
    dataset, where = load_dataset_rows(source, split=split, config_name=config_name)
    _check_columns(source, dataset.column_names, ["chosen", "rejected"])
    explicit = "prompt" in dataset.column_names
    examples, num_truncated = [], 0
    for row, record in enumerate(dataset):
        parsed, problem = _parse_preference(record, explicit)
        if problem:
            raise DataError(f"{where(row)}: {problem}")
        prompt, chosen, rejected = parsed
        prompt = as_chat(prompt) if text_prompts_as_chat else prompt
        ids, truncated = encode_row_prompt(where(row), prompt, tokenizer, max_prompt_length, truncation_mode)
        num_truncated += truncated
        try:
            # Responses follow the untruncated prompt: the template prefix check needs the whole prompt.
            chosen_ids = encode_response(tokenizer, prompt, chosen, completion_end)
            rejected_ids = encode_response(tokenizer, prompt, rejected, completion_end)
        except DataError as err:
            raise DataError(f"{where(row)}: {err}") from err
        examples.append(PreferenceExample(row, prompt, ids, chosen, rejected, chosen_ids, rejected_ids))
    logger.info(
        "%s: %d rows, %d prompts cut to their last %d tokens", source, len(examples), num_truncated, max_prompt_length
    )
    return examples
