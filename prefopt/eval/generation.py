"""Outputs of a model on an eval set, through the same rollout engine training samples with.

Each instruction becomes one user message when the tokenizer has a chat template (AlpacaEval's instructions are
single user turns), else the plain string. Every instruction draws from its own random stream seeded by
(seed, instruction text): a model's outputs do not depend on the batch size, on the order of the eval set or on
which other instructions it holds, and greedy decoding (``temperature == 0``) ignores the seed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from prefopt.data import encode_prompt
from prefopt.errors import ConfigError
from prefopt.judges import Prompt
from prefopt.models import load_causal_lm, load_tokenizer
from prefopt.rollout.engine import SamplingParams, derive_seed
from prefopt.rollout.hf import HFRolloutEngine


@dataclass(frozen=True)
class Decoding:
    """How an eval set's outputs are generated (recorded in every result file)."""

    max_new_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0
    batch_size: int = 16
    dtype: str = "float32"
    device: str = "cpu"

    def __post_init__(self):
        try:
            SamplingParams(self.max_new_tokens, self.temperature, self.top_p, self.top_k)
        except ValueError as err:
            raise ConfigError(f"eval decoding: {err}") from None
        if self.batch_size < 1:
            raise ConfigError(f"eval decoding: batch_size must be >= 1; got {self.batch_size}")

    def record(self) -> dict:
        return asdict(self)


def as_prompt(tokenizer, instruction: str) -> Prompt:
    """An instruction as the model is prompted with it: a user message under a chat template, else the text."""
    return [{"role": "user", "content": instruction}] if tokenizer.chat_template else instruction


def generate_outputs(
    model_name_or_path: str, instructions: Sequence[str], decoding: Decoding, trust_remote_code: bool = False
) -> list[str]:
    """One output per instruction, in order."""
    tokenizer = load_tokenizer(model_name_or_path, trust_remote_code)
    model = load_causal_lm(model_name_or_path, decoding.dtype, trust_remote_code=trust_remote_code)
    model.to(decoding.device).eval()
    engine = HFRolloutEngine(lambda: contextlib.nullcontext(model), tokenizer, decoding.batch_size)
    params = SamplingParams(decoding.max_new_tokens, decoding.temperature, decoding.top_p, decoding.top_k)
    prompt_ids = [encode_prompt(tokenizer, as_prompt(tokenizer, x)) for x in instructions]
    seeds = [derive_seed(decoding.seed, "eval", x) for x in instructions]
    batch = engine.generate(prompt_ids, 1, params, seeds)
    return [s.text for s in sorted(batch.samples, key=lambda s: s.prompt_index)]
