"""Prompt and preference datasets: loading, validation, chat templates and per-iteration prompt splits.

Sources are local files (``.json``, ``.jsonl``, ``.parquet``, ``.csv``), folders written by
``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``, or Hub dataset names. Rows follow TRL's formats: a
prompt is a string ("standard") or a list of ``{"role", "content"}`` messages ("conversational").

Every row is validated before anything is returned, so bad data stops a run before any compute. Errors are
one-line :class:`DataError` messages ``FILE: line N: PROBLEM`` for a JSON Lines file (its line, counting from 1),
else ``SOURCE: row N (counting from 0): PROBLEM`` (``dataset[N]``). A local file that is not UTF-8, or a JSON Lines
line that does not parse, is named by its line before ``datasets`` reads it.

The chat template is applied here and only here (:func:`encode_prompt`, :func:`encode_response`): the rendered
text already holds the BOS, so it is tokenized without special tokens and the result carries exactly one BOS
(trl#4481 is the bug this avoids).
"""

from __future__ import annotations

from prefopt.data.encoding import as_chat, encode_prompt, encode_response, prompt_problem
from prefopt.data.prompts import (
    TRUNCATION_MODES,
    PreferenceExample,
    PromptExample,
    load_preferences,
    load_prompts,
    reference_text,
)
from prefopt.data.sources import FILE_BUILDERS, GivenDataset, load_dataset_rows, load_dataset_source
from prefopt.data.splits import holdout_split, iteration_prompts

__all__ = [
    "FILE_BUILDERS",
    "GivenDataset",
    "TRUNCATION_MODES",
    "PreferenceExample",
    "PromptExample",
    "as_chat",
    "encode_prompt",
    "encode_response",
    "holdout_split",
    "iteration_prompts",
    "load_dataset_rows",
    "load_dataset_source",
    "load_preferences",
    "load_prompts",
    "reference_text",
    "prompt_problem",
]
