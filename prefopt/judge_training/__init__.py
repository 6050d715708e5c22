"""``prefopt train-judge``: train the judges the online algorithms use, from preference pairs.

Two kinds, each written as a folder that loads directly as the prefopt judge of the same name:

- ``judge: reward_model``: a Bradley-Terry reward model r(x, y), trained by TRL's ``RewardTrainer`` with
  −log σ(r(x, y⁺) − r(x, y⁻)).
- ``judge: pairwise_model``: a pairwise preference model P(y ≻ y' | x), one sequence classifier on
  ``template(x, y, y')``, trained with the symmetrised objective of the pairwise_model judge,
  −log ½[p(x, y⁺, y⁻) + 1 − p(x, y⁻, y⁺)] (both orders in one forward batch). Unlike a reward model it can
  represent a cyclic (non-transitive) preference, the case the Nash methods exist for.

Modules: ``config`` (keys and loading), ``data`` (pairs, split, tokenisation as the judge reads), ``losses`` (the
objectives as tensor functions), ``trainers`` (TRL's RewardTrainer, the pairwise Trainer, model, LoRA),
``metrics`` (accuracy, ECE, antisymmetry), ``evaluate`` (metrics through the loaded judge), ``output`` (the folder),
``run`` (the sequence).
"""

from __future__ import annotations

from prefopt.judge_training.config import JudgeTrainConfig, build_judge_config
from prefopt.judge_training.run import train_judge


def run_cli(config_path: str | None, help_keys: bool, flags: list[str]) -> int:
    """``prefopt train-judge [--config FILE] [--key value ...]``: list the keys, or train and print the metrics."""
    import os

    from prefopt.config import field_help, parse_cli_overrides, read_yaml

    if help_keys:
        for name, text, default in field_help(JudgeTrainConfig):
            print(f"  --{name} (default {default!r}): {text}")
        return 0
    cfg = build_judge_config(read_yaml(config_path) if config_path else {}, parse_cli_overrides(flags), config_path)
    metrics = train_judge(cfg)
    if metrics is None or int(os.environ.get("RANK", "0")) != 0:
        return 0
    low, high = metrics["accuracy_ci95"]
    line = (
        f"[prefopt] held-out {cfg.judge}: accuracy {metrics['accuracy']:.3f} (95% Wilson CI {low:.3f}-{high:.3f}, "
        f"n={metrics['n']}), ECE {metrics['ece']:.3f} ({metrics['ece_bins']} bins), loss {metrics['loss']:.4f}"
    )
    if "antisymmetry_violation" in metrics:
        line += f", antisymmetry violation {metrics['antisymmetry_violation']:.4f}"
    print(line)
    print(f"[prefopt] judge folder: {cfg.output_dir} (metrics.json)")
    return 0


__all__ = ["JudgeTrainConfig", "build_judge_config", "run_cli", "train_judge"]
