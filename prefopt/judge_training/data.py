"""Preference pairs for judge training: loaded and validated by prefopt.data, split, and tokenised as the judge reads.

Rows follow TRL's preference formats (``prefopt.data.load_preferences``): an explicit ``prompt`` with ``chosen`` and
``rejected`` (strings, or one assistant message each), or conversational ``chosen``/``rejected`` that share every
message but the last (implicit prompt). A bad row stops the run with ``FILE: line N: PROBLEM`` before anything is
written.

Each pair is tokenised exactly as the judge that will load the trained folder reads it, so that the trained model
and the judge agree to the float:

- reward_model: ``chosen_ids`` = ids of (x, y⁺), ``rejected_ids`` = ids of (x, y⁻), each from
  :func:`prefopt.judges.reward_model.encode_prompt_response` (the chat template for chat prompts, else
  ``prompt + "\\n" + response``), cut to the last ``max_length`` tokens. (TRL's own tokenisation, prompt + response +
  EOS, is not what the judge reads, so the rows reach TRL's RewardTrainer already tokenised.)
- pairwise_model: ``chosen_ids`` = ids of ``template(x, a=y⁺, b=y⁻)`` (the chosen response shown first),
  ``rejected_ids`` = ids of ``template(x, a=y⁻, b=y⁺)`` (the same pair, order swapped), as
  ``PairwiseModelJudge.encode`` makes them. The column names are TRL's, so one collator serves both kinds.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefopt.data import holdout_split, load_preferences
from prefopt.errors import DataError
from prefopt.judges.base import Prompt
from prefopt.judges.reward_model import encode_prompt_response, prompt_as_text, truncate_left


@dataclass(frozen=True)
class Pair:
    """One validated preference: ``chosen`` ≻ ``rejected`` given ``prompt`` (a string or chat messages)."""

    prompt: Prompt
    chosen: str
    rejected: str


def _load(source: str, split: str, config_name: str | None, tokenizer) -> list[Pair]:
    examples = load_preferences(source, tokenizer, split=split, config_name=config_name)
    return [Pair(e.prompt, e.chosen, e.rejected) for e in examples]


def held_out_count(test_size: float, rows: int) -> int:
    """Rows held out: ``round(test_size · rows)`` for a fraction (at least 1), else ``test_size`` itself."""
    return max(1, round(test_size * rows)) if test_size < 1 else int(test_size)


def load_pairs(cfg, tokenizer) -> tuple[list[Pair], list[Pair]]:
    """(train pairs, held-out pairs) of the config's datasets: ``eval_dataset_name`` when given, else a seeded
    ``test_size`` split of ``dataset_name``.

    Raises:
        DataError: a bad source or row (named), or a split that leaves no training or no held-out pair.
    """
    pairs = _load(cfg.dataset_name, cfg.dataset_train_split, cfg.dataset_config, tokenizer)
    if cfg.eval_dataset_name:
        return pairs, _load(cfg.eval_dataset_name, cfg.eval_dataset_split, None, tokenizer)
    num_eval = held_out_count(cfg.test_size, len(pairs))
    if num_eval >= len(pairs):
        raise DataError(
            f"{cfg.dataset_name}: test_size {cfg.test_size} holds out {num_eval} of {len(pairs)} pairs; "
            "no training pairs would remain"
        )
    return holdout_split(pairs, num_eval, cfg.seed)


def encode_pair_text(tokenizer, template: str, prompt: Prompt, a: str, b: str, max_length: int) -> list[int]:
    """Token ids of ``template`` filled with (x, a, b), cut to the last ``max_length`` (PairwiseModelJudge.encode)."""
    text = template.format(prompt=prompt_as_text(prompt), a=a, b=b)
    return truncate_left(tokenizer(text)["input_ids"], max_length)


def encode_rows(pairs: list[Pair], tokenizer, judge: str, template: str | None, max_length: int) -> dict:
    """Columns ``chosen_ids`` and ``rejected_ids`` (lists of token id lists, one per pair) as the module docstring
    describes for ``judge``."""
    chosen, rejected = [], []
    for pair in pairs:
        if judge == "reward_model":
            chosen.append(truncate_left(encode_prompt_response(tokenizer, pair.prompt, pair.chosen), max_length))
            rejected.append(truncate_left(encode_prompt_response(tokenizer, pair.prompt, pair.rejected), max_length))
        else:
            x, win, lose = pair.prompt, pair.chosen, pair.rejected
            chosen.append(encode_pair_text(tokenizer, template, x, win, lose, max_length))
            rejected.append(encode_pair_text(tokenizer, template, x, lose, win, max_length))
    return {"chosen_ids": chosen, "rejected_ids": rejected}


def to_dataset(pairs: list[Pair], tokenizer, judge: str, template: str | None, max_length: int):
    """A ``datasets.Dataset`` with the two token id columns, what the trainers read."""
    import datasets

    return datasets.Dataset.from_dict(encode_rows(pairs, tokenizer, judge, template, max_length))
