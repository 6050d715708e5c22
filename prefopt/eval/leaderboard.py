"""Several generators at once: the pairwise win-rate matrix, a leaderboard (markdown, CSV) and a plot (PNG).

Every unordered pair is judged once; the matrix's reverse entry is 1 − WR, exact because every judge gives
P(a ≻ b) + P(b ≻ a) = 1 per instruction. The leaderboard ranks the generators by their win rate against the
baseline, length-controlled when every row has one (as AlpacaEval 2.0 ranks), and also shows each one's mean win
rate against all the others. Rates are shown in percent.
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


def win_rate_matrix(names: list[str], pairs: dict[tuple[str, str], dict]) -> list[list[float]]:
    """[a][b] = win rate of names[a] against names[b] (½ on the diagonal), from pairs[(model, baseline)]."""
    index = {name: i for i, name in enumerate(names)}
    matrix = [[0.5] * len(names) for _ in names]
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
        rows.append({**m, "generator": name, "mean_pairwise": sum(others) / len(others)})
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


def to_markdown(rows: list[dict], baseline: str, judge: str, lc_variant: str | None) -> str:
    head = [title for _, title in COLUMNS]
    lines = [
        f"Against **{baseline}**, judge `{judge}`; LC: {lc_variant or 'not computed'}.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for row in rows:
        cells = _cells(row)
        lines.append("| " + " | ".join(cells[key] for key, _ in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict], baseline: str) -> str:
    """Machine-readable: fractions as in the result files, plus the baseline's name on every row."""
    keys = ["generator", "baseline", "lc_win_rate", "lc_se", "lc_variant", "win_rate", "se", "ci_low", "ci_high"]
    keys += ["discrete_win_rate", "mean_pairwise", "avg_length", "n_empty", "n_wins", "n_draws", "n_losses", "n"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "baseline": baseline})
    return buffer.getvalue()


def plot(names: list[str], matrix: list[list[float]], rows: list[dict], baseline: str, path: Path) -> bool:
    """The pairwise matrix and the win rates against the baseline with their 95% intervals; False without
    matplotlib (``pip install prefopt[eval]``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(6 + 0.6 * len(names), 2.5 + 0.45 * len(names)))
    image = left.imshow([[100 * v for v in r] for r in matrix], cmap="RdBu", vmin=0, vmax=100)
    left.set(xticks=range(len(names)), yticks=range(len(names)), title="win rate of row vs column (%)")
    left.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
    left.set_yticklabels(names, fontsize=8)
    for a in range(len(names)):
        for b in range(len(names)):
            left.text(b, a, f"{100 * matrix[a][b]:.0f}", ha="center", va="center", fontsize=7)
    fig.colorbar(image, ax=left, fraction=0.046)
    order = rows[::-1]
    y = range(len(order))
    wr = [100 * r["win_rate"] for r in order]
    err = [[w - 100 * r["ci_low"] for w, r in zip(wr, order)], [100 * r["ci_high"] - w for w, r in zip(wr, order)]]
    right.barh(y, wr, xerr=err, color="tab:blue", alpha=0.7, label="win rate (95% CI)")
    lc = [100 * r["lc_win_rate"] if r["lc_win_rate"] is not None else float("nan") for r in order]
    right.scatter(lc, y, color="black", marker="D", s=18, zorder=3, label="length-controlled")
    right.axvline(50, color="gray", linestyle=":")
    right.set(yticks=y, xlim=(0, 100), xlabel="%", title=f"against {baseline}")
    right.set_yticklabels([r["generator"] for r in order], fontsize=8)
    right.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
