"""`prefopt export`: the exported folder loads with plain transformers (or peft) and gives the trained policy's
logits, for full fine-tuning, LoRA and LoRA-GA; the model card; the push through a local stand-in for the Hub."""

import json
import os
import subprocess
import sys

import pytest
import torch
from fakehub import FakeHub
from helpers import REPO, prefopt, train
from safetensors.torch import load_file

IDS = [[1, 17, 42, 99, 5, 230, 64, 8]]
# Runs in a fresh interpreter without prefopt: what a user of the exported folder has. Arguments: OUT, then pairs
# FOLDER BASE (BASE "" for a merged folder, else the base model a peft adapter goes on).
PLAIN_LOAD = """
import sys, torch
from transformers import AutoModelForCausalLM
out, pairs = sys.argv[1], sys.argv[2:]
logits = []
for folder, base in zip(pairs[::2], pairs[1::2]):
    if base:
        from peft import PeftModel
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), folder)
    else:
        model = AutoModelForCausalLM.from_pretrained(folder)
    with torch.no_grad():
        logits.append(model.eval()(torch.tensor(IDS)).logits)
torch.save(logits, out)
assert not [m for m in sys.modules if m.startswith("prefopt")]
""".replace("IDS", repr(IDS))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir):
    """Two-iteration SPPO runs by adapter setting (an in-training evaluation included), trained when first asked."""
    root = tmp_path_factory.mktemp("runs")

    class Runs(dict):
        def __missing__(self, adapter):
            train(tiny_model_dir, root / adapter, "--num_iterations", 2, "--adapter", adapter, "--lora_r", 4,
                  "--eval_num_prompts", 8, "--learning_rate", 5e-2)  # fmt: skip
            self[adapter] = root / adapter
            return self[adapter]

    return Runs()


def trained_logits(run, iteration: int) -> torch.Tensor:
    """The policy as the trainer held it at ``iteration`` (LoRA-GA: with its offset adapter), from its checkpoint."""
    import yaml

    from prefopt.adapters import attach_adapter
    from prefopt.config import TrainConfig
    from prefopt.models import load_causal_lm

    config = yaml.safe_load((run / "config.yaml").read_text())
    cfg = TrainConfig(**{k: v for k, v in config.items() if k in TrainConfig.__dataclass_fields__})
    model = attach_adapter(load_causal_lm(cfg.model_name_or_path), cfg)
    model.load_state_dict(load_file(str(run / f"checkpoints/iter_{iteration:03d}/model.safetensors")))
    with torch.no_grad():
        return model.eval()(torch.tensor(IDS)).logits


def plain_logits(tmp_path, *folders) -> list[torch.Tensor]:
    """Logits of each exported folder (a path, or (adapter folder, base)) loaded with plain transformers/peft."""
    out = tmp_path / "logits.pt"
    pairs = [str(x) for f in folders for x in (f if isinstance(f, tuple) else (f, ""))]
    result = subprocess.run([sys.executable, "-c", PLAIN_LOAD, str(out), *pairs], capture_output=True)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    return torch.load(out)


def export(run, out, **kwargs):
    """prefopt.export_run in this process (the CLI's own path is covered by the card, push and bad-input tests)."""
    from prefopt.export import export_run

    return export_run(run, out, **kwargs)


def export_ok(*args):
    result = prefopt("export", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


# LoRA-GA's export is LoRA's plus the folded offset: plain LoRA runs in the slow suite.
SLOW_LORA = pytest.param("lora", marks=pytest.mark.slow)


@pytest.mark.parametrize("adapter", ["none", SLOW_LORA, "lora_ga"])
def test_export_merged_gives_the_trained_logits(runs, adapter, tmp_path):
    run = runs[adapter]
    export(run, tmp_path / "merged", max_shard_size="200KB")
    files = {p.name for p in (tmp_path / "merged").iterdir()}
    assert {"config.json", "generation_config.json", "tokenizer.json", "chat_template.jinja", "README.md"} <= files
    assert "model.safetensors.index.json" in files and len([f for f in files if f.endswith(".safetensors")]) > 1
    export(run, tmp_path / "iter0", iteration=0)  # from a checkpoint rather than final/
    merged, iter0 = plain_logits(tmp_path, tmp_path / "merged", tmp_path / "iter0")
    assert (merged - trained_logits(run, 1)).abs().max() <= 1e-4
    assert (iter0 - trained_logits(run, 0)).abs().max() <= 1e-4
    from transformers import AutoTokenizer

    exported, base = (AutoTokenizer.from_pretrained(p) for p in (tmp_path / "merged", run / "final"))
    assert exported.chat_template == base.chat_template and exported.get_vocab() == base.get_vocab()


@pytest.mark.parametrize("adapter", [SLOW_LORA, "lora_ga"])
def test_export_adapter_only(runs, adapter, tmp_path, tiny_model_dir):
    run = runs[adapter]
    export(run, tmp_path / "adapter", adapter_only=True)
    files = {p.name for p in (tmp_path / "adapter").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "generation_config.json"} <= files
    assert "model.safetensors" not in files
    (got,) = plain_logits(tmp_path, (tmp_path / "adapter", tiny_model_dir))
    assert (got - trained_logits(run, 1)).abs().max() <= 1e-4


def test_model_card_metadata_and_body(runs, tmp_path, tiny_model_dir):
    from huggingface_hub import ModelCard

    run = runs["lora_ga"]
    eval_set = REPO / "eval/sets/quickstart.json"
    result = prefopt("eval", "--eval_set", eval_set, "--models", f"sppo={run}/final", "--baseline",
                     f"initial={tiny_model_dir}", "--judge", "nontransitive", "--max_new_tokens", 6,
                     "--output_dir", tmp_path / "eval")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    export_ok(run, "--out", tmp_path / "out", "--base_model", "someone/tiny-base", "--license", "apache-2.0",
              "--eval_results", tmp_path / "eval/results.json")  # fmt: skip
    card = ModelCard.load(tmp_path / "out/README.md")
    assert card.data.base_model == "someone/tiny-base" and card.data.license == "apache-2.0"
    assert card.data.library_name == "transformers"
    assert {"prefopt", "sppo", "lora-ga"} <= set(card.data.tags)
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    evaluation = json.loads((tmp_path / "eval/results.json").read_text())["leaderboard"][0]
    values = [(r.metric_type, r.metric_value) for r in card.data.eval_results]
    assert values == [
        ("win_rate", round(100 * last["eval/win_rate"], 2)),  # in training, against the initial policy
        ("lc_win_rate", round(100 * evaluation["lc_win_rate"], 2)),  # prefopt eval
        ("win_rate", round(100 * evaluation["win_rate"], 2)),
    ]
    assert "Self-Play Preference Optimization" in card.text and "| `eta` | `20.0` |" in card.text
    assert "folded in" in card.text and "PeftModel" not in card.text
    adapter_card = export_ok(run, "--out", tmp_path / "adapter", "--adapter-only", "--base_model", "someone/tiny-base")
    assert adapter_card.returncode == 0
    card = ModelCard.load(tmp_path / "adapter/README.md")
    assert card.data.library_name == "peft" and 'PeftModel.from_pretrained(base, "path/to/this/folder")' in card.text
    config = json.loads((tmp_path / "adapter/adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "someone/tiny-base" and config["r"] == 8  # rank 2r: the offset


def test_no_local_path_in_the_card_or_adapter_config(runs, tmp_path, tiny_model_dir):
    """A run trained from a local folder: its path is never written where a download reads it; the license the Hub
    asks with `other`, and --datasets, are in the card."""
    from huggingface_hub import ModelCard

    run = runs["lora_ga"]
    result = export_ok(run, "--out", tmp_path / "adapter", "--adapter-only")
    assert "pass --base_model HUB_ID" in result.stdout
    readme = (tmp_path / "adapter/README.md").read_text()
    config = json.loads((tmp_path / "adapter/adapter_config.json").read_text())
    for local in (str(tiny_model_dir), str(run), str(REPO)):
        assert local not in readme and local not in json.dumps(config), local
    assert config["base_model_name_or_path"] is None and "a local model (`policy`)" in readme
    assert "a local file (`quickstart_prompts.jsonl`)" in readme
    export_ok(run, "--out", tmp_path / "merged", "--base_model", "someone/tiny-base", "--datasets", "someone/prefs")
    card = ModelCard.load(tmp_path / "merged/README.md")
    assert card.data.license == "other" and card.data.license_name == "base-model-license"
    assert card.data.license_link == "https://huggingface.co/someone/tiny-base"
    assert card.data.datasets == ["someone/prefs"] and "`someone/tiny-base`" in card.text


def test_hub_id_of_a_cache_snapshot_folder(tmp_path):
    from prefopt.model_card import hub_id

    snapshot = tmp_path / "hub" / "models--meta-llama--Llama-3.1-8B-Instruct" / "snapshots" / "0e9e39f249a1"
    snapshot.mkdir(parents=True)
    assert hub_id(str(snapshot)) == "meta-llama/Llama-3.1-8B-Instruct"
    assert hub_id(str(tmp_path)) is None and hub_id("someone/model") == "someone/model"


def test_push_to_the_hub_up_to_the_network(runs, tmp_path):
    """The real huggingface_hub client against a local server: repo created private, card validated, every file
    uploaded byte for byte, the token read from HF_TOKEN and sent, never printed or written."""
    hub, secret = FakeHub(), "hf_prefopt_test_secret_0123"
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_TOKEN": secret, "HF_HUB_OFFLINE": "0"}
    cmd = [sys.executable, "-m", "prefopt.cli", "export", str(runs["none"]), "--out", str(tmp_path / "out")]
    try:
        result = subprocess.run(cmd + ["--push-to-hub", "someone/tiny-sppo", "--private"], capture_output=True,
                                text=True, cwd=REPO, env=env)  # fmt: skip
        refused = subprocess.run(cmd[:-1] + [str(tmp_path / "again"), "--push-to-hub", "someone/forbidden"],
                                 capture_output=True, text=True, cwd=REPO, env=env)  # fmt: skip
    finally:
        hub.close()
    assert result.returncode == 0, result.stderr[-3000:]
    assert hub.created == [{"name": "tiny-sppo", "organization": "someone", "visibility": "private", "type": "model"}]
    exported = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    assert hub.files == exported
    assert {auth for method, path, auth in hub.requests if method == "POST"} == {f"Bearer {secret}"}
    assert hub.validated and hub.validated[0]["content"].startswith("---\n")  # the card's metadata, checked
    assert 'from_pretrained("someone/tiny-sppo")' in exported["README.md"].decode()
    assert secret not in result.stdout + result.stderr
    assert not any(secret.encode() in data for data in exported.values())
    # A refusal is one line; the export on disk is complete and kept.
    assert refused.returncode == 2, refused.stderr[-2000:]
    last_line = refused.stderr.strip().splitlines()[-1]  # after the weight-loading progress bars
    assert last_line.startswith("prefopt: error: push to the Hub repository 'someone/forbidden' failed: 403")
    assert secret not in refused.stderr
    assert (tmp_path / "again/README.md").is_file()


def test_export_bad_input_is_one_line_and_overwrites_nothing(runs, tmp_path):
    cases = [
        ([tmp_path / "nope", "--out", tmp_path / "o1"], "is not a prefopt run directory"),
        ([runs["none"], "--out", tmp_path / "o2", "--adapter-only"], "trained every weight"),
        ([runs["none"], "--out", tmp_path / "o3", "--iteration", 7], "has no checkpoint of iteration 7"),
        ([runs["none"], "--out", tmp_path / "o4", "--push-to-hub", "not a repo id"], "invalid repository id"),
        ([runs["none"], "--out", tmp_path / "o6", "--max_shard_size", "big"], "--max_shard_size must be a size"),
    ]
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text((runs["none"] / "config.yaml").read_text())
    (unfinished / "state.json").write_text(json.dumps({"last_completed_iteration": -1}))
    cases.append(([unfinished, "--out", tmp_path / "o5"], "has no finished iteration"))
    for args, message in cases:
        result = prefopt("export", *args)
        assert result.returncode == 2 and message in result.stderr and result.stderr.count("\n") == 1, result.stderr
        assert not (tmp_path / args[2].name).exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    result = prefopt("export", runs["none"], "--out", mine)
    assert result.returncode == 2 and "not empty" in result.stderr
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
