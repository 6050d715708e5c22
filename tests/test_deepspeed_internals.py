"""The DeepSpeed internals prefopt relies on (prefopt/zero_internals.py, prefopt/backend.py: exact snapshot and
restore of ZeRO's fp32 master, the ZeRO-3 gather and hook removal for generation, sharded parameter counts) still
exist in the installed version. These are not public API: pyproject bounds deepspeed to the tested minor version,
and this test makes an upgrade fail here, loudly, instead of silently on a cluster. The slow ZeRO tests exercise
them for real."""

import inspect

import pytest

deepspeed = pytest.importorskip("deepspeed")
from deepspeed.runtime.engine import DeepSpeedEngine  # noqa: E402
from deepspeed.runtime.zero import partition_parameters  # noqa: E402
from deepspeed.runtime.zero.parameter_offload import DeepSpeedZeRoOffload  # noqa: E402
from deepspeed.runtime.zero.stage3 import DeepSpeedZeroOptimizer_Stage3  # noqa: E402
from deepspeed.runtime.zero.stage_1_and_2 import DeepSpeedZeroOptimizer  # noqa: E402

METHODS = [
    (DeepSpeedEngine, ["step", "get_global_grad_norm", "empty_partition_cache"]),
    (DeepSpeedZeroOptimizer, ["refresh_fp32_params"]),
    (
        DeepSpeedZeroOptimizer_Stage3,
        [
            "refresh_fp32_params",
            "checkpoint_event_prologue",
            "checkpoint_event_epilogue",
            "_set_fp32_optimizer_param_groups",
            "_clear_fp32_optimizer_param_groups",
        ],
    ),
    (DeepSpeedZeRoOffload, ["_register_deepspeed_module"]),
]
# Attributes set on instances (so looked for where the class assigns them).
ATTRIBUTES = [
    (DeepSpeedZeroOptimizer, ["single_partition_of_fp32_groups"]),
    (DeepSpeedZeroOptimizer_Stage3, ["fp32_partitioned_groups_flat", "parameter_offload"]),
    (DeepSpeedZeRoOffload, ["module", "forward_hooks", "backward_hooks", "fwd_pre_hook"]),
]


@pytest.mark.parametrize("cls, names", METHODS, ids=[c.__name__ for c, _ in METHODS])
def test_methods_exist(cls, names):
    assert [n for n in names if not callable(getattr(cls, n, None))] == []


@pytest.mark.parametrize("cls, names", ATTRIBUTES, ids=[c.__name__ for c, _ in ATTRIBUTES])
def test_instance_attributes_are_assigned(cls, names):
    source = inspect.getsource(cls)
    assert [n for n in names if f"self.{n} =" not in source and f"self.{n}=" not in source] == []


def test_zero3_parameter_attributes_and_gather():
    source = inspect.getsource(partition_parameters)
    assert [n for n in ("ds_tensor", "ds_numel", "ds_active_sub_modules") if f".{n} =" not in source] == []
    assert callable(deepspeed.zero.GatheredParameters)
