"""The trainer's TRL methods and events: callbacks that stop or save, resume_from_checkpoint, evaluate,
save_model, push_to_hub, a LoraConfig and an explicit ref_model."""

import json

import pytest
import torch
from helpers import PROMPTS, run_weights
from transformers import TrainerCallback

import prefopt
from prefopt.errors import ConfigError


def sppo_config(out, **keys):
    values = dict(output_dir=str(out), dataset_name=str(PROMPTS), eta=20.0, num_samples=3, max_new_tokens=6,
                  prompts_per_iteration=8, disable_tqdm=True, learning_rate=1e-3, num_iterations=3,
                  per_device_train_batch_size=4)  # fmt: skip
    return prefopt.SPPOConfig(**(values | keys))


class Recorder(TrainerCallback):
    """Records every event (with the iteration, step or checkpoint) and makes the requests it was given."""

    def __init__(self, stop_after=None, save_at=None, evaluate_at_step=None):
        self.events, self.stop_after, self.save_at, self.evaluate_at_step = [], stop_after, save_at, evaluate_at_step

    def on_init_end(self, args, state, control, **kw):
        self.events.append(("init_end",))

    def on_train_begin(self, args, state, control, model=None, processing_class=None, optimizer=None, **kw):
        assert model is not None and processing_class is not None and optimizer is not None
        self.events.append(("train_begin",))

    def on_iteration_begin(self, args, state, control, iteration, **kw):
        self.events.append(("iteration_begin", iteration))

    def on_step_end(self, args, state, control, **kw):
        self.events.append(("step_end", state.global_step))
        if state.global_step == self.evaluate_at_step:
            control.should_evaluate = True

    def on_log(self, args, state, control, logs=None, **kw):
        self.events.append(("log", logs.get("iteration", logs.get("step"))))

    def on_evaluate(self, args, state, control, metrics=None, **kw):
        self.events.append(("evaluate", round(metrics["eval/win_rate"], 6)))

    def on_iteration_end(self, args, state, control, iteration, **kw):
        self.events.append(("iteration_end", iteration))
        if iteration == self.save_at:
            control.should_save = True
        if iteration == self.stop_after:
            control.should_training_stop = True

    def on_save(self, args, state, control, checkpoint=None, **kw):
        self.events.append(("save", checkpoint.rsplit("/", 1)[-1]))

    def on_train_end(self, args, state, control, **kw):
        self.events.append(("train_end",))


def test_callbacks_see_every_event_in_order_and_can_ask_for_a_save_and_an_evaluation(tiny_model_dir, tmp_path):
    recorder = Recorder(save_at=0, evaluate_at_step=1)
    config = sppo_config(tmp_path / "run", num_iterations=2, save_every=5, eval_num_prompts=4, logging_steps=2)
    trainer = prefopt.SPPOTrainer(tiny_model_dir, args=config, callbacks=[recorder])
    trainer.train()
    steps = json.loads((tmp_path / "run/state.json").read_text())["steps_per_iteration"]
    assert steps == 2  # 8 prompts, one row each (its best and worst sample), in minibatches of 4
    metrics = [json.loads(line) for line in open(tmp_path / "run/metrics.jsonl")]
    assert "eval/win_rate" in metrics[0] and "eval/win_rate" in metrics[1]  # asked for, and the last iteration's
    wins = [round(m["eval/win_rate"], 6) for m in metrics]
    expected = [("init_end",), ("train_begin",), ("iteration_begin", 0), ("step_end", 1), ("step_end", 2), ("log", 2),
                ("evaluate", wins[0]), ("log", 0), ("iteration_end", 0), ("save", "iter_000"),
                ("iteration_begin", 1), ("step_end", 3), ("step_end", 4), ("log", 4), ("evaluate", wins[1]),
                ("log", 1), ("iteration_end", 1), ("save", "iter_001"), ("train_end",)]  # fmt: skip
    assert recorder.events == expected
    assert sorted(p.name for p in (tmp_path / "run/checkpoints").iterdir()) == ["iter_000", "iter_001"]
    assert trainer.state.global_step == 4 and trainer.state.epoch == 2.0 and trainer.state.max_steps == 4


def test_a_stopped_run_resumed_with_resume_from_checkpoint_ends_as_the_uninterrupted_one(tiny_model_dir, tmp_path):
    prefopt.SPPOTrainer(tiny_model_dir, args=sppo_config(tmp_path / "whole")).train()
    recorder = Recorder(stop_after=0)
    stopped = prefopt.SPPOTrainer(tiny_model_dir, args=sppo_config(tmp_path / "run"), callbacks=[recorder])
    stopped.train()
    assert recorder.events[-3:] == [("iteration_end", 0), ("save", "iter_000"), ("train_end",)]
    assert json.loads((tmp_path / "run/state.json").read_text())["last_completed_iteration"] == 0
    assert (tmp_path / "run/final/model.safetensors").exists()  # the policy training stopped with
    resumed = prefopt.SPPOTrainer(tiny_model_dir, args=sppo_config(tmp_path / "run"))
    resumed.train(resume_from_checkpoint=True)
    one, two = run_weights(tmp_path / "whole"), run_weights(tmp_path / "run")
    assert all(torch.equal(one[k], two[k]) for k in one)
    assert [r["iteration"] for r in resumed.log_history] == [0, 1, 2]  # the kept record and the two redone


def test_resume_from_a_named_checkpoint_and_a_foreign_one(tiny_model_dir, tmp_path):
    prefopt.SPPOTrainer(tiny_model_dir, args=sppo_config(tmp_path / "run", num_iterations=2)).train()
    again = prefopt.SPPOTrainer(tiny_model_dir, args=sppo_config(tmp_path / "run", num_iterations=2))
    with pytest.raises(ConfigError, match="is not a checkpoint of output_dir"):
        again.train(resume_from_checkpoint=str(tmp_path / "elsewhere/checkpoints/iter_000"))
    again.train(resume_from_checkpoint=str(tmp_path / "run/checkpoints/iter_000"))
    assert [r["iteration"] for r in again.log_history] == [0, 1]
    with pytest.raises(ConfigError, match="has trained already"):
        again.train()


def test_evaluate_repeats_the_last_evaluation_and_save_model_writes_the_final_policy(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    trainer = prefopt.SPPOTrainer(tiny_model_dir, args=sppo_config(tmp_path / "run", eval_num_prompts=4))
    with pytest.raises(ConfigError, match="call train\\(\\) first"):
        trainer.evaluate()
    last = trainer.train().metrics
    again = trainer.evaluate()  # fixed seeds: the same responses, the same comparisons
    assert again == {k: v for k, v in last.items() if k in again} and again["eval/n"] == 4
    trainer.save_model(str(tmp_path / "saved"))
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "saved").state_dict()
    final = run_weights(tmp_path / "run")
    assert all(torch.equal(saved[k], final[k]) for k in final)
    assert (tmp_path / "saved/tokenizer_config.json").exists()


PUSH_SCRIPT = """
import sys
import prefopt
out, model = sys.argv[1:]
config = prefopt.SPPOConfig(output_dir=out, dataset_name="configs/data/quickstart_prompts.jsonl", num_iterations=1,
                            max_new_tokens=6, prompts_per_iteration=8, disable_tqdm=True, hub_model_id="me/sppo-tiny")
trainer = prefopt.SPPOTrainer(model, args=config)
trainer.train()
print("pushed", trainer.push_to_hub(private=True))
"""


def test_push_to_hub_uploads_the_export_with_its_card(tiny_model_dir, tmp_path):
    """The real huggingface_hub client against a local server (its endpoint is read at import: a fresh process)."""
    import os
    import subprocess
    import sys

    from fakehub import FakeHub
    from helpers import REPO

    hub = FakeHub()
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_TOKEN": "hf_test", "HF_HUB_OFFLINE": "0"}
    try:
        result = subprocess.run([sys.executable, "-c", PUSH_SCRIPT, str(tmp_path / "run"), tiny_model_dir],
                                capture_output=True, text=True, cwd=REPO, env=env)  # fmt: skip
    finally:
        hub.close()
    assert result.returncode == 0, result.stderr[-3000:]
    assert "pushed me/sppo-tiny" in result.stdout
    assert hub.created == [{"name": "sppo-tiny", "organization": "me", "visibility": "private", "type": "model"}]
    assert {"README.md", "model.safetensors", "config.json", "tokenizer.json"} <= set(hub.files)
    assert "Self-Play Preference Optimization" in hub.files["README.md"].decode()


def test_a_lora_config_trains_the_adapter_the_cli_flags_describe(tiny_model_dir, tmp_path):
    from peft import LoraConfig

    from prefopt.cli import main

    flags = ["--adapter", "lora", "--lora_r", "4", "--lora_alpha", "8", "--lora_dropout", "0.0",
             "--lora_target_modules", "q_proj,v_proj", "--beta", "0.5", "--num_iterations", "1",
             "--max_new_tokens", "6", "--prompts_per_iteration", "8", "--disable_tqdm", "true",
             "--learning_rate", "1e-3"]  # fmt: skip
    assert main(["train", "egpo", "--model_name_or_path", tiny_model_dir, "--dataset_name", str(PROMPTS),
                 "--output_dir", str(tmp_path / "cli"), *flags]) == 0  # fmt: skip
    config = prefopt.EGPOConfig(output_dir=str(tmp_path / "api"), dataset_name=str(PROMPTS), beta=0.5,
                                num_iterations=1, max_new_tokens=6, prompts_per_iteration=8, disable_tqdm=True,
                                learning_rate=1e-3)  # fmt: skip
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"])
    prefopt.EGPOTrainer(tiny_model_dir, args=config, peft_config=lora).train()
    one, two = run_weights(tmp_path / "cli"), run_weights(tmp_path / "api")
    assert set(one) == set(two) and all(".lora_" in k for k in one)
    assert all(torch.equal(one[k], two[k]) for k in one)
    assert "lora_r: 4" in (tmp_path / "api/config.yaml").read_text()


def test_an_explicit_ref_model_is_pi_ref(tiny_model_dir, tmp_path):
    """π_ref given as the initial model's own copy: the same run as the default (the snapshot of the initial
    weights); a different ref_model gives another run."""
    from transformers import AutoModelForCausalLM

    def run(out, ref_model):
        config = prefopt.EGPOConfig(output_dir=str(out), dataset_name=str(PROMPTS), beta=0.5, num_iterations=2,
                                    max_new_tokens=6, prompts_per_iteration=8, disable_tqdm=True,
                                    learning_rate=1e-3)  # fmt: skip
        prefopt.EGPOTrainer(tiny_model_dir, args=config, ref_model=ref_model).train()
        return run_weights(out)

    default = run(tmp_path / "default", None)
    same = run(tmp_path / "same", AutoModelForCausalLM.from_pretrained(tiny_model_dir))
    other_ref = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        other_ref.lm_head.weight.mul_(0.5)
    other = run(tmp_path / "other", other_ref)
    assert all(torch.equal(default[k], same[k]) for k in default)
    assert any(not torch.equal(default[k], other[k]) for k in default)
