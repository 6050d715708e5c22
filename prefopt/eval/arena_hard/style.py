"""Style-control features of a battle between a model m and the baseline b, for each generation of arena-hard-auto.

From each answer's metadata (:mod:`~prefopt.eval.arena_hard.markdown`): L tokens, and H headers, S list items, D bold
spans (each a sum over its kinds). ``length`` uses L, ``markdown`` H, S, D, ``both`` all four.

**v0.1** (commit 0489bf3, ``utils_math.construct_style_matrices`` with the arguments ``show_result.py`` passes: a
ratio for every feature, ``add_one=True``): for each feature x,

    d = (x_m − x_b) / (x_m + x_b + 1),

standardised with the population standard deviation (ddof 0) over the battles (arena-hard-auto's ``np.std``).
arena-hard-auto writes the baseline first (d_b = −d_m, outcome "baseline wins"); its coefficient equals the one of d_m
with outcome "model wins", since standardising commutes with the sign.

**v2.0** (HEAD 196f6b8, ``show_result.print_leaderboard_with_style_features``): the length feature has no +1 and the
markdown ones are densities per token first,

    d_L = (L_m − L_b) / (L_m + L_b),    r_x = x / (L + 1),    d_x = (r_{x,m} − r_{x,b}) / (r_{x,m} + r_{x,b} + 1),

standardised with the sample standard deviation (ddof 1, ``torch.std``) over the battles.

Both standardise over the battle rows as the scorers see them: one row per game, a strong verdict's row repeated
``weight`` times. Departures: a feature that is constant over the battles (std 0) or a length ratio 0/0 is a
DataError (arena-hard-auto divides by zero and fails later); v2.0 reads the four fields by name, where arena-hard-auto
takes the metadata dict's values in file order (so a file with its keys in another order would feed it other
features); arena-hard-auto's v2.0 standardises all four features before picking ``length`` or ``markdown``, so a
constant unused feature fails there but not here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from prefopt.errors import DataError
from prefopt.eval.arena_hard.markdown import METADATA_KEYS, style_totals

STYLE_CONTROLS = {
    "none": (),
    "length": ("token_len",),
    "markdown": ("header_count", "list_count", "bold_count"),
    "both": METADATA_KEYS,
}


def _totals(metadata: Mapping[str, Mapping[str, dict | None]], model: str, uid: str, needed: tuple[str, ...]):
    meta = metadata.get(model, {}).get(uid)
    if meta is None or any(k not in meta for k in needed):
        what = "no answers" if model not in metadata else "no metadata" if meta is None else "incomplete metadata"
        raise DataError(
            f"style control: model '{model}' has {what} for question '{uid}'; expected the fields "
            f"{', '.join(needed)} (answer files' conv_metadata at v0.1, metadata at v2.0)"
        )
    return style_totals({k: meta.get(k, 0) for k in METADATA_KEYS})


def style_features(
    version: str,
    models: Sequence[str],
    uids: Sequence[str],
    baseline: str,
    metadata: Mapping[str, Mapping[str, dict | None]],
    style_control: str,
) -> tuple[np.ndarray, list[str]]:
    """The standardised features of each battle row (model m = ``models[i]`` vs the baseline on ``uids[i]``).

    Returns:
        z: [n, k] float64; names: [k] the metadata fields, in the order of :data:`STYLE_CONTROLS`.
    """
    names = list(STYLE_CONTROLS[style_control])
    needed = ("token_len",) + tuple(names) if version == "v2.0" else tuple(names)
    cols = [METADATA_KEYS.index(n) for n in names]
    m = np.array([_totals(metadata, mod, uid, needed) for mod, uid in zip(models, uids)]).reshape(-1, 4)
    b = np.array([_totals(metadata, baseline, uid, needed) for uid in uids]).reshape(-1, 4)
    if version == "v0.1":
        d = (m - b) / (m + b + 1.0)
        ddof = 0
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            d = np.empty_like(m)
            d[:, 0] = (m[:, 0] - b[:, 0]) / (m[:, 0] + b[:, 0])
        rate_m, rate_b = m[:, 1:] / (m[:, :1] + 1.0), b[:, 1:] / (b[:, :1] + 1.0)
        d[:, 1:] = (rate_m - rate_b) / (rate_m + rate_b + 1.0)
        ddof = 1
    d = d[:, cols]
    bad = np.flatnonzero(~np.isfinite(d).all(axis=1))
    if len(bad):
        raise DataError(f"style control: question '{uids[bad[0]]}' has 0 tokens in both answers; v2.0 divides by 0")
    std = d.std(axis=0, ddof=ddof) if len(d) > ddof else np.zeros(len(cols))
    if np.any(std == 0):
        name = names[int(np.flatnonzero(std == 0)[0])]
        raise DataError(f"style control: feature '{name}' is the same in every battle, so it cannot be standardised")
    return (d - d.mean(axis=0)) / std, names
