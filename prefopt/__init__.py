"""prefopt: online preference optimisation for language models.

The public API is imported lazily so that ``import prefopt`` stays cheap (no torch, transformers or DeepSpeed
until something is used). One trainer class and one config class per algorithm, in TRL's shape::

    from prefopt import SPPOConfig, SPPOTrainer

    trainer = SPPOTrainer("Qwen/Qwen2.5-0.5B-Instruct", args=SPPOConfig(output_dir="sppo-run"), train_dataset=ds)
    trainer.train()
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_TRAINERS = (
    "SPPO", "SPPOHard", "INPO", "OnlineIPO", "EGPO", "DPO", "APO", "NashMP", "NashMD", "REBEL", "GRPO", "GRAO",
    "RAFT", "RAFTPP", "GVMRAFT", "GVMRAFTPP", "GVMGRPO",
)  # fmt: skip

_EXPORTS = {
    **{f"{name}{kind}": "prefopt.trainers" for name in _TRAINERS for kind in ("Trainer", "Config")},
    "PrefoptTrainer": "prefopt.trainers",
    "PrefoptConfig": "prefopt.trainers",
    "trainer_class": "prefopt.trainers",
    "train": "prefopt.trainers",
    "RewardFunctionsJudge": "prefopt.judges.functions",
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
