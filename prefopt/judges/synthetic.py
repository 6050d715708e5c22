"""Synthetic judges: exact matrix games and a non-transitive preference over free text.

Both make the Nash-learning algorithms testable without a real judge model: a matrix game has a known
equilibrium to converge to, and :class:`NonTransitiveJudge` gives a tiny random policy a preference that no
reward model can represent (it has cycles), cheaply and deterministically on CPU.
"""

from __future__ import annotations

import math
import string
from collections.abc import Sequence

import torch

from prefopt.errors import JudgeError
from prefopt.games import check_preference_matrix, random_preference_matrix, rock_paper_scissors
from prefopt.judges.base import PreferenceJudge, Prompt

GAMES = ("rps", "random")

# The antisymmetric rock-paper-scissors payoff A = 2P − 1 (entries −1, 0, 1): 1 beats 0, 2 beats 1, 0 beats 2.
CYCLE = 2.0 * rock_paper_scissors() - 1.0


class MatrixGameJudge(PreferenceJudge):
    """A preference game over a fixed set of actions: P(a ≻ b) = matrix[index(a), index(b)].

    The prompt is ignored. A response is its action when ``response.strip()`` equals the action string exactly.

    Args:
        matrix: [N, N] preference matrix (nested lists or tensor), matrix[i, j] = P(action i ≻ action j); checked
            by :func:`prefopt.games.check_preference_matrix`.
        actions: N distinct non-empty strings without surrounding whitespace; default "A", "B", "C", ...
            (N ≤ 26).
    """

    name = "matrix_game"

    def __init__(self, matrix, actions: Sequence[str] | None = None):
        try:
            self.matrix = check_preference_matrix(matrix)
        except ValueError as err:
            raise JudgeError(f"matrix_game: {err}") from err
        n = self.matrix.shape[0]
        if actions is None:
            if n > 26:
                raise JudgeError(f"matrix_game: {n} actions need explicit game_actions (default letters cover 26)")
            actions = list(string.ascii_uppercase[:n])
        self.actions = [str(a) for a in actions]
        if len(self.actions) != n:
            raise JudgeError(f"matrix_game: {len(self.actions)} actions given for a {n}x{n} matrix")
        if len(set(self.actions)) != n:
            raise JudgeError(f"matrix_game: actions must be distinct, got {self.actions}")
        if any(not a or a != a.strip() for a in self.actions):
            raise JudgeError(f"matrix_game: actions must be non-empty without surrounding whitespace: {self.actions}")
        self._index = {a: i for i, a in enumerate(self.actions)}

    @classmethod
    def from_name(
        cls, game: str, size: int | None = None, seed: int = 0, actions: Sequence[str] | None = None
    ) -> MatrixGameJudge:
        """A named game: ``rps`` (3 actions; size None or 3) or ``random`` (``size`` ≥ 2 actions from ``seed``)."""
        if game == "rps":
            if size not in (None, 3):
                raise JudgeError(f"matrix_game 'rps' has 3 actions; game_size is {size}")
            return cls(rock_paper_scissors(), actions)
        if game == "random":
            if size is None or size < 2:
                raise JudgeError(f"matrix_game 'random' needs game_size >= 2, got {size}")
            return cls(random_preference_matrix(size, seed), actions)
        raise JudgeError(f"unknown game {game!r}; valid games: {', '.join(GAMES)}")

    def action_index(self, text: str) -> int:
        """The index of the action ``text`` names (after stripping whitespace)."""
        index = self._index.get(text.strip())
        if index is None:
            raise JudgeError(f"matrix_game: response {text!r} is not an action; valid actions: {self.actions}")
        return index

    def allowed_responses(self) -> list[str]:
        return list(self.actions)

    def game_matrix(self) -> torch.Tensor:
        return self.matrix

    def _preference(
        self, prompts: Sequence[Prompt], responses_a: Sequence[str], responses_b: Sequence[str], references=None
    ) -> torch.Tensor:
        rows = torch.tensor([self.action_index(a) for a in responses_a], dtype=torch.long)
        cols = torch.tensor([self.action_index(b) for b in responses_b], dtype=torch.long)
        return self.matrix[rows, cols]


class NonTransitiveJudge(PreferenceJudge):
    """A deterministic, non-transitive preference over free text (the prompt is ignored).

    With q(y) the fraction of the non-whitespace characters of y that are in ``target_chars``
    (case-insensitive; q = 0 when y has no non-whitespace character), and c(y) = ord(first non-whitespace
    character of y) mod 3 (c = 0 for an empty response):

        P(y ≻ y') = w·σ(κ·(q(y) − q(y'))) + (1 − w)·(½ + ½·A[c(y), c(y')]),
        A = [[0, −1, 1], [1, 0, −1], [−1, 1, 0]]   (class 1 beats 0, 2 beats 1, 0 beats 2),

    with w = ``weight`` and κ = ``sharpness``. The first term is transitive (a "quality" a policy can climb);
    the second is rock-paper-scissors, so e.g. "dog" ≻ "cat" ≻ "bat" ≻ "dog" (equal q, classes 1, 0, 2), each
    with P = w/2 + (1 − w) > ½. Both terms are antisymmetric about ½, so P(y ≻ y') + P(y' ≻ y) = 1 and
    P(y ≻ y) = ½.

    Args:
        target_chars: characters that count towards q.
        weight: w in [0, 1], the share of the transitive term.
        sharpness: κ ≥ 0.
    """

    name = "nontransitive"

    def __init__(self, target_chars: str = "aeiou", weight: float = 0.7, sharpness: float = 10.0):
        if not 0.0 <= weight <= 1.0:
            raise JudgeError(f"nontransitive weight must be in [0, 1], got {weight}")
        if not math.isfinite(sharpness) or sharpness < 0:
            raise JudgeError(f"nontransitive sharpness must be a finite number >= 0, got {sharpness}")
        self.target_chars = frozenset(target_chars.lower())
        self.weight = float(weight)
        self.sharpness = float(sharpness)

    def quality(self, response: str) -> float:
        """q(y): the fraction of non-whitespace characters of y in ``target_chars`` (0 when there are none)."""
        chars = [ch for ch in response if not ch.isspace()]
        if not chars:
            return 0.0
        return sum(ch.lower() in self.target_chars for ch in chars) / len(chars)

    @staticmethod
    def cycle_class(response: str) -> int:
        """c(y): ord of the first non-whitespace character mod 3 (0 for an empty response)."""
        stripped = response.lstrip()
        return ord(stripped[0]) % 3 if stripped else 0

    def _preference(
        self, prompts: Sequence[Prompt], responses_a: Sequence[str], responses_b: Sequence[str], references=None
    ) -> torch.Tensor:
        q_a = torch.tensor([self.quality(y) for y in responses_a], dtype=torch.float64)
        q_b = torch.tensor([self.quality(y) for y in responses_b], dtype=torch.float64)
        c_a = torch.tensor([self.cycle_class(y) for y in responses_a], dtype=torch.long)
        c_b = torch.tensor([self.cycle_class(y) for y in responses_b], dtype=torch.long)
        transitive = torch.sigmoid(self.sharpness * (q_a - q_b))
        cyclic = 0.5 + 0.5 * CYCLE[c_a, c_b]
        return self.weight * transitive + (1.0 - self.weight) * cyclic
