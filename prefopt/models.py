"""Load policies, tokenizers and judge models from a Hub id or a local folder.

One rule for every loader: a name that looks like a path (it exists, or starts with ``.``, ``/`` or ``~``) is a
local folder and must exist; anything else is a Hub id. Either way a failure becomes one :class:`ModelError`
line that names what was asked for. ``trust_remote_code`` is off unless the config turns it on.

A local file ending in ``.gguf`` loads through transformers' GGUF reader (``from_pretrained(its folder,
gguf_file=its name)``, which needs the ``gguf`` package): the config and the tokenizer from the file's metadata, the
weights dequantised into a plain dense model (``GgufConfig(dequantize=True)``). A model loaded so carries no
quantizer, so it trains and ``save_pretrained`` writes it like any other (without ``dequantize``, transformers keeps
its GGUF quantizer on the model and ``save_pretrained`` refuses it as "not serializable"). docs/real_model.md.
"""

from __future__ import annotations

import os

import torch

from prefopt.errors import ModelError, first_line

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str | None) -> torch.dtype | str:
    """Map a config dtype name to a torch dtype; ``auto`` keeps the checkpoint's own."""
    if name in (None, "auto"):
        return "auto"
    if name not in DTYPES:
        raise ModelError(f"dtype must be one of auto, {', '.join(DTYPES)}; got {name!r}")
    return DTYPES[name]


def check_source(name_or_path: str, what: str) -> str:
    expanded = os.path.expanduser(name_or_path)
    if os.path.exists(expanded):
        return expanded
    if name_or_path.startswith((".", "/", "~")):
        raise ModelError(f"{what} path '{name_or_path}' does not exist")
    return name_or_path


def require_gguf() -> None:
    """A ModelError naming the pip command when the ``gguf`` package (transformers' GGUF reader) is missing."""
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise ModelError("reading a .gguf file needs the gguf package: pip install gguf") from None


def pretrained_source(name_or_path: str, what: str, weights: bool = False) -> tuple[str, dict]:
    """What ``from_pretrained`` is given for ``name_or_path``: the checked source and extra keywords. A ``.gguf`` file
    is its folder with ``gguf_file=`` its name (and, for a model's ``weights``, ``GgufConfig(dequantize=True)``: dense
    weights and no quantizer left on the model, so it trains and saves as any other); a ``.gguf`` name that is no
    local file is a ModelError (transformers reads a GGUF from a folder and a file name, never from a Hub id alone)."""
    source = check_source(name_or_path, what)
    if not source.lower().endswith(".gguf") or os.path.isdir(source):
        return source, {}
    if not os.path.isfile(source):
        raise ModelError(f"{what} '{source}' is not a local file: a .gguf model is read from a file on disk")
    require_gguf()
    extra = {"gguf_file": os.path.basename(source)}
    if weights:
        from transformers import GgufConfig

        extra["quantization_config"] = GgufConfig(dequantize=True)
    return os.path.dirname(os.path.abspath(source)), extra


def _load(loader, name_or_path: str, what: str, weights: bool = False, **kwargs):
    source, extra = pretrained_source(name_or_path, what, weights)
    try:
        return loader.from_pretrained(source, **extra, **kwargs)
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot load {what} '{name_or_path}': {first_line(err)}") from err


def load_model_config(name_or_path: str, what: str, trust_remote_code: bool = False):
    """The model's configuration alone (config.json, or a GGUF file's metadata): what can be checked before any
    weights load."""
    from transformers import AutoConfig

    return _load(AutoConfig, name_or_path, what, trust_remote_code=trust_remote_code)


def position_limit(config) -> int | None:
    """The longest sequence the model's position embeddings cover (None where the config does not say)."""
    limit = getattr(config, "max_position_embeddings", None)
    return limit if isinstance(limit, int) and limit > 0 else None


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False, padding_side: str = "left"):
    """A tokenizer with a pad token (EOS when the checkpoint has none) and the requested padding side."""
    from transformers import AutoTokenizer

    tokenizer = _load(AutoTokenizer, name_or_path, "tokenizer", trust_remote_code=trust_remote_code)
    return prepare_tokenizer(tokenizer, f"tokenizer '{name_or_path}'", padding_side)


def prepare_tokenizer(tokenizer, what: str, padding_side: str = "left"):
    """``tokenizer`` with a pad token (EOS when it has none) and the requested padding side; ``what`` names it in
    the error when it has neither."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:  # responses end at EOS and batches pad: the policy needs one of them at least
            raise ModelError(
                f"{what} has neither a pad token nor an EOS token; set eos_token (and pad_token) "
                "in its tokenizer_config.json"
            )
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    return tokenizer


def load_causal_lm(
    name_or_path: str,
    dtype: str | None = "float32",
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
):
    """A causal LM policy (`AutoModelForCausalLM`)."""
    from transformers import AutoModelForCausalLM

    kwargs = {"dtype": resolve_dtype(dtype), "trust_remote_code": trust_remote_code}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    return _load(AutoModelForCausalLM, name_or_path, "model", weights=True, **kwargs)


def load_sequence_classifier(
    name_or_path: str,
    dtype: str | None = "float32",
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
):
    """A reward or pairwise preference model (`AutoModelForSequenceClassification`), in eval mode."""
    from transformers import AutoModelForSequenceClassification

    kwargs = {"dtype": resolve_dtype(dtype), "trust_remote_code": trust_remote_code}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    model = _load(AutoModelForSequenceClassification, name_or_path, "judge model", weights=True, **kwargs)
    return model.eval().requires_grad_(False)
