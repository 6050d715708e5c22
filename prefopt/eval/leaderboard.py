"""Several generators at once: the pairwise win-rate matrix, a leaderboard (markdown, CSV) and a plot (PNG).

Each judged pair fills two cells of the matrix: WR and its reverse entry 1 − WR, exact because every judge gives
P(a ≻ b) + P(b ≻ a) = 1 per instruction. A pair that was not judged (``--pairs baseline``, the default, judges
each generator against the baseline only) stays ``None`` (null in results.json, blank in the PNG), and so does
each generator's mean win rate against all the others, which needs its whole row. The leaderboard ranks the
generators by their win rate against the baseline, length-controlled when every row has one (as AlpacaEval 2.0
ranks). The length-controlled columns and variant appear only when an LC win rate was computed. Rates are shown
in percent.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

COLUMNS = [
    ("generator", "generator"),
    ("lc_win_rate", "LC win rate (%)"),
    ("win_rate", "win rate (%)"),
    ("se", "SE (%)"),
    ("ci", "95% CI (%)"),
    ("discrete_win_rate", "discrete (%)"),
    ("mean_pairwise", "mean vs all (%)"),
    ("avg_length", "avg length"),
    ("n_empty", "empty"),
    ("n", "n"),
]


def win_rate_matrix(names: list[str], pairs: dict[tuple[str, str], dict]) -> list[list[float | None]]:
    """[a][b] = win rate of names[a] against names[b] (½ on the diagonal, None where the pair was not judged), from
    pairs[(model, baseline)]."""
    index = {name: i for i, name in enumerate(names)}
    matrix: list[list[float | None]] = [[0.5 if a == b else None for b in names] for a in names]
    for (model, baseline), m in pairs.items():
        matrix[index[model]][index[baseline]] = m["win_rate"]
        matrix[index[baseline]][index[model]] = 1.0 - m["win_rate"]
    return matrix


def leaderboard(names: list[str], baseline: str, pairs: dict[tuple[str, str], dict]) -> list[dict]:
    """One row per generator other than the baseline, best first (values as fractions)."""
    matrix = win_rate_matrix(names, pairs)
    rows = []
    for i, name in enumerate(names):
        if name == baseline:
            continue
        m = pairs[(name, baseline)]
        others = [matrix[i][j] for j in range(len(names)) if j != i]
        mean = None if None in others else sum(others) / len(others)
        rows.append({**m, "generator": name, "mean_pairwise": mean})
    key = "lc_win_rate" if all(r["lc_win_rate"] is not None for r in rows) else "win_rate"
    return sorted(rows, key=lambda r: -r[key])


def _cells(row: dict) -> dict[str, str]:
    def pct(v):
        return "" if v is None else f"{100 * v:.2f}"

    return {
        "generator": row["generator"],
        "lc_win_rate": pct(row["lc_win_rate"]),
        "win_rate": pct(row["win_rate"]),
        "se": pct(row["se"]),
        "ci": f"{pct(row['ci_low'])}-{pct(row['ci_high'])}",
        "discrete_win_rate": pct(row["discrete_win_rate"]),
        "mean_pairwise": pct(row["mean_pairwise"]),
        "avg_length": f"{row['avg_length']:.0f}",
        "n_empty": str(row["n_empty"]),
        "n": str(row["n"]),
    }


def computed_lc_variant(rows: list[dict]) -> str | None:
    """The LC variant the rows were computed with; None when no row has an LC win rate (fewer than 10 instructions)."""
    variants = {r["lc_variant"] for r in rows if r.get("lc_win_rate") is not None and r["generator"] != r["baseline"]}
    return variants.pop() if len(variants) == 1 else None


def shown_columns(rows: list[dict]) -> list[tuple[str, str]]:
    """COLUMNS without the LC column when no LC was computed, and without the mean against all the others when the
    pairs were not all judged."""
    empty = {key for key in ("lc_win_rate", "mean_pairwise") if all(r.get(key) is None for r in rows)}
    return [(key, title) for key, title in COLUMNS if key not in empty]


def to_markdown(rows: list[dict], baseline: str, judge: str) -> str:
    columns = shown_columns(rows)
    head = [title for _, title in columns]
    lc_variant = computed_lc_variant(rows)
    lc = f"LC: {lc_variant}" if lc_variant else "no length-controlled win rate (it needs at least 10 instructions)"
    lines = [
        f"Against **{baseline}**, judge `{judge}`; {lc}.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for row in rows:
        cells = _cells(row)
        lines.append("| " + " | ".join(cells[key] for key, _ in columns) + " |")
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict], baseline: str) -> str:
    """Machine-readable: fractions as in the result files, plus the baseline's name on every row (the LC columns
    only when an LC win rate was computed)."""
    lc = ["lc_win_rate", "lc_se", "lc_variant"] if computed_lc_variant(rows) else []
    keys = ["generator", "baseline", *lc, "win_rate", "se", "ci_low", "ci_high"]
    keys += ["discrete_win_rate", "mean_pairwise", "avg_length", "n_empty", "n_wins", "n_draws", "n_losses", "n"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "baseline": baseline})
    return buffer.getvalue()


def plot(names: list[str], matrix: list[list[float | None]], rows: list[dict], baseline: str, path: Path) -> bool:
    """The pairwise matrix and the win rates against the baseline with their 95% intervals; False without
    matplotlib (``pip install prefopt[eval]``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig = figure(names, matrix, rows, baseline)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def figure(names: list[str], matrix: list[list[float | None]], rows: list[dict], baseline: str):
    """Left: the matrix (blank where not judged). Right: per generator, the win rate as a dot on its 95% interval
    line and, on a row of its own just below, the LC win rate as a hollow diamond without an interval, so neither
    reads as the other's (a legend names both; no LC marker or legend entry when none was computed)."""
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(6 + 0.6 * len(names), 2.5 + 0.45 * len(names)))
    percent = [[float("nan") if v is None else 100 * v for v in r] for r in matrix]
    image = left.imshow(percent, cmap="RdBu", vmin=0, vmax=100)
    left.set(xticks=range(len(names)), yticks=range(len(names)), title="win rate of row vs column (%)")
    left.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
    left.set_yticklabels(names, fontsize=8)
    for a in range(len(names)):
        for b in range(len(names)):
            text = "" if matrix[a][b] is None else f"{100 * matrix[a][b]:.0f}"
            left.text(b, a, text, ha="center", va="center", fontsize=7)
    fig.colorbar(image, ax=left, fraction=0.046)
    order = rows[::-1]
    y = [float(i) for i in range(len(order))]
    wr = [100 * r["win_rate"] for r in order]
    err = [[w - 100 * r["ci_low"] for w, r in zip(wr, order)], [100 * r["ci_high"] - w for w, r in zip(wr, order)]]
    right.errorbar(wr, y, xerr=err, fmt="o", color="tab:blue", capsize=3, label="win rate with its 95% CI")
    lc = [(100 * r["lc_win_rate"], i - 0.3) for i, r in zip(y, order) if r["lc_win_rate"] is not None]
    if lc:
        variant = computed_lc_variant(rows) or "length-controlled"
        right.scatter(*zip(*lc), facecolors="none", edgecolors="tab:orange", marker="D", s=28, zorder=3,
                      label=f"LC win rate ({variant})")  # fmt: skip
    right.axvline(50, color="gray", linestyle=":")
    right.set(yticks=y, xlim=(0, 100), ylim=(-0.7, len(order) - 0.5), xlabel="%", title=f"against {baseline}")
    right.set_yticklabels([r["generator"] for r in order], fontsize=8)
    right.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig
