"""GVM-RAFT with a Python reward function in TRL's reward_funcs convention.

The task: the last digit of a sum ("7+10" -> "7"), answered with one digit; the reward is 1 for the right digit.
The function receives the dataset's `answer` column by name, as TRL's GRPOTrainer passes dataset columns.
A GPU run: python examples/gvm_raft_reward_function.py --model Qwen/Qwen2.5-Math-1.5B --output_dir runs/gvm
"""

import argparse

from datasets import load_dataset

from prefopt import GVMRAFTConfig, GVMRAFTTrainer


def correct_digit(prompts, completions, answer, **kwargs) -> list[float]:
    """1.0 when the response is the reference digit, else 0.0."""
    return [float(completion.strip() == str(reference)) for completion, reference in zip(completions, answer)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="runs/tiny-model")
    parser.add_argument("--output_dir", default="runs/example-gvm-raft")
    parser.add_argument("--num_iterations", type=int, default=2)
    args = parser.parse_args()

    dataset = load_dataset("json", data_files="configs/data/arithmetic.jsonl", split="train")
    config = GVMRAFTConfig(
        output_dir=args.output_dir,
        overwrite=True,
        answer_column="answer",  # passed to the reward function as its `answer` keyword
        response_choices=[str(d) for d in range(10)],  # one-token answers
        num_iterations=args.num_iterations,
        prompts_per_iteration=32,
        num_samples=4,  # the mean sample budget per prompt, which GVM reallocates
        probe_samples=4,  # N', the samples that estimate each prompt's accuracy and gradient norm
        learning_rate=1e-3,
        per_device_train_batch_size=16,
        disable_tqdm=True,
    )
    trainer = GVMRAFTTrainer(args.model, args=config, train_dataset=dataset, reward_funcs=[correct_digit])
    metrics = trainer.train().metrics
    print(f"mean reward of the last iteration's samples: {metrics['reward/mean']:.3f}")


if __name__ == "__main__":
    main()
