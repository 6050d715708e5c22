"""prefopt's PairRM judge against llm-blender's own code, on a random PairRM-shaped checkpoint.

``scripts/pairrm_reference.py`` runs in the llm-blender environment (transformers 4, ``.venv-pairrm``, built by
``bash scripts/pairrm_env.sh``, which then runs this file) and writes llm-blender's token ids, logits and
``Blender.compare`` results for its fixed rows; here prefopt (transformers 5) scores the same rows on the same
checkpoint. Skipped when that environment is absent (``PAIRRM_ENV`` names another place).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
ENV = Path(os.environ.get("PAIRRM_ENV", ROOT / ".venv-pairrm"))
TOL = 1e-5

pytestmark = pytest.mark.skipif(  # the marker is the env script's last step: a half-built environment is skipped
    not (ENV / ".pairrm-env-built").exists(),
    reason=f"no llm-blender environment at {ENV} (bash scripts/pairrm_env.sh)",
)


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """(reference JSON, prefopt's judge) on one tiny checkpoint."""
    from prefopt.judges.pairrm import PairRMJudge
    from prefopt.tiny_pairrm import build_tiny_pairrm

    work = tmp_path_factory.mktemp("pairrm")
    checkpoint = build_tiny_pairrm(work / "ckpt", seed=0)
    out = work / "reference.json"
    cmd = [str(ENV / "bin" / "python"), str(ROOT / "scripts" / "pairrm_reference.py")]
    done = subprocess.run(
        [*cmd, "--checkpoint", str(checkpoint), "--out", str(out)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text()), PairRMJudge(str(checkpoint), batch_size=4)


def test_token_ids_match(scored):
    reference, judge = scored
    for row, expected in zip(reference["rows"], reference["results"], strict=True):
        prompt, a, b = row
        assert judge.encode(prompt, a, b)[0] == expected["ids_ab"], row
        assert judge.encode(prompt, b, a)[0] == expected["ids_ba"], row
    lengths = [len(r["ids_ab"]) for r in reference["results"]]
    assert max(lengths) == 2048 and 1224 < sorted(lengths)[-2] < 2048  # the truncation rows do truncate


def test_logits_and_probabilities_match(scored):
    reference, judge = scored
    prompts, responses_a, responses_b = (list(col) for col in zip(*reference["rows"]))
    results = reference["results"]
    logit_ab = judge.logits(prompts, responses_a, responses_b).double()
    logit_ba = judge.logits(prompts, responses_b, responses_a).double()
    probs = judge.preference(prompts, responses_a, responses_b)
    want = {k: torch.tensor([r[k] for r in results], dtype=torch.float64) for k in ("logit_ab", "logit_ba", "prob")}
    diffs = {
        "logit": max((logit_ab - want["logit_ab"]).abs().max(), (logit_ba - want["logit_ba"]).abs().max()).item(),
        "prob": (probs - want["prob"]).abs().max().item(),
    }
    # Blender.compare: mode "[A,B]" is l(x, a, b); the default "[A,B]+[B,A]" is l(x, a, b) − l(x, b, a), whose σ
    # is the probability.
    blender = [(i, r) for i, r in enumerate(results) if r["blender_cmp"] is not None]
    assert len(blender) >= len(results) - 1
    diffs["blender_ab"] = max(abs(logit_ab[i].item() - r["blender_ab"]) for i, r in blender)
    diffs["blender_prob"] = max(abs(probs[i].item() - 1 / (1 + math.exp(-r["blender_cmp"]))) for i, r in blender)
    print(f"\n[pairrm parity] {len(results)} rows, llm-blender {reference['versions']}: max abs diff {diffs}")
    assert all(value <= TOL for value in diffs.values()), diffs
    assert want["prob"].min() < 0.3 and want["prob"].max() > 0.7  # the rows are not all near a tie


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q", "-s"]))
