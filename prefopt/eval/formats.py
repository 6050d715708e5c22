"""AlpacaEval's files: eval sets, model outputs and annotations, read with row-level checks and written atomically.

- **Eval set**: a JSON list (or JSON lines) of objects with a non-empty string ``instruction`` and optionally a
  ``dataset`` name; AlpacaEval's own ``alpaca_eval.json`` is one (its ``output``/``generator`` fields, if present,
  are ignored here; read it as outputs to use them as a baseline).
- **Outputs** (``model_outputs.json``): objects with ``instruction``, ``output`` (a string, possibly empty),
  ``generator`` and optionally ``dataset``. Outputs are matched to the eval set by instruction text, as
  AlpacaEval does; a missing, duplicated or extra instruction is an error listing the first offenders.
- **Annotations** (``annotations.json``): one object per instruction with ``instruction``, ``output_1`` and
  ``generator_1`` (the baseline), ``output_2`` and ``generator_2`` (the model), ``annotator`` and
  ``preference`` in [1, 2] (2: the model's output is better, 1.5: a draw), i.e. ``preference = 1 + P(model ≻
  baseline)``. ``alpaca_eval``'s metric functions read this file as it is. There is deliberately no ``index``
  column: AlpacaEval takes the instruction index from the row position.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from prefopt.errors import DataError
from prefopt.rundir import atomic_write_text


def read_jsonl(path: str | Path, what: str) -> list[dict]:
    """The objects of a JSON-lines file (blank lines skipped); a missing or empty file, invalid JSON or a non-object
    is a DataError naming the row and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} file '{path}' does not exist")
    rows = []
    # split on "\n" only: a JSON string may hold U+2028 and other characters str.splitlines() breaks at
    for i, line in enumerate(path.read_text(encoding="utf-8").split("\n")):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{what} file '{path}' row {len(rows)}: invalid JSON on line {i + 1}: {err.msg}") from None
        if not isinstance(row, dict):
            raise DataError(f"{what} file '{path}' row {len(rows)}: expected an object, got {type(row).__name__}")
        rows.append(row)
    if not rows:
        raise DataError(f"{what} file '{path}' holds no rows; expected JSON lines, one object per line")
    return rows


def _read_rows(path: str | Path, what: str) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} file '{path}' does not exist")
    if path.suffix == ".jsonl":
        return read_jsonl(path, what)
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"{what} file '{path}': invalid JSON at line {err.lineno}: {err.msg}") from None
    if not isinstance(rows, list) or not rows:
        raise DataError(f"{what} file '{path}' must hold a non-empty JSON list of objects (or JSON lines)")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(f"{what} file '{path}' row {i}: expected an object, got {type(row).__name__}")
    return rows


def _string(row: dict, key: str, path, i: int, what: str, allow_empty: bool = False) -> str:
    value = row.get(key)
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        got = "missing" if key not in row else repr(value)[:60]
        need = "a string" if allow_empty else "a non-empty string"
        raise DataError(f"{what} file '{path}' row {i}: field '{key}' must be {need}; got {got}")
    return value


def _clip(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


def read_eval_set(path: str | Path) -> list[dict]:
    """The eval set's rows as ``{"instruction": str, "dataset": str | None}``, instructions unique."""
    rows = _read_rows(path, "eval set")
    out = [
        {"instruction": _string(r, "instruction", path, i, "eval set"), "dataset": r.get("dataset")}
        for i, r in enumerate(rows)
    ]
    seen: dict[str, int] = {}
    for i, row in enumerate(out):
        if row["instruction"] in seen:
            raise DataError(
                f"eval set file '{path}' row {i}: instruction {_clip(row['instruction'])} repeats row "
                f"{seen[row['instruction']]}; outputs are matched by instruction, so each must be unique"
            )
        seen[row["instruction"]] = i
    return out


def read_outputs(path: str | Path, generator: str | None = None) -> tuple[str, dict[str, str], list[str]]:
    """An outputs file as (generator, {instruction: output}, instructions in file order).

    ``generator`` names the outputs when the file has no ``generator`` field (else it must agree with it).
    Duplicated instructions are kept in the returned list so that :func:`align_outputs` can report them.
    """
    rows = _read_rows(path, "outputs")
    names, outputs, order = set(), {}, []
    for i, row in enumerate(rows):
        instruction = _string(row, "instruction", path, i, "outputs")
        outputs.setdefault(instruction, _string(row, "output", path, i, "outputs", allow_empty=True))
        order.append(instruction)
        if "generator" in row:
            names.add(_string(row, "generator", path, i, "outputs"))
    if len(names) > 1:
        raise DataError(f"outputs file '{path}' mixes generators {sorted(names)}; give one file per generator")
    name = names.pop() if names else generator or Path(path).stem
    if generator and generator != name:
        raise DataError(f"outputs file '{path}' is from generator '{name}', not '{generator}'")
    return name, outputs, order


def align_outputs(
    instructions: list[str], outputs: dict[str, str], order: list[str], path, allowed: list[str] | None = None
) -> list[str]:
    """Outputs in eval-set order; any missing, duplicated or extra instruction is one error naming the first few.

    ``allowed``: the instructions an extra output may have without error (the whole eval set when only its first
    ``instructions`` are evaluated, ``--max_instances``); default ``instructions``."""
    counts = Counter(order)
    wanted = set(instructions if allowed is None else allowed)
    problems = []
    for label, items in (
        ("missing", [x for x in instructions if x not in outputs]),
        ("duplicated", [x for x, c in counts.items() if c > 1]),
        ("not in the eval set", [x for x in counts if x not in wanted]),
    ):
        if items:
            shown = ", ".join(_clip(x) for x in items[:3])
            problems.append(f"{len(items)} {label} (first: {shown})")
    if problems:
        raise DataError(f"outputs file '{path}' does not match the eval set: {'; '.join(problems)}")
    return [outputs[x] for x in instructions]


def outputs_rows(eval_set: list[dict], outputs: list[str], generator: str) -> list[dict]:
    """``model_outputs.json`` rows in AlpacaEval's format."""
    return [
        {"instruction": row["instruction"], "output": out, "generator": generator, "dataset": row["dataset"]}
        for row, out in zip(eval_set, outputs, strict=True)
    ]


def annotation_rows(
    instructions: list[str],
    baseline: tuple[str, list[str]],
    model: tuple[str, list[str]],
    probs: list[float],
    annotator: str,
) -> list[dict]:
    """``annotations.json`` rows: output_1 the baseline's, output_2 the model's, preference = 1 + P(model ≻ base)."""
    (name_1, outs_1), (name_2, outs_2) = baseline, model
    return [
        {
            "instruction": x,
            "output_1": y1,
            "generator_1": name_1,
            "output_2": y2,
            "generator_2": name_2,
            "annotator": annotator,
            "preference": 1.0 + float(p),
        }
        for x, y1, y2, p in zip(instructions, outs_1, outs_2, probs, strict=True)
    ]


def read_annotations(path: str | Path) -> tuple[list[dict], int]:
    """An annotations file as (rows, number of rows dropped): each row checked for the two outputs and a preference
    in [1, 2] (0 is a draw); a row whose preference is null (``None``/NaN: the annotator gave no verdict) is dropped
    and counted, as ``alpaca_eval`` drops it."""
    rows, dropped = [], 0
    for i, row in enumerate(_read_rows(path, "annotations")):
        for key in ("instruction", "generator_1", "generator_2"):
            _string(row, key, path, i, "annotations")
        for key in ("output_1", "output_2"):
            _string(row, key, path, i, "annotations", allow_empty=True)
        p = row.get("preference")
        if p is None or (isinstance(p, float) and math.isnan(p)):
            dropped += 1
            continue
        if isinstance(p, (int, float)) and p == 0:
            row["preference"] = 1.5  # AlpacaEval's older encoding of a draw
        elif not isinstance(p, (int, float)) or isinstance(p, bool) or not 1 <= p <= 2:
            raise DataError(f"annotations file '{path}' row {i}: 'preference' must be a number in [1, 2]; got {p!r}")
        rows.append(row)
    if not rows:
        raise DataError(f"annotations file '{path}': every one of its {dropped} rows has a null preference")
    return rows, dropped


def write_jsonl(path: str | Path, rows: Sequence[dict]) -> None:
    """One JSON object per line (non-ASCII kept, as arena-hard-auto and FastChat write), written whole or not."""
    atomic_write_text(Path(path), "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def write_json(path: Path, rows) -> None:
    atomic_write_text(path, json.dumps(rows, indent=2, ensure_ascii=False) + "\n")
