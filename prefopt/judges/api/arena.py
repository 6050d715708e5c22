"""Arena-Hard-Auto's judge settings, read from the user's arena-hard-auto checkout (no copy here), and its
verdict reading.

Two generations of arena-hard-auto's settings are read as they are:

- **v0.1** (``config/judge_config.yaml``, what the 2024 papers used): ``system_prompt``, ``prompt_template`` (a
  one-element list) with fields ``{question_1}``, ``{answer_1}``, ``{answer_2}``, ``regex_pattern`` and
  ``number_of_judgment_attempts``. A verdict is read from the judgment so far: no label → ask again in the same
  conversation (up to the number of attempts), several different labels → no verdict.
- **v2.0** (``config/arena-hard-v2.0.yaml``): ``prompt_template`` with ``{QUESTION}``, ``{ANSWER_A}``,
  ``{ANSWER_B}`` and ``regex_patterns``; one attempt; the verdict is the last match of the first pattern that
  matches the upper-cased judgment. Its system prompts live in ``utils/judge_utils.py`` (``JUDGE_SETTINGS``, one
  per question category, e.g. creative writing has its own): read from the checkout beside the YAML file, by
  evaluating that module's literal assignments (never importing or running it).

Any other YAML/JSON with ``system_prompt`` and ``prompt_template`` (either field spelling) is read with the v0.1
rules unless it names ``regex_patterns``; a file of another suffix is plain text: the user message, no system prompt,
v0.1's rules.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from prefopt.errors import JudgeError

# Every label arena-hard-auto's scorers accept, as the canonical 5-way verdict it means (v2.0 also reads the
# mirrored spellings; v0.1 drops them as unparsed battles).
LABELS = {
    "A>>B": "A>>B",
    "A>B": "A>B",
    "A=B": "A=B",
    "B>A": "B>A",
    "B>>A": "B>>A",
    "B<<A": "A>>B",
    "B<A": "A>B",
    "B=A": "A=B",
    "A<B": "B>A",
    "A<<B": "B>>A",
}
V2_FIELDS = {"QUESTION": "question_1", "ANSWER_A": "answer_1", "ANSWER_B": "answer_2"}
FIELDS = ("question_1", "answer_1", "answer_2")
DEFAULT_PATTERN = r"\[\[([AB<>=]+)\]\]"


@dataclass
class ArenaSettings:
    """How an arena-hard-auto judge is prompted and read.

    Attributes:
        template: the user message, fields ``{question_1}``, ``{answer_1}`` (Assistant A), ``{answer_2}``.
        system_prompts: category → system prompt; ``""`` is the one used for a category not listed.
        patterns: the verdict regexes, tried in order.
        rule: ``unique`` (v0.1: exactly one distinct label) or ``last`` (v2.0: the last match).
        attempts: judgment attempts when no label is found (v0.1: 2; v2.0: 1).
        baselines: category → baseline model, where the settings name them (v2.0's JUDGE_SETTINGS).
    """

    template: str
    system_prompts: dict[str, str]
    patterns: list[re.Pattern] = field(default_factory=lambda: [re.compile(DEFAULT_PATTERN)])
    rule: str = "unique"
    attempts: int = 2
    baselines: dict[str, str] = field(default_factory=dict)
    source: str = ""

    def messages(self, question: str, answer_a: str, answer_b: str, category: str | None = None) -> list[dict]:
        """The judge's conversation for one game, fields filled in one pass (an answer containing ``{answer_2}``
        stays as written)."""
        values = {"question_1": question, "answer_1": answer_a, "answer_2": answer_b}
        user = re.sub(r"\{(question_1|answer_1|answer_2)\}", lambda m: values[m.group(1)], self.template)
        system = self.system_prompts.get(category or "", self.system_prompts.get(""))
        return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]

    def verdict(self, judgment: str) -> str | None:
        """The label in ``judgment`` under this version's rule (None: unreadable); labels outside :data:`LABELS`
        are unreadable."""
        if self.rule == "last":
            for pattern in self.patterns:
                matches = [m.strip("\n") for m in pattern.findall(judgment.upper()) if m]
                if matches:
                    return matches[-1] if matches[-1] in LABELS else None
            return None
        labels = {m.strip("\n") for m in self.patterns[0].findall(judgment) if m}
        return labels.pop() if len(labels) == 1 and next(iter(labels)) in LABELS else None

    def has_label(self, judgment: str) -> bool:
        """Whether any label was given (v0.1 asks again only when none was)."""
        return any(m for p in self.patterns for m in p.findall(judgment))


def _literals(path: Path) -> dict:
    """The module-level assignments of ``path`` whose values are literals (strings, numbers, dicts, lists, and
    names of earlier such assignments), evaluated without running the module."""
    scope: dict = {}

    def value(node):
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return scope[node.id]
        if isinstance(node, ast.Dict):
            return {value(k): value(v) for k, v in zip(node.keys, node.values)}
        if isinstance(node, (ast.List, ast.Tuple)):
            return [value(v) for v in node.elts]
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return value(node.left) + value(node.right)
        raise ValueError(type(node).__name__)

    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                scope[node.targets[0].id] = value(node.value)
            except (ValueError, KeyError, TypeError):
                continue
    return scope


def _v2_system_prompts(path: Path, bench: str | None) -> tuple[dict[str, str], dict[str, str]]:
    """System prompts and baselines per category from the checkout's utils/judge_utils.py."""
    module = path.resolve().parent.parent / "utils" / "judge_utils.py"
    if not module.is_file():
        raise JudgeError(
            f"judge_template_file '{path}' has no system_prompt, and there is no arena-hard-auto "
            f"utils/judge_utils.py beside it ({module}) to read JUDGE_SETTINGS from"
        )
    settings = _literals(module).get("JUDGE_SETTINGS")
    if not isinstance(settings, dict) or not settings:
        raise JudgeError(f"{module}: no literal JUDGE_SETTINGS dict to read the judge's system prompts from")
    prompts = {c: s["system_prompt"] for c, s in settings.items() if isinstance(s, dict) and "system_prompt" in s}
    baselines = {c: s["baseline"] for c, s in settings.items() if isinstance(s, dict) and "baseline" in s}
    default = "hard_prompt" if bench != "arena-hard-v0.1" and "hard_prompt" in prompts else bench
    prompts[""] = prompts.get(default) or next(iter(prompts.values()))
    return prompts, baselines


def read_arena_settings(path: str) -> ArenaSettings:
    """An arena-hard-auto judge config (v0.1 or v2.0, see the module docstring) as :class:`ArenaSettings`."""
    file = Path(path)
    if not file.is_file():
        raise JudgeError(f"judge_template_file '{path}' does not exist")
    text = file.read_text(encoding="utf-8")
    if file.suffix not in (".yaml", ".yml", ".json"):  # plain text: the user message, v0.1's rules, no system prompt
        record = {"prompt_template": text, "system_prompt": None, "plain": True}
    else:
        try:
            record = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise JudgeError(f"judge_template_file '{path}': cannot be read ({str(err).splitlines()[0]})") from err
    if not isinstance(record, dict) or "prompt_template" not in record:
        raise JudgeError(f"judge_template_file '{path}': expected a mapping with prompt_template (and system_prompt)")
    template = record["prompt_template"]
    template = template[0] if isinstance(template, list) and len(template) == 1 else template
    if not isinstance(template, str):
        raise JudgeError(f"judge_template_file '{path}': prompt_template must be a string or a one-element list")
    for upper, lower in V2_FIELDS.items():
        template = template.replace("{" + upper + "}", "{" + lower + "}")
    missing = [f for f in FIELDS if "{" + f + "}" not in template]
    if missing:
        names = ", ".join("{" + f + "}" for f in missing)
        raise JudgeError(f"judge template '{path}' lacks the field(s) {names} (or {{QUESTION}}/{{ANSWER_A}}/...)")
    v2 = "regex_patterns" in record
    if record.get("system_prompt") or record.get("plain"):
        prompts, baselines = {"": record["system_prompt"]}, {}
    else:
        prompts, baselines = _v2_system_prompts(file, record.get("bench_name"))
    if record.get("baseline_model"):
        baselines.setdefault("", record["baseline_model"])
    raw = record.get("regex_patterns") if v2 else [record.get("regex_pattern") or DEFAULT_PATTERN]
    try:
        patterns = [re.compile(p) for p in raw]
    except (re.error, TypeError) as err:
        raise JudgeError(f"judge_template_file '{path}': bad regex pattern ({err})") from None
    attempts = int(record.get("number_of_judgment_attempts", 1 if v2 else 2))
    return ArenaSettings(template, prompts, patterns, "last" if v2 else "unique", max(attempts, 1), baselines, path)
