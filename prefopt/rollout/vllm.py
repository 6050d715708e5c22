"""Rollout backend on vLLM, colocated with training: one in-process ``vllm.LLM`` per training process (tensor
parallel 1), sharing the GPU with the policy (``vllm_gpu_memory_utilization``), like TRL's "colocate" mode.

Behind the same :class:`~prefopt.rollout.engine.RolloutEngine` interface as the transformers engine:

- **Requests**: one vLLM request per sample (n = 1) with its own seed ``derive_seed(seeds[i], j)``; vLLM draws a
  seeded request from a generator of its own, so a sample does not depend on the batch it runs in. vLLM's
  streams are not the HF engine's inverse-CDF draws: with temperature > 0 the two engines draw different (equally
  distributed) samples; greedy decoding gives the same tokens up to numerical ties.
- **Log-probs**: ``logprobs=0`` returns the sampled token's log-prob, and the LLM is built with
  ``logprobs_mode="raw_logprobs"``: the log-softmax of the model's own logits before temperature, top-k/top-p,
  i.e. log π(y_t | x, y_<t) as the interface defines it.
- **Weights**: vLLM holds its own copy. At the start of every ``generate`` the engine compares
  ``backend.weights_version`` with the version it last pushed; when they differ it loads
  :func:`prefopt.rollout.weights.changed_weights` (merged LoRA weights module by module, or the trainable
  parameters) into the vLLM model with its in-place ``reload_weights`` (HF names; vLLM fuses q/k/v and gate/up),
  inside ``backend.gathered()`` for ZeRO-3, then drops vLLM's prefix cache (its KV blocks were computed with the
  old weights).
- **Sleep mode** (``vllm_enable_sleep_mode``, CUDA only): vLLM's weights go to CPU memory and its KV cache is
  freed between rollouts (``sleep(level=1)``), and come back before the next one.

- **Allowed tokens** (``response_choices``): vLLM masks the other tokens (``allowed_token_ids``) and returns the raw
  log-probs of every allowed token at each step (``logprob_token_ids``, at most 128 ids), so the engine renormalises
  exactly: log π_A(y_t) = log π(y_t) − logsumexp_{a∈A} log π(a), as ``restricted_log_softmax`` does.

Not supported (refused with a ConfigError naming ``use_vllm``): ``ref_mixture`` > 0 (Nash-MD's mixture needs π_ref's
logits at every step of the same decode), and more than 128 allowed tokens (vLLM's ``logprob_token_ids`` limit).

Side effects vLLM has on the process that builds it (in-process engine): it seeds the global RNGs (the engine puts
their states back) and, on CPU, replaces ``torch.set_num_threads`` with a no-op after binding its threads.

vLLM is imported only when an engine is built: prefopt imports and runs without it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence

import torch

from prefopt.errors import ConfigError
from prefopt.rollout.engine import RolloutBatch, RolloutEngine, Sample, SamplingParams, expand_requests
from prefopt.rollout.weights import changed_weights

MAX_ALLOWED_TOKENS = 128  # vllm.sampling_params.MAX_LOGPROB_TOKEN_IDS
CPU_KV_CACHE_BYTES = 1 << 30  # KV cache of a CPU engine built from a run config


@contextlib.contextmanager
def _rng_preserved():
    """Put back the global RNG states (Python, NumPy, torch, CUDA) that building a vLLM engine reseeds."""
    import random

    import numpy as np

    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def _require_vllm():
    try:
        import vllm
    except ImportError as err:
        raise ConfigError(
            "use_vllm: true needs the vllm package (pip install 'prefopt[vllm]', or scripts/vllm_env.sh on CPU)"
        ) from err
    return vllm


def check_supported(params: SamplingParams) -> None:
    """Raise a ConfigError for sampling the vLLM engine cannot do exactly."""
    if params.ref_mixture > 0:
        raise ConfigError(
            "sampling from the mixture with π_ref (ref_mixture > 0, Nash-MD) needs use_vllm: false: vLLM cannot mix "
            "in the reference model's logits at each decoding step"
        )
    if params.allowed_token_ids is not None and len(params.allowed_token_ids) > MAX_ALLOWED_TOKENS:
        raise ConfigError(
            f"{len(params.allowed_token_ids)} allowed response tokens need use_vllm: false: vLLM returns the "
            f"log-probs the engine renormalises over for at most {MAX_ALLOWED_TOKENS} tokens"
        )


class VLLMRolloutEngine(RolloutEngine):
    """Sampling with an in-process ``vllm.LLM`` that follows the training model's weights.

    Args:
        model_name_or_path: the policy's base weights on disk (a Hub id or folder), loaded by vLLM at start.
        tokenizer: the policy tokenizer (decoding; EOS ids).
        backend: the training :class:`~prefopt.backend.Backend`, or any object with ``weights_version``,
            ``gathered()`` and ``unwrapped``; None for an engine that never syncs (a fixed model).
        eos_token_ids: ids that end a response (``prefopt.rollout.hf.eos_token_ids``: tokenizer EOS plus the
            generation config's).
        dtype: vLLM's weights dtype ("float32", "bfloat16", "float16", "auto").
        max_model_len: vLLM's context length (prompt + response).
        gpu_memory_utilization: the fraction of the GPU vLLM may take (ignored on CPU).
        enable_sleep_mode: free vLLM's GPU memory between rollouts (CUDA only).
        seed: vLLM's global seed (per-request seeds decide the samples).
        trust_remote_code: passed to vLLM.
        llm_kwargs: any further ``vllm.LLM`` arguments.
    """

    def __init__(
        self,
        model_name_or_path: str,
        tokenizer,
        backend=None,
        *,
        eos_token_ids: Sequence[int],
        dtype: str = "auto",
        max_model_len: int | None = None,
        gpu_memory_utilization: float = 0.3,
        enable_sleep_mode: bool = False,
        seed: int = 0,
        trust_remote_code: bool = False,
        **llm_kwargs,
    ):
        if enable_sleep_mode and not torch.cuda.is_available():
            raise ConfigError("vllm_enable_sleep_mode: true needs a CUDA GPU (vLLM's sleep mode is CUDA only)")
        # The engine must run in this process: weights are handed to its model by reference, not serialised.
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        vllm = _require_vllm()
        self.tokenizer = tokenizer
        self.backend = backend
        self.eos_ids = sorted(set(eos_token_ids))
        self.sleep_mode = enable_sleep_mode
        self._synced_version = 0 if backend is None else None  # None: never synced (vLLM holds the disk weights)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # Under a launcher (several training processes) each process runs its own tensor-parallel-1 engine on
            # the process group that already exists, as TRL's colocate mode does, instead of starting one.
            llm_kwargs.setdefault("distributed_executor_backend", "external_launcher")
        if not torch.cuda.is_available():
            # vLLM's CPU backend fails on seeded requests whose prompt is prefilled in chunks (it rewinds the request's
            # generator by an offset, which only CUDA generators have): prefill every prompt in one step.
            llm_kwargs.setdefault("enable_chunked_prefill", False)
        with _rng_preserved():
            self.llm = vllm.LLM(
                model=model_name_or_path,
                dtype=dtype,
                max_model_len=max_model_len,
                gpu_memory_utilization=gpu_memory_utilization,
                enable_sleep_mode=enable_sleep_mode,
                seed=seed,
                trust_remote_code=trust_remote_code,
                tensor_parallel_size=1,
                logprobs_mode="raw_logprobs",  # log π itself, before temperature and top-k/top-p
                skip_tokenizer_init=True,  # prompts arrive as ids and we decode ourselves: vLLM needs no tokenizer
                **llm_kwargs,
            )
        if self.sleep_mode:
            self.llm.sleep(level=1)

    # -- weights ------------------------------------------------------------------------------------------------
    def follow(self, backend) -> None:
        """Follow ``backend``'s model (None: none); its weights are pushed at the next ``generate``."""
        self.backend = backend
        self._synced_version = 0 if backend is None else None

    def sync_weights(self) -> bool:
        """Push the training model's weights into vLLM if they changed since the last push; True if pushed.

        vLLM's prefix cache is dropped after a push: its KV blocks were computed with the old weights."""
        pushed = self._push_weights()
        if pushed:
            self.llm.reset_prefix_cache()
        return pushed

    def _push_weights(self) -> bool:
        if self.backend is None or self.backend.weights_version == self._synced_version:
            return False
        version = self.backend.weights_version
        with self.backend.gathered():
            self.load_weights(changed_weights(self.backend.unwrapped))
        self._synced_version = version
        return True

    def load_weights(self, weights) -> None:
        """Load (HF name, tensor) pairs into the vLLM model, in place (whole layers; others keep their weights).

        The worker's in-place ``reload_weights`` (vLLM's weight-update API; tested with 0.32) rather than the
        model's ``load_weights``: after loading, vLLM may repack a layer's weights for its kernels (the CPU backend
        does, dropping the loaders a second ``load_weights`` needs); the reload puts each layer back in checkpoint
        format, loads, and repacks it. A layer (e.g. the fused qkv) must be sent whole: see
        :func:`prefopt.rollout.weights.changed_weights`. The engine runs in this process, so the iterator and its
        tensors are passed by reference.
        """
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights, "is_checkpoint_format": True})

    @contextlib.contextmanager
    def _awake(self):
        """Weights (synced) and KV cache on the GPU for the block; asleep again after it in sleep mode."""
        if not self.sleep_mode:
            self.sync_weights()
            yield
            return
        self.llm.wake_up(tags=["weights"])  # weights first: the sync must not meet the KV cache's peak
        pushed = self._push_weights()
        self.llm.wake_up(tags=["kv_cache"])  # fully awake: vLLM resumes scheduling
        if pushed:
            self.llm.reset_prefix_cache()
        try:
            yield
        finally:
            self.llm.sleep(level=1)

    # -- sampling -----------------------------------------------------------------------------------------------
    def sampling_params(self, params: SamplingParams, seed: int):
        """vLLM's SamplingParams for one sample of ``params`` drawn with ``seed``."""
        from vllm import SamplingParams as VLLMSamplingParams

        allowed = None if params.allowed_token_ids is None else list(params.allowed_token_ids)
        return VLLMSamplingParams(
            n=1,
            temperature=params.temperature,  # 0: greedy
            top_p=params.top_p,
            top_k=params.top_k if params.top_k > 0 else -1,  # vLLM's "off"
            max_tokens=params.max_new_tokens,
            seed=seed,
            stop_token_ids=self.eos_ids,
            logprobs=0 if allowed is None else None,  # the sampled token's log-prob only
            allowed_token_ids=allowed,
            logprob_token_ids=allowed,  # every allowed token's log-prob: the normaliser over the allowed set
            detokenize=False,
        )

    @torch.no_grad()
    def generate(self, prompt_ids, n, params: SamplingParams, seeds) -> RolloutBatch:
        check_supported(params)
        requests = expand_requests(len(prompt_ids), n, seeds)
        with self._awake():
            outputs = []
            if requests:
                from vllm.inputs import TokensPrompt

                prompts = [TokensPrompt(prompt_token_ids=list(prompt_ids[i])) for i, _, _ in requests]
                vllm_params = [self.sampling_params(params, seed) for _, _, seed in requests]
                outputs = self.llm.generate(prompts, vllm_params, use_tqdm=False)
        samples = [
            self._sample(list(prompt_ids[i]), i, j, out.outputs[0], params.allowed_token_ids)
            for (i, j, _), out in zip(requests, outputs)
        ]
        return RolloutBatch(samples=samples, num_prompts=len(prompt_ids))

    def _sample(self, prompt: list[int], i: int, j: int, completion, allowed: Sequence[int] | None) -> Sample:
        """One Sample from a vLLM CompletionOutput: cut after the first EOS, log-probs of the chosen tokens
        (renormalised over the allowed tokens when there is a set)."""
        ids = list(completion.token_ids)
        logps = torch.tensor(
            [step[token].logprob for token, step in zip(ids, completion.logprobs)], dtype=torch.float64
        )
        if allowed is not None:
            every = torch.tensor(
                [[step[a].logprob for a in allowed] for step in completion.logprobs], dtype=torch.float64
            )
            logps = logps - torch.logsumexp(every, dim=-1)
        stop = next((k for k, t in enumerate(ids) if t in self.eos_ids), None)
        length, reason = (stop + 1, "stop") if stop is not None else (len(ids), "length")
        response = ids[:length]
        return Sample(
            prompt_index=i,
            sample_index=j,
            prompt_ids=prompt,
            response_ids=response,
            text=self.tokenizer.decode(response, skip_special_tokens=True),
            token_logps=logps[:length].float(),
            finish_reason=reason,
        )


def vllm_engine_options(cfg, eos_ids) -> dict:
    """The VLLMRolloutEngine keywords of a run (``cfg``: the TrainConfig; ``eos_ids``: the policy's EOS ids)."""
    extra = {}
    if not torch.cuda.is_available():
        # vLLM's CPU backend reads gpu_memory_utilization as a fraction of the machine's RAM, counting this process's
        # own memory (the training model): give its KV cache a fixed size instead.
        extra["kv_cache_memory_bytes"] = CPU_KV_CACHE_BYTES
    return dict(
        eos_token_ids=eos_ids,
        dtype=cfg.dtype,
        max_model_len=cfg.vllm_max_model_length or cfg.max_prompt_length + cfg.max_new_tokens,
        gpu_memory_utilization=cfg.vllm_gpu_memory_utilization,
        enable_sleep_mode=cfg.vllm_enable_sleep_mode,
        seed=cfg.seed,
        trust_remote_code=cfg.trust_remote_code,
        **extra,
    )


def build_vllm_engine(cfg, backend, tokenizer) -> VLLMRolloutEngine:
    """The vLLM engine a run with ``use_vllm: true`` samples through (``cfg``: the TrainConfig)."""
    from prefopt.rollout.hf import eos_token_ids

    options = vllm_engine_options(cfg, eos_token_ids(backend.unwrapped, tokenizer))
    return VLLMRolloutEngine(cfg.model_name_or_path, tokenizer, backend, **options)
