"""prefopt: online preference optimisation for language models.

The public API is imported lazily so that ``import prefopt`` stays cheap (no torch, transformers or DeepSpeed
until something is used)::

    from prefopt import train, build_configs, get_algorithm
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "train": "prefopt.loop",
    "build_configs": "prefopt.config",
    "TrainConfig": "prefopt.config",
    "get_algorithm": "prefopt.algorithms",
    "ALGORITHMS": "prefopt.algorithms",
    "build_judge": "prefopt.judges",
    "PreferenceJudge": "prefopt.judges.base",
    "RewardJudge": "prefopt.judges.base",
    "HFRolloutEngine": "prefopt.rollout.hf",
    "SamplingParams": "prefopt.rollout.engine",
    "write_tiny_model": "prefopt.tiny",
    "win_rate": "prefopt.eval",
    "run_eval": "prefopt.eval.run",
    "EvalRequest": "prefopt.eval.run",
    "length_controlled_win_rate": "prefopt.eval.length_control",
    "export_run": "prefopt.export",
    "PrefoptError": "prefopt.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'prefopt' has no attribute {name!r}")
