"""The two judge interfaces every algorithm talks to.

A :class:`PreferenceJudge` answers P(y ≻ y' | x) in [0, 1], with P(y ≻ y' | x) + P(y' ≻ y | x) = 1. A
:class:`RewardJudge` answers a scalar r(x, y) and is also a preference judge through the Bradley-Terry view
P(y ≻ y') = σ(r(x, y) − r(x, y')). Algorithms ask for what they need (`preference`, `preference_matrices`,
`reward`) and check capabilities with ``isinstance(judge, RewardJudge)``, never by judge name.

Prompts are what the dataset holds (TRL's formats): a string, or a list of chat messages
``[{"role": ..., "content": ...}]``. Responses are the decoded completion text. ``references`` are optional, one
per row: what the dataset's ``answer_column`` holds (a ground-truth final answer, a reference response); every
call of training and evaluation passes them whenever ``answer_column`` is set (``Context.references``). Judges
that check against them (``needs_references``) refuse a call without them; the others ignore them.
"""

from __future__ import annotations

import contextlib
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Union

import torch

from prefopt.errors import JudgeError

Prompt = Union[str, list[dict[str, str]]]  # noqa: UP007 (a runtime alias must work on Python 3.10)


def check_values(values: torch.Tensor, judge: str, what: str, probability: bool) -> torch.Tensor:
    """Return ``values`` as float64 on CPU, or raise a one-line :class:`JudgeError` naming the first bad row."""
    values = torch.as_tensor(values, dtype=torch.float64).detach().cpu().reshape(-1)
    bad = ~torch.isfinite(values)
    if probability:
        bad |= (values < 0) | (values > 1)
    if bool(bad.any()):
        row = int(bad.nonzero()[0])
        expected = "a probability in [0, 1]" if probability else "a finite number"
        raise JudgeError(f"judge '{judge}' returned {values[row].item()} for {what} row {row}; expected {expected}")
    return values


class PreferenceJudge(ABC):
    """P(y ≻ y' | x) for batches of (prompt, response_a, response_b)."""

    name: str = "judge"
    needs_references: bool = False  # whether each row's reference answer is required (verifiable rewards)
    # When a list, every checked call appends its rows here (the loop saves them as the iteration's judge outputs).
    recorder: list[dict] | None = None
    # Seconds spent in judge calls (outermost calls only), read by the loop for its time/judge_s metric.
    elapsed_s: float = 0.0
    _timing: bool = False

    @contextlib.contextmanager
    def _timed(self):
        if self._timing:  # a nested call (a reward judge's preference goes through reward) is already timed
            yield
            return
        self._timing, start = True, time.perf_counter()
        try:
            yield
        finally:
            self.elapsed_s += time.perf_counter() - start
            self._timing = False

    @abstractmethod
    def _preference(
        self, prompts: Sequence[Prompt], responses_a: Sequence[str], responses_b: Sequence[str], references=None
    ):
        """Subclasses: P(a ≻ b) for each row, any float tensor or list of shape [B]."""

    def _check_references(self, references, rows: int) -> None:
        if references is None:
            if self.needs_references:
                raise JudgeError(
                    f"judge '{self.name}' checks responses against a reference answer: set answer_column to the "
                    "dataset column that holds it"
                )
        elif len(references) != rows:
            raise ValueError("references must have one entry per row")

    def preference(
        self, prompts: Sequence[Prompt], responses_a: Sequence[str], responses_b: Sequence[str], references=None
    ) -> torch.Tensor:
        """P(responses_a[i] ≻ responses_b[i] | prompts[i]) (given references[i], when the judge uses it).

        Returns:
            float64 tensor [B], each value in [0, 1].
        """
        if not (len(prompts) == len(responses_a) == len(responses_b)):
            raise ValueError("prompts, responses_a and responses_b must have the same length")
        if len(prompts) == 0:
            return torch.zeros(0, dtype=torch.float64)
        self._check_references(references, len(prompts))
        with self._timed():
            raw = self._preference(prompts, responses_a, responses_b, references)
            probs = check_values(raw, self.name, "preference", True)
        self._record("preference", prompts, {"response_a": responses_a, "response_b": responses_b}, probs)
        return probs

    def _record(self, kind: str, prompts, columns: dict, values: torch.Tensor) -> None:
        if self.recorder is None:
            return
        for i, value in enumerate(values.tolist()):
            row = {"kind": kind, "prompt": prompts[i], **{k: v[i] for k, v in columns.items()}, "value": value}
            self.recorder.append(row)

    def preference_matrices(
        self, prompts: Sequence[Prompt], groups: Sequence[Sequence[str]], references=None
    ) -> list[torch.Tensor]:
        """All-pairs preference matrices, one per prompt, in one batched judge call.

        Entry [i, j] of the k-th matrix is P(groups[k][i] ≻ groups[k][j] | prompts[k]). Only the pairs i < j are
        queried; [j, i] = 1 − [i, j] and the diagonal is exactly 1/2.

        Returns:
            list of float64 tensors [K_k, K_k].
        """
        flat_p, flat_a, flat_b, flat_r, index = [], [], [], [], []
        for k, (prompt, group) in enumerate(zip(prompts, groups)):
            for i in range(len(group)):
                for j in range(i + 1, len(group)):
                    flat_p.append(prompt)
                    flat_a.append(group[i])
                    flat_b.append(group[j])
                    flat_r.append(None if references is None else references[k])
                    index.append((k, i, j))
        probs = self.preference(flat_p, flat_a, flat_b, None if references is None else flat_r)
        mats = [torch.full((len(g), len(g)), 0.5, dtype=torch.float64) for g in groups]
        for (k, i, j), p in zip(index, probs.tolist()):
            mats[k][i, j] = p
            mats[k][j, i] = 1.0 - p
        return mats

    def take_metrics(self) -> dict[str, float]:
        """The judge's own counters since the last call, as ``judge/…`` metrics (an API judge's requests, tokens,
        cost and unreadable verdicts); none for a local judge."""
        return {}

    def allowed_responses(self) -> list[str] | None:
        """The fixed set of response strings this judge scores (a game's actions), or None for free text."""
        return None

    def game_matrix(self) -> torch.Tensor | None:
        """[N, N] preference matrix over ``allowed_responses()`` when the judge is a matrix game, else None."""
        return None


class RewardJudge(PreferenceJudge):
    """r(x, y) for batches of (prompt, response); preferences through σ(r − r')."""

    @abstractmethod
    def _reward(self, prompts: Sequence[Prompt], responses: Sequence[str], references=None):
        """Subclasses: the scalar reward of each row, any float tensor or list of shape [B]."""

    def reward(self, prompts: Sequence[Prompt], responses: Sequence[str], references=None) -> torch.Tensor:
        """r(prompts[i], responses[i]) (against references[i], when the judge uses it) as a float64 tensor [B]."""
        if len(prompts) != len(responses):
            raise ValueError("prompts and responses must have the same length")
        if len(prompts) == 0:
            return torch.zeros(0, dtype=torch.float64)
        self._check_references(references, len(prompts))
        with self._timed():
            rewards = check_values(self._reward(prompts, responses, references), self.name, "reward", False)
        columns = {"response": responses} if references is None else {"response": responses, "reference": references}
        self._record("reward", prompts, columns, rewards)
        return rewards

    def _preference(self, prompts, responses_a, responses_b, references=None):
        # Through reward(): the rewards are recorded, and preference() records the resulting probabilities too.
        refs = None if references is None else list(references) * 2
        rewards = self.reward(list(prompts) + list(prompts), list(responses_a) + list(responses_b), refs)
        n = len(prompts)
        return torch.sigmoid(rewards[:n] - rewards[n:])

    def grouped_rewards(self, prompts: Sequence[Prompt], groups: Sequence[Sequence[str]], references=None):
        """The rewards of each prompt's group of responses, in one call: a list of float64 tensors [K_k]."""
        flat_p = [p for p, g in zip(prompts, groups) for _ in g]
        flat_y = [y for g in groups for y in g]
        flat_r = None if references is None else [r for r, g in zip(references, groups) for _ in g]
        rewards = self.reward(flat_p, flat_y, flat_r)
        sizes = [len(g) for g in groups]
        return list(torch.split(rewards, sizes)) if flat_p else [torch.zeros(0, dtype=torch.float64) for _ in groups]

    def preference_matrices(
        self, prompts: Sequence[Prompt], groups: Sequence[Sequence[str]], references=None
    ) -> list[torch.Tensor]:
        """σ(r_i − r_j) per prompt, from one reward per response (K calls, not K²)."""
        return [torch.sigmoid(r[:, None] - r[None, :]) for r in self.grouped_rewards(prompts, groups, references)]
