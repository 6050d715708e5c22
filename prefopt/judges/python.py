"""Judges backed by a user's Python function, named by a spec string.

A spec is ``"package.module:function"`` (imported like any module) or ``"path/to/file.py:function"`` (loaded
from that file). The split is at the last colon, so Windows drive letters survive. Signatures:

- reward: ``f(prompts: list, responses: list[str]) -> list[float]`` (r(x, y) per row), or
  ``f(prompts, responses, references)`` to check against each row's reference answer (the dataset's
  ``answer_column``; a function with a third parameter without default requires it). The references are passed
  to every call, in training and in evaluation, whenever ``answer_column`` is set; otherwise (and for a fixed
  ``eval_baseline_outputs`` file, which holds none) the function is called with two arguments;
- preference: ``f(prompts: list, responses_a: list[str], responses_b: list[str]) -> list[float]`` (P(a ≻ b)).

Every problem with the spec or the function's output is a one-line :class:`JudgeError`; non-finite or
out-of-range values are caught by :func:`prefopt.judges.base.check_values` with the offending row.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable, Sequence

import torch

from prefopt.errors import JudgeError, first_line
from prefopt.judges.base import PreferenceJudge, Prompt, RewardJudge


def _import_file(path: str, spec: str):
    if not os.path.isfile(path):
        raise JudgeError(f"judge function '{spec}': file '{path}' not found")
    # A name unique to the absolute path: two files called judge.py do not overwrite each other.
    digest = hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:12]
    name = f"prefopt_user_judge_{digest}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise JudgeError(f"judge function '{spec}': cannot load '{path}' as a Python module")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as err:
        sys.modules.pop(name, None)
        raise JudgeError(f"judge function '{spec}': importing '{path}' failed: {first_line(err)}") from err
    return module


def load_function(spec: str) -> Callable:
    """The callable named by ``"module.path:function"`` or ``"file.py:function"``.

    Raises:
        JudgeError: one line naming the spec, when it has no colon, the module or file cannot be found or
            imported, the attribute is missing, or it is not callable.
    """
    module_part, sep, attr = str(spec).rpartition(":")
    if not sep or not module_part or not attr:
        raise JudgeError(f"judge function '{spec}' must look like 'package.module:function' or 'file.py:function'")
    if module_part.endswith(".py") or os.sep in module_part or "/" in module_part:
        module = _import_file(os.path.expanduser(module_part), spec)
    else:
        try:
            module = importlib.import_module(module_part)
        except ModuleNotFoundError as err:
            raise JudgeError(f"judge function '{spec}': module '{module_part}' not found ({err})") from err
        except Exception as err:
            raise JudgeError(f"judge function '{spec}': importing '{module_part}' failed: {first_line(err)}") from err
    if not hasattr(module, attr):
        raise JudgeError(f"judge function '{spec}': '{module_part}' has no attribute '{attr}'")
    function = getattr(module, attr)
    if not callable(function):
        raise JudgeError(f"judge function '{spec}': '{attr}' is a {type(function).__name__}, not a callable")
    return function


def _call(function, spec: str, args: list):
    """The user's function on ``args``; an exception it raises is the user's to fix: one JudgeError line (the
    traceback stays available with --debug, chained)."""
    try:
        return function(*args)
    except Exception as err:
        raise JudgeError(f"judge function '{spec}' raised {type(err).__name__}: {first_line(err)}") from err


def _as_values(output, spec: str, expected: int) -> torch.Tensor:
    """The function's output as a float64 tensor [expected], or a JudgeError naming the spec."""
    try:
        values = torch.as_tensor(output, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as err:
        raise JudgeError(
            f"judge function '{spec}' must return a list of {expected} numbers, got {type(output).__name__}"
        ) from err
    if values.dim() != 1:
        raise JudgeError(f"judge function '{spec}' returned shape {tuple(values.shape)}; expected a flat list")
    if values.numel() != expected:
        raise JudgeError(
            f"judge function '{spec}' returned {values.numel()} values; expected {expected} (one per row)"
        )
    return values


def _reference_parameter(function) -> inspect.Parameter | None:
    """The function's third positional parameter (the references), if it has one."""
    try:
        params = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):  # a builtin without a signature: called with two arguments
        return None
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
    return positional[2] if len(positional) > 2 else None


class PythonRewardJudge(RewardJudge):
    """r(x, y) from ``f(prompts, responses[, references]) -> list[float]`` named by ``spec``."""

    def __init__(self, spec: str):
        self.spec = spec
        self.function = load_function(spec)
        self.name = f"python_reward:{spec}"
        third = _reference_parameter(self.function)
        self.takes_references = third is not None
        required = third is not None and third.kind != third.VAR_POSITIONAL and third.default is third.empty
        self.needs_references = required

    def _reward(self, prompts: Sequence[Prompt], responses: Sequence[str], references=None) -> torch.Tensor:
        args = [list(prompts), list(responses)]
        if self.takes_references and references is not None:
            args.append(list(references))
        return _as_values(_call(self.function, self.spec, args), self.spec, len(prompts))


class PythonPreferenceJudge(PreferenceJudge):
    """P(a ≻ b | x) from ``f(prompts, responses_a, responses_b) -> list[float]`` named by ``spec``.

    The function is trusted to be a preference (P(a ≻ b) + P(b ≻ a) = 1); only its range is checked.
    """

    def __init__(self, spec: str):
        self.spec = spec
        self.function = load_function(spec)
        self.name = f"python_preference:{spec}"

    def _preference(
        self, prompts: Sequence[Prompt], responses_a: Sequence[str], responses_b: Sequence[str], references=None
    ) -> torch.Tensor:
        output = _call(self.function, self.spec, [list(prompts), list(responses_a), list(responses_b)])
        return _as_values(output, self.spec, len(prompts))
