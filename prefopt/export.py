"""Export a run's policy in the Hugging Face Hub format: merged weights (or the adapter), tokenizer, model card.

``prefopt export RUN_DIR --out DIR`` (or :func:`export_run`) writes a folder that plain ``transformers`` loads:

- **weights**: safetensors, sharded above ``max_shard_size`` (with the index file); a LoRA or LoRA-GA run is
  merged into the base weights, or with ``adapter_only`` kept as one peft adapter for the original base model;
- LoRA-GA's base offset: during training the policy is W + s(BA − B0A0), the offset −B0A0 held by a frozen second
  adapter (``prefopt.adapters``). Both exports fold it in: the adapter is the single rank-2r adapter [B, −B0]·[A; A0]
  (``adapters.adapter_state``), and merging that adapter gives W + s(BA − B0A0) exactly;
- the tokenizer with its chat template, ``generation_config.json``, the resolved training config
  (``training_config.yaml``) and a model card (``README.md``, :mod:`prefopt.model_card`).

The policy comes from ``RUN_DIR/final`` when the run finished, else from its latest checkpoint (or the one named
by ``iteration``). Everything is checked before a model is loaded, written into a staging folder and renamed into
place when complete; a non-empty output folder is refused without ``overwrite``. ``push_to_hub`` then creates the
repository and uploads the folder with ``huggingface_hub``, which reads the token from ``HF_TOKEN`` or the login
cache: prefopt never sees, prints or stores it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from prefopt.errors import ConfigError, DataError, ModelError, PrefoptError, first_line
from prefopt.rundir import RunDir, atomic_dir, refuse_non_empty


@dataclass
class RunSource:
    """Where a run's policy is read from, and what the run says about itself."""

    run_dir: Path
    config: dict
    metrics: list[dict]
    iteration: int  # the last completed iteration the exported weights are from
    folder: Path  # RUN_DIR/final or RUN_DIR/checkpoints/iter_NNN
    is_final: bool

    @property
    def adapter(self) -> str:
        return self.config.get("adapter", "none")


def locate(run_dir: str | Path, iteration: int | None = None) -> RunSource:
    """Check the run directory and choose the weights to export (no model is loaded)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise DataError(f"'{run_dir}' is not a prefopt run directory (no config.yaml)")
    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
    except yaml.YAMLError as err:
        raise DataError(f"'{run_dir / 'config.yaml'}' is damaged: {first_line(err)}") from None
    rundir = RunDir(run_dir)
    last = (rundir.read_state() or {"last_completed_iteration": -1})["last_completed_iteration"]
    if last < 0:
        raise DataError(f"run '{run_dir}' has no finished iteration to export")
    metrics = rundir.read_jsonl("metrics.jsonl")
    checkpoints = sorted(int(p.name.split("_")[1]) for p in (run_dir / "checkpoints").glob("iter_*"))
    if iteration is not None:
        if iteration not in checkpoints:
            raise DataError(f"run '{run_dir}' has no checkpoint of iteration {iteration}; it keeps {checkpoints}")
        folder, is_final = run_dir / "checkpoints" / f"iter_{iteration:03d}", False
    elif (run_dir / "final").is_dir():
        folder, is_final, iteration = run_dir / "final", True, last
    elif checkpoints:
        iteration = checkpoints[-1]
        folder, is_final = run_dir / "checkpoints" / f"iter_{iteration:03d}", False
    else:
        raise DataError(f"run '{run_dir}' has neither final/ nor a checkpoint")
    if not is_final and not (folder / "model.safetensors").is_file():
        raise DataError(
            f"checkpoint '{folder}' holds no model.safetensors (ZeRO-3 shards): export the finished run's final/"
        )
    metrics = [m for m in metrics if m.get("iteration", -1) <= iteration]
    return RunSource(run_dir, config, metrics, iteration, folder, is_final)


def _load_base(config: dict):
    from prefopt.models import load_causal_lm

    trust = config.get("trust_remote_code", False)
    return load_causal_lm(config["model_name_or_path"], config.get("dtype", "float32"), trust_remote_code=trust)


def load_policy(source: RunSource):
    """The trained policy: a plain model (full fine-tuning) or a PeftModel with one adapter on a fresh base."""
    from peft import PeftModel, get_peft_model, set_peft_model_state_dict

    if source.adapter == "none":
        if source.is_final:
            from prefopt.models import load_causal_lm

            return load_causal_lm(str(source.folder), source.config.get("dtype", "float32"))
        model = _load_base(source.config)
        _load_checkpoint_weights(model, source.folder / "model.safetensors")
        return model.eval()
    base = _load_base(source.config)
    if source.is_final:  # already the single adapter (LoRA-GA's offset folded in by the run)
        return PeftModel.from_pretrained(base, str(source.folder)).eval()
    from prefopt.adapters import adapter_state, attach_adapter
    from prefopt.config import TrainConfig

    fields = {k: v for k, v in source.config.items() if k in TrainConfig.__dataclass_fields__}
    model = attach_adapter(base, TrainConfig(**fields))
    _load_checkpoint_weights(model, source.folder / "model.safetensors")
    adapter_config, tensors = adapter_state(model)
    model = get_peft_model(model.unload(), adapter_config)  # the same base weights, one standard adapter
    set_peft_model_state_dict(model, tensors)
    return model.eval()


def _load_checkpoint_weights(model, path: Path) -> None:
    """A checkpoint's weights into ``model``. A tied weight (an output head sharing the input embedding, as
    SmolLM2's) is saved once, so its key is absent: accepted only where it shares its tensor with a loaded one."""
    from safetensors.torch import load_file

    state = load_file(str(path))
    missing, unexpected = model.load_state_dict(state, strict=False)
    current = model.state_dict(keep_vars=True)
    loaded = {current[k].data_ptr() for k in state if k in current}
    untied = [k for k in missing if current[k].data_ptr() not in loaded]
    if untied or unexpected:
        raise ModelError(
            f"checkpoint '{path}' does not match the model: missing {untied[:3]}, unexpected {unexpected[:3]}"
        )


def _load_tokenizer(source: RunSource):
    from transformers import AutoTokenizer

    from prefopt.models import pretrained_source

    name = str(source.folder) if source.is_final else source.config.get("tokenizer_name_or_path")
    name = name or source.config["model_name_or_path"]
    trust = source.config.get("trust_remote_code", False)
    folder, extra = pretrained_source(name, "tokenizer")  # a .gguf's tokenizer is read from the file
    return AutoTokenizer.from_pretrained(folder, trust_remote_code=trust, **extra)


def export_run(
    run_dir: str | Path,
    out: str | Path,
    *,
    adapter_only: bool = False,
    iteration: int | None = None,
    max_shard_size: str = "5GB",
    base_model: str | None = None,
    license: str | None = None,
    license_name: str | None = None,
    license_link: str | None = None,
    datasets: list[str] | None = None,
    eval_results: str | None = None,
    eval_generator: str | None = None,
    push_to_hub: str | None = None,
    private: bool = False,
    overwrite: bool = False,
) -> Path:
    """Write the run's policy to ``out`` in the Hub format (and push it); see the module docstring.

    Args:
        base_model: the Hub id of the base model for the card and the adapter config, when the run loaded a local
            copy (default: the run's ``model_name_or_path`` if it is not a local folder).
        license: the card's license (default: "other": the base model's license applies).
        license_name / license_link: what the Hub asks with ``license: other`` (default: "base-model-license" and
            the base model's Hub page, when its id is known).
        datasets: Hub dataset ids for the card, besides the training prompts when they are one.
        eval_results / eval_generator: a ``prefopt eval`` results.json and the generator in it that is this model.
    """
    from prefopt import model_card

    out = Path(out)
    source = locate(run_dir, iteration)
    refuse_non_empty(out, overwrite, "output folder")
    _check_shard_size(max_shard_size)
    if adapter_only and source.adapter == "none":
        raise ConfigError(f"--adapter-only: run '{source.run_dir}' trained every weight (adapter: none)")
    evaluation = model_card.read_eval_results(eval_results, eval_generator, source) if eval_results else None
    repo_id = _check_repo_id(push_to_hub) if push_to_hub else None
    if base_model:
        _check_base_model(base_model, source)
    base_model = base_model or model_card.hub_id(source.config["model_name_or_path"])
    if base_model is None:
        print(
            f"[prefopt] the run's base model is the local folder '{source.config['model_name_or_path']}': the card "
            "and adapter config name no base; pass --base_model HUB_ID so that others can load it"
        )
    card_options = model_card.CardOptions.with_defaults(base_model, license, license_name, license_link, datasets)
    policy, tokenizer = load_policy(source), _load_tokenizer(source)
    with atomic_dir(out) as staging:
        _save_weights(policy, staging, adapter_only, max_shard_size, base_model)
        tokenizer.save_pretrained(str(staging))
        (staging / "training_config.yaml").write_text(yaml.safe_dump(source.config, sort_keys=False))
        card = model_card.render(source, adapter_only, card_options, evaluation, repo_id)
        (staging / "README.md").write_text(card, encoding="utf-8")
    if repo_id:
        push(out, repo_id, private)
    return out


def _save_weights(policy, folder: Path, adapter_only: bool, max_shard_size: str, base_model: str | None) -> None:
    from transformers import GenerationConfig

    if adapter_only:
        # The adapter config names a base a user can download, never the training machine's folder (None when its
        # Hub id is unknown: AutoPeftModel then asks for one, PeftModel.from_pretrained(base, folder) still loads).
        policy.peft_config["default"].base_model_name_or_path = base_model
        policy.save_pretrained(str(folder), safe_serialization=True)
        if base_model is None:  # peft fills a missing base in from the model's own (local) name_or_path
            config_file = folder / "adapter_config.json"
            config = json.loads(config_file.read_text())
            config["base_model_name_or_path"] = None
            config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        model = policy.get_base_model()
    else:
        model = policy.merge_and_unload() if hasattr(policy, "merge_and_unload") else policy
        model.save_pretrained(str(folder), safe_serialization=True, max_shard_size=max_shard_size)
    generation = model.generation_config or GenerationConfig.from_model_config(model.config)
    generation.save_pretrained(str(folder))


# The config entries that fix the weights' shapes: an adapter or merged model only loads on a base that has them all.
_SHAPE_KEYS = (
    "model_type",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "vocab_size",
)


def _check_base_model(base_model: str, source) -> None:
    """--base_model names a base the weights fit: a local folder's config is compared with the run's base model's
    (a Hub id is taken as given: it cannot be read offline)."""
    from prefopt.models import check_source, load_model_config

    trained_on = source.config["model_name_or_path"]
    if not os.path.exists(check_source(base_model, "--base_model")) or not os.path.exists(trained_on):
        return
    trust = source.config.get("trust_remote_code", False)
    given, trained = (load_model_config(m, "base model", trust) for m in (base_model, trained_on))
    for key in _SHAPE_KEYS:
        if getattr(given, key, None) != getattr(trained, key, None):
            raise ConfigError(
                f"--base_model '{base_model}' is not the run's base model '{trained_on}': {key} "
                f"{getattr(given, key, None)!r} there, {getattr(trained, key, None)!r} in the run's"
            )


def _check_shard_size(size: str) -> None:
    from transformers.utils.hub import convert_file_size_to_int

    try:
        convert_file_size_to_int(size)
    except (ValueError, TypeError):
        raise ConfigError(f"--max_shard_size must be a size like 5GB or 500MB; got {size!r}") from None


def _check_repo_id(repo_id: str) -> str:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ConfigError(f"--push-to-hub: invalid repository id {repo_id!r}: {first_line(err)}") from None
    return repo_id


def push(folder: str | Path, repo_id: str, private: bool = False) -> str:
    """Create ``repo_id`` (if needed) and upload ``folder``; returns the commit URL. The token is
    huggingface_hub's to find (``HF_TOKEN`` or ``hf auth login``); errors never include it."""
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        commit = api.upload_folder(
            folder_path=str(folder), repo_id=repo_id, repo_type="model", commit_message="Upload with prefopt export"
        )
    except Exception as err:  # network, auth, quota: one line, the export on disk is complete and kept
        raise PrefoptError(f"push to the Hub repository '{repo_id}' failed: {first_line(err)}") from err
    return str(getattr(commit, "commit_url", commit))
