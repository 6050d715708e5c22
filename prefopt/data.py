"""Prompt and preference datasets: loading, validation, chat templates and per-iteration prompt splits.

Sources are local files (``.json``, ``.jsonl``, ``.parquet``, ``.csv``), folders written by
``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``, or Hub dataset names. Rows follow TRL's formats: a
prompt is a string ("standard") or a list of ``{"role", "content"}`` messages ("conversational").

Every row is validated before anything is returned, so bad data stops a run before any compute. Errors are
one-line :class:`DataError` messages ``SOURCE: row N: PROBLEM``, where N is the 0-based row index of the loaded
split (``dataset[N]``; for a ``.jsonl`` file that is line N + 1).

The chat template is applied here and only here (:func:`encode_prompt`, :func:`encode_response`): the rendered
text already holds the BOS, so it is tokenized without special tokens and the result carries exactly one BOS
(trl#4481 is the bug this avoids).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from prefopt.errors import ConfigError, DataError
from prefopt.judges.base import Prompt

logger = logging.getLogger(__name__)

FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}
TRUNCATION_MODES = ("keep_end", "error")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _looks_like_path(source: str) -> bool:
    return source.startswith((".", "/", "~")) or os.path.splitext(source)[1].lower() in FILE_BUILDERS


def _no_rows(source: str, split: str) -> DataError:
    return DataError(f"dataset '{source}' (split {split}) has no rows")


def _load_saved(path: str, source: str, split: str):
    import datasets

    dict_marker = os.path.join(path, "dataset_dict.json")
    if os.path.exists(dict_marker):
        with open(dict_marker, encoding="utf-8") as f:
            splits = json.load(f)["splits"]
        if split not in splits:
            raise DataError(f"dataset '{source}' has no split '{split}'; available splits: {', '.join(splits)}")
        path = os.path.join(path, split)
    # save_to_disk writes no shard for zero rows, and load_from_disk then fails with an IndexError.
    with open(os.path.join(path, "state.json"), encoding="utf-8") as f:
        if not json.load(f)["_data_files"]:
            raise _no_rows(source, split)
    return datasets.load_from_disk(path)


def _load_file(path: str, source: str, split: str):
    import datasets

    # datasets fails on empty text files with StopIteration or a cryptic "no data" message; say it plainly.
    if os.path.getsize(path) == 0:
        raise _no_rows(source, split)
    builder = FILE_BUILDERS[os.path.splitext(path)[1].lower()]
    try:
        # A single file is one split named "train"; any other split name fails with the list of splits.
        return datasets.load_dataset(builder, data_files=path, split=split)
    except ValueError as err:
        if "corresponds to no data" in str(err):
            raise _no_rows(source, split) from err
        raise


def load_dataset_source(source: str, split: str = "train", config_name: str | None = None):
    """Load one split of a local file, a saved dataset folder or a Hub dataset.

    Args:
        source: a ``.json``/``.jsonl``/``.parquet``/``.csv`` file, a ``save_to_disk`` folder, or a Hub name.
        split: the split to return.
        config_name: the Hub dataset configuration (ignored for local sources).

    Returns:
        A ``datasets.Dataset`` with at least one row.

    Raises:
        DataError: the source does not exist, cannot be loaded, lacks the split, or has no rows.
    """
    import datasets

    path = os.path.expanduser(source)
    if not os.path.exists(path) and _looks_like_path(source):
        raise DataError(f"dataset file '{source}' does not exist")
    try:
        if os.path.isdir(path) and any(
            os.path.exists(os.path.join(path, marker)) for marker in ("dataset_dict.json", "state.json")
        ):
            dataset = _load_saved(path, source, split)
        elif os.path.isfile(path) and os.path.splitext(path)[1].lower() in FILE_BUILDERS:
            dataset = _load_file(path, source, split)
        else:
            # A Hub name, or a local folder of data files that datasets can infer a builder for.
            dataset = datasets.load_dataset(path if os.path.exists(path) else source, config_name, split=split)
    except DataError:
        raise
    except Exception as err:  # any loader failure is a problem with the user's data or name
        raise DataError(f"cannot load dataset '{source}' (split {split}): {_first_line(err)}") from err
    if len(dataset) == 0:
        raise _no_rows(source, split)
    return dataset


def prompt_problem(value: Any, column: str) -> str | None:
    """What is wrong with a prompt-like value (a string or a list of messages), or None when it is valid."""
    if value is None:
        return f"column '{column}' is null"
    if isinstance(value, str):
        return f"column '{column}' is empty" if not value.strip() else None
    if not isinstance(value, list):
        return f"column '{column}' must be a string or a list of messages, got {type(value).__name__}"
    if not value:
        return f"column '{column}' is an empty message list"
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            return f"column '{column}' message {i} must be a {{'role', 'content'}} dict, got {type(message).__name__}"
        for key in ("role", "content"):
            if not isinstance(message.get(key), str):
                return f"column '{column}' message {i} has no string '{key}'"
    return None


def _render(tokenizer, messages: list[dict], add_generation_prompt: bool) -> str:
    if not getattr(tokenizer, "chat_template", None):
        raise DataError("conversational prompts need a tokenizer with a chat_template, and this one has none")
    try:
        return tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=False)
    except Exception as err:  # jinja raises its own errors for conversations a template rejects
        raise DataError(f"the chat template rejected the conversation: {_first_line(err)}") from err


def as_chat(prompt: Prompt) -> Prompt:
    """A string prompt as one user message; a conversation unchanged."""
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt


def encode_prompt(tokenizer, prompt: Prompt) -> list[int]:
    """Token ids of a prompt, ready for generation (TRL semantics).

    A conversational prompt is rendered with the chat template and the generation prompt, then tokenized
    without special tokens (the template holds the BOS). A string prompt is tokenized with the tokenizer's own
    special tokens and no template.

    Returns:
        token ids [L].
    """
    if isinstance(prompt, str):
        return list(tokenizer(prompt)["input_ids"])
    if not isinstance(prompt, list):
        raise DataError(f"a prompt must be a string or a list of messages, got {type(prompt).__name__}")
    text = _render(tokenizer, prompt, add_generation_prompt=True)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_response(tokenizer, prompt: Prompt, response: str) -> list[int]:
    """Token ids of ``response`` as the policy emits them after ``encode_prompt(prompt)``, ending with EOS.

    Conversational: the template of prompt + assistant message, minus the prompt's ids, cut right after the
    first EOS (templates often add a newline after it, which the policy never generates). If the template
    emits no EOS, one is appended: a response must end with EOS for generation to stop.

    Returns:
        token ids [T], the last one ``tokenizer.eos_token_id``.

    Raises:
        DataError: no EOS token, or a chat template whose prompt rendering is not a token prefix of the
            full conversation.
    """
    eos_id = tokenizer.eos_token_id
    if eos_id is None:
        raise DataError("the tokenizer has no eos_token; responses need one to end")
    if isinstance(prompt, str):
        return list(tokenizer(response, add_special_tokens=False)["input_ids"]) + [eos_id]
    prompt_ids = encode_prompt(tokenizer, prompt)
    text = _render(tokenizer, [*prompt, {"role": "assistant", "content": response}], add_generation_prompt=False)
    full_ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if full_ids[: len(prompt_ids)] != prompt_ids:
        raise DataError(
            "the chat template is not prefix-stable: the prompt rendered with add_generation_prompt=True does not "
            "tokenize to a prefix of the prompt + assistant response, so responses cannot be split off"
        )
    response_ids = full_ids[len(prompt_ids) :]
    if eos_id in response_ids:
        return response_ids[: response_ids.index(eos_id) + 1]
    return response_ids + [eos_id]


def _check_truncation_mode(truncation_mode: str) -> None:
    if truncation_mode not in TRUNCATION_MODES:
        raise DataError(f"truncation_mode must be one of {', '.join(TRUNCATION_MODES)}; got {truncation_mode!r}")


def _check_columns(source: str, present: Sequence[str], required: Sequence[str]) -> None:
    for column in required:
        if column not in present:
            raise DataError(f"{source}: missing column '{column}'; columns present: {', '.join(present)}")


def _encode_row_prompt(source, row, prompt, tokenizer, max_prompt_length, truncation_mode) -> tuple[list[int], bool]:
    """(prompt ids, whether they were truncated); keep_end keeps the last tokens, as TRL does: they hold the ask."""
    try:
        ids = encode_prompt(tokenizer, prompt)
    except DataError as err:
        raise DataError(f"{source}: row {row}: {err}") from err
    if len(ids) <= max_prompt_length:
        return ids, False
    if truncation_mode == "error":
        raise DataError(
            f"{source}: row {row}: prompt has {len(ids)} tokens, more than max_prompt_length={max_prompt_length}"
        )
    return ids[-max_prompt_length:], True


@dataclass
class PromptExample:
    """One validated prompt.

    Attributes:
        index: 0-based row in the loaded split.
        prompt: the raw prompt (a string or a list of messages), what judges receive.
        prompt_ids: encoded prompt [L], truncated to max_prompt_length.
        extra: every other column of the row (``chosen``, ``reference``, ``answer``, ...).
    """

    index: int
    prompt: Prompt
    prompt_ids: list[int]
    extra: dict = field(default_factory=dict)


def load_prompts(
    source: str,
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
    dataset = load_dataset_source(source, split=split, config_name=config_name)
    _check_columns(source, dataset.column_names, [prompt_column, *require_columns])
    examples, num_truncated = [], 0
    for row, record in enumerate(dataset):
        prompt = record[prompt_column]
        problem = prompt_problem(prompt, prompt_column)
        if problem:
            raise DataError(f"{source}: row {row}: {problem}")
        prompt = as_chat(prompt) if text_prompts_as_chat else prompt
        ids, truncated = _encode_row_prompt(source, row, prompt, tokenizer, max_prompt_length, truncation_mode)
        num_truncated += truncated
        extra = {key: value for key, value in record.items() if key != prompt_column}
        examples.append(PromptExample(index=row, prompt=prompt, prompt_ids=ids, extra=extra))
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
    source: str,
    tokenizer,
    *,
    split: str = "train",
    config_name: str | None = None,
    max_prompt_length: int = 512,
    truncation_mode: str = "keep_end",
    text_prompts_as_chat: bool = False,
) -> list[PreferenceExample]:
    """Load, validate and encode preference pairs in TRL's explicit- or implicit-prompt format.

    Explicit: columns ``prompt``, ``chosen``, ``rejected``; responses are strings or lists of one assistant
    message. Implicit (no ``prompt`` column): ``chosen`` and ``rejected`` are whole conversations that share
    every message but the last assistant one, and that shared prefix is the prompt.

    Raises:
        DataError: naming the source, the row and the problem, for the first bad row.
    """
    _check_truncation_mode(truncation_mode)
    dataset = load_dataset_source(source, split=split, config_name=config_name)
    _check_columns(source, dataset.column_names, ["chosen", "rejected"])
    explicit = "prompt" in dataset.column_names
    examples, num_truncated = [], 0
    for row, record in enumerate(dataset):
        parsed, problem = _parse_preference(record, explicit)
        if problem:
            raise DataError(f"{source}: row {row}: {problem}")
        prompt, chosen, rejected = parsed
        prompt = as_chat(prompt) if text_prompts_as_chat else prompt
        ids, truncated = _encode_row_prompt(source, row, prompt, tokenizer, max_prompt_length, truncation_mode)
        num_truncated += truncated
        try:
            # Responses follow the untruncated prompt: the template prefix check needs the whole prompt.
            chosen_ids = encode_response(tokenizer, prompt, chosen)
            rejected_ids = encode_response(tokenizer, prompt, rejected)
        except DataError as err:
            raise DataError(f"{source}: row {row}: {err}") from err
        examples.append(PreferenceExample(row, prompt, ids, chosen, rejected, chosen_ids, rejected_ids))
    logger.info(
        "%s: %d rows, %d prompts cut to their last %d tokens", source, len(examples), num_truncated, max_prompt_length
    )
    return examples


def _permutation(num_items: int, seed: int, pass_index: int = 0) -> list[int]:
    # A private Generator keyed on (seed, pass): never touches global RNG state, same result on every platform.
    return np.random.default_rng([seed, pass_index]).permutation(num_items).tolist()


def iteration_prompts(
    num_prompts: int, per_iteration: int | None, iteration: int, num_iterations: int, seed: int
) -> list[int]:
    """Indices of the prompts used by iteration ``iteration`` (0-based).

    ``per_iteration=None``: one seeded permutation split into ``num_iterations`` disjoint parts whose sizes
    differ by at most one (SPPO's disjoint splits); iteration t gets part t. An int k: iteration t takes
    positions [t·k, (t+1)·k) of a stream of permutations, a fresh one (seeded by seed and pass number) each time
    the data runs out, so every prompt is used once per pass. A block that straddles two passes may repeat a
    prompt; within a pass there are no repeats.

    Args:
        seed: a non-negative integer.
    """
    if num_iterations < 1:
        raise ConfigError(f"num_iterations must be at least 1, got {num_iterations}")
    if not 0 <= iteration < num_iterations:
        raise ValueError(f"iteration must be in [0, {num_iterations}), got {iteration}")
    if num_prompts < 1:
        raise DataError("there are no prompts to split into iterations")
    if per_iteration is None:
        if num_prompts < num_iterations:
            raise DataError(f"cannot split {num_prompts} prompts into {num_iterations} disjoint non-empty parts")
        order = _permutation(num_prompts, seed)
        start = iteration * num_prompts // num_iterations
        stop = (iteration + 1) * num_prompts // num_iterations
        return order[start:stop]
    if per_iteration < 1:
        raise ConfigError(f"per_iteration must be at least 1 or None, got {per_iteration}")
    orders: dict[int, list[int]] = {}
    indices = []
    for position in range(iteration * per_iteration, (iteration + 1) * per_iteration):
        pass_index, offset = divmod(position, num_prompts)
        if pass_index not in orders:
            orders[pass_index] = _permutation(num_prompts, seed, pass_index)
        indices.append(orders[pass_index][offset])
    return indices


def holdout_split(examples: Sequence, num_eval: int, seed: int) -> tuple[list, list]:
    """Remove ``num_eval`` seeded-random examples for evaluation.

    Returns:
        (train, eval), each in the original order.
    """
    if num_eval < 0:
        raise ConfigError(f"num_eval must be non-negative, got {num_eval}")
    if num_eval >= len(examples):
        raise DataError(f"cannot hold out {num_eval} of {len(examples)} examples: no training examples would remain")
    held_out = set(_permutation(len(examples), seed)[:num_eval])
    train = [example for i, example in enumerate(examples) if i not in held_out]
    evaluation = [example for i, example in enumerate(examples) if i in held_out]
    return train, evaluation
