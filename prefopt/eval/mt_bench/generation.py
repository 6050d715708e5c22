"""MT-Bench answers of a model: two turns through its chat template, with prefopt's rollout engine.

As FastChat's gen_model_answer.py: the second turn is asked after the model's own first answer, i.e. the turn-2
prompt is the chat template of [user t1, assistant a1, user t2] with the generation prompt; each answer is stripped
of surrounding whitespace before it is stored (and shown to the model in turn 2); the temperature depends on the
question's category (FastChat's ``temperature_config`` below, 0.7 for a category it does not list), greedy where
it is 0; at most 1024 new tokens. Departures: the conversation is the model's own chat template (``encode_prompt``)
rather than one of FastChat's conversation templates, and the answer stops at the model's EOS / end-of-turn ids.

Batching: every first turn is generated before any second turn, each turn in one engine call per distinct
temperature (the engine takes one SamplingParams per call; with FastChat's table that is at most three calls per
turn, one with ``temperature`` set for all). Each (question, turn) draws from its own random stream seeded by
(seed, question_id, turn), so answers do not depend on the batch size, on the question order or on which other
questions are asked, and greedy decoding ignores the seed.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field

from prefopt.errors import ConfigError, DataError
from prefopt.eval.mt_bench.formats import Question, QuestionId

# FastChat's fastchat/llm_judge/common.py temperature_config, and its default for other categories.
FASTCHAT_TEMPERATURES = {
    "writing": 0.7,
    "roleplay": 0.7,
    "extraction": 0.0,
    "math": 0.0,
    "coding": 0.0,
    "reasoning": 0.0,
    "stem": 0.1,
    "humanities": 0.1,
    "arena-hard-200": 0.0,
}
FASTCHAT_DEFAULT_TEMPERATURE = 0.7


@dataclass(frozen=True)
class MTBenchDecoding:
    """How MT-Bench answers are generated (recorded in results.json).

    ``temperatures`` overrides FastChat's per-category table entry by entry; ``temperature``, when set, is used
    for every category instead (e.g. 0: greedy throughout).
    """

    max_new_tokens: int = 1024
    temperatures: dict[str, float] = field(default_factory=dict)
    default_temperature: float = FASTCHAT_DEFAULT_TEMPERATURE
    temperature: float | None = None
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0
    batch_size: int = 16
    dtype: str = "float32"
    device: str = "cpu"

    def __post_init__(self):
        from prefopt.rollout.engine import SamplingParams

        for name, t in [("default_temperature", self.default_temperature), ("temperature", self.temperature)]:
            if t is not None and t < 0:
                raise ConfigError(f"mt-bench decoding: {name} must be >= 0; got {t}")
        for category, t in self.temperatures.items():
            if not isinstance(t, (int, float)) or t < 0:
                raise ConfigError(f"mt-bench decoding: temperatures[{category!r}] must be a number >= 0; got {t!r}")
        try:
            SamplingParams(self.max_new_tokens, 0.0, self.top_p, self.top_k)
        except ValueError as err:
            raise ConfigError(f"mt-bench decoding: {err}") from None
        if self.batch_size < 1:
            raise ConfigError(f"mt-bench decoding: batch_size must be >= 1; got {self.batch_size}")

    def temperature_for(self, category: str) -> float:
        if self.temperature is not None:
            return float(self.temperature)
        table = {**FASTCHAT_TEMPERATURES, **self.temperatures}
        return float(table.get(category, self.default_temperature))

    def record(self) -> dict:
        return {**asdict(self), "table": {**FASTCHAT_TEMPERATURES, **self.temperatures}}


@dataclass
class GeneratedAnswers:
    """What :func:`generate_answers` returns, per question id: the answer of each turn, and the prompt token ids
    and finish reason ("stop" / "length") of each turn."""

    answers: dict[QuestionId, list[str]]
    prompt_ids: dict[QuestionId, list[list[int]]]
    finish_reasons: dict[QuestionId, list[str]]


def conversation(question: Question, answers: list[str]) -> list[dict[str, str]]:
    """The messages the model sees before answering turn ``len(answers) + 1``: each earlier turn and its answer."""
    messages = []
    for turn, answer in zip(question.turns, answers):
        messages += [{"role": "user", "content": turn}, {"role": "assistant", "content": answer}]
    return messages + [{"role": "user", "content": question.turns[len(answers)]}]


def _generate_turn(engine, tokenizer, questions, answers, turn: int, decoding: MTBenchDecoding, out) -> None:
    """Turn ``turn`` (0-based) of every question that has it: one engine call per distinct temperature."""
    from prefopt.data import encode_prompt
    from prefopt.rollout.engine import SamplingParams, derive_seed

    asked = [q for q in questions if len(q.turns) > turn]
    prompt_ids = [encode_prompt(tokenizer, conversation(q, answers[q.question_id])) for q in asked]
    temperatures = [decoding.temperature_for(q.category) for q in asked]
    for temperature in sorted(set(temperatures)):
        rows = [i for i, t in enumerate(temperatures) if t == temperature]
        params = SamplingParams(decoding.max_new_tokens, temperature, decoding.top_p, decoding.top_k)
        seeds = [derive_seed(decoding.seed, "mt_bench", asked[i].question_id, turn) for i in rows]
        batch = engine.generate([prompt_ids[i] for i in rows], 1, params, seeds)
        for sample in batch.samples:
            q = asked[rows[sample.prompt_index]]
            answers[q.question_id].append(sample.text.strip())  # FastChat strips each answer
            out.prompt_ids[q.question_id].append(list(sample.prompt_ids))
            out.finish_reasons[q.question_id].append(sample.finish_reason)


def generate_answers(
    model_name_or_path: str, questions: list[Question], decoding: MTBenchDecoding, trust_remote_code: bool = False
) -> GeneratedAnswers:
    """Every turn of every question, first turns first (see the module docstring)."""
    from prefopt.models import load_causal_lm, load_tokenizer
    from prefopt.rollout.hf import HFRolloutEngine

    tokenizer = load_tokenizer(model_name_or_path, trust_remote_code)
    if not getattr(tokenizer, "chat_template", None):
        raise DataError(
            f"model '{model_name_or_path}': its tokenizer has no chat_template, and MT-Bench's second turn is asked "
            "in a conversation; use a chat model, or give its answers as a model_answer file"
        )
    model = load_causal_lm(model_name_or_path, decoding.dtype, trust_remote_code=trust_remote_code)
    model.to(decoding.device).eval()
    engine = HFRolloutEngine(lambda: contextlib.nullcontext(model), tokenizer, decoding.batch_size)
    return answer_turns(engine, tokenizer, questions, decoding)


def answer_turns(engine, tokenizer, questions: list[Question], decoding: MTBenchDecoding) -> GeneratedAnswers:
    """Every turn of every question with a rollout engine (a model's own, or a training run's), first turns first."""
    answers: dict[QuestionId, list[str]] = {q.question_id: [] for q in questions}
    out = GeneratedAnswers(answers, {q.question_id: [] for q in questions}, {q.question_id: [] for q in questions})
    for turn in range(max((len(q.turns) for q in questions), default=0)):
        _generate_turn(engine, tokenizer, questions, answers, turn, decoding, out)
    return out
