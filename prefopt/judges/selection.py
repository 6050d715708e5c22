"""Choosing a (winner, loser) pair among K responses with a judge: shared by the pairwise algorithms.

Two ways, as INPO describes them (Zhang et al., arXiv 2407.00617, section 5 and appendix B):
- with a reward judge, the best and the worst of K by reward (kept only when r_w > r_l);
- with a pairwise judge, a knock-out tournament: round one pairs (1, 2), (3, 4), ...; the winners play a
  winners' bracket down to one champion y_w, the losers a losers' bracket down to the last y_l; a final comparison
  keeps the pair only if y_w beats y_l. A comparison is won by the first response when P ≥ ½ (ties go to the
  first). For K = 8 that is 4 + 3 + 3 + 1 = 11 queries, O(K) instead of the K(K−1)/2 of a full matrix. Each round
  is one batched judge call across all prompts.
"""

from __future__ import annotations

from collections.abc import Sequence

from prefopt.errors import ConfigError
from prefopt.judges.base import Prompt, RewardJudge


def best_worst_by_reward(
    judge: RewardJudge, prompts: Sequence[Prompt], groups: Sequence[Sequence[str]], references=None
):
    """Per prompt, (index of the highest reward, index of the lowest, whether r_w > r_l).

    Ties pick the lowest index, like ``argmax``.
    """
    out = []
    for r in judge.grouped_rewards(prompts, groups, references):
        w, lo = int(r.argmax()), int(r.argmin())
        out.append((w, lo, bool(r[w] > r[lo])))
    return out


def _play(judge, prompts, groups, matches, references=None):
    """Run one round: matches[k] is a list of (i, j); returns per prompt a list of (winner, loser)."""
    flat = [(k, i, j) for k, ms in enumerate(matches) for i, j in ms]
    refs = None if references is None else [references[k] for k, _, _ in flat]
    probs = (
        judge.preference(
            [prompts[k] for k, _, _ in flat],
            [groups[k][i] for k, i, _ in flat],
            [groups[k][j] for k, _, j in flat],
            refs,
        )
        if flat
        else []
    )
    results: list[list[tuple[int, int]]] = [[] for _ in matches]
    for (k, i, j), p in zip(flat, probs.tolist() if flat else []):
        results[k].append((i, j) if p >= 0.5 else (j, i))
    return results


def _bracket_rounds(entrants: list[list[int]]) -> list[list[tuple[int, int]]]:
    """Pairs for the next round of each bracket (an odd entrant out gets a bye)."""
    return [[(e[n], e[n + 1]) for n in range(0, len(e) - 1, 2)] for e in entrants]


def _advance(entrants: list[list[int]], results, keep_winner: bool) -> list[list[int]]:
    out = []
    for e, res in zip(entrants, results):
        survivors = [w if keep_winner else lo for w, lo in res]
        if len(e) % 2:
            survivors.append(e[-1])  # the bye
        out.append(survivors)
    return out


def knockout_pairs(judge, prompts: Sequence[Prompt], groups: Sequence[Sequence[str]], references=None):
    """Per prompt, (champion y_w, last of the losers' bracket y_l, whether y_w beats y_l in the final).

    Groups need at least 2 responses.
    """
    first = _play(judge, prompts, groups, [[(n, n + 1) for n in range(0, len(g) - 1, 2)] for g in groups], references)
    winners = [[w for w, _ in res] + ([len(g) - 1] if len(g) % 2 else []) for res, g in zip(first, groups)]
    losers = [[lo for _, lo in res] for res in first]
    while any(len(e) > 1 for e in winners + losers):
        # Both brackets advance in one judge call per round.
        rounds = _bracket_rounds(winners) + _bracket_rounds(losers)
        refs = None if references is None else list(references) * 2
        both = _play(judge, list(prompts) * 2, list(groups) * 2, rounds, refs)
        n = len(groups)
        winners = _advance(winners, both[:n], keep_winner=True)
        losers = _advance(losers, both[n:], keep_winner=False)
    final = _play(judge, prompts, groups, [[(w[0], lo[0])] for w, lo in zip(winners, losers)], references)
    return [(w[0], lo[0], res[0][0] == w[0] and w[0] != lo[0]) for w, lo, res in zip(winners, losers, final)]


def select_pairs(mode: str, judge, prompts: Sequence[Prompt], groups: Sequence[Sequence[str]], references=None):
    """(winner, loser, keep) per prompt: ``best_worst`` by reward, ``tournament`` by preference, ``auto`` picks."""
    if mode == "auto":
        mode = "best_worst" if isinstance(judge, RewardJudge) else "tournament"
    if mode == "best_worst":
        if not isinstance(judge, RewardJudge):
            raise ConfigError("config key 'pairs': best_worst needs a reward judge (reward_model or python_reward)")
        return best_worst_by_reward(judge, prompts, groups, references)
    return knockout_pairs(judge, prompts, groups, references)
