"""Judges: who decides which response is better.

Every judge is a :class:`PreferenceJudge` (P(y ≻ y' | x)); the ones with a scalar score are also a
:class:`RewardJudge` (r(x, y)). :func:`build_judge` makes one from config-style options. Importing this package
loads torch only; transformers is imported when a model judge is built.
"""

from __future__ import annotations

from prefopt.errors import JudgeError
from prefopt.judges.api import ApiOptions, OpenAIGradeJudge, OpenAIPreferenceJudge, build_api_judge
from prefopt.judges.base import PreferenceJudge, Prompt, RewardJudge, check_values
from prefopt.judges.generative import GenerativeJudge
from prefopt.judges.pairrm import PairRMJudge
from prefopt.judges.pairwise import PairwiseModelJudge
from prefopt.judges.python import PythonPreferenceJudge, PythonRewardJudge, load_function
from prefopt.judges.reward_model import RewardModelJudge
from prefopt.judges.rules import RULES, RuleRewardJudge
from prefopt.judges.synthetic import MatrixGameJudge, NonTransitiveJudge

JUDGE_KINDS = (
    "nontransitive",
    "matrix_game",
    "reward_model",
    "pairwise_model",
    "pairrm",
    "generative",
    "python_reward",
    "python_preference",
    "exact_match",
    "math",
    "openai",
)

_MODEL_JUDGES = {"reward_model": RewardModelJudge, "pairwise_model": PairwiseModelJudge, "generative": GenerativeJudge}


def _require(kind: str, field: str, value) -> None:
    if value is None:
        raise JudgeError(f"judge kind '{kind}' needs {field}")


def build_judge(
    kind: str,
    *,
    model_name_or_path: str | None = None,
    function: str | None = None,
    batch_size: int = 16,
    max_length: int = 1024,
    dtype: str = "float32",
    device: str = "cpu",
    trust_remote_code: bool = False,
    template: str | None = None,
    game: str | None = None,
    game_size: int | None = None,
    game_seed: int = 0,
    game_matrix=None,
    game_actions: list[str] | None = None,
    api: ApiOptions | None = None,
    pairrm_matrix: str = "scores",
) -> PreferenceJudge:
    """Build a judge of the given kind (one of :data:`JUDGE_KINDS`).

    Args:
        kind: which judge.
        model_name_or_path: the judge model (``reward_model``, ``pairwise_model``, ``pairrm``, ``generative``).
        function: ``"module:function"`` or ``"file.py:function"`` (``python_reward``, ``python_preference``).
        batch_size, max_length, dtype, device, trust_remote_code: model judges' loading and batching.
        template: prompt template with ``{prompt}``, ``{a}``, ``{b}`` (``pairwise_model``, ``generative``).
        game, game_size, game_seed: a named ``matrix_game`` (``rps`` or ``random``).
        game_matrix, game_actions: an explicit ``matrix_game`` matrix [N, N] and its N action strings.
        api: the endpoint, mode and limits of an ``openai`` judge (its preflight runs here: endpoint, key, model).
        pairrm_matrix: a ``pairrm`` group's preference matrix: ``scores`` (SPPO's pipeline) or ``pairs``.

    Raises:
        JudgeError: unknown kind (the message lists the valid ones) or a missing option (named).
    """
    if kind not in JUDGE_KINDS:
        raise JudgeError(f"unknown judge kind {kind!r}; valid kinds: {', '.join(JUDGE_KINDS)}")
    if kind == "nontransitive":
        return NonTransitiveJudge()
    if kind == "matrix_game":
        if game_matrix is not None:
            return MatrixGameJudge(game_matrix, game_actions)
        if game is None:
            raise JudgeError("judge kind 'matrix_game' needs game (rps or random) or game_matrix")
        return MatrixGameJudge.from_name(game, game_size, game_seed, actions=game_actions)
    if kind == "openai":
        _require(kind, "judge_base_url and judge_model", api)
        return build_api_judge(api)
    if kind in RULES:
        return RuleRewardJudge(kind)
    if kind in ("python_reward", "python_preference"):
        _require(kind, "judge_function", function)
        return PythonRewardJudge(function) if kind == "python_reward" else PythonPreferenceJudge(function)
    _require(kind, "judge_model_name_or_path", model_name_or_path)
    if kind == "pairrm":  # PairRM's own lengths (1224/412) and layout: max_length and template do not apply
        return PairRMJudge(model_name_or_path, batch_size=batch_size, dtype=dtype, device=device, matrix=pairrm_matrix)
    options = {
        "batch_size": batch_size,
        "max_length": max_length,
        "dtype": dtype,
        "device": device,
        "trust_remote_code": trust_remote_code,
    }
    if kind != "reward_model":
        options["template"] = template
    return _MODEL_JUDGES[kind](model_name_or_path, **options)


__all__ = [
    "JUDGE_KINDS",
    "GenerativeJudge",
    "JudgeError",
    "MatrixGameJudge",
    "NonTransitiveJudge",
    "OpenAIGradeJudge",
    "OpenAIPreferenceJudge",
    "PairRMJudge",
    "PairwiseModelJudge",
    "PreferenceJudge",
    "Prompt",
    "PythonPreferenceJudge",
    "PythonRewardJudge",
    "RewardJudge",
    "RewardModelJudge",
    "RuleRewardJudge",
    "build_judge",
    "check_values",
    "load_function",
]
