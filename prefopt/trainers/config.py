"""One config dataclass per algorithm, TRL's shape: the run's keys and the algorithm's own in one flat namespace.

``SPPOConfig(output_dir="run", learning_rate=5e-7, eta=1000.0)`` holds every key ``prefopt train sppo`` takes
(the shared :class:`prefopt.config.TrainConfig` and the algorithm's hyperparameters, ``SPPOParams``), checked at
construction as the CLI checks them: a wrong type or a value out of range is a one-line ``ConfigError`` naming the
key. The keys a trainer's arguments can supply (``model_name_or_path``, ``dataset_name``) are required only when
the trainer is built.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import ClassVar

from prefopt.algorithms.apo import APOParams
from prefopt.algorithms.dpo import DPOParams
from prefopt.algorithms.egpo import EGPOParams
from prefopt.algorithms.grao import GRAOParams
from prefopt.algorithms.grpo import GRPOParams
from prefopt.algorithms.gvm import GVMGRPOParams, GVMRAFTParams
from prefopt.algorithms.inpo import INPOParams
from prefopt.algorithms.nash_md import NashMDParams
from prefopt.algorithms.nash_mp import NashMPParams
from prefopt.algorithms.online_ipo import OnlineIPOParams
from prefopt.algorithms.raft import RAFTParams
from prefopt.algorithms.rebel import REBELParams
from prefopt.algorithms.sppo import SPPOHardParams, SPPOParams
from prefopt.config import TrainConfig, _coerce


@dataclass
class PrefoptConfig(TrainConfig):
    """The shared keys (:class:`prefopt.config.TrainConfig`); each algorithm's config adds its ``params_class``.

    Attributes:
        algorithm: the registry name the config trains (``prefopt train NAME``).
        params_class: the algorithm's own hyperparameter dataclass.
    """

    algorithm: ClassVar[str] = ""
    params_class: ClassVar[type | None] = None

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            setattr(self, f.name, _coerce(getattr(self, f.name), hints[f.name], f.name, type(self).__name__))
        self.check()

    def check(self) -> None:
        """Every range and combination of keys (the CLI's checks) but the required keys."""
        self._check_ranges()
        self._check_combinations()
        validate = getattr(self.params_class, "validate", None)
        if validate is not None:
            validate(self)

    def validate(self) -> None:
        """The required keys, once a trainer has filled them, and ``check``."""
        self._check_required()
        self.check()

    def split(self) -> tuple[TrainConfig, object]:
        """(TrainConfig, the algorithm's params), what the shared loop reads."""
        train = TrainConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(TrainConfig)})
        own = self.params_class(**{f.name: getattr(self, f.name) for f in dataclasses.fields(self.params_class)})
        return train, own

    @classmethod
    def from_parts(cls, train: TrainConfig, params) -> PrefoptConfig:
        """The config holding a (TrainConfig, params) pair's values (what ``prefopt train`` built)."""
        return cls(**dataclasses.asdict(train), **dataclasses.asdict(params))

    def to_dict(self) -> dict:
        """Every key's value (transformers' ``TrainingArguments.to_dict``, which some callbacks read)."""
        return dataclasses.asdict(self)


@dataclass
class SPPOConfig(PrefoptConfig, SPPOParams):
    """SPPO, Self-Play Preference Optimization (arXiv 2405.00675): docs/algorithms/sppo.md."""

    algorithm: ClassVar[str] = "sppo"
    params_class: ClassVar[type] = SPPOParams


@dataclass
class SPPOHardConfig(PrefoptConfig, SPPOHardParams):
    """sppo_hard, SPPO's loss on pairs with targets ±1/(2β) (TRL's loss_type="sppo_hard"): docs/algorithms/sppo.md."""

    algorithm: ClassVar[str] = "sppo_hard"
    params_class: ClassVar[type] = SPPOHardParams


@dataclass
class INPOConfig(PrefoptConfig, INPOParams):
    """INPO, Iterative Nash Policy Optimization (arXiv 2407.00617): docs/algorithms/inpo.md."""

    algorithm: ClassVar[str] = "inpo"
    params_class: ClassVar[type] = INPOParams


@dataclass
class OnlineIPOConfig(PrefoptConfig, OnlineIPOParams):
    """Online IPO, online mirror descent on the preference game (arXiv 2503.08942): docs/algorithms/online_ipo.md."""

    algorithm: ClassVar[str] = "online_ipo"
    params_class: ClassVar[type] = OnlineIPOParams


@dataclass
class EGPOConfig(PrefoptConfig, EGPOParams):
    """EGPO, Extragradient Preference Optimization (arXiv 2503.08942): docs/algorithms/egpo.md."""

    algorithm: ClassVar[str] = "egpo"
    params_class: ClassVar[type] = EGPOParams


@dataclass
class DPOConfig(PrefoptConfig, DPOParams):
    """Iterative DPO, Direct Preference Optimization on dataset or rollout pairs (arXiv 2305.18290):
    docs/algorithms/dpo.md."""

    algorithm: ClassVar[str] = "dpo"
    params_class: ClassVar[type] = DPOParams


@dataclass
class APOConfig(PrefoptConfig, APOParams):
    """APO, Accelerated Preference Optimization (arXiv 2410.06293), not TRL's Anchored APO: docs/algorithms/apo.md."""

    algorithm: ClassVar[str] = "apo"
    params_class: ClassVar[type] = APOParams


@dataclass
class NashMPConfig(PrefoptConfig, NashMPParams):
    """Nash-MP, Nash Mirror Prox (arXiv 2505.19731): docs/algorithms/nash_mp.md."""

    algorithm: ClassVar[str] = "nash_mp"
    params_class: ClassVar[type] = NashMPParams


@dataclass
class NashMDConfig(PrefoptConfig, NashMDParams):
    """Nash-MD, Nash Learning from Human Feedback (arXiv 2312.00886): docs/algorithms/nash_md.md."""

    algorithm: ClassVar[str] = "nash_md"
    params_class: ClassVar[type] = NashMDParams


@dataclass
class REBELConfig(PrefoptConfig, REBELParams):
    """REBEL, Reinforcement Learning via Regressing Relative Rewards (arXiv 2404.16767): docs/algorithms/rebel.md."""

    algorithm: ClassVar[str] = "rebel"
    params_class: ClassVar[type] = REBELParams


@dataclass
class GRPOConfig(PrefoptConfig, GRPOParams):
    """GRPO, group-relative policy optimisation (DeepSeekMath, arXiv 2402.03300): docs/algorithms/grpo.md."""

    algorithm: ClassVar[str] = "grpo"
    params_class: ClassVar[type] = GRPOParams


@dataclass
class GRAOConfig(PrefoptConfig, GRAOParams):
    """GRAO, Group Relative Alignment Optimization (arXiv 2508.07750): docs/algorithms/grao.md."""

    algorithm: ClassVar[str] = "grao"
    params_class: ClassVar[type] = GRAOParams


@dataclass
class RAFTConfig(PrefoptConfig, RAFTParams):
    """RAFT, Reward rAnked FineTuning (arXiv 2304.06767): docs/algorithms/raft.md."""

    algorithm: ClassVar[str] = "raft"
    params_class: ClassVar[type] = RAFTParams


@dataclass
class RAFTPPConfig(PrefoptConfig, RAFTParams):
    """RAFT++, RAFT with importance sampling and clipping (arXiv 2505.02391): docs/algorithms/raft.md."""

    algorithm: ClassVar[str] = "raftpp"
    params_class: ClassVar[type] = RAFTParams


@dataclass
class GVMRAFTConfig(PrefoptConfig, GVMRAFTParams):
    """GVM-RAFT, RAFT with gradient-variance-minimising sample budgets (arXiv 2505.02391): docs/algorithms/gvm.md."""

    algorithm: ClassVar[str] = "gvm_raft"
    params_class: ClassVar[type] = GVMRAFTParams


@dataclass
class GVMRAFTPPConfig(PrefoptConfig, GVMRAFTParams):
    """GVM-RAFT++, RAFT++ with GVM's sample budgets (arXiv 2505.02391): docs/algorithms/gvm.md."""

    algorithm: ClassVar[str] = "gvm_raftpp"
    params_class: ClassVar[type] = GVMRAFTParams


@dataclass
class GVMGRPOConfig(PrefoptConfig, GVMGRPOParams):
    """GVM-GRPO, GRPO with GVM's sample budgets (arXiv 2505.02391): docs/algorithms/gvm.md."""

    algorithm: ClassVar[str] = "gvm_grpo"
    params_class: ClassVar[type] = GVMGRPOParams
