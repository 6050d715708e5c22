"""Agreement of two judges on the same outputs, and each judge's position bias (``prefopt eval --agreement A B``).

Both files are AlpacaEval annotations (``instruction``, ``output_1``, ``output_2``, ``preference`` in [1, 2]; rows
with a null preference are dropped and counted). A row of A matches the row of B with the same instruction and
the same two outputs, in either order: when B shows them swapped, its preference is mirrored (p ↦ 3 − p) so both
speak of A's ``output_2``. Rows found in only one file are counted, not compared.

Each verdict is binarised into three labels: ``output_2`` better (p > 1.5), ``output_1`` better (p < 1.5) or a
tie (p = 1.5, kept as its own label, so a tie agrees only with a tie). On the n matched rows:

- agreement rate p_o = (rows with the same label) / n;
- Cohen's κ = (p_o − p_e) / (1 − p_e), with p_e = Σ_label P_A(label) · P_B(label) the agreement two independent
  judges with these label frequencies would reach by chance (None when p_e = 1: both judges always give the same
  single label, and κ is undefined);
- position bias of each judge, on all of its own rows in its own file's order: the fraction of its decisive
  (non-tie) verdicts that prefer ``output_1``, the first slot. It reads as position bias when the file's order is
  random with respect to quality (AlpacaEval randomises it); in prefopt's own files ``output_1`` is always the
  baseline, so there it mixes position bias with the baseline's quality.
"""

from __future__ import annotations

from collections import Counter

from prefopt.errors import DataError
from prefopt.eval.formats import read_annotations

LABELS = ("output_1", "tie", "output_2")


def label(preference: float) -> str:
    """A preference in [1, 2] as one of LABELS."""
    return "output_2" if preference > 1.5 else "output_1" if preference < 1.5 else "tie"


def position_bias(rows: list[dict]) -> dict:
    """How often a judge's decisive verdicts prefer ``output_1`` (the first slot)."""
    counts = Counter(label(r["preference"]) for r in rows)
    decisive = counts["output_1"] + counts["output_2"]
    rate = counts["output_1"] / decisive if decisive else None
    return {"prefers_output_1": rate, "n_decisive": decisive, "n_ties": counts["tie"], "n": len(rows)}


def cohen_kappa(labels_a: list[str], labels_b: list[str]) -> tuple[float, float | None]:
    """(observed agreement p_o, Cohen's κ or None when chance agreement is 1) of two equally long label lists."""
    n = len(labels_a)
    observed = sum(a == b for a, b in zip(labels_a, labels_b, strict=True)) / n
    freq_a, freq_b = Counter(labels_a), Counter(labels_b)
    chance = sum(freq_a[c] * freq_b[c] for c in LABELS) / n**2
    kappa = None if chance == 1 else (observed - chance) / (1 - chance)
    return observed, kappa


def judge_agreement(path_a: str, path_b: str) -> dict:
    """Agreement rate, Cohen's κ and both judges' position bias on the outputs the two files share."""
    rows_a, dropped_a = read_annotations(path_a)
    rows_b, dropped_b = read_annotations(path_b)
    by_key: dict[tuple[str, str, str], float] = {}
    for r in rows_b:
        by_key.setdefault((r["instruction"], r["output_1"], r["output_2"]), r["preference"])
    for r in rows_b:  # the same outputs shown the other way round: mirrored, direct matches first
        by_key.setdefault((r["instruction"], r["output_2"], r["output_1"]), 3.0 - r["preference"])
    labels_a, labels_b = [], []
    for r in rows_a:
        other = by_key.get((r["instruction"], r["output_1"], r["output_2"]))
        if other is not None:
            labels_a.append(label(r["preference"]))
            labels_b.append(label(other))
    if not labels_a:
        raise DataError(f"annotations files '{path_a}' and '{path_b}' share no (instruction, outputs) pair")
    observed, kappa = cohen_kappa(labels_a, labels_b)
    return {
        "n_matched": len(labels_a),
        "n_only_a": len(rows_a) - len(labels_a),
        "n_only_b": len(rows_b) - len(labels_a),
        "agreement": observed,
        "cohen_kappa": kappa,
        "a": {"annotations": str(path_a), "n_dropped_null": dropped_a, "position_bias": position_bias(rows_a)},
        "b": {"annotations": str(path_b), "n_dropped_null": dropped_b, "position_bias": position_bias(rows_b)},
    }
