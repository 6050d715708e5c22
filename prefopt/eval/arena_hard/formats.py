"""Arena-Hard-Auto's JSON-lines files, both generations, read with row-level checks and written in the exact layout.

The generation of a row is told by its keys (``question_id`` → v0.1, ``uid`` → v2.0); a file holds one generation.
Layouts (v0.1: arena-hard-auto commit 0489bf3, ``gen_answer.py``/``gen_judgment.py``/``add_markdown_info.py``;
v2.0: HEAD 196f6b8, the same scripts and ``utils/``):

- **question** v0.1 ``{question_id, category, cluster, turns: [{content}]}``; v2.0 ``{uid, category, subcategory,
  prompt}`` (arena-hard-auto's HEAD also ships the v0.1 questions in this layout, with ``cluster``).
- **answer** v0.1 ``{question_id, answer_id, model_id, choices: [{index, turns: [{content, token_len}]}], tstamp,
  conv_metadata?}``; v2.0 ``{uid, ans_id, model, messages: [system?, {role: user, content}, {role: assistant,
  content: {answer, ...}}], tstamp, metadata}``. The answer is the first turn of the first choice (v0.1) or the last
  message's ``answer`` (v2.0); metadata is :func:`~prefopt.eval.arena_hard.markdown.markdown_counts`' dict.
- **judgment** v0.1 ``{question_id, model, judge, games: [{user_prompt, judgment, score}] × 2}``; v2.0 ``{uid,
  category, judge, model, baseline, games: [{score, judgment: {answer, ...}, prompt: [messages]} or null] × 2}``.
  Game 1 shows the baseline as Assistant A, game 2 swaps the two. ``score`` is the verdict label (``"A>>B"`` ...)
  or null when none was read.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from prefopt.errors import DataError
from prefopt.eval.arena_hard.markdown import METADATA_KEYS
from prefopt.eval.formats import read_jsonl

VERSIONS = ("v0.1", "v2.0")
# Score of Assistant A for each label and whether it is a strong verdict. v0.1 reads the first five only (any other
# label is an unparsed game); v2.0 also reads the mirrored spellings.
LABELS = {
    "A>>B": (1.0, True), "A>B": (1.0, False), "A=B": (0.5, False), "B>A": (0.0, False), "B>>A": (0.0, True),
    "A<<B": (0.0, True), "A<B": (0.0, False), "B=A": (0.5, False), "B<A": (1.0, False), "B<<A": (1.0, True),
}  # fmt: skip
V01_LABELS = ("A>>B", "A>B", "A=B", "B>A", "B>>A")
# v2.0's baseline per question category (utils/judge_utils.py JUDGE_SETTINGS).
V2_BASELINES = {
    "hard_prompt": "o3-mini-2025-01-31",
    "coding": "o3-mini-2025-01-31",
    "math": "o3-mini-2025-01-31",
    "creative_writing": "gemini-2.0-flash-001",
    "arena-hard-v0.1": "gpt-4-0314",
}


@dataclass(frozen=True)
class Question:
    """One question. ``cluster`` is v0.1's topic cluster, ``subcategory`` v2.0's (either may be absent)."""

    uid: str
    prompt: str
    category: str
    version: str
    cluster: str | None = None
    subcategory: str | None = None


@dataclass(frozen=True)
class Answers:
    """One model's answer file: its answers and their metadata (None where the row has none) by question uid.

    v0.1 rows without ``conv_metadata`` but with a turn ``token_len`` get ``{"token_len": n}`` only."""

    model: str
    version: str
    texts: dict[str, str]
    metadata: dict[str, dict | None]


@dataclass(frozen=True)
class Judgment:
    """One judgment row. ``labels`` are game 1's (baseline as A) and game 2's (swapped); None for a null game or no
    verdict. ``category`` and ``baseline`` are v2.0's fields (None at v0.1); ``where`` names the file and row."""

    uid: str
    model: str
    judge: str
    labels: tuple[str | None, str | None]
    version: str
    category: str | None = None
    baseline: str | None = None
    where: str = ""


def _version(row: dict, keys: dict[str, tuple[str, ...]], where: str) -> str:
    for version, needed in keys.items():
        if all(k in row for k in needed):
            return version
    shapes = " or ".join("{" + ", ".join(k) + "}" for k in keys.values())
    raise DataError(f"{where}: expected the fields {shapes}; got {sorted(row)}")


_KINDS = {str: "a non-empty string", dict: "an object", list: "a list", int: "an integer", "text": "a string"}


def _get(value, path: str, where: str, kind: type | str = str, allow_none: bool = False):
    """``value`` checked to be a ``kind`` (str: a non-empty string; "text": any string, an answer may be empty),
    else a one-line error naming ``path``."""
    cls = str if kind == "text" else kind
    ok = isinstance(value, cls) and not isinstance(value, bool) and (kind is not str or value.strip() != "")
    if ok or (allow_none and value is None):
        return value
    raise DataError(f"{where}: field '{path}' must be {_KINDS[kind]}; got {json.dumps(value)[:60]}")


def _dig(row: dict, path: str, where: str, kind: type | str = str, allow_none: bool = False):
    """row[a][b]... for the dotted ``path`` (integer parts index lists), checked like :func:`_get`."""
    value = row
    for part in path.split("."):
        try:
            value = value[int(part)] if part.isdigit() else value[part]
        except (KeyError, IndexError, TypeError):
            raise DataError(f"{where}: field '{path}' is missing") from None
    return _get(value, path, where, kind, allow_none)


def read_questions(path: str | Path) -> list[Question]:
    """A question file (either generation, told by its first row) as :class:`Question` s, uids unique."""
    out, seen = [], {}
    for i, row in enumerate(read_jsonl(path, "question")):
        where = f"question file '{path}' row {i}"
        version = _version(row, {"v0.1": ("question_id", "turns"), "v2.0": ("uid", "prompt")}, where)
        if out and version != out[0].version:
            raise DataError(f"{where}: a {version} row in a {out[0].version} file; give one generation per file")
        if version == "v0.1":
            uid, prompt = _dig(row, "question_id", where), _dig(row, "turns.0.content", where)
        else:
            uid, prompt = _dig(row, "uid", where), _dig(row, "prompt", where)
        if uid in seen:
            raise DataError(f"{where}: question id {uid!r} repeats row {seen[uid]}; ids must be unique")
        seen[uid] = i
        category = _dig(row, "category", where)
        cluster, sub = (_get(row.get(k), k, where, allow_none=True) for k in ("cluster", "subcategory"))
        out.append(Question(uid, prompt, category, version, cluster, sub))
    return out


def question_row(question: Question) -> dict:
    """The question's row in its generation's layout (absent cluster/subcategory fields are left out)."""
    if question.version == "v0.1":
        row = {"question_id": question.uid, "category": question.category, "cluster": question.cluster}
        row["turns"] = [{"content": question.prompt}]
    else:
        row = {"uid": question.uid, "category": question.category, "subcategory": question.subcategory}
        row["cluster"], row["prompt"] = question.cluster, question.prompt
    return {k: v for k, v in row.items() if v is not None}


def _metadata(value, where: str, field: str) -> dict:
    """A metadata dict checked: token_len an int ≥ 0, the markdown fields (if any) objects of ints."""
    meta = _get(value, field, where, dict)
    if _get(meta.get("token_len"), f"{field}.token_len", where, int) < 0:
        raise DataError(f"{where}: field '{field}.token_len' must be >= 0; got {meta['token_len']}")
    for key in METADATA_KEYS[1:]:
        if key in meta:
            for name, count in _get(meta[key], f"{field}.{key}", where, dict).items():
                _get(count, f"{field}.{key}.{name}", where, int)
    return meta


def read_answers(path: str | Path) -> Answers:
    """A model's answer file (either generation): model name (the rows' own field; all rows must agree), answers
    and metadata by question uid. A repeated uid keeps its last row, as arena-hard-auto's loader does."""
    model, version, texts, metadata = None, None, {}, {}
    for i, row in enumerate(read_jsonl(path, "answer")):
        where = f"answer file '{path}' row {i}"
        v = _version(row, {"v0.1": ("question_id", "choices"), "v2.0": ("uid", "messages")}, where)
        if version is not None and v != version:
            raise DataError(f"{where}: a {v} row in a {version} file; give one generation per file")
        version = v
        if v == "v0.1":
            uid, name = _dig(row, "question_id", where), _dig(row, "model_id", where)
            turn = _dig(row, "choices.0.turns.0", where, dict)
            texts[uid] = _get(turn.get("content"), "choices.0.turns.0.content", where, "text")
            if "conv_metadata" in row:
                meta = _metadata(row["conv_metadata"], where, "conv_metadata")
            elif "token_len" in turn:
                meta = _metadata({"token_len": turn["token_len"]}, where, "choices.0.turns.0")
            else:
                meta = None
        else:
            uid, name = _dig(row, "uid", where), _dig(row, "model", where)
            last = len(_dig(row, "messages", where, list)) - 1
            texts[uid] = _dig(row, f"messages.{last}.content.answer", where, "text")
            meta = _metadata(row["metadata"], where, "metadata") if row.get("metadata") is not None else None
        if model is not None and name != model:
            raise DataError(f"{where}: field 'model' is {name!r} but row 0 has {model!r}; give one model per file")
        model, metadata[uid] = name, meta
    return Answers(model, version, texts, metadata)


def answer_row(
    version: str,
    uid: str,
    model: str,
    text: str,
    metadata: dict | None = None,
    *,
    prompt: str | None = None,
    system_prompt: str | None = None,
    answer_id: str | None = None,
    tstamp: float | None = None,
) -> dict:
    """An answer row in ``version``'s layout.

    Args:
        metadata: :func:`markdown_counts`' dict (or just ``{"token_len": n}``); at v0.1 its token_len goes into the
            turn and the whole dict, if it has the markdown counts, into ``conv_metadata``.
        prompt: the question text (v2.0 stores it as the user message; required there).
        system_prompt: v2.0's optional system message before it.
        answer_id, tstamp: default a random hex id and the current time.
    """
    _check_version(version)
    answer_id = answer_id or uuid.uuid4().hex
    tstamp = time.time() if tstamp is None else tstamp
    meta = dict(metadata) if metadata else None
    if version == "v0.1":
        turn = {"content": text} | ({"token_len": meta["token_len"]} if meta and "token_len" in meta else {})
        row = {"question_id": uid, "answer_id": answer_id, "model_id": model}
        row |= {"choices": [{"index": 0, "turns": [turn]}], "tstamp": tstamp}
        if meta and all(k in meta for k in METADATA_KEYS):
            row["conv_metadata"] = meta
        return row
    if prompt is None:
        raise ValueError("answer_row: a v2.0 answer row needs the question's prompt")
    messages = [{"role": "system", "content": system_prompt}] if system_prompt is not None else []
    messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": {"answer": text}}]
    row = {"uid": uid, "ans_id": answer_id, "model": model, "messages": messages, "tstamp": tstamp}
    return row | ({"metadata": meta} if meta else {})


def _check_version(version: str) -> None:
    if version not in VERSIONS:
        raise ValueError(f"version must be one of {', '.join(VERSIONS)}; got {version!r}")


def game(version: str, label: str | None, judgment: str | dict, prompt: str | list[dict]) -> dict:
    """One game in ``version``'s layout.

    Args:
        label: the verdict read from the judgment (``"A>>B"``, ...) or None.
        judgment: the judge's text (v2.0 stores ``{"answer": text}``; a dict is stored as it is).
        prompt: v0.1 the user message (a string); v2.0 the judge's messages (system and user).
    """
    _check_version(version)
    if version == "v0.1":
        if not isinstance(prompt, str) or not isinstance(judgment, str):
            raise ValueError("game: a v0.1 game needs the user prompt and the judgment as strings")
        return {"user_prompt": prompt, "judgment": judgment, "score": label}
    if not isinstance(prompt, list):
        raise ValueError("game: a v2.0 game needs the judge's messages (a list) as its prompt")
    text = {"answer": judgment} if isinstance(judgment, str) else judgment
    return {"score": label, "judgment": text, "prompt": prompt}


def judgment_row(
    version: str, question: Question, model: str, baseline: str, judge: str, games: Sequence[dict | None]
) -> dict:
    """A judgment row in ``version``'s layout from the two games (:func:`game`; v2.0 allows None for a game whose
    judge call failed). v0.1 rows have no baseline field (the baseline is a scoring option there)."""
    _check_version(version)
    if len(games) != 2 or (version == "v0.1" and None in games):
        raise ValueError("judgment_row: give two games (baseline as A, then swapped); None only at v2.0")
    if version == "v0.1":
        return {"question_id": question.uid, "model": model, "judge": judge, "games": list(games)}
    row = {"uid": question.uid, "category": question.category, "judge": judge, "model": model}
    return row | {"baseline": baseline, "games": list(games)}


def read_judgments(paths: str | Path | Sequence[str | Path]) -> list[Judgment]:
    """Judgment rows from one or more files (one generation in all), each with two games. v2.0 labels must be ones
    it reads (:data:`LABELS`); v0.1 keeps any string (others are unparsed games when scored)."""
    rows = []
    for path in [paths] if isinstance(paths, (str, Path)) else paths:
        rows += [(row, f"judgment file '{path}' row {i}") for i, row in enumerate(read_jsonl(path, "judgment"))]
    return parse_judgments(rows)


def parse_judgments(rows: Sequence[tuple[dict, str]]) -> list[Judgment]:
    """Judgment rows already in memory, each with where it comes from (for errors), checked as
    :func:`read_judgments` checks a file's."""
    out: list[Judgment] = []
    for row, where in rows:
        version = _version(row, {"v0.1": ("question_id", "games"), "v2.0": ("uid", "games")}, where)
        if out and version != out[0].version:
            raise DataError(f"{where}: a {version} row after {out[0].version} rows; give one generation")
        out.append(_judgment(row, version, where))
    return out


def _judgment(row: dict, version: str, where: str) -> Judgment:
    games = _dig(row, "games", where, list)
    if len(games) != 2:
        raise DataError(f"{where}: field 'games' must hold 2 games (baseline as A, then swapped); got {len(games)}")
    labels = []
    for g, item in enumerate(games):
        label = None if item is None else _dig(row, f"games.{g}.score", where, str, allow_none=True)
        if version == "v2.0" and label is not None and label not in LABELS:
            raise DataError(f"{where}: field 'games.{g}.score' is {label!r}; expected one of {', '.join(LABELS)}")
        labels.append(label)
    uid = _dig(row, "question_id" if version == "v0.1" else "uid", where)
    model, judge = _dig(row, "model", where), _dig(row, "judge", where)
    if version == "v0.1":
        return Judgment(uid, model, judge, tuple(labels), version, where=where)
    category, baseline = _dig(row, "category", where), _dig(row, "baseline", where)
    return Judgment(uid, model, judge, tuple(labels), version, category, baseline, where)
