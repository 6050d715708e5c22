"""The trainer classes: TRL's constructor on in-memory objects gives the CLI's run bit for bit, and bad arguments
fail before any compute."""

import dataclasses
import json

import pytest
import torch
from helpers import ALGORITHM_ARGS, PROMPTS, run_weights

import prefopt
from prefopt.cli import main as cli_main
from prefopt.errors import ConfigError, DataError, PrefoptError

FAST = ["--num_iterations", "1", "--max_new_tokens", "6", "--prompts_per_iteration", "8", "--disable_tqdm", "true"]
FAST += ["--torch_num_threads", "1", "--per_device_train_batch_size", "4"]


def rows(path) -> list[dict]:
    return [json.loads(line) for line in open(path) if line.strip()]


def config_for(name: str, args: list, **keys):
    """The trainer config holding what ``prefopt train NAME ARGS`` reads (keys override)."""
    from prefopt.algorithms import get_algorithm
    from prefopt.config import build_configs, parse_cli_overrides

    values = parse_cli_overrides([str(a) for a in args]) | {k: str(v) for k, v in keys.items()}
    cfg, params = build_configs(get_algorithm(name).config_class, {}, values)
    return prefopt.trainer_class(name).config_class.from_parts(cfg, params)


def cli_args(name: str) -> list:
    args = ALGORITHM_ARGS[name]
    return [*([] if "--dataset_name" in args else ["--dataset_name", PROMPTS]), *FAST, *args]


@pytest.mark.parametrize("name", sorted(ALGORITHM_ARGS))
def test_each_trainer_on_in_memory_objects_ends_with_the_cli_runs_weights(name, tiny_model_dir, tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prefopt.judges import build_judge

    args = cli_args(name)
    assert cli_main(["train", name, *map(str, args), "--model_name_or_path", tiny_model_dir,
                     "--output_dir", str(tmp_path / "cli")]) == 0  # fmt: skip
    config = config_for(name, args, output_dir=tmp_path / "api", model_name_or_path=tiny_model_dir)
    data = Dataset.from_list(rows(config.dataset_name))
    config.dataset_name = None
    trainer = prefopt.trainer_class(name)(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        args=config,
        train_dataset=data,
        judge=build_judge(config.judge),
        processing_class=AutoTokenizer.from_pretrained(tiny_model_dir),
    )
    assert type(trainer).__name__ == f"{type(config).__name__.removesuffix('Config')}Trainer"
    output = trainer.train()
    one, two = run_weights(tmp_path / "cli"), run_weights(tmp_path / "api")
    assert set(one) == set(two) and all(torch.equal(one[k], two[k]) for k in one), name
    saved = json.loads((tmp_path / "api/state.json").read_text())
    assert output.global_step == saved["global_step"] == trainer.state.global_step > 0
    assert [r["iteration"] for r in trainer.log_history] == list(range(config.num_iterations))


def test_a_model_instance_and_its_path_give_the_same_run(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    def run(model, out):
        config = prefopt.SPPOConfig(output_dir=str(out), dataset_name=str(PROMPTS), num_iterations=2, eta=20.0,
                                    num_samples=3, max_new_tokens=6, prompts_per_iteration=8, disable_tqdm=True,
                                    learning_rate=1e-3, eval_num_prompts=4)  # fmt: skip
        return prefopt.SPPOTrainer(model, args=config).train().metrics

    by_path = run(tiny_model_dir, tmp_path / "path")
    by_instance = run(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tmp_path / "instance")
    one, two = run_weights(tmp_path / "path"), run_weights(tmp_path / "instance")
    assert all(torch.equal(one[k], two[k]) for k in one)
    assert by_path["eval/win_rate"] == by_instance["eval/win_rate"]
    config = (tmp_path / "instance/config.yaml").read_text()
    assert f"model_name_or_path: {tiny_model_dir}" in config  # the instance's name_or_path is recorded


def test_reward_functions_are_called_as_trl_calls_them_and_summed_with_weights():
    from prefopt.judges.functions import RewardFunctionsJudge

    seen = {}

    def length(prompts, completions, **kwargs):
        seen.update(prompts=prompts, completions=completions, kwargs=kwargs)
        return [float(len(c[0]["content"] if isinstance(c, list) else c)) for c in completions]

    def has_a(completions, answer, **kwargs):  # None: this function does not score the row (TRL's convention)
        return [None if r == "skip" else float("a" in (c[0]["content"] if isinstance(c, list) else c))
                for c, r in zip(completions, answer)]  # fmt: skip

    judge = RewardFunctionsJudge([length, has_a], weights=[0.5, 2.0], reference_column="answer")
    chat = [{"role": "user", "content": "hi"}]
    rewards = judge.reward(["x", chat, "z"], ["abc", "bb", "a"], ["keep", "keep", "skip"])
    assert rewards.tolist() == [0.5 * 3 + 2.0 * 1, 0.5 * 2 + 2.0 * 0, 0.5 * 1]
    assert seen["prompts"] == ["x", chat, "z"]
    assert seen["completions"] == ["abc", [{"role": "assistant", "content": "bb"}], "a"]
    assert seen["kwargs"] == {"answer": ["keep", "keep", "skip"]}
    assert judge.name == "reward_funcs:length+has_a"


def test_a_weighted_list_of_reward_functions_trains_as_their_weighted_sum(tiny_model_dir, tmp_path):
    """GRPO with [f, g] and reward_weights [w1, w2] is the run of the one function w1·f + w2·g."""

    correct = _correct

    def small(completions, **kwargs):
        return [float(c.strip() in "0123") for c in completions]

    def combined(completions, answer, **kwargs):
        return [1.0 * x + 0.25 * y for x, y in zip(correct(completions, answer), small(completions))]

    args = cli_args("grpo")
    for judge, weights, out in (([correct, small], [1.0, 0.25], "pair"), (combined, None, "one")):
        config = config_for("grpo", args, output_dir=tmp_path / out, model_name_or_path=tiny_model_dir)
        config.reward_weights = weights
        prefopt.GRPOTrainer(args=config, reward_funcs=judge).train()
    one, two = run_weights(tmp_path / "pair"), run_weights(tmp_path / "one")
    assert all(torch.equal(one[k], two[k]) for k in one)
    assert "judge: reward_funcs:_correct+small" in (tmp_path / "pair/config.yaml").read_text()


def _correct(completions, answer, **kwargs):
    return [float(c.strip() == str(a)) for c, a in zip(completions, answer)]


def _bad(tiny_model_dir, tmp_path):
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from prefopt.judges import NonTransitiveJudge

    def base(**keys):
        return prefopt.SPPOConfig(output_dir=str(tmp_path / "run"), disable_tqdm=True, **keys)

    def peft_model():
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        return get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))

    no_prompt = Dataset.from_list([{"question": "2+2?"}, {"question": "3+3?"}])
    digits = config_for("grpo", cli_args("grpo"), output_dir=tmp_path / "run", model_name_or_path=tiny_model_dir)
    return {
        "no prompt column": (
            lambda: prefopt.SPPOTrainer(tiny_model_dir, args=base(), train_dataset=no_prompt),
            DataError, "train_dataset: missing column 'prompt'"),
        "preference judge for an outcome method": (
            lambda: prefopt.GRPOTrainer(args=digits, judge=NonTransitiveJudge()),
            ConfigError, "is a preference judge, but grpo needs a reward"),
        "peft_config on a peft model": (
            lambda: prefopt.SPPOTrainer(peft_model(), args=base(dataset_name=str(PROMPTS)),
                                        peft_config=LoraConfig(r=2)),
            ConfigError, "model already has a peft adapter"),
        "another algorithm's config": (
            lambda: prefopt.SPPOTrainer(tiny_model_dir, args=prefopt.EGPOConfig(output_dir="x")),
            ConfigError, "args is a EGPOConfig; SPPOTrainer takes a SPPOConfig"),
        "a value out of range": (lambda: prefopt.SPPOConfig(eta=0), ConfigError, "config key 'eta' must be > 0"),
        "a wrong type": (lambda: prefopt.SPPOConfig(num_iterations="many"), ConfigError, "'num_iterations'"),
        "no dataset": (lambda: prefopt.SPPOTrainer(tiny_model_dir, args=base()), ConfigError, "'dataset_name'"),
        "not a judge": (
            lambda: prefopt.SPPOTrainer(tiny_model_dir, args=base(dataset_name=str(PROMPTS)), judge=3),
            ConfigError, "judge must be a judge kind"),
        "weights without functions": (
            lambda: prefopt.SPPOTrainer(tiny_model_dir, args=base(dataset_name=str(PROMPTS), reward_weights=[1.0])),
            ConfigError, "'reward_weights' weighs a list of reward functions"),
        "one weight for two functions": (
            lambda: prefopt.GRPOTrainer(args=dataclasses.replace(digits, reward_weights=[1.0]),
                                        judge=[_correct, _correct]),
            PrefoptError, "'reward_weights' has 1 entries, but the judge has 2 reward functions"),
        "not TRL's convention": (
            lambda: prefopt.GRPOTrainer(args=digits, judge=[len]), PrefoptError, "takes no 'completions' argument"),
        "ref_model where none is read": (
            lambda: prefopt.SPPOTrainer(tiny_model_dir, args=base(dataset_name=str(PROMPTS)),
                                        ref_model=AutoModelForCausalLM.from_pretrained(tiny_model_dir)),
            ConfigError, "sppo does not read a reference policy"),
    }  # fmt: skip


def test_bad_arguments_fail_in_one_line_before_any_compute(tiny_model_dir, tmp_path):
    for case, (build, error, message) in _bad(tiny_model_dir, tmp_path).items():
        with pytest.raises(error) as caught:
            build()
        assert message in str(caught.value) and "\n" not in str(caught.value), (case, str(caught.value))
        assert not (tmp_path / "run").exists(), case


def test_an_iterable_dataset_is_read_once_and_recorded_by_its_rows(tiny_model_dir, tmp_path):
    from datasets import Dataset

    from prefopt.data import GivenDataset

    prompts = rows(PROMPTS)
    streamed = GivenDataset("train_dataset", Dataset.from_list(prompts).to_iterable_dataset())
    assert streamed.dataset["prompt"] == [r["prompt"] for r in prompts]
    assert streamed.fingerprint() == GivenDataset("train_dataset", Dataset.from_list(prompts)).fingerprint()
    changed = GivenDataset(
        "train_dataset", Dataset.from_list([{"prompt": [{"role": "user", "content": "other"}]}, *prompts[1:]])
    )
    assert changed.fingerprint() != streamed.fingerprint()

    def trainer(data):
        config = prefopt.SPPOConfig(output_dir=str(tmp_path / "run"), num_iterations=2, eta=20.0, num_samples=3,
                                    max_new_tokens=6, prompts_per_iteration=8, disable_tqdm=True)  # fmt: skip
        return prefopt.SPPOTrainer(tiny_model_dir, args=config, train_dataset=Dataset.from_list(data))

    trainer(prompts).train()
    with pytest.raises(ConfigError, match="config key 'dataset_name' differs from the run's config.yaml"):
        trainer([{"prompt": [{"role": "user", "content": "other"}]}, *prompts[1:]]).train(resume_from_checkpoint=True)
