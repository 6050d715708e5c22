"""Shared fixtures: tiny models built offline once per test session."""

import os

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
