"""Write eval/sets/quickstart.json: 64 held-out instructions for the quickstart task, in AlpacaEval's format.

New instruction templates over the quickstart topics (scripts/make_quickstart_prompts.py), so no instruction is
a training prompt. Deterministic: re-running it reproduces the committed file byte for byte.

    python eval/make_quickstart_eval.py
"""

from __future__ import annotations

import itertools
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from make_quickstart_prompts import TOPICS, build_prompts  # noqa: E402

TEMPLATES = [
    "Write two sentences about {topic}.",
    "What do you like about {topic}?",
    "Write a limerick about {topic}.",
    "Say something kind about {topic}.",
]
NUM_INSTRUCTIONS = 64


def main() -> None:
    instructions = [t.format(topic=topic) for t, topic in itertools.product(TEMPLATES, TOPICS)]
    random.Random(0).shuffle(instructions)
    instructions = instructions[:NUM_INSTRUCTIONS]
    assert not set(instructions) & set(build_prompts()), "an eval instruction is a training prompt"
    rows = [{"instruction": x, "dataset": "quickstart"} for x in instructions]
    out = ROOT / "eval" / "sets" / "quickstart.json"
    out.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {len(rows)} instructions to {out}")


if __name__ == "__main__":
    main()
