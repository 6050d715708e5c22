"""``prefopt train-judge`` configuration: one flat dataclass, loaded TRL-style (YAML gives defaults, flags override).

The keys follow TRL's ``RewardConfig`` / ``TrainingArguments`` names (``learning_rate``, ``num_train_epochs``,
``max_steps``, ``per_device_train_batch_size``, ``save_steps``, ``deepspeed``, ``center_rewards_coefficient``) and
prefopt's own where prefopt already has one (``adapter: lora`` with ``lora_r``, ``lora_alpha``, ... as in
``prefopt train``). An unknown key, a wrong type or a bad value is a one-line :class:`ConfigError` naming the key and
where it came from, raised before anything is loaded or written. The value checks reuse prefopt.config's.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from prefopt.config import _coerce
from prefopt.config_fields import _f, require, require_positive
from prefopt.errors import ConfigError, JudgeError

JUDGE_KINDS = ("reward_model", "pairwise_model")


@dataclass
class JudgeTrainConfig:
    """Everything ``prefopt train-judge`` reads; ``prefopt train-judge --help-keys`` lists it."""

    # What to train
    judge: Literal["reward_model", "pairwise_model"] | None = _f(
        None,
        "reward_model: a Bradley-Terry reward r(x, y) (TRL's RewardTrainer); pairwise_model: P(y ≻ y' | x) from a "
        "classifier on (x, y, y'), trained with the symmetrised objective (required).",
    )
    model_name_or_path: str | None = _f(
        None, "Base model: a causal LM or a sequence classifier (Hub id or folder); a new head is added (required)."
    )
    tokenizer_name_or_path: str | None = _f(None, "Tokenizer, if not the model's.")
    trust_remote_code: bool = _f(False, "Allow custom model code from the Hub.")
    num_labels: int = _f(
        1, "pairwise_model head: 1 (P = σ(logit)) or 2 (P = softmax(logits)[0]); reward_model: must be 1."
    )
    template: str | None = _f(
        None, "pairwise_model input text with {prompt}, {a}, {b} (None: the pairwise_model judge's default)."
    )
    max_length: int = _f(
        1024, "Tokens per input, keeping the end, as the judge reads them (give the judge the same judge_max_length)."
    )
    # Data
    dataset_name: str | None = _f(
        None, "Preference pairs (prompt/chosen/rejected, TRL's formats): a local file, a saved dataset or a Hub name."
    )
    dataset_config: str | None = _f(None, "Hub dataset configuration name.")
    dataset_train_split: str = _f("train", "Split of dataset_name to train on.")
    eval_dataset_name: str | None = _f(None, "Held-out pairs (same formats), instead of a test_size split.")
    eval_dataset_split: str = _f("train", "Split of eval_dataset_name (a single local file is split train).")
    test_size: float = _f(
        0.1, "Rows of dataset_name held out for the metrics: a fraction in (0, 1) or a count >= 1 (seeded)."
    )
    # Run
    output_dir: str | None = _f(None, "Folder of the trained judge (required); never overwritten without --overwrite.")
    overwrite: bool = _f(False, "Delete an existing output_dir first.")
    resume: bool = _f(False, "Continue from the newest checkpoint in output_dir/checkpoints.")
    seed: int = _f(42, "Seed of the held-out split, the new head's initialisation and the data order.")
    # Optimisation (transformers.TrainingArguments' names and meanings)
    num_train_epochs: float = _f(1.0, "Passes over the training pairs (max_steps > 0 overrides it).")
    max_steps: int = _f(-1, "Optimizer steps in all (-1: from num_train_epochs).")
    per_device_train_batch_size: int = _f(8, "Pairs per micro-batch (each pair is two sequences).")
    per_device_eval_batch_size: int = _f(16, "Sequences per forward pass of the held-out metrics.")
    gradient_accumulation_steps: int = _f(1, "Micro-batches per optimizer step.")
    learning_rate: float = _f(1e-4, "Peak learning rate (TRL RewardConfig's default).")
    optim: Literal["adamw_torch", "sgd"] = _f("adamw_torch", "Optimizer.")
    weight_decay: float = _f(0.0, "Decoupled weight decay.")
    lr_scheduler_type: Literal["linear", "cosine", "constant", "constant_with_warmup"] = _f("linear", "LR schedule.")
    warmup_ratio: float = _f(0.0, "Fraction of all optimizer steps spent warming up.")
    max_grad_norm: float = _f(1.0, "Gradient clipping norm (0: off).")
    bf16: bool = _f(False, "bfloat16 mixed precision (off by default, unlike TRL: CPU runs).")
    gradient_checkpointing: bool = _f(False, "Recompute activations in backward (off by default, unlike TRL).")
    center_rewards_coefficient: float | None = _f(
        None, "reward_model: weight of the mean-zero reward penalty (TRL's, arXiv 2312.09244 eq. 2); None: off."
    )
    deepspeed: str | None = _f(None, "DeepSpeed JSON config (configs/deepspeed/zero2.json, zero3.json).")
    torch_num_threads: int | None = _f(None, "CPU threads for torch ops (None: torch's default).")
    # Adapters (as prefopt train)
    adapter: Literal["none", "lora"] = _f(
        "none", "none: full fine-tuning; lora: a peft LoRA adapter, merged at the end."
    )
    lora_r: int = _f(16, "LoRA rank r.")
    lora_alpha: float = _f(32.0, "LoRA alpha: the update is scaled by alpha/r (alpha/sqrt(r) with use_rslora).")
    lora_dropout: float = _f(0.05, "Dropout on the LoRA branch's input.")
    lora_target_modules: list[str] | None = _f(None, "Module names to adapt, or all-linear; None: peft's default.")
    use_rslora: bool = _f(False, "Rank-stabilised LoRA: scale by alpha/sqrt(r).")
    # Logging and checkpoints
    logging_steps: int = _f(10, "Log the training loss every k optimizer steps.")
    save_steps: int = _f(500, "Checkpoint (for --resume) every k optimizer steps and after the last.")
    save_total_limit: int = _f(2, "Checkpoints kept (the newest).")
    report_to: list[str] = _f(["none"], "Trackers: none, tensorboard, wandb.")
    run_name: str | None = _f(None, "Tracker run name.")
    disable_tqdm: bool = _f(False, "Hide progress bars.")
    # Metrics
    ece_bins: int = _f(10, "Equal-width bins over [0, 1] of the expected calibration error.")

    def validate(self) -> None:
        """Required keys, ranges, then combinations; the first violation raises a ConfigError."""
        for name in ("judge", "model_name_or_path", "dataset_name", "output_dir"):
            if not getattr(self, name):
                raise ConfigError(f"config key '{name}' is required")
        self._check_ranges()
        self._check_combinations()

    def _check_ranges(self) -> None:
        positive = (
            "max_length",
            "per_device_train_batch_size",
            "per_device_eval_batch_size",
            "gradient_accumulation_steps",
            "lora_r",
            "logging_steps",
            "save_steps",
            "ece_bins",
        )
        require_positive(self, positive)
        whole = self.test_size > 0 and (self.test_size < 1 or float(self.test_size).is_integer())
        checks = [
            ("test_size", whole, "a fraction in (0, 1) or a whole count >= 1"),
            ("num_labels", self.num_labels in (1, 2), "1 or 2"),
            ("learning_rate", self.learning_rate > 0, "> 0"),
            ("num_train_epochs", self.num_train_epochs > 0, "> 0"),
            ("max_steps", self.max_steps == -1 or self.max_steps >= 1, "-1 or >= 1"),
            ("warmup_ratio", 0 <= self.warmup_ratio < 1, "in [0, 1)"),
            ("max_grad_norm", self.max_grad_norm >= 0, ">= 0"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("lora_alpha", self.lora_alpha > 0, "> 0"),
            ("lora_dropout", 0 <= self.lora_dropout < 1, "in [0, 1)"),
            ("save_total_limit", self.save_total_limit >= 1, ">= 1"),
            ("torch_num_threads", self.torch_num_threads is None or self.torch_num_threads >= 1, ">= 1"),
        ]
        require(self, checks)

    def _check_combinations(self) -> None:
        if self.judge == "reward_model" and self.num_labels != 1:
            raise ConfigError("config key 'num_labels' must be 1 for judge reward_model (one scalar reward)")
        if self.judge == "reward_model" and self.template is not None:
            raise ConfigError("config key 'template' is for judge pairwise_model; a reward_model reads (x, y) alone")
        if self.judge == "pairwise_model" and self.center_rewards_coefficient is not None:
            raise ConfigError("config key 'center_rewards_coefficient' is for judge reward_model")
        if self.template is not None:
            from prefopt.judges.pairwise import check_template

            try:
                check_template(self.template, "train-judge")
            except JudgeError as err:
                raise ConfigError(f"config key 'template': {err}") from None
        if self.resume and self.overwrite:
            raise ConfigError("--resume and --overwrite exclude each other")
        if self.deepspeed and not Path(self.deepspeed).is_file():
            raise ConfigError(f"config key 'deepspeed': file '{self.deepspeed}' does not exist")
        bad = set(self.report_to) - {"none", "tensorboard", "wandb"}
        if bad:
            raise ConfigError(
                f"config key 'report_to': unknown tracker {sorted(bad)[0]!r}; use none, tensorboard, wandb"
            )


# Keys a --resume may change: they decide nothing about the weights the run ends with.
FREE_ON_RESUME = frozenset(
    {
        "resume",
        "overwrite",
        "output_dir",
        "report_to",
        "run_name",
        "disable_tqdm",
        "logging_steps",
        "save_total_limit",
        "per_device_eval_batch_size",
        "torch_num_threads",
    }
)


def build_judge_config(yaml_values: dict, cli_values: dict, yaml_path: str | None = None) -> JudgeTrainConfig:
    """Merge YAML values and command-line flags (flags win) into a validated :class:`JudgeTrainConfig`.

    Raises:
        ConfigError: an unknown key (the message lists the valid ones), a wrong type or a bad value.
    """
    hints = typing.get_type_hints(JudgeTrainConfig)
    valid = sorted(hints)
    values = {}
    for given, origin in ((yaml_values, f"from {yaml_path}"), (cli_values, "from the command line")):
        for key, value in given.items():
            if key not in hints:
                close = difflib.get_close_matches(key, valid, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise ConfigError(f"unknown config key '{key}' ({origin}){hint} valid keys: {', '.join(valid)}")
            values[key] = _coerce(value, hints[key], key, origin)
    if values.get("resume") and "resume" in cli_values and "overwrite" not in cli_values:
        values["overwrite"] = False  # the command line's --resume wins over a YAML's overwrite: true
    cfg = JudgeTrainConfig(**values)
    cfg.validate()
    return cfg


def config_dict(cfg: JudgeTrainConfig) -> dict:
    """The resolved config as written to ``output_dir/train_judge_config.yaml`` (and compared by --resume)."""
    return dataclasses.asdict(cfg)
