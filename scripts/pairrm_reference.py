"""Score a fixed set of (prompt, a, b) rows with llm-blender's own PairRM code; write the numbers as JSON.

Run inside the llm-blender environment (transformers 4; built by ``scripts/pairrm_env.sh``), on a checkpoint in the
``llm-blender/PairRM-hf`` layout (``prefopt.tiny_pairrm.build_tiny_pairrm`` writes a random one):

    .venv-pairrm/bin/python scripts/pairrm_reference.py --checkpoint DIR --out ref.json

Two reference paths, both llm-blender 0.0.2's code, unpatched:

1. the PairRM-hf path: ``blender_utils.tokenize_pair`` (string prompts) or ``get_pair_from_conv`` + ``tokenize_pair``
   (chat prompts), then ``DebertaV2PairRM.from_pretrained(DIR)``: token ids and the logits l(x, a, b), l(x, b, a);
   every row, one batch of 4 rows at a time (right padding, as ``tokenize_pair`` pads);
2. the Blender path: ``Blender.loadranker`` on the same weights in the original PairRM layout (a ranker
   config.json with PairRM's lengths 1224/412 and the same model.safetensors, read by ``CrossCompareReranker``), then
   ``Blender.compare`` / ``compare_conversations`` with ``return_logits=True`` in modes "[A,B]" (= l(x, a, b)) and
   the default "[A,B]+[B,A]" (= l(x, a, b) − l(x, b, a)). With batch_size 1 (its collator truncates candidates by
   the longest source of the batch) and on texts without a literal "[SEP]" (its collator blanks them) it builds
   the same rows as path 1; the other rows get null here.

Nothing is downloaded: both paths read local folders only. The test ``tests/test_pairrm_parity.py`` scores the
same rows (written into the JSON) with prefopt's PairRMJudge and compares.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

LONG_SOURCE = " ".join(["Tell me a long story about the old city by the river and the people who live there."] * 120)
LONG_A = " ".join(["The sun rose over the mountain and the birds began to sing in the tall green trees."] * 60)
LONG_B = " ".join(["Once upon a time a small dog found a red book in the dark house near the sea."] * 70) + " END"
MULTI_TURN = [
    {"role": "user", "content": "Hi there!"},
    {"role": "assistant", "content": "Hello! How can I help you today?"},
    {"role": "user", "content": "Write a short poem about the moon."},
]
# (prompt, a, b): plain, truncation of each part, empty texts, unicode and whitespace, special-token text, ties,
# single- and multi-turn chats.
ROWS = [
    ("hello world", "Hello! How can I help you today?", "Go away."),
    ("Tell me a story about a cat.", LONG_A, "The cat sat on the mat."),
    (LONG_SOURCE, "A short answer.", "Another short answer, with more words in it."),
    (LONG_SOURCE, LONG_A, LONG_B),
    ("Explain why the sky is blue.", "", "Because of Rayleigh scattering."),
    ("", "", ""),
    (
        "Café? 日本語で答えて 😀",
        "Ça va très bien, merci — “quoted” straße",
        "はい、日本語です。\n\tTabs and  double  spaces",
    ),
    ("What does [SEP] mean?", "It separates [SEP] segments [CLS].", "No idea."),
    ("same", "identical answer", "identical answer"),
    ("  padded prompt  ", "  leading spaces", "trailing spaces  \n"),
    ([{"role": "user", "content": "What is 2 + 2?"}], "4", "five"),
    (MULTI_TURN, "The moon is bright,\nit shines all night.", LONG_B),
    ([{"role": "user", "content": LONG_SOURCE}], LONG_B, "ok"),
]


def conversation(prompt: list[dict], response: str) -> list[dict]:
    """prefopt's chat prompt plus the response, in llm-blender's USER/ASSISTANT roles."""
    return [{"role": m["role"].upper(), "content": m["content"]} for m in prompt] + [
        {"role": "ASSISTANT", "content": response}
    ]


def texts(prompt, a: str, b: str) -> tuple[str, str, str]:
    from llm_blender.blender.blender_utils import get_pair_from_conv

    if isinstance(prompt, str):
        return prompt, a, b
    sources, cands_a, cands_b = get_pair_from_conv([conversation(prompt, a)], [conversation(prompt, b)])
    return sources[0], cands_a[0], cands_b[0]


def hf_path(checkpoint: str, rows) -> list[dict]:
    from llm_blender.blender.blender_utils import tokenize_pair
    from llm_blender.pair_ranker.pairrm import DebertaV2PairRM
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = DebertaV2PairRM.from_pretrained(checkpoint).eval()
    out = []
    for start in range(0, len(rows), 4):
        chunk = [texts(*row) for row in rows[start : start + 4]]
        sources, texts_a, texts_b = ([part[k] for part in chunk] for k in range(3))
        both = {
            "ab": tokenize_pair(tokenizer, sources, texts_a, texts_b),
            "ba": tokenize_pair(tokenizer, sources, texts_b, texts_a),
        }
        with torch.no_grad():
            logits = {order: model(**enc).logits.tolist() for order, enc in both.items()}
        for i in range(len(chunk)):
            ids = {o: enc["input_ids"][i][enc["attention_mask"][i].bool()].tolist() for o, enc in both.items()}
            logit_ab, logit_ba = logits["ab"][i], logits["ba"][i]
            prob = 1.0 / (1.0 + math.exp(logit_ba - logit_ab))  # σ(l(x, a, b) − l(x, b, a))
            out.append({"ids_ab": ids["ab"], "ids_ba": ids["ba"], "logit_ab": logit_ab, "logit_ba": logit_ba})
            out[-1]["prob"] = prob
    return out


def blender_path(checkpoint: str, rows, work: Path) -> list[dict]:
    import llm_blender

    # The original PairRM layout: a RankerConfig as config.json, the same weights beside it.
    ranker_dir = work / "PairRM"
    ranker_dir.mkdir()
    (ranker_dir / "model.safetensors").symlink_to(Path(checkpoint, "model.safetensors").resolve())
    ranker_config = {
        "ranker_type": "pairranker",
        "model_type": "deberta",
        "model_name": str(Path(checkpoint).resolve()),  # backbone config and tokenizer
        "source_maxlength": 1224,
        "candidate_maxlength": 412,
        "n_tasks": 1,
        "drop_out": 0.05,
        "fp16": False,
    }
    (ranker_dir / "config.json").write_text(json.dumps(ranker_config))
    blender = llm_blender.Blender(llm_blender.BlenderConfig(device="cpu", use_tqdm=False))
    blender.loadranker(str(ranker_dir), device="cpu")
    out = []
    for prompt, a, b in rows:
        if any("[SEP]" in t for t in texts(prompt, a, b)):
            out.append({"blender_ab": None, "blender_cmp": None})
            continue
        result = {}
        for key, mode in (("blender_ab", "[A,B]"), ("blender_cmp", "[A,B]+[B,A]")):
            if isinstance(prompt, str):
                value = blender.compare([prompt], [a], [b], batch_size=1, return_logits=True, mode=mode)
            else:
                conv_a, conv_b = [conversation(prompt, a)], [conversation(prompt, b)]
                value = blender.compare_conversations(conv_a, conv_b, batch_size=1, return_logits=True, mode=mode)
            result[key] = float(value[0])
        out.append(result)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="a PairRM-hf-layout folder")
    parser.add_argument("--out", required=True, help="where to write the JSON")
    args = parser.parse_args()
    import importlib.metadata

    import transformers

    rows = [list(row) for row in ROWS]
    with tempfile.TemporaryDirectory() as work:
        reference = zip(hf_path(args.checkpoint, rows), blender_path(args.checkpoint, rows, Path(work)))
        results = [hf | blender for hf, blender in reference]
    versions = {"transformers": transformers.__version__, "torch": torch.__version__}
    versions["llm_blender"] = importlib.metadata.version("llm-blender")
    payload = {"versions": versions, "rows": rows, "results": results}
    Path(args.out).write_text(json.dumps(payload, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
