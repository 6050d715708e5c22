"""A reward judge from Python callables in TRL's ``reward_funcs`` convention, summed with ``reward_weights``.

Each function is called as TRL's GRPOTrainer calls it::

    f(prompts=[...], completions=[...], **columns) -> list[float | None]

- ``prompts``: each row's prompt as the dataset holds it (a string or a list of chat messages);
- ``completions``: the sampled responses: strings for string prompts, ``[{"role": "assistant", "content": y}]``
  for conversational ones;
- ``columns``: with ``answer_column`` set, that column's value for each row, under the column's name (TRL passes
  every dataset column; prefopt passes the one it keeps, so a function reads its reference as TRL's ``solution``
  or ``answer`` keyword would).

The reward of a row is Σ_i w_i f_i (TRL's ``reward_weights``, one per function, default 1). A function may return
None for a row it does not score (TRL's convention for task-specific rewards): that term is left out of the sum, as
TRL's ``nansum`` leaves it out; a row that no function scores gets 0, as in TRL.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import torch

from prefopt.errors import JudgeError, first_line
from prefopt.judges.base import Prompt, RewardJudge


def _function_name(function: Callable) -> str:
    return getattr(function, "__name__", type(function).__name__)


def _check_callable(function, position: int) -> None:
    if not callable(function):
        raise JudgeError(f"judge entry {position} is a {type(function).__name__}, not a reward function")
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # a builtin without a signature: trusted
        return
    accepts = {p.name for p in signature.parameters.values()}
    takes_any = any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values())
    if not takes_any and "completions" not in accepts:
        raise JudgeError(
            f"reward function '{_function_name(function)}' takes no 'completions' argument; TRL's convention is "
            "f(prompts, completions, **kwargs) -> list[float]"
        )


class RewardFunctionsJudge(RewardJudge):
    """r(x, y) = Σ_i w_i f_i(x, y) over TRL-style reward functions.

    Args:
        functions: one callable or a list of them.
        weights: one weight per function (None: 1 each).
        reference_column: the dataset column passed to each function under its own name (``answer_column``).
    """

    def __init__(self, functions, weights: Sequence[float] | None = None, reference_column: str | None = None):
        self.functions = list(functions) if isinstance(functions, (list, tuple)) else [functions]
        if not self.functions:
            raise JudgeError("judge is an empty list; give at least one reward function")
        for position, function in enumerate(self.functions):
            _check_callable(function, position)
        if weights is not None and len(weights) != len(self.functions):
            raise JudgeError(
                f"config key 'reward_weights' has {len(weights)} entries, but the judge has {len(self.functions)} "
                "reward functions; give one weight per function"
            )
        self.weights = torch.tensor(
            [1.0] * len(self.functions) if weights is None else list(weights), dtype=torch.float64
        )
        self.reference_column = reference_column
        self.name = "reward_funcs:" + "+".join(_function_name(f) for f in self.functions)

    def _reward(self, prompts: Sequence[Prompt], responses: Sequence[str], references=None) -> torch.Tensor:
        completions = [
            [{"role": "assistant", "content": y}] if isinstance(x, list) else y for x, y in zip(prompts, responses)
        ]
        columns = {}
        if self.reference_column is not None and references is not None:
            columns[self.reference_column] = list(references)
        scores = torch.stack([self._call(f, list(prompts), completions, columns) for f in self.functions], dim=1)
        terms = scores * self.weights  # [B, functions]; NaN where a function returned None
        return torch.nansum(terms, dim=1)

    def _call(self, function, prompts: list, completions: list, columns: dict) -> torch.Tensor:
        name = _function_name(function)
        try:
            output = function(prompts=prompts, completions=completions, **columns)
        except Exception as err:  # the user's function failed: theirs to fix, named in one line
            raise JudgeError(f"reward function '{name}' raised {type(err).__name__}: {first_line(err)}") from err
        if not isinstance(output, (list, tuple)) or len(output) != len(prompts):
            got = f"{len(output)} values" if isinstance(output, (list, tuple)) else type(output).__name__
            raise JudgeError(f"reward function '{name}' must return a list of {len(prompts)} numbers; got {got}")
        try:
            return torch.tensor([float("nan") if v is None else float(v) for v in output], dtype=torch.float64)
        except (TypeError, ValueError) as err:
            raise JudgeError(f"reward function '{name}' returned a non-number: {first_line(err)}") from err
