"""An offline, randomly initialised, PairRM-shaped checkpoint (for the pairrm judge's tests and docs).

The folder has what ``llm-blender/PairRM-hf`` has, at toy size: ``config.json`` (a DeBERTa-v3-style
``DebertaV2Config`` plus PairRM's keys ``n_tasks``, ``drop_out``, ``source_prefix_id``, ``cand1_prefix_id``,
``cand2_prefix_id``, ``cand_prefix_id``), ``model.safetensors`` with llm-blender's parameter names
(``pretrained_model.*``, ``head_layer.*``), and a DeBERTa-v3-style tokenizer in ``tokenizer.json``: a unigram model
counted here from :func:`prefopt.tiny.build_corpus` with [PAD] [CLS] [SEP] [UNK] as ids 0-3, [MASK] after the pieces,
then the four markers as added tokens, as llm-blender's ``CrossCompareCollator`` adds them (``<|source|>``,
``<|candidate1|>``, ``<|candidate2|>``, ``<|candidate|>``); ``[CLS] x [SEP]`` around each text. The same files load
in transformers 4 (llm-blender's ``DebertaV2PairRM.from_pretrained``) and in prefopt's own loader, which is what
``tests/test_pairrm_parity.py`` relies on.

The weights are drawn wider than a fresh model's (std 0.02 would make every logit ~1e-3): each matrix has std
1/sqrt(fan_in) and the head's last layer is 8 times steeper, so the logits are of order one and a parity check at
1e-5 means something.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import torch

from prefopt.tiny import build_corpus

SPECIAL = ["[PAD]", "[CLS]", "[SEP]", "[UNK]"]
MARKER_TOKENS = ["<|source|>", "<|candidate1|>", "<|candidate2|>", "<|candidate|>"]
# A line of non-ASCII text in the training corpus, so that some of it maps to pieces and the rest to [UNK].
_UNICODE_LINE = "Café naïve résumé déjà vu — “quoted” 日本語のテキスト 中文 Ελληνικά straße ü ñ"


def _unigram_vocab() -> list[tuple[str, float]]:
    """Pieces and log-probabilities counted from the built-in corpus: every word as one piece, every character too.

    Counted by hand rather than with ``tokenizers``' UnigramTrainer, whose result changes from run to run.
    """
    words, chars = Counter(), Counter()
    for line in build_corpus() + [_UNICODE_LINE]:
        for word in line.split():
            words["▁" + word.strip(".,?!").lower()] += 1
            chars.update("▁" + word)
    total_words, total_chars = sum(words.values()), sum(chars.values())
    # A character costs more than a word (−4 nats), so whole words win the unigram's best split.
    pieces = [(w, math.log(n / total_words)) for w, n in sorted(words.items()) if len(w) > 1]
    pieces += [(c, math.log(n / total_chars) - 4.0) for c, n in sorted(chars.items())]
    return [(token, 0.0) for token in SPECIAL] + pieces


def build_pairrm_tokenizer():
    """A DeBERTa-v3-shaped ``tokenizers.Tokenizer`` (unigram + metaspace) with PairRM's markers added."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    tok = Tokenizer(models.Unigram(_unigram_vocab(), unk_id=SPECIAL.index("[UNK]"), byte_fallback=False))
    tok.normalizer = normalizers.Sequence([normalizers.Strip(), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.add_special_tokens([AddedToken(token, special=True) for token in SPECIAL + ["[MASK]"]])
    tok.add_tokens([AddedToken(marker, special=False) for marker in MARKER_TOKENS])
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 1), ("[SEP]", 2)]
    )
    return tok


def _widen(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Redraw the weights: matrices N(0, 1/fan_in), biases N(0, 0.1²), norms 1 + N(0, 0.1²)."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() >= 2:
                param.copy_(torch.randn(param.shape, generator=generator) / math.sqrt(param.shape[-1]))
            elif "LayerNorm.weight" in name:
                param.copy_(1.0 + 0.1 * torch.randn(param.shape, generator=generator))
            else:
                param.copy_(0.1 * torch.randn(param.shape, generator=generator))
        # The two candidates' marker states are close; a steeper last layer spreads P(y ≻ y') over (0, 1).
        model.head_layer[4].weight.mul_(8.0)


def build_tiny_pairrm(
    path: str | Path, seed: int = 0, hidden_size: int = 64, num_layers: int = 2, num_heads: int = 4
) -> Path:
    """Write a random PairRM-hf-layout checkpoint to ``path`` (created) and return it.

    Args:
        path: output folder.
        seed: the weights' seed (the tokenizer is deterministic).
        hidden_size, num_layers, num_heads: the DeBERTa encoder's size.
    """
    from safetensors.torch import save_file
    from transformers import DebertaV2Config

    from prefopt.judges.pairrm import PairRMModel

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_pairrm_tokenizer()
    marker_ids = [tok.token_to_id(m) for m in MARKER_TOKENS]
    # DeBERTa-v3's switches (relative attention, c2p/p2c, no absolute positions) at toy size.
    config = DebertaV2Config(
        vocab_size=tok.get_vocab_size(),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=4 * hidden_size,
        max_position_embeddings=512,
        relative_attention=True,
        position_buckets=256,
        max_relative_positions=-1,
        pos_att_type=["p2c", "c2p"],
        position_biased_input=False,
        norm_rel_ebd="layer_norm",
        share_att_key=True,
        type_vocab_size=0,
        layer_norm_eps=1e-7,
        pad_token_id=0,
    )
    extra = dict(zip(["source_prefix_id", "cand1_prefix_id", "cand2_prefix_id", "cand_prefix_id"], marker_ids))
    config.update({"n_tasks": 1, "drop_out": 0.05, "sep_token_id": 2, "architectures": ["DebertaV2PairRM"], **extra})
    model = PairRMModel(config)
    _widen(model, torch.Generator().manual_seed(seed))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out / "model.safetensors", {"format": "pt"})
    raw = config.to_dict()
    raw.pop("transformers_version", None)
    (out / "config.json").write_text(json.dumps(raw, indent=2, sort_keys=True) + "\n")
    tok.save(str(out / "tokenizer.json"))
    tokenizer_config = {
        "tokenizer_class": "DebertaV2Tokenizer",
        "do_lower_case": False,
        "split_by_punct": False,
        **{f"{k}_token": v for k, v in [("bos", "[CLS]"), ("eos", "[SEP]"), ("cls", "[CLS]"), ("sep", "[SEP]")]},
        **{f"{k}_token": v for k, v in [("pad", "[PAD]"), ("unk", "[UNK]"), ("mask", "[MASK]")]},
    }
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")
    return out
