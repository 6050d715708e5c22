"""Rollout workers on Ray: N actors, each holding its own rollout engine and its own copy of the policy's weights,
behind the one :class:`~prefopt.rollout.engine.RolloutEngine` interface (algorithms still call ``ctx.sample``).

- **Actors** (``rollout_workers: N``): each :class:`RolloutWorker` runs in its own process with its own resources
  (``rollout_worker_num_cpus``/``rollout_worker_num_gpus``, ``rollout_worker_threads`` torch threads), on the local
  machine (a Ray instance this run starts) or on an existing cluster (``ray_address``). A worker builds the policy
  from ``model_name_or_path`` (or, for a policy given as an object, from its config, its weights arriving with the
  first sync) and samples with the transformers engine (:class:`~prefopt.rollout.hf.HFRolloutEngine`), or with
  ``use_vllm`` with a vLLM engine of its own (:class:`~prefopt.rollout.vllm.VLLMRolloutEngine`, loaded from
  ``model_name_or_path``; the weights go in through its in-place reload).
- **Weights by version**: before a request is sent, the engine compares ``backend.weights_version`` with the weights
  it last published; when they differ it publishes the policy's effective weights
  (:func:`prefopt.rollout.weights.changed_weights`: trainable parameters, or merged LoRA weights with fused siblings
  whole) once into Ray's object store under the next version number (0, 1, 2, ...: never reused, never skipped) and
  tells every worker to load it. Calls from one caller to an actor run in order, so each request runs on the weights
  published before it; the worker checks that its loaded version is the request's and returns it with the samples.
  Under ZeRO-3 the weights are gathered module by module (:meth:`Backend.gather_parameters`), never the whole
  model at once.
- **Requests**: :meth:`submit` splits one ``generate`` call's prompts into contiguous blocks, one per worker, and
  returns a :class:`PendingRollout` at once; :meth:`PendingRollout.result` waits for it. ``generate`` is submit +
  result. Per-sample seeds make the samples independent of the split (with one worker, the batches are the
  in-process engine's exactly, so the samples are too).
- **Faults**: a worker that dies, or does not answer within ``rollout_timeout_s``, raises a :class:`RolloutWorkerError`
  (one line naming the worker); the run stops there, and its run directory resumes from its last checkpoint.

Ray is imported only when workers start: prefopt imports and runs without it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from prefopt.errors import ConfigError, PrefoptError
from prefopt.rollout.engine import RolloutBatch, RolloutEngine, SamplingParams, pack_samples, unpack_samples
from prefopt.rollout.weights import changed_weights, full_weights


class RolloutWorkerError(PrefoptError):
    """A rollout worker died or stopped answering."""


def require_ray():
    try:
        import ray
    except ImportError as err:
        raise ConfigError(
            "config key 'rollout_workers' > 0 needs the ray package: pip install 'prefopt[ray]'"
        ) from err
    return ray


@dataclass
class WorkerSpec:
    """What a worker needs to build its engine (pickled to the actor).

    Attributes:
        model_source: a Hub id or folder to load the policy from; None: build it from ``model_config`` (its
            weights arrive with version 0).
        generation_config: the policy's (its EOS ids end responses).
        vllm_options: with ``use_vllm``, the worker samples with a vLLM engine built with these keywords
            (``prefopt.rollout.vllm.vllm_engine_options``) from ``model_source``; None: the transformers engine.
    """

    model_source: str | None
    model_config: object
    generation_config: object
    tokenizer: object
    dtype: str
    attn_implementation: str | None
    trust_remote_code: bool
    generation_batch_size: int
    threads: int | None
    device: str
    vllm_options: dict | None = None


class RolloutWorker:
    """One rollout actor: the policy on its device, the transformers engine, and the weights version it holds."""

    def __init__(self, spec: WorkerSpec):
        if spec.threads:
            torch.set_num_threads(spec.threads)
        self.version: int | None = None
        self.loaded: list[int] = []  # every version loaded, in order
        if spec.vllm_options is not None:
            from prefopt.rollout.vllm import VLLMRolloutEngine

            self.engine = VLLMRolloutEngine(spec.model_source, spec.tokenizer, None, **spec.vllm_options)
            return
        from prefopt.models import load_causal_lm, resolve_dtype
        from prefopt.rollout.hf import HFRolloutEngine

        if spec.model_source is not None:
            model = load_causal_lm(spec.model_source, spec.dtype, spec.attn_implementation, spec.trust_remote_code)
        else:
            from transformers import AutoModelForCausalLM

            dtype = resolve_dtype(spec.dtype)
            model = AutoModelForCausalLM.from_config(spec.model_config, dtype=None if dtype == "auto" else dtype)
        model.generation_config = spec.generation_config
        # Parameters keep requires_grad as the training model's do: on CPU, frozen weights take another matmul path
        # whose rounding differs (~5e-7 in log-probs), and the samples must be the in-process engine's bit for bit.
        self.model = model.to(spec.device).eval()
        self.params = dict(self.model.named_parameters())
        self.engine = HFRolloutEngine(
            lambda: contextlib.nullcontext(self.model), spec.tokenizer, spec.generation_batch_size, show_progress=False
        )

    @torch.no_grad()
    def load(self, version: int, weights: dict[str, torch.Tensor]) -> int:
        """Copy ``weights`` (HF names) into the model; they are version ``version`` from now on."""
        if hasattr(self.engine, "load_weights"):  # vLLM: its in-place reload (fused layers sent whole)
            self.engine.load_weights(iter(weights.items()))
            self.engine.llm.reset_prefix_cache()  # its KV blocks were computed with the old weights
        else:
            unknown = sorted(set(weights) - set(self.params))
            if unknown:
                raise KeyError(f"weights the worker's model does not have: {unknown[:3]}")
            for name, tensor in weights.items():
                self.params[name].copy_(tensor)
        self.version = version
        self.loaded.append(version)
        return version

    def generate(self, version: int, prompt_ids, n, params: SamplingParams, seeds) -> tuple[int, dict]:
        if version != self.version:
            raise RuntimeError(f"request for weights version {version}, worker holds {self.version}")
        return version, pack_samples(self.engine.generate(prompt_ids, n, params, seeds).samples)

    def info(self) -> dict:
        """The worker's process id, the versions it loaded and its torch threads."""
        return {
            "pid": os.getpid(),
            "loaded": list(self.loaded),
            "threads": torch.get_num_threads(),
        }


class PendingRollout:
    """A submitted ``generate`` call: its parts on the workers, the weights version they run on and that version's
    load calls (checked first: a worker that failed to load it fails here)."""

    def __init__(self, engine: RayRolloutEngine, parts: list, offsets: list[int], num_prompts: int, version: int):
        self.engine, self.parts, self.offsets, self.num_prompts, self.version = (
            engine, parts, offsets, num_prompts, version
        )  # fmt: skip
        self.loads = list(engine.loads)
        self._batch: RolloutBatch | None = None

    def result(self) -> RolloutBatch:
        """The samples, in (prompt, sample) order, with ``weights_version`` set (waits for the workers)."""
        if self._batch is None:
            for worker, ref in self.loads:
                self.engine.wait(worker, ref)
            samples = []
            for (worker, ref), offset in zip(self.parts, self.offsets):
                _, packed = self.engine.wait(worker, ref)  # the worker checked it ran on self.version
                part = unpack_samples(packed)
                for s in part:
                    s.prompt_index += offset
                samples.extend(part)
            self._batch = RolloutBatch(samples, self.num_prompts, weights_version=self.version)
        return self._batch


class RayRolloutEngine(RolloutEngine):
    """Sampling on Ray actors that follow the training model's weights (see the module docstring).

    Args:
        backend: the training Backend (``weights_version``, ``gather_parameters``, ``unwrapped``).
        spec: how each worker builds its engine.
        num_workers, num_cpus, num_gpus: actors and each one's Ray resources.
        address: an existing Ray cluster's address; None: start a local instance (or use the one this process has).
        timeout_s: the longest wait for one worker's answer.
    """

    def __init__(
        self,
        backend,
        spec: WorkerSpec,
        num_workers: int,
        num_cpus: float = 1.0,
        num_gpus: float = 0.0,
        address: str | None = None,
        timeout_s: float = 600.0,
    ):
        ray = require_ray()
        self.ray, self.backend, self.timeout_s = ray, backend, timeout_s
        self.owns_ray = not ray.is_initialized()
        if self.owns_ray:
            ray.init(address=address, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        actor = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus)(RolloutWorker)
        self.workers = [actor.remote(spec) for _ in range(num_workers)]
        self.version = -1  # the last version published (-1: none yet)
        self._synced_backend_version: int | None = None
        self._full_first = spec.model_source is None
        self.published: list[int] = []
        self.loads: list = []  # the last publication's load calls (worker, ref)
        for i, worker in enumerate(self.workers):  # every worker up (loading a large model is no hang): no timeout
            self.wait(i, worker.info.remote(), timeout_s=None)

    # -- weights ------------------------------------------------------------------------------------------------
    def publish(self) -> int:
        """Publish the policy's weights if they changed since the last publication; returns the current version."""
        if self.backend.weights_version == self._synced_backend_version:
            return self.version
        model, gather = self.backend.unwrapped, self.backend.gather_parameters
        source = full_weights if self.version < 0 and self._full_first else changed_weights
        with torch.no_grad():  # each tensor copied before the next is computed (and its module released)
            weights = {name: tensor.to("cpu", copy=True) for name, tensor in source(model, gather)}
        self.version += 1
        ref = self.ray.put(weights)
        # An actor runs one caller's calls in order: every later request to a worker runs on these weights.
        self.loads = [(i, worker.load.remote(self.version, ref)) for i, worker in enumerate(self.workers)]
        self._synced_backend_version = self.backend.weights_version
        self.published.append(self.version)
        return self.version

    # -- sampling -----------------------------------------------------------------------------------------------
    def submit(self, prompt_ids: Sequence[Sequence[int]], n, params: SamplingParams, seeds) -> PendingRollout:
        """Send one ``generate`` call to the workers (contiguous prompt blocks) on the current weights."""
        version = self.publish()
        counts = [n] * len(prompt_ids) if isinstance(n, int) else list(n)
        parts, offsets = [], []
        k = len(self.workers)
        for w, worker in enumerate(self.workers):
            lo, hi = w * len(prompt_ids) // k, (w + 1) * len(prompt_ids) // k
            if hi == lo and w:
                continue
            block = [list(p) for p in prompt_ids[lo:hi]]
            ref = worker.generate.remote(version, block, counts[lo:hi], params, list(seeds[lo:hi]))
            parts.append((w, ref))
            offsets.append(lo)
        return PendingRollout(self, parts, offsets, len(prompt_ids), version)

    def generate(self, prompt_ids, n, params: SamplingParams, seeds) -> RolloutBatch:
        return self.submit(prompt_ids, n, params, seeds).result()

    def wait(self, worker: int, ref, timeout_s: float | None = -1.0):
        """The answer of worker ``worker`` to ``ref``, or a RolloutWorkerError when it died or did not answer within
        ``timeout_s`` (default: ``rollout_timeout_s``; None: no limit)."""
        ray = self.ray
        timeout_s = self.timeout_s if timeout_s == -1.0 else timeout_s
        try:
            return ray.get(ref, timeout=timeout_s)
        except ray.exceptions.GetTimeoutError:
            raise RolloutWorkerError(
                f"rollout worker {worker} did not answer within rollout_timeout_s={self.timeout_s:g} s; the run "
                "stopped: --resume continues from its last checkpoint"
            ) from None
        except ray.exceptions.RayActorError as err:
            raise RolloutWorkerError(
                f"rollout worker {worker} died ({type(err).__name__}); the run stopped: --resume continues from its "
                "last checkpoint"
            ) from None

    def info(self) -> list[dict]:
        """Each worker's process id, loaded versions and threads."""
        return [self.wait(i, w.info.remote()) for i, w in enumerate(self.workers)]

    def close(self) -> None:
        """Stop the workers (and the local Ray instance this engine started)."""
        for worker in self.workers:
            self.ray.kill(worker)
        self.workers = []
        if self.owns_ray:
            self.ray.shutdown()


def build_ray_engine(cfg, backend, tokenizer, model_from_path: bool) -> RayRolloutEngine:
    """The Ray engine of a run with ``rollout_workers`` > 0 (``cfg``: the TrainConfig)."""
    model = backend.unwrapped
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    device = "cuda" if cfg.rollout_worker_num_gpus > 0 else "cpu"
    vllm_options = None
    if cfg.use_vllm:  # vLLM loads the policy from disk
        from prefopt.rollout.hf import eos_token_ids
        from prefopt.rollout.vllm import vllm_engine_options

        if not model_from_path:
            raise ConfigError("use_vllm with rollout_workers loads the policy from disk: pass a path, not a model")
        vllm_options = vllm_engine_options(cfg, eos_token_ids(model, tokenizer))
    spec = WorkerSpec(
        model_source=cfg.model_name_or_path if model_from_path else None,
        model_config=base.config,
        generation_config=base.generation_config,
        tokenizer=tokenizer,
        dtype=cfg.dtype,
        attn_implementation=cfg.attn_implementation,
        trust_remote_code=cfg.trust_remote_code,
        generation_batch_size=cfg.generation_batch_size,
        threads=cfg.rollout_worker_threads or cfg.torch_num_threads,
        device=device,
        vllm_options=vllm_options,
    )
    return RayRolloutEngine(
        backend,
        spec,
        cfg.rollout_workers,
        num_cpus=cfg.rollout_worker_num_cpus,
        num_gpus=cfg.rollout_worker_num_gpus,
        address=cfg.ray_address,
        timeout_s=cfg.rollout_timeout_s,
    )
