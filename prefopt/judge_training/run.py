"""``train_judge(cfg)``: validate, train, merge, save, measure, in that order.

1. Inputs, before anything is written: the tokenizer and the model's config load, every data row is valid, the split
   leaves pairs on both sides, the output folder may be written (``--overwrite`` / ``--resume`` rules).
2. The folder gets its config; the model loads as a classifier (LoRA attached if asked); TRL's RewardTrainer or
   :class:`~prefopt.judge_training.trainers.PairwiseTrainer` trains, checkpointing to ``checkpoints/``
   (``--resume``: from the newest one).
3. The trained model is saved through the Trainer (which gathers ZeRO-3 shards), LoRA merged into the weights, and
   moved into the folder with the tokenizer and prefopt_judge.json.
4. The folder is loaded back as the prefopt judge it is meant to be, and the held-out metrics are computed through
   it, written to metrics.json and returned.
"""

from __future__ import annotations

import time
from pathlib import Path

from prefopt.judge_training.config import JudgeTrainConfig, config_dict
from prefopt.judge_training.data import load_pairs, to_dataset
from prefopt.judge_training.evaluate import judge_metrics
from prefopt.judge_training.output import (
    STAGING,
    check_output_dir,
    commit_judge,
    judge_info,
    prepare_output_dir,
    write_metrics,
)


def _load_inputs(cfg: JudgeTrainConfig):
    """(tokenizer, train pairs, held-out pairs), every one checked; the model's config too (no weights yet)."""
    from prefopt.models import load_model_config, load_tokenizer

    tokenizer = load_tokenizer(cfg.tokenizer_name_or_path or cfg.model_name_or_path, cfg.trust_remote_code)
    load_model_config(cfg.model_name_or_path, "model", cfg.trust_remote_code)
    train_pairs, eval_pairs = load_pairs(cfg, tokenizer)
    return tokenizer, train_pairs, eval_pairs


def merged_model_dir(trained: Path, cfg: JudgeTrainConfig, tokenizer) -> Path:
    """The Trainer's saved model as a plain classifier folder: a LoRA adapter is merged into its base (loaded fresh
    from ``model_name_or_path``, so ZeRO-3's gathered save works the same) and written beside it."""
    if not (trained / "adapter_config.json").is_file():
        return trained
    from peft import PeftModel

    from prefopt.judge_training.trainers import load_classifier

    merged = PeftModel.from_pretrained(load_classifier(cfg, tokenizer), str(trained)).merge_and_unload()
    out = trained.parent / (trained.name + "-merged")
    merged.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


def _train(cfg: JudgeTrainConfig, tokenizer, train_pairs, resume_from: Path | None) -> tuple[object, Path]:
    """Train; return (the trainer, the folder its final model was saved to). Every process runs this."""
    from prefopt.judge_training.trainers import (
        attach_lora,
        build_trainer,
        load_classifier,
        single_process_group_env,
        training_arguments,
    )

    out = Path(cfg.output_dir)
    single_process_group_env(cfg)
    args = training_arguments(cfg, str(out / "checkpoints"))
    with args.main_process_first(desc="output_dir", local=False):
        if args.process_index == 0:
            prepare_output_dir(out, config_dict(cfg), cfg.overwrite and resume_from is None)
    model = attach_lora(load_classifier(cfg, tokenizer), cfg)
    dataset = to_dataset(train_pairs, tokenizer, cfg.judge, cfg.template or _default_template(cfg), cfg.max_length)
    trainer = build_trainer(cfg, args, model, tokenizer, dataset)
    if resume_from is not None:
        print(f"[prefopt] resuming from {resume_from}")
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    staging = out / STAGING / "trained"
    trainer.save_model(str(staging))  # on every process: ZeRO-3 gathers the shards here
    return trainer, staging


def _default_template(cfg: JudgeTrainConfig) -> str | None:
    from prefopt.judges.pairwise import DEFAULT_PAIRWISE_TEMPLATE

    return DEFAULT_PAIRWISE_TEMPLATE if cfg.judge == "pairwise_model" else None


def train_judge(cfg: JudgeTrainConfig) -> dict | None:
    """Train the judge ``cfg`` describes into ``cfg.output_dir`` (see the module docstring).

    Returns:
        the held-out metrics (also in output_dir/metrics.json) on the main process, None on the others.

    Raises:
        PrefoptError: bad config, data, model or output folder, before anything is written.
    """
    import torch

    from prefopt.judges import build_judge

    if cfg.torch_num_threads:
        torch.set_num_threads(cfg.torch_num_threads)
    if cfg.disable_tqdm:
        from datasets.utils.logging import disable_progress_bar
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # transformers' weight loading/saving bars
        disable_progress_bar()  # datasets' while it reads the data files
    start = time.perf_counter()
    tokenizer, train_pairs, eval_pairs = _load_inputs(cfg)
    out = Path(cfg.output_dir)
    resume_from = check_output_dir(out, config_dict(cfg), cfg.overwrite, cfg.resume)
    if cfg.resume and resume_from is None:
        print(f"[prefopt] --resume: no checkpoint in '{out}'; starting from the beginning")
    trainer, trained = _train(cfg, tokenizer, train_pairs, resume_from)
    if not trainer.is_world_process_zero():
        return None
    final = merged_model_dir(trained, cfg, tokenizer)
    commit_judge(final, out, judge_info(cfg))
    judge = build_judge(
        cfg.judge, model_name_or_path=str(out), batch_size=cfg.per_device_eval_batch_size, max_length=cfg.max_length
    )
    metrics = {"judge": cfg.judge, **judge_metrics(judge, eval_pairs, cfg.ece_bins)}
    metrics.update(
        train_pairs=len(train_pairs),
        global_step=trainer.state.global_step,
        train_loss=_last_train_loss(trainer),
        runtime_s=round(time.perf_counter() - start, 2),
    )
    write_metrics(out, metrics)
    return metrics


def _last_train_loss(trainer) -> float | None:
    """The mean training loss the Trainer reported at the end (None when it logged none)."""
    for record in reversed(trainer.state.log_history):
        if "train_loss" in record:
            return float(record["train_loss"])
    return None
