"""EGPO with a LoRA adapter from a peft LoraConfig, on the synthetic non-transitive preference task.

π_ref is the policy with the adapter disabled: no second copy of the model. The saved policy is the adapter alone.
A GPU run: python examples/egpo_lora.py --model meta-llama/Llama-3.1-8B-Instruct --output_dir runs/egpo-lora
(with a judge of your own in place of "nontransitive").
"""

import argparse

from peft import LoraConfig

from prefopt import EGPOConfig, EGPOTrainer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="runs/tiny-model")
    parser.add_argument("--output_dir", default="runs/example-egpo-lora")
    parser.add_argument("--num_iterations", type=int, default=2)
    args = parser.parse_args()

    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    config = EGPOConfig(
        output_dir=args.output_dir,
        overwrite=True,
        dataset_name="configs/data/quickstart_prompts.jsonl",
        num_iterations=args.num_iterations,
        prompts_per_iteration=32,
        eval_num_prompts=16,
        beta=0.5,  # β, the KL coefficient of the regularised game
        max_new_tokens=8,
        learning_rate=1e-3,
        per_device_train_batch_size=16,
        disable_tqdm=True,
    )
    trainer = EGPOTrainer(args.model, args=config, judge="nontransitive", peft_config=lora)
    metrics = trainer.train().metrics
    print(f"win rate against the initial policy: {metrics['eval/win_rate']:.3f}")


if __name__ == "__main__":
    main()
