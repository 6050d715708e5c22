"""``prefopt eval``: outputs for an eval set, generators judged in pairs, AlpacaEval files and a leaderboard.

Order: every input is read and checked first (eval set, outputs files, LC data, the output folder), then the judge
is built, then models generate, then the pairs are judged; the results are written into a staging folder that
replaces ``output_dir`` only when complete, so a failure leaves nothing half-written. Layout::

    OUTPUT_DIR/
      results.json                         everything below plus the judge, decoding, versions and seeds
      leaderboard.md, leaderboard.csv      generators against the baseline, best first
      win_rates.png                        the pairwise matrix and the win rates with their intervals
      <generator>/model_outputs.json       AlpacaEval's outputs format
      <generator>/vs_<other>/annotations.json, metrics.json
                                           AlpacaEval's annotations (output_1: <other>) and this pair's metrics

With generators [baseline, g1, g2, ...] each g_j is judged against the baseline (``pairs="baseline"``) or against
every earlier one (``pairs="all"``), so every generator has its comparison against the baseline in the direction
AlpacaEval uses. Judgments already in ``output_dir`` under the same judge are reused (:mod:`prefopt.eval.reuse`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import os
import platform
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from prefopt.errors import ConfigError, DataError
from prefopt.eval import leaderboard as lb
from prefopt.eval.compare import Generator, PairJudge, comparison_metrics, lc_variant_for
from prefopt.eval.formats import (
    align_outputs,
    annotation_rows,
    outputs_rows,
    read_annotations,
    read_eval_set,
    read_outputs,
    write_json,
)
from prefopt.eval.generation import Decoding, generate_outputs
from prefopt.eval.length_control import LC_VARIANTS, LCData
from prefopt.eval.reuse import PAIRS, judge_pairs, judge_record, load_judgments, plan_pairs
from prefopt.rundir import atomic_dir, atomic_write_text, refuse_non_empty

PACKAGES = ("prefopt", "torch", "transformers", "peft", "datasets", "numpy", "alpaca-eval")


@dataclass
class EvalRequest:
    """What ``prefopt eval`` was asked to do (the CLI's flags)."""

    eval_set: str
    generators: list[str]  # each "SOURCE" or "NAME=SOURCE"; SOURCE an outputs file, a model folder or a Hub id
    output_dir: str
    baseline: str | None = None  # same syntax; default: the first of ``generators``
    judge: dict = field(default_factory=lambda: {"kind": "nontransitive"})  # build_judge's options
    decoding: Decoding = field(default_factory=Decoding)
    lc_variant: str = "auto"
    lc_data: str | None = None
    n_bootstrap: int = 2000
    seed: int = 0
    overwrite: bool = False
    trust_remote_code: bool = False
    max_instances: int | None = None  # evaluate only the first N instructions of the eval set
    pairs: str = "baseline"  # "baseline": each generator against the baseline; "all": every pair
    reuse: bool = True  # reuse the judgments already in output_dir (same judge, instruction and outputs)
    progress: bool = True  # a progress bar per comparison (on a terminal only)


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def file_record(path: str) -> dict:
    return {"path": str(path), "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()}


def safe_name(name: str) -> str:
    """A generator's name as a folder name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "generator"


HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def looks_like_path(source: str) -> bool:
    """A source meant as a local file or folder: it starts with ./ ../ / ~, names a JSON file, or has a separator
    and cannot be a Hub id ``org/name`` (more parts, odd characters, or its ``org`` is a local folder)."""
    if source.startswith(("./", "../", "/", "~", ".\\", "..\\")) or source in (".", ".."):
        return True
    if source.lower().endswith((".json", ".jsonl")):
        return True
    if "/" in source or os.sep in source:
        return not HUB_ID.match(source) or Path(source).parent.is_dir()
    return False


def _resolve(spec: str, instructions: list[str], allowed: list[str]) -> Generator:
    """An outputs file is read and matched now; a model is only named (it generates later)."""
    name, source = spec.split("=", 1) if "=" in spec else (None, spec)
    if Path(source).is_file():
        generator, outputs, order = read_outputs(source, name)
        aligned = align_outputs(instructions, outputs, order, source, allowed)
        return Generator(generator, aligned, {"outputs_file": file_record(source)})
    if looks_like_path(source) and not Path(source).expanduser().exists():
        raise DataError(f"generator '{spec}': no such file or folder '{source}' (an outputs file or a model folder)")
    return Generator(name or source, [], {"model": source})


def _generators(request: EvalRequest, instructions: list[str], allowed: list[str]) -> list[Generator]:
    specs = list(request.generators)
    if request.baseline is not None:
        specs = [request.baseline] + [s for s in specs if s != request.baseline]
    if len(specs) < 2:
        raise ConfigError("eval needs at least two generators: a model and a baseline (--baseline)")
    generators = [_resolve(spec, instructions, allowed) for spec in specs]
    names = [g.name for g in generators]
    if len({safe_name(n) for n in names}) < len(names):  # also catches two names that make the same folder
        raise ConfigError(f"generator names must be distinct (as folder names too): {names}; name them NAME=SOURCE")
    return generators


def _check_lc(request: EvalRequest, lc_data: LCData | None, n: int) -> None:
    variant = lc_variant_for(request.lc_variant, lc_data)
    if variant == "length_controlled_minimal":
        return
    if lc_data is None:
        raise ConfigError(f"lc_variant {variant} needs --lc_data: AlpacaEval's df_gamed.csv")
    if len(lc_data.instruction_difficulty) != n:
        raise DataError(
            f"lc_data '{request.lc_data}' has {len(lc_data.instruction_difficulty)} instructions, the eval set {n}: "
            f"{variant} applies only to the eval set it was made for (AlpacaEval's, in its order)"
        )


def build_eval_judge(judge: dict, device: str):
    """The judge of an evaluation from its recorded options (``{"kind": ..., build_judge's keywords}``)."""
    from prefopt.judges import build_judge

    options = {k: v for k, v in judge.items() if k != "kind"}
    if isinstance(options.get("api"), dict):  # the openai judge's options, kept as a plain dict for results.json
        from prefopt.judges.api import ApiOptions

        options["api"] = ApiOptions(**options["api"])
    return build_judge(judge["kind"], device=device, **options)


def _head(lc_data: LCData, n: int) -> LCData:
    """AlpacaEval's LC data for the first ``n`` instructions (they keep their indices)."""
    if lc_data.gamed_index is None:
        return dataclasses.replace(lc_data, instruction_difficulty=lc_data.instruction_difficulty[:n])
    kept = lc_data.gamed_index < n
    return LCData(
        lc_data.instruction_difficulty[:n],
        lc_data.gamed_preference[kept],
        lc_data.gamed_std_delta_len[kept],
        lc_data.gamed_index[kept],
    )


def _read_inputs(request: EvalRequest) -> tuple[list[dict], list[str], LCData | None]:
    """The eval set (its first ``max_instances`` rows), every instruction of the file, and the LC data to match."""
    if request.max_instances is not None and request.max_instances < 1:
        raise ConfigError(f"max_instances must be >= 1; got {request.max_instances}")
    if request.pairs not in PAIRS:
        raise ConfigError(f"pairs must be one of {', '.join(PAIRS)}; got {request.pairs!r}")
    eval_set = read_eval_set(request.eval_set)
    every_instruction = [row["instruction"] for row in eval_set]
    if request.lc_variant not in ("auto", *LC_VARIANTS):
        raise ConfigError(f"lc_variant must be auto or one of {', '.join(LC_VARIANTS)}; got {request.lc_variant!r}")
    lc_data = LCData.from_csv(request.lc_data) if request.lc_data else None
    _check_lc(request, lc_data, len(eval_set))
    eval_set = eval_set[: request.max_instances]
    if lc_data is not None and len(eval_set) < len(every_instruction):
        lc_data = _head(lc_data, len(eval_set))
    return eval_set, every_instruction, lc_data


def _generate(request: EvalRequest, generators: list[Generator], instructions: list[str]) -> None:
    generated: dict[str, list[str]] = {}  # one generation per model, even when two names share it
    for g in generators:
        if "model" in g.source:
            model = g.source["model"]
            if model not in generated:
                print(f"[prefopt] generating {len(instructions)} outputs with {model}", flush=True)
                generated[model] = generate_outputs(model, instructions, request.decoding, request.trust_remote_code)
            g.outputs = generated[model]
            g.source["decoding"] = request.decoding.record()


def run_eval(request: EvalRequest) -> dict:
    """Run the whole evaluation; returns what ``results.json`` holds."""
    out = Path(request.output_dir)
    refuse_non_empty(out, request.overwrite, "output_dir")
    eval_set, every_instruction, lc_data = _read_inputs(request)
    instructions = [row["instruction"] for row in eval_set]
    generators = _generators(request, instructions, every_instruction)
    judge = build_eval_judge(request.judge, request.decoding.device)
    record = judge_record(judge.name, request.judge)
    judgments = load_judgments(out, record) if request.reuse else {}
    _generate(request, generators, instructions)
    names = [g.name for g in generators]
    plan = plan_pairs(names, request.pairs)
    by_name = {g.name: g for g in generators}
    probs_by_pair, reused = judge_pairs(PairJudge(judge, instructions), plan, by_name, judgments, request.progress)
    pairs = {}
    for (model, baseline), probs in probs_by_pair.items():
        metrics = comparison_metrics(
            probs, by_name[model], by_name[baseline], request.lc_variant, lc_data, request.n_bootstrap, request.seed
        )
        pairs[(model, baseline)] = (metrics, probs)
    results = _results(request, eval_set, generators, judge, {k: m for k, (m, _) in pairs.items()}, lc_data)
    n_total = len(plan) * len(instructions)
    results["eval_set"].update(n_in_file=len(every_instruction), max_instances=request.max_instances)
    results["judge"].update(judged=n_total - reused, reused=reused)
    results["judge_record"] = record
    results["pairs"] = request.pairs
    _write(out, request, eval_set, generators, pairs, results)
    return results


def _results(request, eval_set, generators, judge, pairs, lc_data) -> dict:
    names = [g.name for g in generators]
    rows = lb.leaderboard(names, names[0], pairs)
    return {
        "eval_set": {**file_record(request.eval_set), "n": len(eval_set)},
        "judge": {"name": judge.name, **request.judge, "usage": judge.take_metrics()},
        "baseline": names[0],
        "generators": {g.name: {**g.source, "n_empty": sum(not y for y in g.outputs)} for g in generators},
        "length_control": {
            "requested": request.lc_variant,
            "variant": lb.computed_lc_variant(rows),  # None when no LC win rate was computed
            "data": file_record(request.lc_data) if request.lc_data else None,
        },
        "bootstrap": {"n": request.n_bootstrap, "seed": request.seed},
        "versions": versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "leaderboard": rows,
        "pairwise_win_rate": {"generators": names, "matrix": lb.win_rate_matrix(names, pairs)},
        "comparisons": list(pairs.values()),
    }


def _write(out: Path, request, eval_set, generators, pairs, results) -> None:
    with atomic_dir(out) as staging:
        instructions = [row["instruction"] for row in eval_set]
        by_name = {g.name: g for g in generators}
        header = {k: results[k] for k in ("eval_set", "judge", "length_control", "bootstrap", "versions", "created")}
        for g in generators:
            write_json(staging / safe_name(g.name) / "model_outputs.json", outputs_rows(eval_set, g.outputs, g.name))
        for (model, baseline), (metrics, probs) in pairs.items():
            folder = staging / safe_name(model) / f"vs_{safe_name(baseline)}"
            pair = ((baseline, by_name[baseline].outputs), (model, by_name[model].outputs))
            write_json(folder / "annotations.json", annotation_rows(instructions, *pair, probs, judge_label(results)))
            sources = {"model_source": by_name[model].source, "baseline_source": by_name[baseline].source}
            write_json(folder / "metrics.json", {**metrics, **sources, **header})
        names, baseline = [g.name for g in generators], results["baseline"]
        rows = results["leaderboard"]
        atomic_write_text(staging / "leaderboard.md", lb.to_markdown(rows, baseline, judge_label(results)))
        atomic_write_text(staging / "leaderboard.csv", lb.to_csv(results["leaderboard"], baseline))
        matrix = results["pairwise_win_rate"]["matrix"]
        plotted = lb.plot(names, matrix, rows, baseline, staging / "win_rates.png")
        results["plot"] = "win_rates.png" if plotted else None
        write_json(staging / "results.json", results)


def judge_label(results: dict) -> str:
    judge = results["judge"]
    detail = judge.get("model_name_or_path") or judge.get("function") or judge.get("api", {}).get("model")
    return judge["kind"] + (f": {detail}" if detail else "")


def score_annotations(
    path: str, lc_variant: str = "auto", lc_data_path: str | None = None, n_bootstrap: int = 2000, seed: int = 0
) -> dict:
    """The metrics of an existing annotations file (ours or one written by ``alpaca_eval`` with any annotator)."""
    rows, n_dropped = read_annotations(path)
    pairs = {(r["generator_2"], r["generator_1"]) for r in rows}
    if len(pairs) != 1:
        raise DataError(f"annotations file '{path}' holds several pairs of generators {sorted(pairs)}; give one")
    model, baseline = pairs.pop()
    lc_data = LCData.from_csv(lc_data_path) if lc_data_path else None
    probs = [r["preference"] - 1.0 for r in rows]
    metrics = comparison_metrics(
        probs,
        Generator(model, [r["output_2"] for r in rows], {}),
        Generator(baseline, [r["output_1"] for r in rows], {}),
        lc_variant,
        lc_data,
        n_bootstrap,
        seed,
    )
    annotators = sorted({str(r.get("annotator")) for r in rows})
    lc = {"data": file_record(lc_data_path) if lc_data_path else None}
    return {
        **metrics,
        "n_dropped_null": n_dropped,  # rows whose preference was null, left out as alpaca_eval does
        "annotations": file_record(path),
        "annotators": annotators,
        "length_control": lc,
        "bootstrap": {"n": n_bootstrap, "seed": seed},
        "versions": versions(),
    }
