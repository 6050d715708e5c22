"""All accelerate/DeepSpeed wiring in one object; trainers and algorithms never touch DeepSpeed directly.

The primitives algorithms may build on: ``accumulation(is_last)``, ``backward(loss)``, ``step()``,
``snapshot()`` / ``restore(snapshot)`` / ``swapped(snapshot)``, ``inference_model()``, ``save_state`` /
``load_state``. With a DeepSpeed config (ZeRO-2 or ZeRO-3: the run's ``deepspeed`` key or the DeepSpeed accelerate
config the process was launched with, ``prefopt.deepspeed_config``) the same calls drive the DeepSpeed engine; the
config's ``"auto"`` entries are filled from the run config. On a machine without a launcher the backend sets up a
one-process group itself (gloo on CPU), so a single-process ZeRO run needs no extra command. What it needs of
DeepSpeed beyond the public API is in ``prefopt.zero_internals``.
"""

from __future__ import annotations

import contextlib
import gc
import os
import socket

import torch

from prefopt import zero_internals
from prefopt.config import TrainConfig
from prefopt.deepspeed_config import inline_settings_read, resolve_deepspeed_config
from prefopt.errors import ConfigError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _deepspeed_plugin(ds_config: dict):
    """accelerate's DeepSpeed plugin for the run's config. Without a launcher, DeepSpeed still wants a process
    group: the environment then describes a one-process one."""
    from accelerate.utils import DeepSpeedPlugin

    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(key, value)
    os.environ.setdefault("MASTER_PORT", str(_free_port()))
    with inline_settings_read():
        return DeepSpeedPlugin(hf_ds_config=ds_config)


def _to_cpu(obj):
    """A deep copy of a nested state dict with every tensor on the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


class Backend:
    """Owns the Accelerator, the (possibly DeepSpeed-wrapped) model and its optimizer."""

    def __init__(self, cfg: TrainConfig):
        from accelerate import Accelerator, PartialState
        from accelerate.state import AcceleratorState, GradientState

        # accelerate keeps its state per process: a previous run in this process (a notebook, a test) must not
        # impose its DeepSpeed plugin or precision on this one (a process group already set up stays).
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
        self.ds_config = resolve_deepspeed_config(cfg)
        if self.ds_config is None:
            os.environ.pop("ACCELERATE_USE_DEEPSPEED", None)  # set by an earlier DeepSpeed run in this process
        plugin = None if self.ds_config is None else _deepspeed_plugin(self.ds_config)
        several = int(os.environ.get("WORLD_SIZE", "1")) > 1
        # Plain data parallel on CPU is accelerate's MULTI_CPU, which it picks only with cpu=True (else it joins the
        # process group but treats the run as one process: no DDP, no gradient averaging); DeepSpeed on CPU must not
        # say cpu=True, which drops the DeepSpeed plugin.
        cpu_ddp = not torch.cuda.is_available() and several and plugin is None
        if not torch.cuda.is_available() and (plugin is not None or several):
            PartialState(cpu=cpu_ddp, backend="gloo")  # before the Accelerator, or accelerate counts one process
        trackers = [t for t in cfg.report_to if t != "none"]
        self.accelerator = Accelerator(
            cpu=cpu_ddp,
            deepspeed_plugin=plugin,
            mixed_precision="bf16" if cfg.bf16 else "no",
            log_with=trackers or None,
            project_dir=cfg.output_dir,
        )
        if plugin is not None and self.accelerator.distributed_type.value != "DEEPSPEED":
            raise ConfigError(
                "config key 'deepspeed' is set but accelerate did not start DeepSpeed (accelerate launch --cpu "
                "drops it): launch with torchrun or a DeepSpeed accelerate config"
            )
        self.cfg = cfg
        self.model = None
        self.optimizer = None
        self.scheduler = None  # made by prepare
        self._gathered = False
        # Bumped whenever the trainable weights change (an optimizer step, a restore): a rollout engine that keeps
        # its own copy of the weights (vLLM) compares it with the version it last synced.
        self.weights_version = 0
        self._versions_issued = 0  # only grows: a version number is never given to other weights

    # -- properties -------------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def uses_deepspeed(self) -> bool:
        return self.ds_config is not None

    @property
    def zero_stage(self) -> int:
        return int(self.ds_config.get("zero_optimization", {}).get("stage", 0)) if self.ds_config else 0

    @property
    def unwrapped(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.model)

    @property
    def has_adapter(self) -> bool:
        return hasattr(self.unwrapped, "disable_adapter")

    @property
    def world_size(self) -> int:
        return self.accelerator.num_processes

    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    @property
    def lockstep_forwards(self) -> bool:
        """True when every forward is a collective (ZeRO-3 without the whole-model gather, several processes): each
        process must then run as many forwards as the others, whatever its share of the data."""
        return self.zero_stage == 3 and not self.cfg.ds3_gather_for_generation and self.world_size > 1

    # -- collectives ------------------------------------------------------------------------------------------
    def all_gather_object(self, obj) -> list:
        """Every process's ``obj``, in rank order, on every process (pickled; for Python objects and CPU tensors)."""
        if self.world_size == 1:
            return [obj]
        out = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj)
        return out

    def gather_to_main(self, obj) -> list | None:
        """Every process's ``obj`` in rank order on the main process (None on the others): for what only the main
        process writes."""
        if self.world_size == 1:
            return [obj]
        out = [None] * self.world_size if self.is_main else None
        torch.distributed.gather_object(obj, out, dst=0)
        return out

    def max_across(self, value: int) -> int:
        """The largest ``value`` of all processes."""
        return value if self.world_size == 1 else max(self.all_gather_object(value))

    def sum_across_(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` summed over every process, in place (a device tensor; all-reduce)."""
        if self.world_size > 1:
            torch.distributed.all_reduce(t)
        return t

    def broadcast_(self, t: torch.Tensor) -> torch.Tensor:
        """The main process's ``t`` on every process, in place (a device tensor)."""
        if self.world_size > 1:
            torch.distributed.broadcast(t, src=0)
        return t

    def end_trackers(self) -> None:
        """Flush and close the configured trackers (the end of training)."""
        if self.cfg.report_to != ["none"]:
            self.accelerator.end_training()

    def finish(self) -> None:
        """With several processes, leave together (once; a trainer registers it to run at exit): no process exits
        while another still has collectives; ZeRO-3's gathered parameters are released, the process group is
        destroyed, and what still referred to its work objects is freed while the interpreter is whole (gloo's
        threads abort the process when such objects are only destroyed during interpreter shutdown)."""
        if self.world_size > 1 and torch.distributed.is_initialized():
            self.wait()
            if self.zero_stage == 3:
                self.model.empty_partition_cache()
            torch.distributed.destroy_process_group()
            gc.collect()

    # -- trackers (report_to) ---------------------------------------------------------------------------------
    def init_trackers(self, run_name: str, config: dict) -> None:
        """Start the configured trackers (tensorboard, wandb) with the run's scalar config values."""
        if self.cfg.report_to != ["none"]:
            scalars = {k: v for k, v in config.items() if isinstance(v, (int, float, str, bool))}
            self.accelerator.init_trackers(run_name, config=scalars)

    def log_metrics(self, metrics: dict, step: int) -> None:
        """The numeric metrics to the trackers (a no-op with report_to none)."""
        if self.cfg.report_to != ["none"]:
            self.accelerator.log({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, step=step)

    @staticmethod
    def parameter_counts(model: torch.nn.Module) -> tuple[int, int]:
        """(total, trainable) parameter counts of the whole model, also under ZeRO-3 (whose tensors are shards)."""
        numel = [(getattr(p, "ds_numel", p.numel()), p.requires_grad) for p in model.parameters()]
        return sum(n for n, _ in numel), sum(n for n, grad in numel if grad)

    # -- setup ------------------------------------------------------------------------------------------------
    def attach(self, model: torch.nn.Module) -> None:
        """Hold the model before ``prepare`` wraps it (LoRA-GA reads the objective before DeepSpeed starts)."""
        self.model = model

    def prepare(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Wrap model and optimizer (DDP or a DeepSpeed engine) and make the LR schedule (its length is set by the
        first optimisation, ``prefopt.optim.start_schedule``); the schedule is saved with every checkpoint."""
        from prefopt.optim import make_scheduler

        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.scheduler = make_scheduler(optimizer, self.cfg)
        self.accelerator.register_for_checkpointing(self.scheduler)

    # -- optimisation primitives ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def accumulation(self, is_last: bool):
        """Wrap one micro-batch's forward + backward; gradients are synchronised only on the last."""
        if self.uses_deepspeed:
            self.model.set_gradient_accumulation_boundary(is_last)
            yield
        elif is_last or self.accelerator.num_processes == 1:
            yield
        else:
            with self.accelerator.no_sync(self.model):
                yield

    def backward(self, loss: torch.Tensor) -> None:
        """Accumulate gradients of ``loss`` (already scaled by the caller for accumulation)."""
        if self.uses_deepspeed:
            self.model.backward(loss, scale_wrt_gas=False)
        else:
            self.accelerator.backward(loss)

    def step(self) -> float:
        """Clip, apply the optimizer, zero the gradients; returns the pre-clipping gradient norm."""
        self._new_weights_version()
        if self.uses_deepspeed:
            self.model.step()  # clipping (gradient_clipping), optimizer step and zero_grad inside
            norm = self.model.get_global_grad_norm()
            return float(norm) if norm is not None else float("nan")
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.cfg.max_grad_norm > 0:
            norm = float(self.accelerator.clip_grad_norm_(params, self.cfg.max_grad_norm))
        else:
            norm = float(torch.norm(torch.stack([p.grad.norm() for p in params if p.grad is not None])))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    # -- weights ----------------------------------------------------------------------------------------------
    def _trainable(self):
        for name, p in self.unwrapped.named_parameters():
            if p.requires_grad:
                # ZeRO-3 keeps each rank's shard in ds_tensor and an empty placeholder in p.
                yield name, (p.ds_tensor if hasattr(p, "ds_tensor") else p)

    def snapshot(self) -> dict[str, torch.Tensor]:
        """A CPU copy of this rank's trainable tensors (adapter tensors only under LoRA; a shard under ZeRO-3)."""
        return {name: t.detach().to("cpu", copy=True) for name, t in self._trainable()}

    @torch.no_grad()
    def restore(self, snapshot: dict[str, torch.Tensor], *, temporary: bool = False) -> None:
        """Copy a snapshot back into the trainable tensors (the optimizer state is not touched).

        ZeRO's optimizer steps its own fp32 master copy and writes it back to the weights, so a lasting restore
        refreshes the master from the restored weights (``restore_optimizer`` then puts back the exact fp32 master
        of its snapshot); a ``temporary`` one (``swapped``) leaves the master alone."""
        zero = self._zero_optimizer()
        zero3 = zero is not None and self.zero_stage == 3
        if zero3:  # release every gathered weight (small ones stay whole across steps), so none keeps old values
            zero.checkpoint_event_prologue()
        for name, t in self._trainable():
            t.data.copy_(snapshot[name].to(t.device))
        if zero3:  # gather the persistent weights again from the restored shards (a collective)
            zero.checkpoint_event_epilogue()
        if not temporary and zero is not None:
            zero.refresh_fp32_params()
        self._new_weights_version()

    def _new_weights_version(self) -> None:
        self._versions_issued += 1
        self.weights_version = self._versions_issued

    def _zero_optimizer(self):
        """DeepSpeed's ZeRO optimizer once the engine exists, else None."""
        return getattr(self.model, "optimizer", None) if self.uses_deepspeed else None

    def snapshot_optimizer(self) -> dict:
        """A CPU copy of this process's optimizer state (Adam moments, step counts; under ZeRO the state of its
        partition), to go back with ``restore_optimizer``."""
        with self._inner_optimizer() as optimizer:
            state = {"optimizer": _to_cpu(optimizer.state_dict())}
        if self.uses_deepspeed:
            state["fp32_master"] = _to_cpu(zero_internals.master_partitions(self._zero_optimizer()))
        return state

    @torch.no_grad()
    def restore_optimizer(self, state: dict) -> None:
        with self._inner_optimizer() as optimizer:
            optimizer.load_state_dict(state["optimizer"])  # moves each tensor to its parameter's device
        if self.uses_deepspeed:
            for current, saved in zip(zero_internals.master_partitions(self._zero_optimizer()), state["fp32_master"]):
                current.data.copy_(saved)

    @contextlib.contextmanager
    def _inner_optimizer(self):
        """The torch optimizer that holds the state: ours, or the one inside DeepSpeed's ZeRO optimizer."""
        zero = self._zero_optimizer()
        if zero is None:
            yield self.optimizer
            return
        with zero_internals.inner_optimizer(zero) as optimizer:
            yield optimizer

    @contextlib.contextmanager
    def swapped(self, snapshot: dict[str, torch.Tensor]):
        """Evaluate with other weights (e.g. π_ref) and put the current ones back afterwards."""
        current, version = self.snapshot(), self.weights_version
        self.restore(snapshot, temporary=True)
        try:
            yield
        finally:
            self.restore(current, temporary=True)
            self.weights_version = version  # the same weights as before: nothing to sync

    @contextlib.contextmanager
    def gathered(self):
        """Under ZeRO-3, every weight whole on every process for the block (once, however deeply nested); a no-op
        otherwise. Generation uses it once per rollout, not per token."""
        if self.zero_stage != 3 or self._gathered:
            yield
            return
        with self.gather_parameters(self.unwrapped.parameters()):
            self._gathered = True
            try:
                yield
            finally:
                self._gathered = False

    def gather_parameters(self, params) -> contextlib.AbstractContextManager:
        """Under ZeRO-3, these parameters whole on every process for the block (a collective: every process gathers
        the same ones in the same order); a no-op otherwise or inside ``gathered()``. Weight syncs gather module by
        module with it, so the whole model is never on one rank at once."""
        if self.zero_stage != 3 or self._gathered:
            return contextlib.nullcontext()
        import deepspeed

        return deepspeed.zero.GatheredParameters(list(params), modifier_rank=None)

    @contextlib.contextmanager
    def inference_model(self, gather: bool | None = None):
        """The unwrapped model for no-grad passes and per-sample gradients outside the optimizer (anchors, GVM's
        gradient norms): no DDP wrapper (whose forward broadcasts buffers, a collective) and, under ZeRO-3, the
        weights gathered once for the block with DeepSpeed's per-layer hooks off, so each process may run as
        many forwards as its own data needs. ``gather=None`` follows ``ds3_gather_for_generation``; without the
        gather every ZeRO-3 forward is a collective (see ``lockstep_forwards``). Generation uses it too: the gather
        then happens once per rollout, not per token."""
        gather = self.cfg.ds3_gather_for_generation if gather is None else gather
        if self.zero_stage != 3 or not gather:
            yield self.unwrapped
            return
        with self.gathered(), zero_internals.hooks_removed(self.model):
            yield self.unwrapped

    # -- state ------------------------------------------------------------------------------------------------
    def save_state(self, path: str) -> None:
        """Model, optimizer, registered objects and RNG states (accelerate's format; safetensors weights)."""
        self.accelerator.save_state(path, safe_serialization=True)

    def load_state(self, path: str) -> None:
        self.accelerator.load_state(path)
        self._new_weights_version()  # an engine with its own copy of the weights must load these

    def state_dict_for_saving(self) -> dict[str, torch.Tensor]:
        """The full model state dict, gathered from every shard (call on all ranks)."""
        return self.accelerator.get_state_dict(self.model)

    def wait(self) -> None:
        self.accelerator.wait_for_everyone()
