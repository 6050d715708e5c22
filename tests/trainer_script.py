"""A user's training script: ``prefopt train ALGO --config C ARGS`` rebuilt as a trainer on an in-memory dataset.

    torchrun --nproc_per_node 2 tests/trainer_script.py ALGO --config C [--key value ...]

The config's dataset file is read into a ``datasets.Dataset`` and handed to the trainer as ``train_dataset``
(the run's dataset_name then records the dataset's digest); everything else is as the CLI would run it.
"""

import json
import sys

from datasets import Dataset

import prefopt
from prefopt.algorithms import get_algorithm
from prefopt.config import build_configs, parse_cli_overrides, read_yaml


def main() -> None:
    name, flag, config_path, *rest = sys.argv[1:]
    assert flag == "--config"
    cfg, params = build_configs(get_algorithm(name).config_class, read_yaml(config_path), parse_cli_overrides(rest))
    args = prefopt.trainer_class(name).config_class.from_parts(cfg, params)
    rows = [json.loads(line) for line in open(args.dataset_name) if line.strip()]
    args.dataset_name = None
    trainer = prefopt.trainer_class(name)(args=args, train_dataset=Dataset.from_list(rows))
    trainer.train()


if __name__ == "__main__":
    main()
