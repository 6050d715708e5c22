"""Write configs/data/arithmetic.jsonl: the CPU verifiable-reward task (last digit of a sum).

Each row is ``{"prompt": "a+b", "answer": "d"}`` with a, b in 0..19 and d the last digit of a + b: 400 prompts with
an exact checker (the ``exact_match`` judge, ``answer_column: answer``). Training restricts responses to the ten
digit tokens (``response_choices``), so an untrained model answers right about one time in ten and every prompt has
its own acceptance rate, which is what rejection sampling and GVM's allocation work with. Deterministic: re-running
reproduces the committed file byte for byte (rows shuffled with a fixed seed).

    python scripts/make_arithmetic_task.py [--out configs/data/arithmetic.jsonl]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

SEED = 0
OPERANDS = range(20)


def rows() -> list[dict]:
    out = [{"prompt": f"{a}+{b}", "answer": str((a + b) % 10)} for a in OPERANDS for b in OPERANDS]
    random.Random(SEED).shuffle(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "configs/data/arithmetic.jsonl"))
    args = parser.parse_args()
    Path(args.out).write_text("".join(json.dumps(r) + "\n" for r in rows()))
    print(f"wrote {len(rows())} rows to {args.out}")


if __name__ == "__main__":
    main()
