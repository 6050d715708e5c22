"""Arena-Hard-Auto (lmarena/arena-hard-auto): its files and its scoring, both generations, without its code.

- **v0.1** (commit 0489bf3, what the SPPO/INPO/APO papers of 2024 report): Bradley-Terry win rates against gpt-4-0314,
  optionally style-controlled (length, markdown, both).
- **v2.0** (HEAD 196f6b8): mean battle scores per category against that category's baseline, or style-controlled
  Bradley-Terry win probabilities.

Modules: :mod:`.formats` (questions, answers, judgments: read with row-level errors, written in the official
layout), :mod:`.markdown` (answer metadata), :mod:`.scoring` (battles and leaderboards), :mod:`.bt` (the
Bradley-Terry fit), :mod:`.style` (style features). ``scripts/arena_hard_reference.py`` runs
arena-hard-auto's own scorers on the fixture in ``tests/data/arena_hard/``; the tests compare.
"""

from prefopt.eval.arena_hard.bt import BTFit, fit_bradley_terry
from prefopt.eval.arena_hard.formats import (
    LABELS,
    V2_BASELINES,
    Answers,
    Judgment,
    Question,
    answer_row,
    game,
    judgment_row,
    question_row,
    read_answers,
    read_judgments,
    read_questions,
)
from prefopt.eval.arena_hard.markdown import markdown_counts
from prefopt.eval.arena_hard.scoring import Battles, battles, leaderboard
from prefopt.eval.arena_hard.style import STYLE_CONTROLS, style_features
from prefopt.eval.formats import write_jsonl

__all__ = [
    "LABELS",
    "STYLE_CONTROLS",
    "V2_BASELINES",
    "Answers",
    "BTFit",
    "Battles",
    "Judgment",
    "Question",
    "answer_row",
    "battles",
    "fit_bradley_terry",
    "game",
    "judgment_row",
    "leaderboard",
    "markdown_counts",
    "question_row",
    "read_answers",
    "read_judgments",
    "read_questions",
    "style_features",
    "write_jsonl",
]
