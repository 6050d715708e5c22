"""Write configs/data/quickstart_preferences.jsonl: 120 preference pairs for the tiny ``sppo_hard`` config.

TRL's explicit-prompt conversational format, one row per line:

    {"prompt": [{"role": "user", "content": ...}],
     "chosen": [{"role": "assistant", "content": ...}], "rejected": [{"role": "assistant", "content": ...}]}

The prompts are the first 120 quickstart prompts. ``chosen`` is a short vowel-rich answer and ``rejected`` a short
consonant-heavy one (both at most 8 words), so prefopt's NonTransitiveJudge, whose transitive term rewards the
share of vowels, prefers chosen on every row (checked here before writing). Deterministic (fixed seed), so
re-running it reproduces the committed file byte for byte:

    python scripts/make_quickstart_preferences.py [--out configs/data/quickstart_preferences.jsonl]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_quickstart_prompts import build_prompts  # noqa: E402

SEED = 0
NUM_ROWS = 120
MAX_WORDS = 8
# Vowel-rich words (vowel share >= 0.6) and consonant-heavy ones (share <= 0.2); most are in the tiny corpus's
# vocabulary or close to it, so the tiny model can learn to emit them.
VOWEL_WORDS = [
    "a",
    "i",
    "aa",
    "oo",
    "eau",
    "you",
    "idea",
    "area",
    "aria",
    "aura",
    "audio",
    "oboe",
    "iota",
    "euro",
    "ooze",
    "aloe",
    "eerie",
    "queue",
    "oui",
    "io",
    "ea",
    "ai",
    "oa",
]
CONSONANT_WORDS = [
    "strength",
    "rhythm",
    "crypts",
    "lynx",
    "twelfths",
    "psst",
    "brr",
    "shh",
    "nth",
    "tsk",
    "glyphs",
    "myth",
    "gym",
    "spry",
    "dry",
    "tryst",
    "schmaltz",
    "crwth",
    "pfft",
    "hmm",
]


def _answer(rng: random.Random, words: list[str]) -> str:
    return " ".join(rng.choice(words) for _ in range(rng.randint(2, 5))).capitalize() + "."


def build_rows(seed: int = SEED) -> list[dict]:
    """One row per prompt: (prompt messages, chosen assistant message, rejected assistant message)."""
    rng = random.Random(seed)
    rows = []
    for text in build_prompts()[:NUM_ROWS]:
        chosen, rejected = _answer(rng, VOWEL_WORDS), _answer(rng, CONSONANT_WORDS)
        rows.append(
            {
                "prompt": [{"role": "user", "content": text}],
                "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": rejected}],
            }
        )
    return rows


def check_rows(rows: list[dict]) -> float:
    """Every chosen is at most MAX_WORDS words and preferred by NonTransitiveJudge; returns the smallest P."""
    from prefopt.judges.synthetic import NonTransitiveJudge

    prompts = [row["prompt"] for row in rows]
    chosen = [row["chosen"][0]["content"] for row in rows]
    rejected = [row["rejected"][0]["content"] for row in rows]
    assert all(len(text.split()) <= MAX_WORDS for text in chosen + rejected)
    probs = NonTransitiveJudge().preference(prompts, chosen, rejected)
    assert bool((probs > 0.5).all()), f"a chosen response is not preferred: min P = {float(probs.min())}"
    return float(probs.min())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_out = Path(__file__).resolve().parent.parent / "configs" / "data" / "quickstart_preferences.jsonl"
    parser.add_argument("--out", type=Path, default=default_out, help="where to write the JSONL file")
    args = parser.parse_args()
    rows = build_rows()
    assert len(rows) == NUM_ROWS
    min_prob = check_rows(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    print(f"wrote {len(rows)} preference pairs to {args.out} (smallest P(chosen > rejected) = {min_prob:.3f})")


if __name__ == "__main__":
    main()
