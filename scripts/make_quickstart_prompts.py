"""Write configs/data/quickstart_prompts.jsonl: 240 short conversational prompts, templates × topics.

Deterministic (fixed seed), so re-running it reproduces the committed file byte for byte:

    python scripts/make_quickstart_prompts.py [--out configs/data/quickstart_prompts.jsonl]
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
from pathlib import Path

SEED = 0
TEMPLATES = [
    "Tell me about {topic}.",
    "Write a short poem about {topic}.",
    "Give me three facts about {topic}.",
    "Describe {topic} to a child.",
    "Write a haiku about {topic}.",
    "What is interesting about {topic}?",
    "Explain {topic} in one sentence.",
    "Tell a short story about {topic}.",
]
TOPICS = [
    "the moon",
    "the sun",
    "rivers",
    "the ocean",
    "mountains",
    "the sky",
    "stars",
    "trees",
    "flowers",
    "birds",
    "cats",
    "dogs",
    "fish",
    "a small house",
    "a big city",
    "an old road",
    "books",
    "music",
    "the color blue",
    "the color green",
    "apples",
    "bananas",
    "rock paper scissors",
    "a rainy day",
    "learning a new language",
    "a simple plan",
    "a good idea",
    "water",
    "a happy dog",
    "the first day of school",
]
NUM_PROMPTS = 240


def build_prompts(seed: int = SEED) -> list[str]:
    """Every template applied to every topic, in a seeded shuffled order."""
    prompts = [template.format(topic=topic) for template, topic in itertools.product(TEMPLATES, TOPICS)]
    # Shuffle so that any prefix (a smaller quickstart) mixes templates and topics.
    random.Random(seed).shuffle(prompts)
    return prompts[:NUM_PROMPTS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_out = Path(__file__).resolve().parent.parent / "configs" / "data" / "quickstart_prompts.jsonl"
    parser.add_argument("--out", type=Path, default=default_out, help="where to write the JSONL file")
    args = parser.parse_args()
    prompts = build_prompts()
    assert len(prompts) == NUM_PROMPTS and len(set(prompts)) == NUM_PROMPTS
    args.out.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"prompt": [{"role": "user", "content": text}]}) for text in prompts]
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(lines)} prompts to {args.out}")


if __name__ == "__main__":
    main()
