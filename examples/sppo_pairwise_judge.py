"""SPPO with a pairwise preference model as its judge, from Python objects.

A GPU run: python examples/sppo_pairwise_judge.py --model mistralai/Mistral-7B-Instruct-v0.2 \
    --judge PATH_TO_PAIRWISE_CLASSIFIER --output_dir runs/sppo-pairwise --num_iterations 3
On a CPU, with the tiny offline models (`prefopt tiny-model runs/tiny-model` and
`prefopt tiny-model runs/tiny-judge --head reward`), the defaults below run in about a minute.
"""

import argparse

from datasets import load_dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from prefopt import SPPOConfig, SPPOTrainer
from prefopt.judges import PairwiseModelJudge


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="runs/tiny-model")
    parser.add_argument("--judge", default="runs/tiny-judge", help="A sequence classifier reading both responses.")
    parser.add_argument("--prompts", default="configs/data/quickstart_prompts.jsonl")
    parser.add_argument("--output_dir", default="runs/example-sppo")
    parser.add_argument("--num_iterations", type=int, default=2)
    args = parser.parse_args()

    model = AutoModelForCausalLM.from_pretrained(args.model)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    prompts = load_dataset("json", data_files=args.prompts, split="train")  # a "prompt" column
    judge = PairwiseModelJudge(args.judge, batch_size=16)  # P(a > b | x), both orders scored and symmetrised
    config = SPPOConfig(
        output_dir=args.output_dir,
        overwrite=True,
        num_iterations=args.num_iterations,
        prompts_per_iteration=32,
        eval_num_prompts=16,  # held out: the win rate of the final policy against the initial one
        num_samples=4,  # K responses per prompt
        eta=50.0,  # the Hedge step η
        max_new_tokens=8,
        learning_rate=1e-3,
        per_device_train_batch_size=16,
        disable_tqdm=True,
    )
    trainer = SPPOTrainer(model, args=config, train_dataset=prompts, judge=judge, processing_class=tokenizer)
    metrics = trainer.train().metrics
    print(f"win rate against the initial policy: {metrics['eval/win_rate']:.3f}")
    trainer.save_model(f"{args.output_dir}/model")


if __name__ == "__main__":
    main()
