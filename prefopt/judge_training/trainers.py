"""The two trainers: TRL's RewardTrainer (Bradley-Terry) and a transformers ``Trainer`` for the pairwise model.

What each brings, so that LoRA, DeepSpeed ZeRO, checkpoints and ``--resume`` come from transformers/TRL unchanged:

- reward_model: ``trl.RewardTrainer`` as is. It minimises −log σ(r⁺ − r⁻) (plus TRL's optional
  ``center_rewards_coefficient`` term) over rows of already-tokenised ``chosen_ids``/``rejected_ids``, which it
  accepts without re-tokenising (prefopt tokenises as the judge reads, :mod:`prefopt.judge_training.data`).
- pairwise_model: :class:`PairwiseTrainer`, a ``transformers.Trainer`` whose only change is ``compute_loss``: the
  batch holds B pairs in the forward order then the same B pairs swapped (``PairCollator``), one forward pass gives
  logits [2B, num_labels], and the loss is the symmetrised −log P of :mod:`prefopt.judge_training.losses`.

Both get the same model (a sequence classifier with a fresh head, the LoRA adapter attached here with peft's
SEQ_CLS task so the head is trained in full), the same collator and the same TrainingArguments values; dropout is
turned off in both, as TRL's RewardTrainer does by default (a judge is deterministic at use).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import torch
from transformers import Trainer, TrainingArguments

from prefopt.errors import ConfigError, ModelError, first_line
from prefopt.judge_training.losses import symmetrised_pairwise_loss
from prefopt.models import check_source


@dataclass
class PairCollator:
    """Rows {chosen_ids, rejected_ids} → input_ids [2B, L] (the B ``chosen_ids`` rows, then the B ``rejected_ids``
    rows), right-padded with ``pad_token_id``, and attention_mask [2B, L] (1 on real tokens). TRL's preference
    collator's layout: the classifier pools at the last non-pad token, the same one the judges' left padding
    reaches."""

    pad_token_id: int

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        sequences = [row["chosen_ids"] for row in rows] + [row["rejected_ids"] for row in rows]
        width = max(len(s) for s in sequences)
        input_ids = torch.full((len(sequences), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for i, seq in enumerate(sequences):
            input_ids[i, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
            attention_mask[i, : len(seq)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask}


class PairwiseTrainer(Trainer):
    """A ``Trainer`` for a pairwise preference classifier trained with the symmetrised objective.

    Each micro-batch holds B pairs: rows [0, B) are template(x, a=y⁺, b=y⁻), rows [B, 2B) template(x, a=y⁻, b=y⁺).
    The loss is mean_B −log ½[p(x, y⁺, y⁻) + 1 − p(x, y⁻, y⁺)], the probability the pairwise_model judge answers.
    """

    # compute_loss returns a per-micro-batch mean: the Trainer divides it by the accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.can_return_loss = True  # evaluation asks compute_loss for the loss (there are no label columns)
        self.label_names = []

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False)
        forward_logits, swapped_logits = outputs.logits.float().chunk(2)
        loss = symmetrised_pairwise_loss(forward_logits, swapped_logits).mean()
        return (loss, outputs) if return_outputs else loss


def load_classifier(cfg, tokenizer):
    """The base model as a sequence classifier with ``cfg.num_labels`` outputs, a fresh head where its own (if any)
    has another size, dropout off, pad id the tokenizer's (the token the classifier pools before)."""
    from transformers import AutoModelForSequenceClassification, set_seed

    set_seed(cfg.seed)  # the new head's initialisation
    source = check_source(cfg.model_name_or_path, "model")
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            source,
            num_labels=cfg.num_labels,
            ignore_mismatched_sizes=True,
            dtype=torch.float32,
            trust_remote_code=cfg.trust_remote_code,
        )
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot load model '{cfg.model_name_or_path}' as a classifier: {first_line(err)}") from err
    text_config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    text_config.pad_token_id = model.config.pad_token_id = tokenizer.pad_token_id
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


def attach_lora(model, cfg):
    """The model with a peft LoRA adapter (``adapter: lora``); SEQ_CLS keeps the new head fully trainable."""
    if cfg.adapter == "none":
        return model
    from peft import LoraConfig, get_peft_model

    targets = "all-linear" if cfg.lora_target_modules == ["all-linear"] else cfg.lora_target_modules
    config = LoraConfig(
        task_type="SEQ_CLS",
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=targets,
        use_rslora=cfg.use_rslora,
        bias="none",
    )
    try:
        return get_peft_model(model, config)
    except ValueError as err:  # peft names the target modules it could not find
        raise ConfigError(f"config key 'lora_target_modules': {first_line(err)}") from err


def single_process_group_env(cfg) -> None:
    """DeepSpeed wants a process group even for one process: without a launcher, describe a one-process one (gloo
    on CPU), as prefopt.backend does for ``prefopt train``."""
    if not cfg.deepspeed or "WORLD_SIZE" in os.environ:
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(key, value)
    os.environ.setdefault("MASTER_PORT", str(port))


def training_arguments(cfg, checkpoints_dir: str):
    """TrainingArguments (pairwise_model) or TRL's RewardConfig (reward_model) from the run config."""
    common = {
        "output_dir": checkpoints_dir,
        "seed": cfg.seed,
        "num_train_epochs": cfg.num_train_epochs,
        "max_steps": cfg.max_steps,
        "per_device_train_batch_size": cfg.per_device_train_batch_size,
        "per_device_eval_batch_size": cfg.per_device_eval_batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "learning_rate": cfg.learning_rate,
        "optim": cfg.optim,
        "weight_decay": cfg.weight_decay,
        "lr_scheduler_type": cfg.lr_scheduler_type,
        "warmup_steps": cfg.warmup_ratio,  # a float in [0, 1) is a fraction of all steps (transformers 5)
        "max_grad_norm": cfg.max_grad_norm,
        "bf16": cfg.bf16,
        "gradient_checkpointing": cfg.gradient_checkpointing,
        "deepspeed": cfg.deepspeed,
        "logging_steps": cfg.logging_steps,
        "save_strategy": "steps",
        "save_steps": cfg.save_steps,
        "save_total_limit": cfg.save_total_limit,
        "report_to": [t for t in cfg.report_to if t != "none"] or "none",
        "run_name": cfg.run_name,
        "disable_tqdm": cfg.disable_tqdm,
        "remove_unused_columns": False,  # the rows hold only chosen_ids/rejected_ids, which the collator reads
        "eval_strategy": "no",  # the held-out metrics are computed once, through the judge, at the end
    }
    if cfg.judge == "pairwise_model":
        return TrainingArguments(**common)
    # max_length None: the rows are already cut to max_length the judge's way (keeping the end); TRL would drop them.
    return _trl().RewardConfig(
        **common, max_length=None, center_rewards_coefficient=cfg.center_rewards_coefficient, disable_dropout=True
    )


def build_trainer(cfg, args, model, tokenizer, train_dataset):
    """RewardTrainer or PairwiseTrainer over ``train_dataset`` (columns chosen_ids, rejected_ids)."""
    collator = PairCollator(tokenizer.pad_token_id)
    if cfg.judge == "pairwise_model":
        return PairwiseTrainer(
            model=model, args=args, data_collator=collator, train_dataset=train_dataset, processing_class=tokenizer
        )
    return _trl().RewardTrainer(
        model=model, args=args, data_collator=collator, train_dataset=train_dataset, processing_class=tokenizer
    )


def _trl():
    """The trl package (a dependency; absent where prefopt was installed with --no-deps), or a one-line error."""
    try:
        import trl
    except ImportError as err:
        raise ConfigError("judge reward_model trains with TRL's RewardTrainer: pip install 'trl>=1.16'") from err
    return trl
