"""Judge prompts of the ``openai`` judge: where they come from and how they are filled.

- ``alpaca_eval``: read from the installed ``alpaca_eval`` package (no copy here): the annotator config
  ``evaluators_configs/<name>/configs.yaml`` names the prompt file (ChatML markup, turned into messages as
  AlpacaEval does) and the log-prob parser's tokens. Fields ``{instruction}``, ``{output_1}``, ``{output_2}``.
- ``arena_hard``: arena-hard-auto's own config file, read by :mod:`prefopt.judges.api.arena`.
- ``grade``: a file, or prefopt's default below (fields ``{question}``, ``{answer}``, and ``{ref_answer_1}`` for
  graders that compare with a reference answer, as MT-Bench's math/reasoning prompts do).

A file is plain text (one user message; ChatML markup allowed), YAML/JSON with ``system_prompt`` and
``prompt_template`` (a string or a one-element list: arena-hard-auto's config keys), or JSONL with one such
record per line picked by ``name`` (FastChat's ``judge_prompts.jsonl``). Fields are filled in one pass, so an
answer that contains ``{answer_2}`` stays as written (AlpacaEval's sequential replace would substitute it).
"""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from prefopt.errors import JudgeError

FIELDS = {
    "alpaca_eval": ("instruction", "output_1", "output_2"),
    "grade": ("question", "answer"),
}
REFERENCE_FIELD = "ref_answer_1"
DEFAULT_ALPACA_ANNOTATOR = "weighted_alpaca_eval_gpt4_turbo"

DEFAULT_GRADE_SYSTEM = "You grade the answers of AI assistants fairly and strictly."
DEFAULT_GRADE_TEMPLATE = (
    "Grade how well the assistant's answer below serves the user's question: its correctness, helpfulness, "
    "relevance, depth and clarity. Do not let the answer's length sway you. Explain your grade in a few "
    'sentences, then give it as an integer from 1 to 10 in double brackets, for example "Rating: [[6]]".\n\n'
    "[Question]\n{question}\n\n[The Start of the Assistant's Answer]\n{answer}\n[The End of the Assistant's Answer]"
)


@dataclass
class JudgePrompt:
    """Chat messages with ``{field}`` slots, and the fields they must contain."""

    messages: list[dict[str, str]]
    fields: tuple[str, ...]
    source: str  # where it came from, for errors and the results' record

    @property
    def uses_reference(self) -> bool:
        return any("{" + REFERENCE_FIELD + "}" in m["content"] for m in self.messages)

    def check(self) -> JudgePrompt:
        text = "\n".join(m["content"] for m in self.messages)
        missing = [f for f in self.fields if "{" + f + "}" not in text]
        if missing:
            fields = ", ".join("{" + f + "}" for f in missing)
            raise JudgeError(f"judge template {self.source} lacks the field(s) {fields}")
        return self

    def fill(self, **values: str) -> list[dict[str, str]]:
        """The messages with every known ``{field}`` replaced in one pass (other braces are left alone)."""
        pattern = re.compile(r"\{(" + "|".join(map(re.escape, values)) + r")\}")
        return [
            {**m, "content": pattern.sub(lambda match: str(values[match.group(1)]), m["content"])}
            for m in self.messages
        ]


def chatml_messages(text: str) -> list[dict[str, str]]:
    """``<|im_start|>role\\ncontent<|im_end|>`` blocks as messages (content stripped, as AlpacaEval reads them)."""
    messages = []
    for block in text.split("<|im_start|>")[1:]:
        role, _, rest = block.partition("\n")
        messages.append({"role": role.strip().split(" ")[0], "content": rest.split("<|im_end|>", 1)[0].strip()})
    return messages


def alpaca_eval_prompt(name: str | None) -> tuple[JudgePrompt, dict]:
    """The prompt and parser settings of an AlpacaEval log-prob annotator, read from the installed package.

    Returns:
        (prompt, settings) with settings ``numerator`` (the token meaning output_1 wins), ``tokens`` (the
        denominator tokens), ``top_logprobs``, ``token_index`` (which generated token is read) and ``max_tokens``.
    """
    name = name or DEFAULT_ALPACA_ANNOTATOR
    spec = importlib.util.find_spec("alpaca_eval")
    if spec is None or not spec.submodule_search_locations:
        raise JudgeError(
            "judge_mode alpaca_eval reads its prompt from the alpaca_eval package: pip install alpaca-eval"
        )
    configs = Path(spec.submodule_search_locations[0]) / "evaluators_configs"
    config_file = configs / name / "configs.yaml"
    if not config_file.is_file():
        raise JudgeError(f"judge_template_name {name!r}: alpaca_eval has no annotator config {config_file}")
    config = yaml.safe_load(config_file.read_text())[name]
    if config.get("fn_completion_parser") != "logprob_parser":
        raise JudgeError(
            f"judge_template_name {name!r} is not a weighted (log-prob) AlpacaEval annotator; "
            f"use one such as {DEFAULT_ALPACA_ANNOTATOR}"
        )
    parser = config["completion_parser_kwargs"]
    index = parser.get("log_prob_index", "batch")  # "batch": the first token; -1 (the CoT annotator): the last
    completion = config.get("completions_kwargs", {})
    settings = {
        "numerator": parser["numerator_token"],
        "tokens": list(parser["denominator_tokens"]),
        "top_logprobs": int(completion.get("top_logprobs", 5)),
        "token_index": 0 if index == "batch" else int(index),
        "max_tokens": int(completion.get("max_tokens", 1)),
    }
    prompt_file = configs / config["prompt_template"]
    prompt = JudgePrompt(chatml_messages(prompt_file.read_text()), FIELDS["alpaca_eval"], str(prompt_file))
    return prompt.check(), settings


def _template_record(path: Path, name: str | None) -> dict | str:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
        names = [r.get("name") for r in records]
        if name not in names:
            raise JudgeError(
                f"judge_template_file '{path}': no line named {name!r} (judge_template_name); has {names}"
            )
        return records[names.index(name)]
    if path.suffix in (".yaml", ".yml", ".json"):
        record = yaml.safe_load(text)
        if not isinstance(record, dict) or "prompt_template" not in record:
            raise JudgeError(
                f"judge_template_file '{path}': expected a mapping with prompt_template (and system_prompt)"
            )
        return record
    return text


def file_prompt(path: str, name: str | None, mode: str, fields: tuple[str, ...] | None = None) -> JudgePrompt:
    """A judge prompt from the user's file (see the module docstring for the formats); it must hold ``fields``
    (default: those of ``mode``; MT-Bench's second-turn graders have ``{question_1}`` ... ``{answer_2}``)."""
    file = Path(path)
    if not file.is_file():
        raise JudgeError(f"judge_template_file '{path}' does not exist")
    try:
        record = _template_record(file, name)
    except (ValueError, yaml.YAMLError) as err:
        raise JudgeError(f"judge_template_file '{path}': cannot be read ({str(err).splitlines()[0]})") from err
    if isinstance(record, str):
        messages = chatml_messages(record) if "<|im_start|>" in record else [{"role": "user", "content": record}]
    else:
        template = record["prompt_template"]
        template = template[0] if isinstance(template, list) and len(template) == 1 else template
        if not isinstance(template, str):
            raise JudgeError(f"judge_template_file '{path}': prompt_template must be a string or a one-element list")
        system = record.get("system_prompt")
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": template}
        ]
    return JudgePrompt(messages, fields or FIELDS[mode], f"'{path}' ({name})" if name else f"'{path}'").check()


def judge_prompt(mode: str, template_file: str | None, template_name: str | None) -> tuple[JudgePrompt, dict]:
    """The prompt of ``mode`` and its mode settings (the AlpacaEval parser's tokens; empty for the others)."""
    if mode == "alpaca_eval":
        if template_file:
            raise JudgeError(
                "judge_mode alpaca_eval reads its prompt from the alpaca_eval package: unset judge_template_file"
            )
        return alpaca_eval_prompt(template_name)
    if template_file:
        return file_prompt(template_file, template_name, mode), {}
    default = [
        {"role": "system", "content": DEFAULT_GRADE_SYSTEM},
        {"role": "user", "content": DEFAULT_GRADE_TEMPLATE},
    ]
    return JudgePrompt(default, FIELDS["grade"], "prefopt's default grading prompt").check(), {}
