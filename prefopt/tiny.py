"""Offline tiny models for the quickstart, the tests and the benchmarks.

Nothing here downloads anything: the BPE tokenizer is trained on a small corpus built into this file, the
model is a randomly initialised Llama. The result is an ordinary Hugging Face folder, so the real loading code
(`AutoModelForCausalLM.from_pretrained(DIR)`) is what the tests exercise.

The chat template renders ``<s><|user|>\\n{content}</s>\\n<|assistant|>\\n`` and the tokenizer adds no special
tokens of its own, so applying the template once yields exactly one BOS (trl#4481 is about the opposite).
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>\n"
    "{{ message['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"]

_WORDS = (
    "the a an of to and in is it that for on with as was by at be this from or have not are but had they "
    "one all were we when your can said there use each which she do how their if will up other about out many "
    "then them these so some her would make like him into time has look two more write go see number no way "
    "could people my than first water been call who oil its now find long down day did get come made may part "
    "rock paper scissors game play win lose draw answer question story poem tell me about explain why what "
    "apple banana river mountain ocean sky star moon sun tree flower bird cat dog fish house city road book "
    "music color red blue green yellow happy sad quick slow big small good bad new old young bright dark "
    "please thanks hello world model language learn teach reason think idea plan simple clear short"
).split()


def build_corpus(num_sentences: int = 2000, seed: int = 0) -> list[str]:
    """A deterministic English-like corpus: the word list in random short sentences, plus chat markers."""
    rng = random.Random(seed)
    lines = []
    for _ in range(num_sentences):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(3, 12))]
        sentence = " ".join(words).capitalize() + rng.choice([".", "?", "!", ","])
        lines.append(sentence)
    lines.append("0 1 2 3 4 5 6 7 8 9 10 11 12 + - * / = ( ) [ ] { } : ; ' \" \\boxed")
    return lines


def build_tiny_tokenizer(vocab_size: int = 512, seed: int = 0):
    """Train a byte-level BPE tokenizer on the built-in corpus and wrap it for transformers.

    Byte-level BPE encodes any text, so prompts outside the corpus never map to an unknown token.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(build_corpus(seed=seed), trainer=trainer)
    # padding_side is only saved when given to the constructor (transformers 5).
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        additional_special_tokens=["<|system|>", "<|user|>", "<|assistant|>"],
        padding_side="left",
        chat_template=CHAT_TEMPLATE,
        model_max_length=2048,
    )


def tiny_llama_config(
    tokenizer,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 2,
    max_position_embeddings: int = 1024,
):
    """A Llama config sized for CPU work. head_dim = hidden_size / num_heads (32 by default: vLLM's CPU minimum)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )


def write_tiny_model(
    out_dir: str | Path,
    head: str = "causal-lm",
    seed: int = 0,
    vocab_size: int = 512,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 2,
) -> Path:
    """Write a tiny random model and its tokenizer to ``out_dir`` and return the path.

    Args:
        head: ``causal-lm`` (a policy, `LlamaForCausalLM`) or ``reward`` (a scalar reward / pairwise preference
            model, `LlamaForSequenceClassification` with one label).
    """
    from transformers import GenerationConfig, LlamaForCausalLM, LlamaForSequenceClassification

    out = Path(out_dir)
    tokenizer = build_tiny_tokenizer(vocab_size=vocab_size, seed=seed)
    config = tiny_llama_config(tokenizer, hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads)
    torch.manual_seed(seed)
    if head == "causal-lm":
        model = LlamaForCausalLM(config)
        model.generation_config = GenerationConfig(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    elif head == "reward":
        config.num_labels = 1
        model = LlamaForSequenceClassification(config)
    else:
        raise ValueError(f"head must be 'causal-lm' or 'reward', got {head!r}")
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


BANDIT_PROMPT = [{"role": "user", "content": "Play."}]


def write_bandit_model(out_dir: str | Path, num_actions: int, seed: int, prompt=None) -> torch.Tensor:
    """A tiny model for matrix-game bandits: its next-token logits at ``prompt`` over the action tokens "A", "B",
    ... are exactly c ~ N(0, 1) (seeded), so π_ref is a non-uniform softmax (a random-init model's is near uniform).

    Each action token's output row w_a is shifted along the prompt's final hidden state h,
    w_a ← w_a + (c_a − w_a·h)·h/|h|², which sets that one logit and leaves every other token's alone.

    Returns:
        c [num_actions], the action logits at the prompt.
    """
    from prefopt.data import encode_prompt
    from prefopt.models import load_causal_lm, load_tokenizer

    write_tiny_model(out_dir)
    model, tokenizer = load_causal_lm(str(out_dir)), load_tokenizer(str(out_dir))
    ids = torch.tensor([encode_prompt(tokenizer, prompt or BANDIT_PROMPT)])
    logits = torch.randn(num_actions, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        h = model.model(ids).last_hidden_state[0, -1]
        for i, c in enumerate(logits):
            row = model.lm_head.weight[tokenizer.convert_tokens_to_ids(chr(ord("A") + i))]
            row += (c - row @ h) * h / (h @ h)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return logits
