"""Run configuration: one dataclass for the shared loop, one per algorithm, loaded TRL-style.

``prefopt train ALGO --config x.yaml --key value ...``: the YAML gives defaults, flags override, and the keys of
both live in one flat namespace (TRL's names: ``learning_rate``, ``beta``, ``max_new_tokens``, ``report_to``).
An unknown key, a wrong type or a value out of range is a :class:`ConfigError` that names the key and where it
came from, raised before anything is loaded or written.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from prefopt.api_judge_config import ApiJudgeKeys
from prefopt.benchmark_eval_config import BenchmarkEvalKeys
from prefopt.config_fields import _f, require, require_positive
from prefopt.errors import ConfigError, first_line


@dataclass
class TrainConfig(BenchmarkEvalKeys, ApiJudgeKeys):
    """Everything the shared online loop needs; the algorithm's own hyperparameters live in its module. The
    ``openai`` judge's keys (``judge_base_url`` ...) come from :class:`prefopt.judges.api.ApiJudgeKeys`, those of
    a benchmark scored in training (``eval_benchmark`` ...) from
    :class:`prefopt.benchmark_eval_config.BenchmarkEvalKeys`."""

    # Model
    model_name_or_path: str | None = _f(None, "Policy: a Hub id or a local folder (required).")
    tokenizer_name_or_path: str | None = _f(None, "Tokenizer, if not the policy's.")
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = _f("float32", "Weights dtype of the policy.")
    attn_implementation: str | None = _f(None, "Attention kernel (eager, sdpa, flash_attention_2); None: default.")
    trust_remote_code: bool = _f(False, "Allow custom model code from the Hub.")
    gradient_checkpointing: bool = _f(False, "Recompute activations in backward to save memory.")
    # Data
    dataset_name: str | None = _f(None, "Prompts: a local json/jsonl/parquet/csv file, a saved dataset or a Hub name.")
    dataset_config: str | None = _f(None, "Hub dataset configuration name.")
    dataset_train_split: str = _f("train", "Split to train on.")
    prompt_column: str = _f("prompt", "Column holding the prompt (a string or a list of chat messages).")
    max_prompt_length: int = _f(512, "Longest prompt in tokens, chat template included.")
    truncation_mode: Literal["keep_end", "error"] = _f("keep_end", "Longer prompts: keep the last tokens, or stop.")
    text_prompts_as_chat: bool = _f(False, "Wrap string prompts as a user message so the chat template applies.")
    completion_end: Literal["eos", "template"] = _f(
        "eos",
        "Conversational chosen/rejected end at the end-of-turn token, as the policy generates them (eos), or keep "
        "what the chat template adds after it (template: TRL's DPOTrainer tokens, e.g. ChatML's trailing newline).",
    )
    answer_column: str | None = _f(None, "Column with each prompt's reference answer, for judges that check it.")
    response_choices: list[str] | None = _f(
        None, "Restrict responses to these single-token strings (digit or multiple-choice tasks)."
    )
    # Run
    output_dir: str | None = _f(None, "Run directory (required); never overwritten without --overwrite.")
    overwrite: bool = _f(False, "Delete an existing run directory first (--resume on the command line overrides it).")
    resume: bool = _f(False, "Continue the run in output_dir from its last completed iteration.")
    resume_from_iteration: int | None = _f(
        None,
        "With --resume: continue after this iteration's checkpoint instead of the last (its later ones are redone).",
    )
    seed: int = _f(42, "Seed for prompt splits, sampling and shuffling.")
    num_iterations: int = _f(3, "Online iterations (collect, optimise, checkpoint).")
    prompts_per_iteration: int | None = _f(None, "Prompts per iteration; None: disjoint equal splits (SPPO).")
    # Generation
    max_new_tokens: int = _f(256, "Longest response in tokens.")
    temperature: float = _f(1.0, "Sampling temperature (0: greedy).")
    top_p: float = _f(1.0, "Nucleus sampling mass.")
    top_k: int = _f(0, "Top-k sampling (0: off).")
    generation_batch_size: int = _f(64, "Sequences per generate call.")
    use_vllm: bool = _f(False, "Generate rollouts with vLLM (colocated with training) instead of transformers.")
    vllm_gpu_memory_utilization: float = _f(
        0.3, "Fraction of each GPU's memory vLLM may take for weights and KV cache (the rest stays for training)."
    )
    vllm_enable_sleep_mode: bool = _f(
        False, "Put vLLM to sleep (weights and KV cache freed from the GPU) while the policy trains; CUDA only."
    )
    vllm_max_model_length: int | None = _f(None, "vLLM's context length (None: max_prompt_length + max_new_tokens).")
    # Rollout workers (Ray) and asynchronous rollouts (docs/async.md)
    rollout_workers: int = _f(0, "Ray actors that sample rollouts with their own copy of the weights (0: in-process).")
    rollout_worker_num_cpus: float = _f(1.0, "CPUs Ray reserves for each rollout worker.")
    rollout_worker_num_gpus: float = _f(0.0, "GPUs Ray reserves for each rollout worker (> 0: it samples on CUDA).")
    rollout_worker_threads: int | None = _f(None, "torch threads in each worker (None: torch_num_threads).")
    ray_address: str | None = _f(None, "An existing Ray cluster to start the workers on (None: a local instance).")
    rollout_timeout_s: float = _f(
        600.0, "A worker that does not answer a call within this many seconds stops the run."
    )
    async_rollouts: bool = _f(
        False, "Sample the next iterations on the workers while this one trains (samples up to max_staleness old)."
    )
    max_staleness: int = _f(1, "async_rollouts: k, an iteration trains on samples of the policy of up to k before.")
    logp_check_fraction: float = _f(
        0.0, "Fraction of each iteration's samples whose engine log-probs are checked against a trainer forward."
    )
    anchor_logps: Literal["rollout", "recompute"] = _f(
        "rollout",
        "π_t's log-probs of the samples: the rollout engine's (no extra pass), or one trainer forward with the "
        "current weights (the anchor an asynchronous run's regression methods need).",
    )
    vllm_importance_sampling_correction: bool = _f(
        False,
        "Reward methods (TRL's name, any engine): weight the loss by the trainer/engine ratio of the sampled tokens "
        "(the trainer's log-probs recomputed), truncated or masked as vllm_importance_sampling_mode says.",
    )
    vllm_importance_sampling_mode: Literal["token_truncate", "token_mask", "sequence_truncate", "sequence_mask"] = _f(
        "sequence_mask", "Per-token or per-sequence ratios, clipped into [min, max] (truncate) or zeroed outside it."
    )
    vllm_importance_sampling_clip_max: float | None = _f(3.0, "Upper bound C_max of the ratio (None: none).")
    vllm_importance_sampling_clip_min: float | None = _f(None, "Lower bound C_min of the ratio (None: none).")
    # Judge
    judge: str = _f("nontransitive", "Judge kind (see prefopt.judges.JUDGE_KINDS).")
    judge_model_name_or_path: str | None = _f(None, "Judge model for reward_model / pairwise_model / generative.")
    judge_function: str | None = _f(None, "module:function or file.py:function for python_reward/preference.")
    judge_batch_size: int = _f(16, "Judge forward batch size.")
    judge_max_length: int = _f(1024, "Judge input length limit in tokens (left-truncated).")
    judge_dtype: Literal["float32", "bfloat16", "float16", "auto"] = _f("float32", "Judge model dtype.")
    judge_template: str | None = _f(None, "Text template of the pairwise/generative judge ({prompt} {a} {b}).")
    judge_pairrm_matrix: Literal["scores", "pairs"] = _f(
        "scores",
        "pairrm: a group's P(y_i ≻ y_j) = σ(s_i − s_j) from per-response scores (SPPO's pipeline), or per pair.",
    )
    reward_weights: list[float] | None = _f(
        None, "Weights of the reward functions a trainer's judge list holds (TRL's key; None: 1 each), summed."
    )
    game: Literal["rps", "random"] | None = _f(None, "matrix_game judge: rock-paper-scissors or random.")
    game_size: int | None = _f(None, "matrix_game judge: number of actions for game=random.")
    game_seed: int = _f(0, "matrix_game judge: seed of the random matrix.")
    game_matrix: list[list[float]] | None = _f(None, "matrix_game judge: an explicit preference matrix.")
    game_actions: list[str] | None = _f(None, "matrix_game judge: action strings (single tokens).")
    game_exact: bool = _f(
        False,
        "Single-token actions: exact expectations over the action set instead of sampled rows (variance-free; "
        "prefopt.exact).",
    )
    # Adapters (LoRA through peft; TRL's names)
    adapter: Literal["none", "lora", "lora_ga"] = _f(
        "none", "none: full fine-tuning; lora; lora_ga: LoRA initialised from the gradient's SVD (LoRA-GA)."
    )
    lora_r: int = _f(16, "LoRA rank r.")
    lora_alpha: float = _f(32.0, "LoRA alpha: the update is scaled by alpha/r (alpha/sqrt(r) with use_rslora).")
    lora_dropout: float = _f(0.05, "Dropout on the LoRA branch's input.")
    lora_target_modules: list[str] | None = _f(
        None, "Module names to adapt, or all-linear (every linear layer but the output head); None: peft's default."
    )
    use_rslora: bool = _f(False, "Rank-stabilised LoRA: scale by alpha/sqrt(r).")
    lora_ga_objective: Literal["algorithm", "sft"] = _f(
        "algorithm", "LoRA-GA's gradient: the algorithm's first-iteration loss, or the NLL of lora_ga_response_column."
    )
    lora_ga_response_column: str | None = _f(None, "lora_ga_objective=sft: the column with the target responses.")
    lora_ga_batches: int = _f(8, "LoRA-GA: micro-batches per process for the gradient estimate.")
    lora_ga_variant: Literal["paper", "peft"] = _f(
        "paper", "paper: A and B both scaled by d_out^(1/4)/sqrt(gamma); peft: singular values folded into B."
    )
    lora_ga_direction: Literal["ArB2r", "ArBr", "A2rBr"] = _f(
        "ArB2r", "Which singular vectors go to A and B (ArB2r: A = top r right, B = left r+1..2r)."
    )
    lora_ga_gamma: float = _f(16.0, "LoRA-GA stable scaling gamma.")
    # Optimisation
    num_train_epochs: int = _f(1, "Passes over each iteration's data.")
    per_device_train_batch_size: int = _f(8, "Rows per micro-batch on each device.")
    gradient_accumulation_steps: int = _f(1, "Micro-batches per optimizer step.")
    learning_rate: float = _f(5e-7, "Peak learning rate.")
    optim: Literal["adamw_torch", "adam", "rmsprop", "sgd"] = _f("adamw_torch", "Optimizer.")
    weight_decay: float = _f(0.0, "Decoupled weight decay (AdamW) or L2 (others).")
    adam_beta1: float = _f(0.9, "Adam beta1.")
    adam_beta2: float = _f(0.999, "Adam beta2.")
    adam_epsilon: float = _f(1e-8, "Adam / RMSprop epsilon.")
    lr_scheduler_type: Literal["linear", "cosine", "constant", "constant_with_warmup"] = _f("linear", "LR schedule.")
    warmup_ratio: float = _f(0.0, "Fraction of all optimizer steps spent warming up.")
    max_grad_norm: float = _f(1.0, "Gradient clipping norm (0: off).")
    bf16: bool = _f(False, "bfloat16 mixed precision.")
    logprob_batch_size: int = _f(16, "Sequences per no-grad anchor log-prob pass.")
    padding_free: bool = _f(
        True,
        "Pack each forward's sequences back to back (position ids restart per sequence; no attention across them) "
        "instead of padding them to the longest (TRL's name; prefopt.scoring).",
    )
    max_tokens_per_micro_batch: int | None = _f(
        None,
        "Cut each optimizer step's rows into micro-batches of at most this many forward tokens (prompt + response, "
        "padding included), longest first, instead of per_device_train_batch_size rows; the step is unchanged. "
        "Also bounds the anchors' passes. None: off.",
    )
    logprob_chunk_size: int = _f(
        1024,
        "Tokens per chunk of the output head's log-softmax (recomputed in backward), so [tokens, vocab] logits "
        "never exist at once; 0: the model's own logits in one piece.",
    )
    deepspeed: str | None = _f(None, "DeepSpeed JSON config (configs/deepspeed/zero2.json, zero3.json).")
    ds3_gather_for_generation: bool = _f(
        True,
        "ZeRO-3: gather the whole model once per rollout to generate (TRL's name); false fetches every layer's "
        "shards at each forward, i.e. per generated token: slower, for models too large to hold whole.",
    )
    torch_num_threads: int | None = _f(None, "CPU threads for torch ops (None: torch's default; 1 suits tiny models).")
    # Evaluation in training
    eval_num_prompts: int = _f(0, "Prompts held out for the win rate against the initial policy (0: none).")
    eval_every: int = _f(0, "Evaluate every k iterations (0: only after the last).")
    eval_samples_per_prompt: int = _f(1, "Responses per held-out prompt per evaluation.")
    eval_dataset_name: str | None = _f(
        None, "Held-out prompts for the win rate (same formats as dataset_name), instead of eval_num_prompts."
    )
    eval_baseline_outputs: str | None = _f(
        None,
        "AlpacaEval outputs file (instruction, output): its instructions are the held-out prompts and its outputs "
        "the fixed baseline of eval/win_rate, instead of the initial policy on eval_num_prompts training prompts.",
    )
    # Logging and checkpoints
    report_to: list[str] = _f(["none"], "Trackers: none, tensorboard, wandb.")
    run_name: str | None = _f(None, "Tracker run name.")
    logging_steps: int = _f(
        0, "Also log every k optimizer steps to steps.jsonl: grad norm, lr, the step's loss-metric means (0: off)."
    )
    disable_tqdm: bool = _f(False, "Hide progress bars.")
    save_total_limit: int = _f(2, "Checkpoints kept (the latest ones).")
    save_every: int = _f(1, "Checkpoint every k iterations and after the last (metrics and data: every one).")
    hub_model_id: str | None = _f(None, "Hub repository of the trainer's push_to_hub() (None: output_dir's name).")

    def validate(self) -> None:
        """The required keys, every key's range, then the combinations of keys; the first violation raises a
        ConfigError."""
        self._check_required()
        self._check_ranges()
        self._check_combinations()

    def _check_required(self) -> None:
        for name in ("model_name_or_path", "dataset_name", "output_dir"):
            if not getattr(self, name):
                raise ConfigError(f"config key '{name}' is required")

    def _check_ranges(self) -> None:
        positive = (
            "num_iterations",
            "max_new_tokens",
            "generation_batch_size",
            "judge_batch_size",
            "num_train_epochs",
            "per_device_train_batch_size",
            "gradient_accumulation_steps",
            "logprob_batch_size",
            "max_prompt_length",
            "eval_samples_per_prompt",
            "lora_r",
            "lora_ga_batches",
        )
        require_positive(self, positive)
        checks = [
            ("learning_rate", self.learning_rate > 0, "> 0"),
            ("temperature", self.temperature >= 0, ">= 0"),
            ("top_p", 0 < self.top_p <= 1, "in (0, 1]"),
            ("top_k", self.top_k >= 0, ">= 0"),
            ("warmup_ratio", 0 <= self.warmup_ratio < 1, "in [0, 1)"),
            ("max_grad_norm", self.max_grad_norm >= 0, ">= 0"),
            ("eval_num_prompts", self.eval_num_prompts >= 0, ">= 0"),
            ("eval_every", self.eval_every >= 0, ">= 0"),
            ("lora_alpha", self.lora_alpha > 0, "> 0"),
            ("lora_dropout", 0 <= self.lora_dropout < 1, "in [0, 1)"),
            ("lora_ga_gamma", self.lora_ga_gamma > 0, "> 0"),
            ("prompts_per_iteration", self.prompts_per_iteration is None or self.prompts_per_iteration >= 1, ">= 1"),
            ("vllm_gpu_memory_utilization", 0 < self.vllm_gpu_memory_utilization <= 1, "in (0, 1]"),
            ("vllm_max_model_length", self.vllm_max_model_length is None or self.vllm_max_model_length >= 1, ">= 1"),
            (
                "max_tokens_per_micro_batch",
                self.max_tokens_per_micro_batch is None or self.max_tokens_per_micro_batch >= 1,
                ">= 1",
            ),
            ("logprob_chunk_size", self.logprob_chunk_size >= 0, ">= 0"),
            ("rollout_workers", self.rollout_workers >= 0, ">= 0"),
            ("rollout_worker_num_cpus", self.rollout_worker_num_cpus >= 0, ">= 0"),
            ("rollout_worker_num_gpus", self.rollout_worker_num_gpus >= 0, ">= 0"),
            (
                "rollout_worker_threads",
                self.rollout_worker_threads is None or self.rollout_worker_threads >= 1,
                ">= 1",
            ),
            ("rollout_timeout_s", self.rollout_timeout_s > 0, "> 0"),
            ("max_staleness", self.max_staleness >= 0, ">= 0"),
            ("logp_check_fraction", 0 <= self.logp_check_fraction <= 1, "in [0, 1]"),
        ]
        require(self, checks)

    def _check_combinations(self) -> None:
        if self.async_rollouts and not self.rollout_workers:
            raise ConfigError(
                "async_rollouts: true needs rollout_workers >= 1 (the workers sample ahead while the trainer trains)"
            )
        if self.adapter == "lora_ga" and self.lora_ga_objective == "sft" and not self.lora_ga_response_column:
            raise ConfigError("config key 'lora_ga_response_column' is required with lora_ga_objective: sft")
        if self.eval_baseline_outputs and not Path(self.eval_baseline_outputs).is_file():
            raise ConfigError(
                f"config key 'eval_baseline_outputs': file '{self.eval_baseline_outputs}' does not exist"
            )
        held = [k for k in ("eval_num_prompts", "eval_dataset_name", "eval_baseline_outputs") if getattr(self, k)]
        if len(held) > 1:
            raise ConfigError(f"give one of {' and '.join(held)}: each names the held-out prompts")
        self._check_benchmark()
        if self.resume_from_iteration is not None and not self.resume:
            raise ConfigError("config key 'resume_from_iteration' needs --resume")
        if self.resume_from_iteration is not None and self.resume_from_iteration < 0:
            raise ConfigError(f"config key 'resume_from_iteration' must be >= 0, got {self.resume_from_iteration}")
        if self.resume and self.overwrite:
            raise ConfigError("--resume and --overwrite exclude each other")
        if self.deepspeed and not Path(self.deepspeed).is_file():
            raise ConfigError(f"config key 'deepspeed': file '{self.deepspeed}' does not exist")
        bad = set(self.report_to) - {"none", "tensorboard", "wandb"}
        if bad:
            raise ConfigError(
                f"config key 'report_to': unknown tracker {sorted(bad)[0]!r}; use none, tensorboard, wandb"
            )


# ---------------------------------------------------------------------------------------------------------------
# Loading: YAML + CLI flags -> (TrainConfig, algorithm config)


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


_BOOLS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def _coerce_scalar(value: Any, tp) -> Any:
    """bool/int/float/str from a YAML value or a CLI string; ValueError if it is not one."""
    if isinstance(value, bool) and tp is not bool:
        raise ValueError  # YAML's `yes` must not become 1
    if tp is bool:
        if isinstance(value, bool) or str(value).lower() in _BOOLS:
            return value if isinstance(value, bool) else _BOOLS[str(value).lower()]
        raise ValueError
    if tp is int and isinstance(value, (int, str)):
        return int(value)
    if tp is float and isinstance(value, (int, float, str)):
        return float(value)  # also PyYAML's 5e-7, which it reads as a string
    if tp is str and isinstance(value, (str, int, float)):
        return str(value)
    raise ValueError


def _coerce(value: Any, tp, key: str, origin: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (with the lenient conversions YAML and CLI strings need)."""
    fail = ConfigError(f"config key '{key}' ({origin}) expects {_type_name(tp)}, got {value!r}")
    o = typing.get_origin(tp)
    if o in (Union, types.UnionType):
        args = typing.get_args(tp)
        if type(None) in args and (value is None or str(value).lower() in ("none", "null")):
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key, origin)
            except ConfigError:
                continue
        raise fail
    if o is Literal:
        if value not in typing.get_args(tp):
            choices = ", ".join(str(c) for c in typing.get_args(tp))
            raise ConfigError(f"config key '{key}' ({origin}) must be one of {choices}; got {value!r}")
        return value
    if tp is dict or o is dict:  # a mapping: YAML's, or JSON/YAML text on the command line
        value = yaml.safe_load(value) if isinstance(value, str) else value
        if not isinstance(value, dict):
            raise fail
        return value
    if o is list:
        (inner,) = typing.get_args(tp)
        if isinstance(value, str):  # a single CLI value for a list field: "a,b" or "a"
            value = [v for v in value.split(",") if v] if inner is str else yaml.safe_load(value)
        if not isinstance(value, (list, tuple)):
            raise fail
        return [_coerce(v, inner, key, origin) for v in value]
    try:
        return _coerce_scalar(value, tp)
    except ValueError:
        raise fail from None


def coerce_keys(cls: type, values: dict[str, Any], origin: str) -> dict[str, Any]:
    """``values`` checked and converted against the annotations of the config dataclass ``cls``."""
    hints = typing.get_type_hints(cls)
    return {key: _coerce(value, hints[key], key, origin) for key, value in values.items()}


def parse_cli_overrides(args: list[str]) -> dict[str, str | bool]:
    """``--key value``, ``--key=value`` and bare ``--flag`` (true) into a dict of raw strings."""
    out: dict[str, str | bool] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or len(arg) == 2:
            raise ConfigError(f"unexpected argument {arg!r}; flags look like --key value")
        key = arg[2:]
        if "=" in key:
            key, value = key.split("=", 1)
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            value = args[i + 1]
            i += 1
        else:
            value = True
        out[key.replace("-", "_")] = value
        i += 1
    out.pop("local_rank", None)  # appended by the deepspeed launcher; the process group comes from the environment
    return out


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        reason = getattr(err, "problem", None) or first_line(err)
        raise ConfigError(f"config file '{path}'{where}: invalid YAML: {reason}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of keys to values")
    return data


def build_configs(
    algo_config_cls: type,
    yaml_values: dict,
    cli_values: dict,
    yaml_path: str | None = None,
    algorithm: str | None = None,
):
    """Merge YAML and CLI values into (TrainConfig, algo config), checking every key and type.

    A YAML may name its algorithm (``algorithm: egpo``) for readers; given ``algorithm`` (what ``prefopt train
    ALGO`` trains) a different name is an error. ``--resume`` on the command line turns off a YAML's
    ``overwrite: true`` (the shipped configs set it so that a second run replaces the first).

    Returns:
        (TrainConfig, algorithm config instance); ``validate()`` has been called on both.
    """
    train_hints = typing.get_type_hints(TrainConfig)
    algo_hints = typing.get_type_hints(algo_config_cls)
    clash = set(train_hints) & set(algo_hints)
    assert not clash, f"algorithm config redefines shared keys: {clash}"
    valid = sorted(set(train_hints) | set(algo_hints))
    train_kw, algo_kw = {}, {}
    sources = [(yaml_values, f"from {yaml_path}"), (cli_values, "from the command line")]
    for values, origin in sources:
        for key, value in values.items():
            if key == "algorithm":
                if algorithm is not None and value != algorithm:
                    raise ConfigError(
                        f"config key 'algorithm' ({origin}) is {value!r}, but the command trains {algorithm!r}: "
                        f"run `prefopt train {value}`, or change the key"
                    )
                continue
            if key not in train_hints and key not in algo_hints:
                close = difflib.get_close_matches(key, valid, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise ConfigError(f"unknown config key '{key}' ({origin}){hint} valid keys: {', '.join(valid)}")
            if key in train_hints:
                train_kw[key] = _coerce(value, train_hints[key], key, origin)
            else:
                algo_kw[key] = _coerce(value, algo_hints[key], key, origin)
    if train_kw.get("resume") and "resume" in cli_values and "overwrite" not in cli_values:
        train_kw["overwrite"] = False  # the command line's --resume wins over a YAML's overwrite: true
    train = TrainConfig(**train_kw)
    algo = algo_config_cls(**algo_kw)
    train.validate()
    if hasattr(algo, "validate"):
        algo.validate()
    return train, algo


def config_to_dict(train: TrainConfig, algo, algorithm: str) -> dict:
    """The resolved config as written to the run directory (and read back by --resume)."""
    return {"algorithm": algorithm, **dataclasses.asdict(train), **dataclasses.asdict(algo)}


def field_help(cls: type) -> list[tuple[str, str, Any]]:
    """(name, help, default) for every field of a config dataclass."""
    out = []
    own = cls.__dict__.get("__annotations__", {})  # a class's own keys first, then those of its bases
    for f in sorted(dataclasses.fields(cls), key=lambda f: f.name not in own):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        out.append((f.name, f.metadata.get("help", ""), default))
    return out
