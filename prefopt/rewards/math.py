r"""Rule reward for math answers (MATH, GSM8K, Numina-Math): extract the final answer, compare it with the reference.

The checker is small and exact. Answers are equal as normalized strings, as exact numbers (:class:`Fraction`;
a relative tolerance only when one side is written as a decimal), or element by element as tuples, intervals,
sets and comma-separated lists. Nothing is evaluated: ``0.1+0.2`` is not ``0.3`` and ``\sqrt{4}`` is not ``2``.
Standard library only (no sympy, no math-verify).
"""

from __future__ import annotations

import itertools
import re
from fractions import Fraction

_BOX = re.compile(r"\\(?:boxed|fbox)(?![a-zA-Z])")
_MARKER = re.compile(r"answer is|answer:|####", re.IGNORECASE)
_LAST_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+)?|-?\.\d+")
_TEXT = re.compile(r"\\(?:text|textbf|textrm|textup|mathrm|mbox)\{([^{}]*)\}")
_SPACING = re.compile(r"\\(?:left|right|displaystyle)(?![a-zA-Z])|\\[!,;: ]")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°")
_SMALL_FRAC = re.compile(r"\\[dt]frac(?![a-zA-Z])")
_ASSIGNMENT = re.compile(r"(?:[a-zA-Z]|\\[a-zA-Z]+)(?:_\{?\w+\}?)?=")
_THOUSANDS = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:e([+-]?\d+))?", re.IGNORECASE)
_RATIO = re.compile(r"([+-]?\d+)/(\d+)")
_FRAC = re.compile(r"([+-]?)(\d*)\\frac(?:\{([^{}]+)\}|(\d))(?:\{([^{}]+)\}|(\d))")
_MAX_EXPONENT = 400  # 1e999999999 would build a billion-digit integer
_OPENERS = ("\\{", "(", "[")
_CLOSERS = ("\\}", ")", "]")


def _braced(text: str, start: int) -> str | None:
    """The content of the group opened by the ``{`` at ``start``, or None when it never closes."""
    depth, i = 0, start
    while i < len(text):
        char = text[i]
        if char == "\\":  # \{ and \} are literal braces, not grouping
            i += 2
            continue
        depth += (char == "{") - (char == "}")
        if depth == 0:
            return text[start + 1 : i]
        i += 1
    return None


def _box_content(text: str, end: int) -> str | None:
    """What follows a ``\boxed`` ending at ``end``: a braced group, or one token (``\boxed 5``)."""
    rest = text[end:].lstrip()
    if rest.startswith("{"):
        content = _braced(rest, 0)
    else:
        token = re.match(r"[^\s$]+", rest)
        content = token.group(0) if token else None
    if content is None:
        return None
    return content.strip() or None


def extract_answer(response: str, *, fallback_last_number: bool = False) -> str | None:
    r"""The final answer in ``response``, or None when it states none.

    The last ``\boxed{...}``/``\fbox{...}`` wins (braces matched, so nesting is kept); a truncated last box gives
    None rather than an earlier guess. Without a box: the rest of the line after the last "answer is",
    "Answer:" or "####" (GSM8K), less a trailing period. With ``fallback_last_number``, the last number in the
    text is used when nothing else is found.

    >>> extract_answer(r"so $\boxed{\frac{1}{2}}$.")
    '\\frac{1}{2}'
    >>> extract_answer("Adding up, the answer is 42.\nDone")
    '42'
    >>> extract_answer("I got 7 apples.") is None, extract_answer("I got 7 apples.", fallback_last_number=True)
    (True, '7')
    """
    boxes = list(_BOX.finditer(response))
    if boxes:
        return _box_content(response, boxes[-1].end())
    markers = list(_MARKER.finditer(response))
    if markers:
        line = response[markers[-1].end() :].split("\n", 1)[0]
        answer = line.strip().strip(":*").strip().removesuffix(".").strip()
        if answer:
            return answer
    if fallback_last_number:
        numbers = _LAST_NUMBER.findall(response)
        return numbers[-1] if numbers else None
    return None


def normalize_answer(text: str) -> str:
    r"""The canonical string form of an answer, for comparison.

    Drops ``$``, ``\left``/``\right``, LaTeX spacing (``\!``, ``\,``, ``\ ``), ``\text{}``-style wrappers (their
    content stays), degree signs, all whitespace, one trailing period and a leading single-variable assignment
    (``x = 5``); ``\dfrac``/``\tfrac`` become ``\frac``, ``\%`` becomes ``%`` and thousands separators go from a
    lone number (``1,234``, not ``(1,234)``).

    >>> normalize_answer(r"$x = \dfrac{1}{2}$")
    '\\frac{1}{2}'
    >>> normalize_answer("1,234"), normalize_answer(r"\text{5 cm}"), normalize_answer(r"90^\circ")
    ('1234', '5cm', '90')
    """
    text = text.replace("\\$", "").replace("$", "")
    previous = None
    while previous != text:  # nested wrappers, innermost first
        previous, text = text, _TEXT.sub(r"\1", text)
    text = _SPACING.sub("", text)
    text = _DEGREES.sub("", text)
    text = _SMALL_FRAC.sub(r"\\frac", text)
    text = text.replace("\\%", "%").replace("\u2212", "-")
    text = re.sub(r"\s+", "", text).removesuffix(".")
    if text.count("=") == 1 and _ASSIGNMENT.match(text):
        text = text.split("=", 1)[1]
    if _THOUSANDS.fullmatch(text):
        text = text.replace(",", "")
    return text


def _plain_number(text: str) -> Fraction | None:
    """An integer, decimal or scientific literal as an exact Fraction."""
    match = _DECIMAL.fullmatch(text)
    if match is None or (match.group(1) and abs(int(match.group(1))) > _MAX_EXPONENT):
        return None
    return Fraction(text)


def parse_number(text: str) -> Fraction | None:
    r"""The exact value of an answer that is a number, else None.

    Accepts integers, decimals (``.5``, ``-3.25``), scientific ``1e-3``, ratios ``3/4``, ``\frac{3}{4}``,
    ``\frac34``, signed and mixed fractions (``-\frac{1}{2}``, ``1\frac{1}{2}``). A percent sign is dropped
    (``50%`` gives 50); :func:`answers_match` also tries the value over 100. Expressions are not evaluated.

    >>> parse_number(r"-\frac{3}{4}"), parse_number("1e-3"), parse_number("0.1+0.2")
    (Fraction(-3, 4), Fraction(1, 1000), None)
    """
    text = normalize_answer(text).removesuffix("%")
    ratio = _RATIO.fullmatch(text)
    if ratio:
        return Fraction(int(ratio.group(1)), int(ratio.group(2))) if int(ratio.group(2)) else None
    frac = _FRAC.fullmatch(text)
    if frac is None:
        return _plain_number(text)
    sign, whole = frac.group(1), frac.group(2)
    numerator, denominator = (
        _plain_number(frac.group(3) or frac.group(4)),
        _plain_number(frac.group(5) or frac.group(6)),
    )
    if numerator is None or not denominator:
        return None
    value = int(whole or 0) + numerator / denominator
    return -value if sign == "-" else value


def _numbers_match(prediction: str, reference: str, rel_tol: float) -> bool:
    """Equal values (either side may be a percent); a relative tolerance only when one is written as a decimal."""
    candidates = []
    for text in (prediction, reference):
        value = parse_number(text)
        if value is None:
            return False
        candidates.append([value, value / 100] if text.endswith("%") else [value])
    decimal = any(
        _DECIMAL.fullmatch(text.removesuffix("%")) and re.search(r"[.eE]", text) for text in (prediction, reference)
    )
    tolerance = Fraction(rel_tol)
    for a, b in itertools.product(*candidates):
        if a == b or (decimal and abs(a - b) <= tolerance * max(abs(a), abs(b))):
            return True
    return False


def _split_top_level(text: str) -> list[str] | None:
    """``text`` split at commas outside any bracket, or None when its brackets do not balance."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += (char in "([{") - (char in ")]}")
        if depth < 0:
            return None
        if char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts if depth == 0 else None


def _sequence(text: str) -> tuple[str, list[str]] | None:
    """The bracket pair (``"(]"``, ``""`` for a bare list) and elements of a tuple, interval, set or list."""
    opener = next((o for o in _OPENERS if text.startswith(o)), None)
    closer = next((c for c in _CLOSERS if text.endswith(c)), None)
    if opener and closer and len(text) > len(opener) + len(closer):
        elements = _split_top_level(text[len(opener) : -len(closer)])
        if elements is not None:
            return opener + closer, elements
    elements = _split_top_level(text)
    return ("", elements) if elements is not None and len(elements) > 1 else None


def answers_match(prediction: str, reference: str, rel_tol: float = 1e-6) -> bool:
    r"""Whether two answers are the same: as normalized strings, as numbers, or element by element.

    Numbers compare exactly, or within ``rel_tol`` (relative) when one side is written as a decimal, so
    ``1000000`` and ``1000001`` differ. Tuples, intervals and sets need the same brackets and length, lists the
    same order.

    >>> answers_match(r"\frac{1}{2}", "0.5"), answers_match("(1, 2)", r"\left(1,2\right)")
    (True, True)
    >>> answers_match("1/3", "0.33"), answers_match("0.1+0.2", "0.3")
    (False, False)
    """
    prediction, reference = normalize_answer(prediction), normalize_answer(reference)
    if not prediction or not reference:
        return False
    if prediction == reference or _numbers_match(prediction, reference, rel_tol):
        return True
    predicted, expected = _sequence(prediction), _sequence(reference)
    if predicted is None or expected is None or predicted[0] != expected[0] or len(predicted[1]) != len(expected[1]):
        return False
    return all(answers_match(a, b, rel_tol) for a, b in zip(predicted[1], expected[1]))


def _reference_answer(reference: str) -> str | None:
    """The answer in a reference: extracted when it has a box or a GSM8K ``####`` line, else the whole text."""
    if _BOX.search(reference) or "####" in reference:
        return extract_answer(reference)
    return reference


def math_reward(prompts: list, responses: list[str], references: list[str]) -> list[float]:
    r"""1.0 per response whose extracted final answer matches its reference answer, else 0.0.

    ``prompts`` is unused (it keeps the ``f(prompts, responses, ...)`` shape of a Python reward judge). A
    response with no extractable answer scores 0.0.

    >>> math_reward(["q1", "q2"], [r"so \boxed{0.5}", "no idea"], [r"\frac12", "3"])
    [1.0, 0.0]
    """
    if not len(prompts) == len(responses) == len(references):
        raise ValueError(
            f"math_reward: {len(prompts)} prompts, {len(responses)} responses and {len(references)} references; "
            "expected one of each per row"
        )
    rewards = []
    for response, reference in zip(responses, references):
        answer, expected = extract_answer(response), _reference_answer(reference)
        rewards.append(1.0 if answer is not None and expected is not None and answers_match(answer, expected) else 0.0)
    return rewards
