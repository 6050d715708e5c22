"""Optimizer and learning-rate schedule from the config (TRL/transformers names and formulas)."""

from __future__ import annotations

import math

import torch

from prefopt.config import TrainConfig


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    lr, wd = cfg.learning_rate, cfg.weight_decay
    if cfg.optim == "adamw_torch":
        return torch.optim.AdamW(
            params, lr=lr, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_epsilon, weight_decay=wd
        )
    if cfg.optim == "adam":
        return torch.optim.Adam(
            params, lr=lr, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_epsilon, weight_decay=wd
        )
    if cfg.optim == "rmsprop":  # SPPO's released recipes
        return torch.optim.RMSprop(params, lr=lr, eps=cfg.adam_epsilon, weight_decay=wd)
    return torch.optim.SGD(params, lr=lr, weight_decay=wd)


class Schedule:
    """LR multiplier for optimizer step ``step`` (the formulas of transformers' schedulers).

    The length is set once the first iteration's data is known: total_steps = (optimizer steps of iteration 1)
    × num_iterations, and warmup = warmup_ratio × total_steps (algorithms whose row count varies per iteration
    get a schedule that is exact for the first and clamped at its end afterwards). A callable object, not a
    lambda, so that ``LambdaLR.state_dict`` saves its fields and a resumed run continues the same schedule.
    """

    def __init__(self, kind: str, warmup_ratio: float):
        self.kind = kind
        self.warmup_ratio = warmup_ratio
        self.total_steps = 0
        self.warmup_steps = 0

    def set_length(self, total_steps: int) -> None:
        self.total_steps = max(1, total_steps)
        self.warmup_steps = int(math.ceil(self.warmup_ratio * self.total_steps))

    def __call__(self, step: int) -> float:
        if self.total_steps == 0 or self.kind == "constant":
            return 1.0
        if step < self.warmup_steps:
            return step / max(1, self.warmup_steps)
        if self.kind == "constant_with_warmup":
            return 1.0
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        if self.kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return max(0.0, 1.0 - progress)  # linear


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, Schedule(cfg.lr_scheduler_type, cfg.warmup_ratio))


def start_schedule(scheduler: torch.optim.lr_scheduler.LambdaLR, total_steps: int) -> None:
    """Fix the schedule's length and set the current learning rates to match it."""
    schedule: Schedule = scheduler.lr_lambdas[0]
    schedule.set_length(total_steps)
    for group, base in zip(scheduler.optimizer.param_groups, scheduler.base_lrs):
        group["lr"] = base * schedule(scheduler.last_epoch)
