"""The style metadata of an Arena-Hard-Auto answer: its token count and markdown element counts.

Both generations of arena-hard-auto count markdown the same way (``add_markdown_info.py`` at v0.1 commit 0489bf3,
``utils/add_markdown_info.py`` and ``gen_answer.py`` at v2.0): first the *contents* of every fenced code block are
deleted, then headers, list items and bold spans are counted with multi-line regexes:

- code: every match of ```` ```([^`]*)``` ```` gives its inner text (between the fences); each inner text in turn
  is deleted wherever it occurs in the answer (all occurrences, also outside code blocks), and the fences
  themselves stay. A block whose text holds a backtick is not matched and so not deleted;
- header ``h<k>``: a line that starts with exactly ``k`` ``#`` followed by whitespace (``^#{k}\\s``);
- ordered list item: ``^\\s*\\d+\\.\\s``; unordered: ``^\\s*[-*+]\\s`` (``\\s*`` may span blank lines);
- bold: ``\\*\\*[^*\\n]+\\*\\*`` and ``__[^_\\n]+__`` (non-overlapping, left to right).

``token_len`` is tiktoken's count of the answer (gpt-3.5-turbo's encoding at v0.1, gpt-4o's at v2.0) over the whole
answer, code included. tiktoken's encodings cannot be fetched here, so the caller supplies it: the file's own
metadata when there is one, else a count of the caller's choosing (say the tokenizer of the model judged).
"""

from __future__ import annotations

import re

_CODE_BLOCK = re.compile(r"```([^`]*)```")
_HEADERS = {f"h{k}": re.compile(rf"^#{{{k}}}\s", re.MULTILINE) for k in range(1, 7)}
_ORDERED = re.compile(r"^\s*\d+\.\s", re.MULTILINE)
_UNORDERED = re.compile(r"^\s*[-*+]\s", re.MULTILINE)
_BOLD = {"**": re.compile(r"\*\*[^*\n]+\*\*"), "__": re.compile(r"__[^_\n]+__")}

# The metadata keys, in the files' order. Style control sums each dict's values (e.g. all six header levels).
METADATA_KEYS = ("token_len", "header_count", "list_count", "bold_count")


def strip_code(text: str) -> str:
    """``text`` with each code block's inner text deleted everywhere it occurs (the fences stay; see above)."""
    for inner in _CODE_BLOCK.findall(text):
        text = text.replace(inner, "")
    return text


def markdown_counts(text: str, token_len: int) -> dict:
    """The answer's metadata as arena-hard-auto writes it (``conv_metadata`` at v0.1, ``metadata`` at v2.0).

    Args:
        text: the answer.
        token_len: its token count (see the module docstring), an int ≥ 0.

    Returns:
        ``{"token_len": int, "header_count": {"h1".."h6": int}, "list_count": {"ordered", "unordered": int},
        "bold_count": {"**", "__": int}}``.
    """
    if isinstance(token_len, bool) or not isinstance(token_len, int) or token_len < 0:
        raise ValueError(f"token_len must be an int >= 0; got {token_len!r}")
    body = strip_code(text)
    return {
        "token_len": token_len,
        "header_count": {name: len(rx.findall(body)) for name, rx in _HEADERS.items()},
        "list_count": {"ordered": len(_ORDERED.findall(body)), "unordered": len(_UNORDERED.findall(body))},
        "bold_count": {name: len(rx.findall(body)) for name, rx in _BOLD.items()},
    }


def tokenizer_counts(text: str, tokenizer) -> dict:
    """:func:`markdown_counts` of a generated answer, ``token_len`` counted by ``tokenizer`` (no special tokens)."""
    return markdown_counts(text, len(tokenizer(text, add_special_tokens=False)["input_ids"]))


def style_totals(metadata: dict) -> tuple[float, float, float, float]:
    """(tokens, headers, list items, bold spans): each metadata field, its dict's values summed, as both versions'
    style control reads it."""
    return tuple(
        float(metadata[key] if isinstance(metadata[key], int) else sum(metadata[key].values()))
        for key in METADATA_KEYS
    )
