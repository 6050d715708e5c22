"""The trainer classes: one per algorithm, TRL's shape, all the same class over the one shared loop.

::

    from prefopt import SPPOConfig, SPPOTrainer

    trainer = SPPOTrainer("Qwen/Qwen2.5-0.5B-Instruct", args=SPPOConfig(output_dir="sppo-run"),
                          train_dataset=dataset, judge=my_pairwise_judge)
    trainer.train()

Each ``XTrainer`` differs from :class:`PrefoptTrainer` only in its config class (``XConfig``), which names the
algorithm; ``trainer_class(name)`` finds the one ``prefopt train NAME`` uses.
"""

from __future__ import annotations

from prefopt.errors import ConfigError
from prefopt.trainers.base import PrefoptTrainer
from prefopt.trainers.config import (
    APOConfig,
    DPOConfig,
    EGPOConfig,
    GRAOConfig,
    GRPOConfig,
    GVMGRPOConfig,
    GVMRAFTConfig,
    GVMRAFTPPConfig,
    INPOConfig,
    NashMDConfig,
    NashMPConfig,
    OnlineIPOConfig,
    PrefoptConfig,
    RAFTConfig,
    RAFTPPConfig,
    REBELConfig,
    SPPOConfig,
    SPPOHardConfig,
)


class SPPOTrainer(PrefoptTrainer):
    """``prefopt train sppo`` as a class (its config: :class:`SPPOConfig`)."""

    config_class = SPPOConfig


class SPPOHardTrainer(PrefoptTrainer):
    """``prefopt train sppo_hard`` as a class (its config: :class:`SPPOHardConfig`)."""

    config_class = SPPOHardConfig


class INPOTrainer(PrefoptTrainer):
    """``prefopt train inpo`` as a class (its config: :class:`INPOConfig`)."""

    config_class = INPOConfig


class OnlineIPOTrainer(PrefoptTrainer):
    """``prefopt train online_ipo`` as a class (its config: :class:`OnlineIPOConfig`)."""

    config_class = OnlineIPOConfig


class EGPOTrainer(PrefoptTrainer):
    """``prefopt train egpo`` as a class (its config: :class:`EGPOConfig`)."""

    config_class = EGPOConfig


class DPOTrainer(PrefoptTrainer):
    """``prefopt train dpo`` as a class (its config: :class:`DPOConfig`)."""

    config_class = DPOConfig


class APOTrainer(PrefoptTrainer):
    """``prefopt train apo`` as a class (its config: :class:`APOConfig`)."""

    config_class = APOConfig


class NashMPTrainer(PrefoptTrainer):
    """``prefopt train nash_mp`` as a class (its config: :class:`NashMPConfig`)."""

    config_class = NashMPConfig


class NashMDTrainer(PrefoptTrainer):
    """``prefopt train nash_md`` as a class (its config: :class:`NashMDConfig`)."""

    config_class = NashMDConfig


class REBELTrainer(PrefoptTrainer):
    """``prefopt train rebel`` as a class (its config: :class:`REBELConfig`)."""

    config_class = REBELConfig


class GRPOTrainer(PrefoptTrainer):
    """``prefopt train grpo`` as a class (its config: :class:`GRPOConfig`)."""

    config_class = GRPOConfig


class GRAOTrainer(PrefoptTrainer):
    """``prefopt train grao`` as a class (its config: :class:`GRAOConfig`)."""

    config_class = GRAOConfig


class RAFTTrainer(PrefoptTrainer):
    """``prefopt train raft`` as a class (its config: :class:`RAFTConfig`)."""

    config_class = RAFTConfig


class RAFTPPTrainer(PrefoptTrainer):
    """``prefopt train raftpp`` as a class (its config: :class:`RAFTPPConfig`)."""

    config_class = RAFTPPConfig


class GVMRAFTTrainer(PrefoptTrainer):
    """``prefopt train gvm_raft`` as a class (its config: :class:`GVMRAFTConfig`)."""

    config_class = GVMRAFTConfig


class GVMRAFTPPTrainer(PrefoptTrainer):
    """``prefopt train gvm_raftpp`` as a class (its config: :class:`GVMRAFTPPConfig`)."""

    config_class = GVMRAFTPPConfig


class GVMGRPOTrainer(PrefoptTrainer):
    """``prefopt train gvm_grpo`` as a class (its config: :class:`GVMGRPOConfig`)."""

    config_class = GVMGRPOConfig


TRAINERS: dict[str, type[PrefoptTrainer]] = {
    cls.config_class.algorithm: cls
    for cls in (
        SPPOTrainer,
        SPPOHardTrainer,
        INPOTrainer,
        OnlineIPOTrainer,
        EGPOTrainer,
        DPOTrainer,
        APOTrainer,
        NashMPTrainer,
        NashMDTrainer,
        REBELTrainer,
        GRPOTrainer,
        GRAOTrainer,
        RAFTTrainer,
        RAFTPPTrainer,
        GVMRAFTTrainer,
        GVMRAFTPPTrainer,
        GVMGRPOTrainer,
    )
}


def trainer_class(name: str) -> type[PrefoptTrainer]:
    """The trainer class of the algorithm registered as ``name``."""
    if name not in TRAINERS:
        raise ConfigError(f"unknown algorithm '{name}'; available: {', '.join(sorted(TRAINERS))}")
    return TRAINERS[name]


def train(name: str, cfg, algo_cfg) -> dict:
    """``prefopt train NAME`` from its (TrainConfig, params) pair: the trainer built from them, trained; returns the
    last iteration's metrics."""
    cls = trainer_class(name)
    return cls(args=cls.config_class.from_parts(cfg, algo_cfg)).train().metrics


__all__ = [
    "TRAINERS",
    "PrefoptConfig",
    "PrefoptTrainer",
    "trainer_class",
    "train",
    "SPPOConfig",
    "SPPOTrainer",
    "SPPOHardConfig",
    "SPPOHardTrainer",
    "INPOConfig",
    "INPOTrainer",
    "OnlineIPOConfig",
    "OnlineIPOTrainer",
    "EGPOConfig",
    "EGPOTrainer",
    "DPOConfig",
    "DPOTrainer",
    "APOConfig",
    "APOTrainer",
    "NashMPConfig",
    "NashMPTrainer",
    "NashMDConfig",
    "NashMDTrainer",
    "REBELConfig",
    "REBELTrainer",
    "GRPOConfig",
    "GRPOTrainer",
    "GRAOConfig",
    "GRAOTrainer",
    "RAFTConfig",
    "RAFTTrainer",
    "RAFTPPConfig",
    "RAFTPPTrainer",
    "GVMRAFTConfig",
    "GVMRAFTTrainer",
    "GVMRAFTPPConfig",
    "GVMRAFTPPTrainer",
    "GVMGRPOConfig",
    "GVMGRPOTrainer",
]
