"""The model card (README.md) of an exported run: the Hub's YAML metadata and a body that says how it was trained.

Metadata (``huggingface_hub.ModelCardData``): ``base_model`` (a Hub id), ``library_name`` (transformers, or peft
for an adapter), ``tags`` (prefopt, the algorithm, lora / lora-ga), ``datasets`` (the training prompts when they
are a Hub dataset, and ``--datasets``), ``license`` (with ``license_name`` and ``license_link`` when it is
``other``), and ``model-index`` with the evaluation results: the last in-training win rate and, when given, a
``prefopt eval`` result of this model.

The card names no local path: a model, dataset or judge the run read from a folder appears by its Hub id when one
is known (``--base_model``, or a folder inside the Hugging Face cache), else as a local file or model by name only.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from prefopt.errors import DataError


def _paper(algorithm: str) -> tuple[str, str | None]:
    """(title, arXiv id) of the algorithm's paper; the bare name for one this version does not know."""
    from prefopt.algorithms import ALGORITHMS, get_algorithm

    paper = get_algorithm(algorithm).paper if algorithm in ALGORITHMS else None
    return paper if paper is not None else (algorithm, None)


SHARED_KEYS = (
    "num_iterations",
    "prompts_per_iteration",
    "learning_rate",
    "lr_scheduler_type",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "num_train_epochs",
    "max_new_tokens",
    "temperature",
    "judge",
    "judge_model_name_or_path",
    "adapter",
    "lora_r",
    "lora_alpha",
    "seed",
)


@dataclass
class CardOptions:
    """What the user tells the card beyond the run: the base model's Hub id, the license, extra Hub datasets."""

    base_model: str | None = None
    license: str | None = None
    license_name: str | None = None
    license_link: str | None = None
    datasets: list[str] = field(default_factory=list)

    @classmethod
    def with_defaults(cls, base_model, license, license_name, license_link, datasets) -> CardOptions:
        """The options, with what the Hub asks beside ``license: other`` (the default) filled in when the base is
        known: ``base-model-license`` and the base model's Hub page."""
        if (license or "other") == "other" and base_model:
            license_name = license_name or "base-model-license"
            license_link = license_link or f"https://huggingface.co/{base_model}"
        return cls(base_model, license, license_name, license_link, list(datasets or []))


# A snapshot folder of the Hugging Face cache: .../models--ORG--NAME/snapshots/REVISION
_CACHE_SNAPSHOT = re.compile(r"(?:^|/)(models|datasets)--([^/]+?)--([^/]+)/snapshots/[^/]+/?$")


def hub_id(name: str | None) -> str | None:
    """``name`` when it is a Hub repository id, the id of a Hugging Face cache snapshot folder, else None."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not name:
        return None
    cached = _CACHE_SNAPSHOT.search(os.path.abspath(os.path.expanduser(name)))
    if cached:
        return f"{cached.group(2)}/{cached.group(3)}"
    if os.path.exists(os.path.expanduser(name)) or name.startswith((".", "/", "~")):
        return None
    try:
        validate_repo_id(name)
    except HFValidationError:
        return None
    return name


def read_eval_results(path: str, generator: str | None, source) -> dict:
    """This model's row of a ``prefopt eval`` results.json (by name, by a model source inside the run, or alone)."""
    try:
        results = json.loads(Path(path).read_text())
        rows = {row["generator"]: row for row in results["leaderboard"]}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"eval results '{path}' is not a prefopt eval results.json: {err!r}") from None
    if generator is None:
        run = Path(source.run_dir).resolve()
        inside = [
            name
            for name, g in results.get("generators", {}).items()
            if name in rows and "model" in g and run in Path(g["model"]).resolve().parents
        ]
        candidates = inside or (list(rows) if len(rows) == 1 else [])
        if len(candidates) != 1:
            raise DataError(f"eval results '{path}': name this model's generator with --eval_generator ({list(rows)})")
        generator = candidates[0]
    if generator not in rows:
        raise DataError(f"eval results '{path}' has no generator '{generator}'; it has {list(rows)}")
    eval_set = Path(results["eval_set"]["path"]).stem
    return {**rows[generator], "eval_set": eval_set, "judge": results["judge"]}


def _eval_results(source, evaluation: dict | None) -> list:
    from huggingface_hub import EvalResult

    out = []
    last = next((m for m in reversed(source.metrics) if "eval/win_rate" in m), None)
    judge = source.config.get("judge")
    if last is not None:
        baseline = "the fixed baseline outputs" if source.config.get("eval_baseline_outputs") else "the initial policy"
        out.append(
            EvalResult(
                task_type="text-generation",
                dataset_type=hub_id(source.config.get("dataset_name")) or "held-out-prompts",
                dataset_name=f"held-out prompts (judge: {judge})",
                metric_type="win_rate",
                metric_value=round(100 * last["eval/win_rate"], 2),
                metric_name=f"win rate vs {baseline} (%)",
            )
        )
    if evaluation:
        for key, label in (("lc_win_rate", "length-controlled win rate"), ("win_rate", "win rate")):
            if evaluation.get(key) is not None:
                out.append(
                    EvalResult(
                        task_type="text-generation",
                        dataset_type=evaluation["eval_set"],
                        dataset_name=f"{evaluation['eval_set']} (judge: {evaluation['judge'].get('kind')})",
                        metric_type=key,
                        metric_value=round(100 * evaluation[key], 2),
                        metric_name=f"{label} vs {evaluation['baseline']} (%)",
                    )
                )
    return out


def named(path_or_id: str | None, what: str) -> str:
    """How the card names a model or dataset: its Hub id, else "a local WHAT (NAME)" without the folder."""
    if not path_or_id:
        return "none"
    known = hub_id(path_or_id)
    return f"`{known}`" if known else f"a local {what} (`{Path(str(path_or_id).rstrip('/')).name}`)"


def metadata(source, adapter_only: bool, options: CardOptions, evaluation):
    from huggingface_hub import ModelCardData

    algorithm = source.config["algorithm"]
    tags = ["prefopt", algorithm.replace("_", "-"), "preference-optimization"]
    if source.adapter != "none":
        tags.append(source.adapter.replace("_", "-"))
    datasets = [d for d in [hub_id(source.config.get("dataset_name")), *options.datasets] if d]
    license = options.license or "other"
    return ModelCardData(
        base_model=options.base_model,
        library_name="peft" if adapter_only else "transformers",
        tags=tags,
        datasets=list(dict.fromkeys(datasets)) or None,
        license=license,
        license_name=options.license_name if license == "other" else None,
        license_link=options.license_link if license == "other" else None,
        model_name=Path(source.run_dir).resolve().name,
        eval_results=_eval_results(source, evaluation) or None,
        pipeline_tag="text-generation",
    )


def _hyperparameters(config: dict) -> list[tuple[str, object]]:
    from prefopt.algorithms import get_algorithm

    own = [f.name for f in dataclasses.fields(get_algorithm(config["algorithm"]).config_class)]
    keys = own + [k for k in SHARED_KEYS if k not in own]
    adapter = config.get("adapter", "none") != "none"
    shown = [(k, config[k]) for k in keys if config.get(k) is not None and (adapter or not k.startswith("lora_"))]
    # A local path is shown by its last part only (the card names no folder of the training machine).
    return [(k, hub_id(v) or Path(v).name if k.endswith("name_or_path") else v) for k, v in shown]


def _training_section(source, adapter_only: bool, base_model: str | None) -> list[str]:
    config = source.config
    algorithm = config["algorithm"]
    title, arxiv = _paper(algorithm)
    paper = f"{title} ([arXiv {arxiv}](https://arxiv.org/abs/{arxiv}))" if arxiv else title
    judge = config.get("judge_model_name_or_path") or config.get("judge_model")
    lines = [
        "## Training",
        "",
        f"- Algorithm: `{algorithm}`, {paper}",
        f"- Base model: {named(base_model or config['model_name_or_path'], 'model')}",
        f"- Prompts: {named(config.get('dataset_name'), 'file')}",
        f"- Judge: `{config.get('judge')}`" + (f" ({named(judge, 'model')})" if judge else ""),
        f"- Iterations: {source.iteration + 1} of {config.get('num_iterations')} configured",
    ]
    if source.adapter != "none":
        kept = "kept as a peft adapter" if adapter_only else "merged into the weights"
        offset = "; LoRA-GA's base offset is folded in" if source.adapter == "lora_ga" else ""
        lines.append(f"- Adapter: {source.adapter} rank {config.get('lora_r')}, {kept}{offset}")
    last = next((m for m in reversed(source.metrics) if "eval/win_rate" in m), None)
    if last is not None:
        lines.append(
            f"- In-training win rate at iteration {last['iteration']}: {last['eval/win_rate']:.3f} (95% CI "
            f"{last['eval/ci_low']:.3f}-{last['eval/ci_high']:.3f}, n={last['eval/n']}) against "
            + ("the fixed baseline outputs" if config.get("eval_baseline_outputs") else "the initial policy")
        )
    lines += ["", "| hyperparameter | value |", "|---|---|"]
    lines += [f"| `{k}` | `{v}` |" for k, v in _hyperparameters(config)]
    lines += ["", "Every setting of the run is in `training_config.yaml`.", ""]
    return lines


def _evaluation_section(evaluation: dict) -> list[str]:
    def pct(v):
        return "n/a" if v is None else f"{100 * v:.2f}"

    judge = evaluation["judge"]
    judge_text = judge.get("kind", "") + (
        f" ({named(judge['model_name_or_path'], 'model')})" if judge.get("model_name_or_path") else ""
    )
    return [
        "## Evaluation",
        "",
        "| eval set | baseline | judge | win rate (%) | 95% CI (%) | LC win rate (%) | LC variant | avg length |",
        "|---|---|---|---|---|---|---|---|",
        f"| {evaluation['eval_set']} | {evaluation['baseline']} | {judge_text} | {pct(evaluation['win_rate'])} | "
        f"{pct(evaluation['ci_low'])}-{pct(evaluation['ci_high'])} | {pct(evaluation.get('lc_win_rate'))} | "
        f"{evaluation.get('lc_variant')} | {evaluation['avg_length']:.0f} |",
        "",
    ]


def _loading_section(adapter_only: bool, repo: str, base_model: str | None) -> list[str]:
    if adapter_only:
        code = [
            "from peft import PeftModel",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "",
            f'base = AutoModelForCausalLM.from_pretrained("{base_model or "BASE_MODEL"}")',
            f'model = PeftModel.from_pretrained(base, "{repo}")',
            f'tokenizer = AutoTokenizer.from_pretrained("{repo}")',
        ]
    else:
        code = [
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "",
            f'model = AutoModelForCausalLM.from_pretrained("{repo}")',
            f'tokenizer = AutoTokenizer.from_pretrained("{repo}")',
        ]
    code += [
        'messages = [{"role": "user", "content": "Write a haiku about rivers."}]',
        "inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors='pt',"
        " return_dict=True)",
        "print(tokenizer.decode(model.generate(**inputs, max_new_tokens=64)[0], skip_special_tokens=True))",
    ]
    return ["## How to load", "", "```python", *code, "```", ""]


def render(source, adapter_only: bool, options: CardOptions, evaluation, repo_id: str | None = None) -> str:
    """The whole README.md: YAML metadata between --- lines, then the body."""
    data = metadata(source, adapter_only, options, evaluation)
    name = repo_id or Path(source.run_dir).resolve().name
    base_model = options.base_model
    body = [
        f"# {name}",
        "",
        f"A policy trained with prefopt by online preference optimisation "
        f"(`{source.config['algorithm']}`) from {named(base_model or source.config['model_name_or_path'], 'model')}.",
        "",
        *_training_section(source, adapter_only, base_model),
        *(_evaluation_section(evaluation) if evaluation else []),
        *_loading_section(adapter_only, repo_id or "path/to/this/folder", base_model),
    ]
    return f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body)
