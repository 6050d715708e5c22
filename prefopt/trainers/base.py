"""The trainer class every algorithm's trainer is: TRL's constructor and methods over the one shared loop.

``SPPOTrainer(model, args=SPPOConfig(...), train_dataset=..., judge=...)`` validates every input and loads the
policy when it is constructed (``prefopt.build.prepare_run``: a bad argument is a one-line ``PrefoptError``
before any compute); ``train()`` checks the run directory, builds the rest (``start_run``) and runs
``prefopt.loop.train``. The trainer holds no loop and no loss of its own: a subclass names its algorithm's config
class, nothing else. ``prefopt train ALGO`` builds the same trainer from its YAML and flags.
"""

from __future__ import annotations

import atexit
import dataclasses
import re
from pathlib import Path
from typing import ClassVar

from prefopt import loop
from prefopt.build import prepare_run, start_run
from prefopt.callbacks import Events
from prefopt.errors import ConfigError
from prefopt.trainers.arguments import resolve
from prefopt.trainers.config import PrefoptConfig
from prefopt.training_run import save_policy


class PrefoptTrainer:
    """Train ``model`` with the algorithm of ``config_class``.

    Args:
        model: a Hub id or local folder, or a ``transformers.PreTrainedModel`` (a custom or quantised one
            included; a quantised one trains through ``peft_config``). None: ``args.model_name_or_path``.
        args: the algorithm's config (e.g. :class:`prefopt.SPPOConfig`); None: its defaults, with ``output_dir``
            named after the model and the algorithm, as TRL does.
        train_dataset: a ``datasets.Dataset`` or ``IterableDataset`` (read to its end once), or a path or Hub
            name; None: ``args.dataset_name``. The prompt column is ``args.prompt_column``.
        eval_dataset: held-out prompts for the win rate against the initial policy (instead of
            ``args.eval_num_prompts`` prompts held out of the training set).
        judge: a judge kind (``"reward_model"``, ``"exact_match"``, ...: its options from ``args``), a prefopt
            judge object, or a reward function or a list of them in TRL's ``reward_funcs`` convention (summed
            with ``args.reward_weights``; ``prefopt.judges.functions``). None: ``args.judge``.
        processing_class: the tokenizer (None: the model's).
        peft_config: a ``peft.LoraConfig``: train that adapter (``args.adapter: lora_ga`` initialises it with
            LoRA-GA).
        ref_model: π_ref as its own model, for an algorithm that reads π_ref (default: the initial policy,
            without a second copy).
        callbacks: ``transformers.TrainerCallback`` objects or classes (``prefopt.callbacks``).
        reward_funcs: TRL's name for ``judge`` when it is reward functions (give one of the two).
    """

    config_class: ClassVar[type[PrefoptConfig]]

    def __init__(
        self,
        model=None,
        args: PrefoptConfig | None = None,
        train_dataset=None,
        eval_dataset=None,
        judge=None,
        processing_class=None,
        peft_config=None,
        ref_model=None,
        callbacks=None,
        reward_funcs=None,
    ):
        if judge is not None and reward_funcs is not None:
            raise ConfigError("give judge or reward_funcs, not both")
        self.args = self._own_args(args, model)
        given = resolve(
            self.args, model, train_dataset, eval_dataset, judge if judge is not None else reward_funcs,
            processing_class, peft_config, ref_model,
        )  # fmt: skip
        self.args.validate()
        cfg, params = self.args.split()
        self._setup = prepare_run(self.config_class.algorithm, cfg, params, given)
        self._run = None
        self.model = self._setup.model
        self.ref_model = self._setup.reference_model
        self.processing_class = self._setup.inputs.tokenizer
        self.judge = self._setup.inputs.judge
        self.events = Events(callbacks, self.args, self._setup.backend.is_main)
        self.events.call("on_init_end")

    def _own_args(self, args, model) -> PrefoptConfig:
        """A copy of ``args`` (the caller's object is not changed), or the defaults."""
        if args is None:
            name = model if isinstance(model, str) else getattr(model, "name_or_path", "") or "model"
            return self.config_class(output_dir=f"{Path(name).name}-{self.config_class.algorithm}")
        if type(args) is not self.config_class:
            raise ConfigError(
                f"args is a {type(args).__name__}; {type(self).__name__} takes a {self.config_class.__name__}"
            )
        return dataclasses.replace(args)

    # -- TRL's methods ----------------------------------------------------------------------------------------
    @property
    def state(self):
        """transformers' ``TrainerState``: global_step, epoch (iterations completed), log_history."""
        return self.events.state

    @property
    def log_history(self) -> list[dict]:
        return self.events.state.log_history

    def add_callback(self, callback) -> None:
        self.events.add(callback)

    def train(self, resume_from_checkpoint: bool | str | None = None):
        """Run the online iterations into ``args.output_dir``; ``resume_from_checkpoint``: True continues after the
        last checkpoint, a checkpoint folder (``OUTPUT_DIR/checkpoints/iter_N``) after that iteration.

        Returns:
            transformers' ``TrainOutput(global_step, training_loss, metrics)``: the last iteration's metrics and its
            mean loss (``loss/total``).
        """
        from transformers.trainer_utils import TrainOutput

        if self._run is not None:
            raise ConfigError("this trainer has trained already; build a new one (resume_from_checkpoint=True)")
        if resume_from_checkpoint:
            self._resume_flags(resume_from_checkpoint)
        self._run = start_run(self._setup)
        metrics = loop.train(self._run, self.events)
        backend = self._setup.backend
        backend.end_trackers()
        if backend.world_size > 1:  # the process group stays for evaluate() and save_model(); ended at exit
            atexit.register(backend.finish)
        return TrainOutput(self.events.state.global_step, metrics.get("loss/total", float("nan")), metrics)

    def _resume_flags(self, checkpoint: bool | str) -> None:
        iteration = None
        if isinstance(checkpoint, str):
            path = Path(checkpoint)
            match = re.fullmatch(r"iter_(\d+)", path.name)
            if match is None or path.resolve().parent != (Path(self.args.output_dir) / "checkpoints").resolve():
                raise ConfigError(
                    f"resume_from_checkpoint '{checkpoint}' is not a checkpoint of output_dir "
                    f"'{self.args.output_dir}' (OUTPUT_DIR/checkpoints/iter_N)"
                )
            iteration = int(match.group(1))
        for cfg in (self.args, self._setup.cfg):
            cfg.resume, cfg.overwrite, cfg.resume_from_iteration = True, False, iteration

    def evaluate(self) -> dict[str, float]:
        """The win rate of the trained policy against the initial one (or ``eval_baseline_outputs``) on the
        held-out prompts, with its interval (``eval/*``, as metrics.jsonl has them); after ``train()``."""
        if self._run is None:
            raise ConfigError("evaluate() compares the trained policy with the initial one: call train() first")
        if not self._run.eval_prompts:
            raise ConfigError("no held-out prompts: pass eval_dataset, or set eval_num_prompts")
        metrics = loop.evaluate(self._run)
        self.events.call("on_evaluate", metrics=metrics)
        return metrics

    def save_model(self, output_dir: str | None = None) -> None:
        """The current policy with its tokenizer in the Hub format (the adapter alone under LoRA), in
        ``output_dir`` (default: OUTPUT_DIR/final, where ``train()`` saves it)."""
        save_policy(self._setup.backend, self.processing_class, output_dir or Path(self.args.output_dir) / "final")

    def push_to_hub(self, repo_id: str | None = None, private: bool = False, **export_options) -> str:
        """Export the run (``prefopt export``: merged weights, or ``adapter_only=True``, with the model card) and
        upload it to ``repo_id`` (default: ``args.hub_model_id``, else output_dir's name). Returns the repo id."""
        import tempfile

        from prefopt.export import export_run

        if self._run is None:
            raise ConfigError("push_to_hub() uploads a trained run: call train() first")
        repo = repo_id or self.args.hub_model_id or Path(self.args.output_dir).name
        if self._setup.backend.is_main:
            with tempfile.TemporaryDirectory() as tmp:
                export_run(
                    self.args.output_dir, Path(tmp) / "export", push_to_hub=repo, private=private, **export_options
                )
        self._setup.backend.wait()
        return repo
