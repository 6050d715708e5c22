"""Dataset sources: local files, saved datasets and Hub names, loaded with `datasets`."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable

from prefopt.errors import DataError, first_line

FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


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


def scan_text_file(path: str, source: str) -> list[int] | None:
    """Check a local JSON, JSON Lines or CSV file before ``datasets`` reads it, whose own errors name no line: the
    file must be UTF-8 and, for JSON Lines, hold one JSON object per non-blank line.

    Returns:
        the 1-based line number of each row of a JSON Lines file (None for a JSON document or CSV).

    Raises:
        DataError: naming the file, the line (and byte offset for bad UTF-8) and the parser's reason.
    """
    ext = os.path.splitext(path)[1].lower()
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise DataError(
            f"{source}: line {line}: not UTF-8 (byte {data[err.start]:#04x} at offset {err.start}); save it as UTF-8"
        ) from None
    if ext == ".csv":
        return None
    if ext == ".json" and text.lstrip().startswith("["):  # one JSON document: a list of rows
        try:
            json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{source}: line {err.lineno}: invalid JSON: {err.msg}") from None
        return None
    lines = []
    for number, line in enumerate(text.split("\n"), 1):  # JSON strings may hold U+2028, which splitlines cuts at
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            if ext == ".json" and number == 1:  # a single JSON object spanning lines, e.g. {"train": [...]}
                return None
            raise DataError(f"{source}: line {number}: invalid JSON: {err.msg} (column {err.colno})") from None
        if not isinstance(value, dict):
            raise DataError(f"{source}: line {number}: expected one JSON object per line, got {type(value).__name__}")
        lines.append(number)
    return lines


def _load_file(path: str, source: str, split: str):
    import datasets

    # datasets fails on empty text files with StopIteration or a cryptic "no data" message; say it plainly.
    if os.path.getsize(path) == 0:
        raise _no_rows(source, split)
    builder = FILE_BUILDERS[os.path.splitext(path)[1].lower()]
    lines = scan_text_file(path, source) if builder != "parquet" else None
    try:
        # A single file is one split named "train"; any other split name fails with the list of splits.
        return datasets.load_dataset(builder, data_files=path, split=split), lines
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
        DataError: the source does not exist, is not UTF-8 or valid JSON (naming the line), cannot be loaded, lacks
            the split, or has no rows.
    """
    return load_dataset_rows(source, split, config_name)[0]


class GivenDataset:
    """A ``datasets.Dataset`` or ``IterableDataset`` a Python caller handed over (a trainer's ``train_dataset``),
    named as errors name it (``train_dataset: row 3 (counting from 0)``); an iterable one is read to its end once."""

    def __init__(self, name: str, dataset):
        import datasets

        if isinstance(dataset, datasets.IterableDataset):
            dataset = datasets.Dataset.from_list(list(dataset))
        if not isinstance(dataset, datasets.Dataset):
            raise DataError(
                f"{name} must be a datasets.Dataset, an IterableDataset or a path; got {type(dataset).__name__}"
            )
        self.name, self.dataset = name, dataset

    def __str__(self) -> str:
        return self.name

    def fingerprint(self) -> str:
        """A digest of every row, recorded in the run's config (a resume on other rows is refused)."""
        digest = hashlib.sha256()
        for row in self.dataset:
            digest.update(json.dumps(row, sort_keys=True, default=str).encode())
        return f"<{self.name}: {len(self.dataset)} rows, sha256 {digest.hexdigest()[:16]}>"


def load_dataset_rows(
    source, split: str = "train", config_name: str | None = None
) -> tuple[object, Callable[[int], str]]:
    """``load_dataset_source``, and how errors name row ``i``: ``FILE: line N`` for a JSON Lines file (its line,
    counting from 1), else ``SOURCE: row i (counting from 0)``, the index of ``dataset[i]``. ``source`` may also be
    a :class:`GivenDataset` (its split is the object itself)."""
    import datasets

    if isinstance(source, GivenDataset):
        if len(source.dataset) == 0:
            raise DataError(f"{source} has no rows")
        return source.dataset, lambda i: f"{source}: row {i} (counting from 0)"
    path = os.path.expanduser(source)
    if not os.path.exists(path) and _looks_like_path(source):
        raise DataError(f"dataset file '{source}' does not exist")
    lines = None
    try:
        if os.path.isdir(path) and any(
            os.path.exists(os.path.join(path, marker)) for marker in ("dataset_dict.json", "state.json")
        ):
            dataset = _load_saved(path, source, split)
        elif os.path.isfile(path) and os.path.splitext(path)[1].lower() in FILE_BUILDERS:
            dataset, lines = _load_file(path, source, split)
        else:
            # A Hub name, or a local folder of data files that datasets can infer a builder for.
            dataset = datasets.load_dataset(path if os.path.exists(path) else source, config_name, split=split)
    except DataError:
        raise
    except Exception as err:  # any loader failure is a problem with the user's data or name
        raise DataError(f"cannot load dataset '{source}' (split {split}): {_reason(err)}") from err
    if len(dataset) == 0:
        raise _no_rows(source, split)
    if lines is not None and len(lines) == len(dataset):
        return dataset, lambda i: f"{source}: line {lines[i]}"
    return dataset, lambda i: f"{source}: row {i} (counting from 0)"


def _reason(err: BaseException) -> str:
    """The error's first line, or its cause's where datasets wrapped a parser error in "An error occurred while
    generating the dataset", which says nothing of the problem."""
    while "error occurred while generating the dataset" in str(err) and (err.__cause__ or err.__context__):
        err = err.__cause__ or err.__context__
    return first_line(err)
