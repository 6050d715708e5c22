"""Building a run: everything the loop needs (a :class:`prefopt.training_run.Run`), validated before any compute.

Two phases. :func:`prepare_run` validates the config's inputs (``prefopt.inputs``: tokenizer, every data row, the
judge) before a model is loaded, then loads the policy with its adapter: a trainer class does this when it is
constructed. :func:`start_run` checks the run directory, then creates the optimizer, the anchors, the rollout
engine and the run directory, and computes what needs the initial weights: a trainer does this when it trains.
``build_run`` is both, with the run directory checked first (``prefopt train`` fails fast on an existing folder).
"""

from __future__ import annotations

import atexit
import copy
import random
from dataclasses import dataclass

import numpy as np
import torch

from prefopt import lora_ga
from prefopt.adapters import attach_adapter
from prefopt.algorithms import Algorithm, get_algorithm, uses_reference
from prefopt.anchors import Anchors
from prefopt.backend import Backend
from prefopt.config import TrainConfig, config_to_dict
from prefopt.context import Context
from prefopt.errors import ConfigError
from prefopt.eval.in_training import BenchmarkEval
from prefopt.game_metrics import GameMonitor, action_probs
from prefopt.inputs import Given, Inputs, check_judge, load_data
from prefopt.models import load_causal_lm
from prefopt.optim import make_optimizer, start_schedule
from prefopt.optimise import Optimisation, fresh_state
from prefopt.rollout.engine import SamplingParams
from prefopt.rollout.hf import HFRolloutEngine
from prefopt.rollout.prefetch import Prefetcher
from prefopt.rundir import RunDir
from prefopt.scoring import Scorer
from prefopt.training_run import Run, eval_responses


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@dataclass
class Setup:
    """What :func:`prepare_run` validated and loaded: the inputs, the backend (its process group started), the
    policy with its adapter (held by the backend, not yet wrapped) and π_ref's own model if there is one."""

    algorithm: Algorithm
    cfg: TrainConfig
    algo_cfg: object
    inputs: Inputs
    backend: Backend
    model: torch.nn.Module
    reference_model: torch.nn.Module | None = None
    model_from_path: bool = True  # loaded from model_name_or_path (not a given instance)
    benchmark: BenchmarkEval | None = None  # eval_benchmark's inputs, read with the others


def prepare_run(algorithm_name: str, cfg: TrainConfig, algo_cfg, given: Given | None = None) -> Setup:
    """Phase one: seeds and process settings, every input validated (no weights loaded yet), then the policy."""
    algorithm = get_algorithm(algorithm_name)
    given = given or Given()
    _process_settings(cfg)
    inputs = load_data(algorithm, cfg, algo_cfg, given)
    benchmark = BenchmarkEval(cfg, inputs.tokenizer) if cfg.eval_benchmark else None
    backend = Backend(cfg)
    check_judge(inputs, algorithm, cfg, algo_cfg, given.judge, backend.device)
    if given.ref_model is not None and backend.zero_stage == 3:
        raise ConfigError("ref_model under ZeRO-3 is not supported: drop it (π_ref is then the initial policy)")
    reference = _reference_model(algorithm, cfg, algo_cfg, given)
    model = _load_policy(cfg, given)
    backend.attach(model)
    if reference is not None:
        reference = reference.to(backend.device).eval().requires_grad_(False)
    return Setup(algorithm, cfg, algo_cfg, inputs, backend, model, reference, given.model is None, benchmark)


def check_output_dir(algorithm_name: str, cfg: TrainConfig, algo_cfg) -> None:
    """The run directory's checks alone (an existing folder, a resume's config), before anything loads."""
    RunDir(cfg.output_dir, overwrite=cfg.overwrite, resume=cfg.resume).check(
        config_to_dict(cfg, algo_cfg, algorithm_name), cfg.resume_from_iteration
    )


def build_run(algorithm_name: str, cfg: TrainConfig, algo_cfg, given: Given | None = None) -> Run:
    """Validate inputs, then build model, backend, anchors, rollout engine and run directory."""
    check_output_dir(algorithm_name, cfg, algo_cfg)
    return start_run(prepare_run(algorithm_name, cfg, algo_cfg, given))


def start_run(setup: Setup) -> Run:
    """Phase two: the run directory checked (with the resume flags as they are now), the optimizer, the services
    and the run directory made, then what needs the initial weights (π_ref, the baseline's eval responses, the
    game's equilibria), and only then a resume's checkpoint loaded."""
    algorithm, cfg, algo_cfg, inputs, backend, model = (
        setup.algorithm, setup.cfg, setup.algo_cfg, setup.inputs, setup.backend, setup.model
    )  # fmt: skip
    config = config_to_dict(cfg, algo_cfg, algorithm.name)
    rundir = RunDir(cfg.output_dir, overwrite=cfg.overwrite, resume=cfg.resume)
    resumed = rundir.check(config, cfg.resume_from_iteration)
    state = fresh_state() if resumed is None else resumed
    optimisation = Optimisation(cfg, backend, algorithm, state, rundir.saved_steps(resumed))
    ctx = _context(cfg, algo_cfg, inputs, backend, optimisation, setup)
    judge_records: list[dict] = []
    inputs.judge.recorder = judge_records  # the iteration's judge outputs, saved with its data
    prefetched = None  # LoRA-GA's estimate collects iteration 0 before training: that batch is trained on
    if cfg.adapter == "lora_ga" and resumed is None:
        prefetched = lora_ga.initialise(ctx, algorithm, inputs.train_prompts)
    if backend.is_main:
        rundir.prepare(resumed)
    backend.wait()  # no process writes into the folder before the old run is gone
    backend.init_trackers(cfg.run_name or "prefopt", config)
    backend.prepare(model, make_optimizer(model, cfg))
    if prefetched is not None:
        # Snapshots LoRA-GA's first collect kept (APO's θ_0) hold the adapter before A_0, B_0 and the base offset were
        # set: the initial policy is now the new adapter. No step has run, so take them again (in ZeRO's layout).
        ctx.algo_state.update({key: backend.snapshot() for key in ctx.algo_state})
    if uses_reference(algorithm, algo_cfg):
        ctx.anchors.keep_reference()
    eval_prompts = inputs.eval_prompts
    lo, hi = ctx.shard(eval_prompts)  # this process's block of the held-out prompts (and of a fixed baseline)
    baseline = [y for y in inputs.baseline_outputs[lo:hi] for _ in range(cfg.eval_samples_per_prompt)]
    if eval_prompts and not baseline:  # no fixed baseline file: the initial policy's
        baseline = eval_responses(ctx, eval_prompts[lo:hi], stream="eval")
    game_monitor = _game_monitor(inputs.judge, algorithm, ctx, inputs.train_prompts)
    history = _resume(ctx, rundir, resumed)  # only now: the checkpoint replaces the initial weights
    run = Run(
        cfg=cfg,
        config=config,
        algorithm=algorithm,
        ctx=ctx,
        backend=backend,
        optimisation=optimisation,
        tokenizer=inputs.tokenizer,
        judge=inputs.judge,
        rundir=rundir,
        train_prompts=inputs.train_prompts,
        eval_prompts=eval_prompts,
        local_eval_prompts=eval_prompts[lo:hi],
        initial_eval_responses=baseline,
        state=state,
        history=history,
        judge_records=judge_records,
        game_monitor=game_monitor,
        prefetched=prefetched,
        benchmark=setup.benchmark,
    )
    _print_header(run, model)
    return run


def _reference_model(algorithm: Algorithm, cfg: TrainConfig, algo_cfg, given: Given) -> torch.nn.Module | None:
    """π_ref as its own model: the given ``ref_model``; or, when full fine-tuning of a given model instance decodes
    from a mixture with π_ref (which needs π_ref's own model, ``prefopt.anchors``), a copy of its initial weights
    (a policy from a path loads its copy from the path when first needed)."""
    if given.ref_model is not None:
        if not uses_reference(algorithm, algo_cfg):
            raise ConfigError(f"{algorithm.name} does not read a reference policy π_ref here: drop ref_model")
        return given.ref_model
    mixes = algorithm.mixes_reference is not None and algorithm.mixes_reference(algo_cfg)
    if given.model is not None and mixes and cfg.adapter == "none":
        return copy.deepcopy(given.model)
    return None


def _context(cfg: TrainConfig, algo_cfg, inputs: Inputs, backend: Backend, optimisation, setup: Setup) -> Context:
    """The services collect uses: sampling defaults, anchors, the rollout engine (with asynchronous rollouts, its
    prefetcher), the judge, the optimisation."""
    sampling, anchors, rollout = _sampling_services(
        cfg, backend, inputs.tokenizer, inputs.allowed, setup.reference_model, setup.model_from_path
    )
    prefetcher = None
    if cfg.async_rollouts and cfg.max_staleness > 0:
        prefetcher = Prefetcher(rollout, cfg.max_staleness, cfg.seed)
    return Context(
        prefetcher=prefetcher,
        cfg=cfg,
        algo_cfg=algo_cfg,
        tokenizer=inputs.tokenizer,
        rollout=rollout,
        judge=inputs.judge,
        anchors=anchors,
        backend=backend,
        sampling=sampling,
        optimisation=optimisation,
    )


def _sampling_services(cfg, backend, tokenizer, allowed, reference_model=None, model_from_path=True):
    """Default sampling parameters, the anchors (π_ref, π_t log-probs) and the rollout engine."""
    sampling = SamplingParams(
        max_new_tokens=1 if allowed else cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        top_k=cfg.top_k,
        allowed_token_ids=allowed,
    )
    show = not cfg.disable_tqdm
    notice = print if backend.is_main else lambda _line: None
    scorer = Scorer(tokenizer.pad_token_id, backend.device, cfg.padding_free, cfg.logprob_chunk_size, allowed, notice)
    anchors = Anchors(
        backend,
        scorer,
        cfg.logprob_batch_size,
        cfg.max_tokens_per_micro_batch,
        show_progress=show,
        reference_model=reference_model,
        load_reference_model=lambda: load_causal_lm(
            cfg.model_name_or_path, cfg.dtype, cfg.attn_implementation, cfg.trust_remote_code
        ),
    )
    if cfg.rollout_workers:  # Ray actors with their own copies of the weights (prefopt.rollout.workers)
        from prefopt.rollout.workers import build_ray_engine

        engine = build_ray_engine(cfg, backend, tokenizer, model_from_path)
        atexit.register(engine.close)
        return sampling, anchors, engine
    if cfg.use_vllm:  # a vLLM engine colocated with this process, following the trained weights
        from prefopt.rollout.vllm import build_vllm_engine

        return sampling, anchors, build_vllm_engine(cfg, backend, tokenizer)
    rollout = HFRolloutEngine(
        backend.inference_model,
        tokenizer,
        cfg.generation_batch_size,
        show_progress=show,
        reference=anchors.reference_forward,
        lockstep=backend.max_across if backend.lockstep_forwards else None,
    )
    return sampling, anchors, rollout


def _load_policy(cfg: TrainConfig, given: Given) -> torch.nn.Module:
    """The policy (the given instance, else loaded from model_name_or_path) with gradient checkpointing and its
    adapter, as configured."""
    model = given.model
    if model is None:
        model = load_causal_lm(cfg.model_name_or_path, cfg.dtype, cfg.attn_implementation, cfg.trust_remote_code)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        if cfg.adapter != "none":
            model.enable_input_require_grads()  # frozen embeddings: checkpointed blocks still need an input grad
    return attach_adapter(model, cfg, given.peft_config)


def _process_settings(cfg: TrainConfig) -> None:
    """Seeds, CPU threads and progress bars for this process."""
    seed_everything(cfg.seed)
    if cfg.torch_num_threads:
        torch.set_num_threads(cfg.torch_num_threads)
    if cfg.disable_tqdm:
        from datasets.utils.logging import disable_progress_bar
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # also transformers' own weight loading/saving bars
        disable_progress_bar()  # and datasets' while it reads the data files


def _resume(ctx: Context, rundir: RunDir, saved: dict | None) -> list[dict]:
    """With --resume: the checkpoint's weights, optimizer, schedule and RNG states and the algorithm's state
    loaded, the logs cut back to it (their records after it are redone); returns the kept metrics records."""
    if saved is None:
        return []
    backend, cfg = ctx.backend, ctx.cfg
    last = saved["last_completed_iteration"]
    checkpoint = rundir.checkpoint_dir(last)
    backend.load_state(str(checkpoint))
    algo_state = checkpoint / f"algo_state_{backend.rank}.pt"
    if algo_state.exists():
        ctx.algo_state.update(torch.load(algo_state, weights_only=True))
    prefetched = checkpoint / f"prefetched_{backend.rank}.pt"
    if ctx.prefetcher is not None and prefetched.exists():
        ctx.prefetcher.load_state(torch.load(prefetched, weights_only=False))
    # The schedule spans the configured iterations, so a resumed run may extend num_iterations.
    start_schedule(backend.scheduler, saved["steps_per_iteration"] * cfg.num_iterations)
    history = [r for r in rundir.read_jsonl("metrics.jsonl") if r["iteration"] <= last]
    if backend.is_main:
        rundir.write_jsonl("metrics.jsonl", history)
        rundir.write_jsonl("steps.jsonl", ctx.optimisation.step_history)
        print(f"[prefopt] resuming after iteration {last}", flush=True)
    return history


def _game_monitor(judge, algorithm: Algorithm, ctx: Context, train_prompts) -> GameMonitor | None:
    """With a matrix-game judge: π_ref and π*_β at the first (up to 8) training prompts, from the initial weights."""
    matrix = judge.game_matrix()
    if matrix is None:
        return None
    beta = algorithm.game_beta(ctx.algo_cfg) if algorithm.game_beta else 0.0
    backend, allowed, pad = ctx.backend, ctx.sampling.allowed_token_ids, ctx.tokenizer.pad_token_id
    probes = [p.prompt_ids for p in train_prompts[:8]]
    return GameMonitor(
        matrix, beta, probes, lambda ids: action_probs(backend.model, ids, allowed, pad, backend.device)
    )


def _print_header(run: Run, model) -> None:
    if not run.backend.is_main:
        return
    cfg, backend = run.cfg, run.backend
    total, trainable = backend.parameter_counts(model)
    replicas = "DDP" if backend.world_size > 1 else "no DeepSpeed"
    sharding = f"DeepSpeed ZeRO-{backend.zero_stage}" if backend.uses_deepspeed else replicas
    per_iter = cfg.prompts_per_iteration or len(run.train_prompts) // cfg.num_iterations
    print(
        f"[prefopt] {run.algorithm.name}: {total / 1e6:.2f}M parameters ({trainable / 1e6:.2f}M trainable), "
        f"{len(run.train_prompts)} train / {len(run.eval_prompts)} eval prompts, {per_iter} prompts per iteration, "
        f"{cfg.num_iterations} iterations, {backend.world_size} process(es), judge {run.judge.name}, {sharding}",
        flush=True,
    )
