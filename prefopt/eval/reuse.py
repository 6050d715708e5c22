"""Which pairs ``prefopt eval`` judges, and the judgments it reuses from an earlier run into the same folder.

**Pairs.** ``baseline`` (the default) judges each generator against the baseline only: n − 1 comparisons for n
generators, all a leaderboard against the baseline needs. ``all`` judges every unordered pair once (each
generator against every earlier one in [baseline, models...]), n (n − 1) / 2 comparisons, which fills the whole
pairwise matrix and each generator's mean win rate against all the others.

**Reuse.** A re-run into an ``--output_dir`` written by ``prefopt eval`` (``--overwrite``, e.g. with one model
more) judges only what is new. One judgment is reused when all of these are identical: the judge record (its
options as recorded in results.json, plus the sha256 of a Python judge's file and the names, sizes and
modification times of a local judge model's files), the instruction, the baseline's output (``output_1``) and
the model's output (``output_2``), in that order: the same two outputs in the other order are judged afresh.
Anything else (another judge, template, API model, an output that changed by one character) is judged again,
and ``--no_reuse`` judges everything. What is reused is counted in results.json (``judge.reused``) and printed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tqdm.auto import tqdm

from prefopt.eval.compare import Generator, PairJudge

PAIRS = ("baseline", "all")
Key = tuple[str, str, str]  # (instruction, output_1: the baseline's, output_2: the model's)


def plan_pairs(names: list[str], pairs: str) -> list[tuple[str, str]]:
    """(model, baseline) pairs to judge; names[0] is the baseline."""
    if pairs == "baseline":
        return [(name, names[0]) for name in names[1:]]
    return [(model, baseline) for j, model in enumerate(names) for baseline in names[:j]]


def _file_stamps(folder: Path) -> list:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return sorted([str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns] for p in files)


def judge_record(judge_name: str, options: dict) -> dict:
    """What identifies a judge's verdicts: its name and options, and a fingerprint of its local files."""
    record = {"name": judge_name, **options}
    function = options.get("function")
    if isinstance(function, str) and ":" in function and Path(function.rsplit(":", 1)[0]).is_file():
        record["function_sha256"] = hashlib.sha256(Path(function.rsplit(":", 1)[0]).read_bytes()).hexdigest()
    model = options.get("model_name_or_path")
    if isinstance(model, str) and Path(model).expanduser().is_dir():
        record["model_files"] = _file_stamps(Path(model).expanduser())
    return json.loads(json.dumps(record))  # as results.json holds it (tuples become lists), so the two compare equal


def load_judgments(out: Path, record: dict) -> dict[Key, float]:
    """P(model ≻ baseline) by key from the annotations of an earlier run in ``out`` under the same judge record;
    empty when ``out`` holds no prefopt eval results or another judge's."""
    try:
        results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(results, dict) or results.get("judge_record") != record:
        return {}
    judgments: dict[Key, float] = {}
    for path in sorted(out.glob("*/vs_*/annotations.json")):
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
            for row in rows:
                judgments[(row["instruction"], row["output_1"], row["output_2"])] = float(row["preference"]) - 1.0
        except (OSError, ValueError, TypeError, KeyError):
            continue  # a file edited by hand: its judgments are simply made again
    return judgments


def judge_pairs(
    pair_judge: PairJudge,
    plan: list[tuple[str, str]],
    generators: dict[str, Generator],
    judgments: dict[Key, float],
    progress: bool = True,
) -> tuple[dict[tuple[str, str], list[float]], int]:
    """P(model ≻ baseline) per instruction for every planned pair, and how many of them were reused.

    Only the instructions without a judgment in ``judgments`` go to the judge (``judgments`` gains them, so a pair
    repeated under two names is judged once). One progress bar per comparison, on a terminal (``progress``)."""
    instructions = pair_judge.instructions
    probs_by_pair, reused = {}, 0
    for model_name, baseline_name in plan:
        model, baseline = generators[model_name], generators[baseline_name]
        keys = list(zip(instructions, baseline.outputs, model.outputs))
        probs = [judgments.get(key) for key in keys]
        todo = [i for i, p in enumerate(probs) if p is None]
        reused += len(keys) - len(todo)
        if todo:
            desc = f"judging {model_name} vs {baseline_name}"
            with tqdm(total=len(todo), desc=desc, unit="pair", disable=None if progress else True) as bar:
                for i, p in zip(todo, pair_judge(model, baseline, todo, bar), strict=True):
                    probs[i] = judgments[keys[i]] = p
        probs_by_pair[(model_name, baseline_name)] = probs
    return probs_by_pair, reused
