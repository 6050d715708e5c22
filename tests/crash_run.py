"""Run `prefopt` and SIGKILL the process at a chosen point (a kill -9 with no chance to clean up).

    python tests/crash_run.py POINT N ARGS...

POINT is where to die, N which occurrence (counting from 1): ``rollout`` (inside the Nth generate call),
``step`` (the Nth optimizer step, after its backward), or ``replace:NAME`` (the Nth atomic write whose target is
named NAME, after the temporary is complete and before it replaces the target: ``iter_001``, ``final``,
``state.json``, ``metrics.jsonl``). A test-only wrapper: prefopt itself has no fault hooks.
"""

import os
import signal
import sys
from pathlib import Path


def die_at(owner, name: str, n: int, matches=lambda *a: True):
    original, seen = getattr(owner, name), [0]

    def wrapped(*args, **kwargs):
        if matches(*args):
            seen[0] += 1
            if seen[0] == n:
                if name != "replace":  # a kill in the middle of the work, not before it
                    original(*args, **kwargs)
                os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)

    setattr(owner, name, wrapped)


def main() -> int:
    point, n, args = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    if point == "rollout":
        from prefopt.rollout.hf import HFRolloutEngine

        die_at(HFRolloutEngine, "generate", n)
    elif point == "step":
        from prefopt.backend import Backend

        die_at(Backend, "step", n)
    elif point.startswith("replace:"):
        target = point.split(":", 1)[1]
        die_at(os, "replace", n, matches=lambda src, dst, *rest: Path(dst).name == target)
    else:
        raise SystemExit(f"unknown kill point {point!r}")
    from prefopt.cli import main as cli

    return cli(args)


if __name__ == "__main__":
    sys.exit(main())
