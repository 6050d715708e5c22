"""Dataset sources: local files, saved datasets and Hub names, loaded with `datasets`."""

from __future__ import annotations

import json
import os

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
        raise DataError(f"cannot load dataset '{source}' (split {split}): {first_line(err)}") from err
    if len(dataset) == 0:
        raise _no_rows(source, split)
    return dataset
