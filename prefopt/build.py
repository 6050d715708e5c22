"""Building a run: everything the loop needs (a :class:`prefopt.training_run.Run`), validated before any compute.

Order matters: config, run-directory checks, tokenizer, data (every row validated) and judge come first, so a
bad input stops the run before a model is loaded or a file is written; only then are the model, backend,
optimizer and run directory created.
"""

from __future__ import annotations

import random

import numpy as np
import torch

from prefopt import exact, lora_ga
from prefopt.adapters import attach_adapter
from prefopt.algorithms import Algorithm, get_algorithm, uses_reference
from prefopt.anchors import Anchors
from prefopt.backend import Backend
from prefopt.config import TrainConfig, config_to_dict
from prefopt.context import Context
from prefopt.data import PromptExample, holdout_split, load_preferences, load_prompts
from prefopt.data.prompts import encode_row_prompt
from prefopt.errors import ConfigError
from prefopt.eval.formats import align_outputs, read_outputs
from prefopt.eval.generation import as_prompt
from prefopt.game_metrics import GameMonitor, action_probs
from prefopt.judges import build_judge
from prefopt.models import check_source, load_causal_lm, load_model_config, load_tokenizer, position_limit
from prefopt.optim import make_optimizer, start_schedule
from prefopt.optimise import Optimisation, fresh_state
from prefopt.rollout.engine import SamplingParams
from prefopt.rollout.hf import HFRolloutEngine
from prefopt.rundir import RunDir
from prefopt.training_run import Run, eval_responses


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def allowed_token_ids(judge, tokenizer, choices: list[str] | None = None) -> tuple[int, ...] | None:
    """Token ids of a game judge's actions, or of ``response_choices``; each must be one token of the policy's
    tokenizer."""
    actions, what = judge.allowed_responses(), "game action"
    if actions is None and choices:
        actions, what = choices, "response_choices entry"
    if actions is None:
        return None
    ids = []
    for action in actions:
        encoded = tokenizer(action, add_special_tokens=False)["input_ids"]
        if len(encoded) != 1:
            raise ConfigError(f"{what} {action!r} is {len(encoded)} tokens for this tokenizer; each must be one")
        ids.append(encoded[0])
    return tuple(ids)


def _build_judge(cfg, device):
    judge = build_judge(
        cfg.judge,
        model_name_or_path=cfg.judge_model_name_or_path,
        function=cfg.judge_function,
        batch_size=cfg.judge_batch_size,
        max_length=cfg.judge_max_length,
        dtype=cfg.judge_dtype,
        device=device,
        trust_remote_code=cfg.trust_remote_code,
        template=cfg.judge_template,
        game=cfg.game,
        game_size=cfg.game_size,
        game_seed=cfg.game_seed,
        game_matrix=cfg.game_matrix,
        game_actions=cfg.game_actions,
    )
    return judge


def _load_examples(algorithm: Algorithm, cfg, algo_cfg, tokenizer) -> list[PromptExample]:
    """The training prompts (or preference pairs, when the algorithm reads them), every row validated."""
    source = dict(
        split=cfg.dataset_train_split,
        config_name=cfg.dataset_config,
        max_prompt_length=cfg.max_prompt_length,
        truncation_mode=cfg.truncation_mode,
        text_prompts_as_chat=cfg.text_prompts_as_chat,
    )
    if algorithm.reads_pairs and algorithm.reads_pairs(algo_cfg):
        pairs = load_preferences(cfg.dataset_name, tokenizer, **source, completion_end=cfg.completion_end)
        return [
            PromptExample(
                p.index,
                p.prompt,
                p.prompt_ids,
                {
                    "chosen": p.chosen,
                    "rejected": p.rejected,
                    "chosen_ids": p.chosen_ids,
                    "rejected_ids": p.rejected_ids,
                },
            )
            for p in pairs
        ]
    columns = algorithm.required_columns(algo_cfg) if algorithm.required_columns else ()
    columns = (*columns, cfg.answer_column) if cfg.answer_column else columns
    if cfg.adapter == "lora_ga" and cfg.lora_ga_objective == "sft":
        columns = (*columns, cfg.lora_ga_response_column)
    return load_prompts(
        cfg.dataset_name, tokenizer, prompt_column=cfg.prompt_column, require_columns=columns, **source
    )


def _sampling_services(cfg, backend, tokenizer, allowed):
    """Default sampling parameters, the anchors (π_ref, π_t log-probs) and the rollout engine."""
    sampling = SamplingParams(
        max_new_tokens=1 if allowed else cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        top_k=cfg.top_k,
        allowed_token_ids=allowed,
    )
    show = not cfg.disable_tqdm
    anchors = Anchors(
        backend,
        tokenizer.pad_token_id,
        cfg.logprob_batch_size,
        allowed,
        show_progress=show,
        load_reference_model=lambda: load_causal_lm(
            cfg.model_name_or_path, cfg.dtype, cfg.attn_implementation, cfg.trust_remote_code
        ),
    )
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


def build_run(algorithm_name: str, cfg: TrainConfig, algo_cfg) -> Run:
    """Validate inputs, then build model, backend, anchors, rollout engine and run directory."""
    algorithm = get_algorithm(algorithm_name)
    config = config_to_dict(cfg, algo_cfg, algorithm_name)
    rundir = RunDir(cfg.output_dir, overwrite=cfg.overwrite, resume=cfg.resume)
    resumed = rundir.check(config, cfg.resume_from_iteration)
    _process_settings(cfg)
    tokenizer, examples, train_prompts, eval_prompts, baseline_outputs = _load_inputs(algorithm, cfg, algo_cfg)
    backend = Backend(cfg)
    judge = _build_judge(cfg, backend.device)
    allowed = _check_judge_and_actions(cfg, algorithm, algo_cfg, judge, tokenizer, examples)
    model = _load_policy(cfg)
    backend.attach(model)
    state = fresh_state() if resumed is None else resumed
    optimisation = Optimisation(cfg, backend, algorithm, state, rundir.saved_steps(resumed))
    ctx = _context(cfg, algo_cfg, tokenizer, judge, backend, allowed, optimisation)
    judge_records: list[dict] = []
    judge.recorder = judge_records  # the iteration's judge outputs, saved with its data
    prefetched = None  # LoRA-GA's estimate collects iteration 0 before training: that batch is trained on
    if cfg.adapter == "lora_ga" and resumed is None:
        prefetched = lora_ga.initialise(ctx, algorithm, train_prompts)
    if backend.is_main:
        rundir.prepare(resumed)
    backend.wait()  # no process writes into the folder before the old run is gone
    backend.init_trackers(cfg.run_name or "prefopt", config)
    backend.prepare(model, make_optimizer(model, cfg))
    # What needs the initial weights comes first (π_ref, the game's equilibria, the baseline eval responses).
    if uses_reference(algorithm, algo_cfg):
        ctx.anchors.keep_reference()
    lo, hi = ctx.shard(eval_prompts)  # this process's block of the held-out prompts (and of a fixed baseline)
    baseline = [y for y in baseline_outputs[lo:hi] for _ in range(cfg.eval_samples_per_prompt)]
    if eval_prompts and not baseline:  # no fixed baseline file: the initial policy's
        baseline = eval_responses(ctx, eval_prompts[lo:hi], stream="eval")
    game_monitor = _game_monitor(judge, algorithm, ctx, train_prompts)
    history = _resume(ctx, rundir, resumed)  # only now: the checkpoint replaces the initial weights
    run = Run(
        cfg=cfg,
        config=config,
        algorithm=algorithm,
        ctx=ctx,
        backend=backend,
        optimisation=optimisation,
        tokenizer=tokenizer,
        judge=judge,
        rundir=rundir,
        train_prompts=train_prompts,
        eval_prompts=eval_prompts,
        local_eval_prompts=eval_prompts[lo:hi],
        initial_eval_responses=baseline,
        state=state,
        history=history,
        judge_records=judge_records,
        game_monitor=game_monitor,
        prefetched=prefetched,
    )
    _print_header(run, model)
    return run


def _load_inputs(algorithm: Algorithm, cfg: TrainConfig, algo_cfg):
    """(tokenizer, every example, training prompts, held-out prompts, fixed baseline outputs), every row checked,
    before any model loads."""
    check_source(cfg.model_name_or_path, "model")  # name the model, not its tokenizer, when the path is wrong
    tokenizer = load_tokenizer(cfg.tokenizer_name_or_path or cfg.model_name_or_path, cfg.trust_remote_code)
    examples = _load_examples(algorithm, cfg, algo_cfg, tokenizer)
    train_prompts, eval_prompts = holdout_split(examples, cfg.eval_num_prompts, cfg.seed)
    baseline_outputs = []
    if cfg.eval_baseline_outputs:
        eval_prompts, baseline_outputs = _baseline_eval_prompts(cfg, tokenizer)
    _check_fits(cfg, examples, eval_prompts, train_prompts)
    return tokenizer, examples, train_prompts, eval_prompts, baseline_outputs


def _context(cfg: TrainConfig, algo_cfg, tokenizer, judge, backend: Backend, allowed, optimisation) -> Context:
    """The services collect uses: sampling defaults, anchors, the rollout engine, the judge, the optimisation."""
    sampling, anchors, rollout = _sampling_services(cfg, backend, tokenizer, allowed)
    return Context(
        cfg=cfg,
        algo_cfg=algo_cfg,
        tokenizer=tokenizer,
        rollout=rollout,
        judge=judge,
        anchors=anchors,
        backend=backend,
        sampling=sampling,
        optimisation=optimisation,
    )


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


def _check_judge_and_actions(cfg, algorithm: Algorithm, algo_cfg, judge, tokenizer, examples) -> tuple | None:
    """What the judge, the action set and the algorithm need of each other, before the policy loads; returns the
    action set's token ids (None: free text)."""
    if judge.needs_references and not cfg.answer_column:
        raise ConfigError(f"judge '{cfg.judge}' checks responses against reference answers: set answer_column")
    if judge.needs_references and cfg.eval_baseline_outputs:
        raise ConfigError(
            f"judge '{cfg.judge}' needs reference answers, which eval_baseline_outputs lacks; use eval_num_prompts"
        )
    allowed = allowed_token_ids(judge, tokenizer, cfg.response_choices)
    if algorithm.check_examples:
        algorithm.check_examples(algo_cfg, examples, tokenizer, allowed, cfg.max_new_tokens)
    if cfg.use_vllm:
        _check_vllm(algorithm, algo_cfg, allowed)
    if cfg.game_exact:
        exact.check_supported(algorithm, algo_cfg, allowed)
    return allowed


def _load_policy(cfg: TrainConfig) -> torch.nn.Module:
    """The policy with gradient checkpointing and its adapter, as configured."""
    model = load_causal_lm(cfg.model_name_or_path, cfg.dtype, cfg.attn_implementation, cfg.trust_remote_code)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        if cfg.adapter != "none":
            model.enable_input_require_grads()  # frozen embeddings: checkpointed blocks still need an input grad
    return attach_adapter(model, cfg)


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
    # The schedule spans the configured iterations, so a resumed run may extend num_iterations.
    start_schedule(backend.scheduler, saved["steps_per_iteration"] * cfg.num_iterations)
    history = [r for r in rundir.read_jsonl("metrics.jsonl") if r["iteration"] <= last]
    if backend.is_main:
        rundir.write_jsonl("metrics.jsonl", history)
        rundir.write_jsonl("steps.jsonl", ctx.optimisation.step_history)
        print(f"[prefopt] resuming after iteration {last}", flush=True)
    return history


def _check_fits(cfg, examples, eval_prompts, train_prompts) -> None:
    """Before the policy loads: an iteration's prompts come from the training set without repeats, and the longest
    prompt and response fit the model's positions (config.json alone is read)."""
    per_iteration, available = cfg.prompts_per_iteration, len(train_prompts)
    if per_iteration is not None and per_iteration > available:
        held = f" ({cfg.eval_num_prompts} held out for eval)" if cfg.eval_num_prompts else ""
        raise ConfigError(
            f"config key 'prompts_per_iteration' is {per_iteration}, but the training set has {available} prompts"
            f"{held}: each would be used about {per_iteration / available:.0f} times per iteration; set at most "
            f"{available}"
        )
    limit = position_limit(load_model_config(cfg.model_name_or_path, "model", cfg.trust_remote_code))
    if limit is None:
        return
    longest = max(
        len(e.prompt_ids) + max(cfg.max_new_tokens, *(len(e.extra.get(k, ())) for k in ("chosen_ids", "rejected_ids")))
        for e in [*examples, *eval_prompts]
    )
    if longest > limit:
        raise ConfigError(
            f"a prompt and its response take up to {longest} tokens (max_new_tokens {cfg.max_new_tokens}), more than "
            f"the {limit} positions of model '{cfg.model_name_or_path}' (max_position_embeddings); lower "
            f"max_new_tokens or max_prompt_length"
        )


def _check_vllm(algorithm: Algorithm, algo_cfg, allowed) -> None:
    """What the vLLM engine cannot sample exactly stops the run before the model is loaded."""
    from prefopt.rollout.vllm import check_supported

    mixture = 0.5 if algorithm.mixes_reference and algorithm.mixes_reference(algo_cfg) else 0.0
    check_supported(SamplingParams(allowed_token_ids=allowed, ref_mixture=mixture))


def _baseline_eval_prompts(cfg, tokenizer) -> tuple[list[PromptExample], list[str]]:
    """The held-out prompts and their fixed baseline outputs, from an AlpacaEval outputs file."""
    path = cfg.eval_baseline_outputs
    _, outputs, order = read_outputs(path)
    instructions = list(dict.fromkeys(order))
    baseline = align_outputs(instructions, outputs, order, path)  # refuses duplicated instructions
    prompts = []
    for i, instruction in enumerate(instructions):
        prompt = as_prompt(tokenizer, instruction)
        where = f"{path}: instruction {i} (counting from 0)"
        ids, _ = encode_row_prompt(where, prompt, tokenizer, cfg.max_prompt_length, cfg.truncation_mode)
        prompts.append(PromptExample(i, prompt, ids, {}))
    return prompts, baseline


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
