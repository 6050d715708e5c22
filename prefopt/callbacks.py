"""Training events for callbacks in transformers' ``TrainerCallback`` shape, with its ``TrainerState`` and
``TrainerControl``.

A callback is any object (a ``transformers.TrainerCallback`` subclass or not) with some of these methods, each
called as ``method(args, state, control, **kwargs)`` with ``model``, ``processing_class``, ``optimizer`` and
``lr_scheduler`` among the keywords, as transformers calls them; a method that returns a ``TrainerControl``
replaces the current one:

- ``on_init_end``: the trainer was constructed (inputs validated, policy loaded);
- ``on_train_begin`` / ``on_train_end``: around the loop (after the final policy is saved);
- ``on_iteration_begin`` / ``on_iteration_end`` (prefopt's own, keyword ``iteration``): around each online
  iteration (collect, optimise, commit, evaluate);
- ``on_step_end``: after each optimizer step (``state.global_step`` counts them);
- ``on_log`` (keyword ``logs``): each record written to metrics.jsonl (every iteration) or steps.jsonl (every
  ``logging_steps`` steps);
- ``on_evaluate`` (keyword ``metrics``): after each win-rate evaluation;
- ``on_save`` (keyword ``checkpoint``, its folder): after each checkpoint.

``TrainerControl`` semantics. An iteration is the unit a checkpoint and a resume know, so requests are honoured at
iteration ends: ``should_training_stop`` ends training after the current iteration, which is then checkpointed
(``final/`` holds that policy, and ``--resume`` with a larger ``num_iterations`` continues it);
``should_save`` checkpoints the current iteration even when ``save_every`` would not; ``should_evaluate``, set
before an iteration's metrics are taken (at its begin or a step end), adds the win rate to that iteration's
metrics. Under several processes a request made by any process holds for all of them. ``should_log`` and
``should_epoch_stop`` have no effect (every iteration is logged; an iteration's optimisation is not cut short).
"""

from __future__ import annotations

from typing import Any


class Events:
    """The loop's events, dispatched to ``callbacks``; keeps the ``TrainerState`` and ``TrainerControl``.

    Args:
        callbacks: callback objects, or classes (instantiated without arguments, as transformers does).
        args: what callbacks receive as ``args`` (the trainer's config).
        is_main: whether this is the main process (``state.is_world_process_zero``).
    """

    def __init__(self, callbacks=None, args: Any = None, is_main: bool = True):
        from transformers import TrainerControl, TrainerState

        self.callbacks = [c() if isinstance(c, type) else c for c in (callbacks or [])]
        self.args = args
        self.state = TrainerState(is_local_process_zero=is_main, is_world_process_zero=is_main)
        self.control = TrainerControl()
        self.objects: dict[str, Any] = {}  # model, processing_class, optimizer, lr_scheduler
        self._run = None  # the run being trained (``bind``)

    def add(self, callback) -> None:
        self.callbacks.append(callback() if isinstance(callback, type) else callback)

    def bind(self, run) -> None:
        """The run's objects as the callbacks' keywords, and its progress in the state (a resume's too)."""
        backend = run.backend
        self.objects = {
            "model": backend.unwrapped,
            "processing_class": run.tokenizer,
            "optimizer": backend.optimizer,
            "lr_scheduler": backend.scheduler,
        }
        self.state.num_train_epochs = run.cfg.num_iterations
        self.state.logging_steps = run.cfg.logging_steps
        self.state.train_batch_size = run.cfg.per_device_train_batch_size
        self.state.global_step = run.state["global_step"]
        self.state.epoch = float(run.start_iteration)
        self.state.log_history = [dict(r) for r in run.history]
        self._run = run

    def call(self, event: str, **kwargs) -> None:
        for callback in self.callbacks:
            method = getattr(callback, event, None)
            if method is None:
                continue
            result = method(self.args, self.state, self.control, **self.objects, **kwargs)
            if result is not None:
                self.control = result

    def step_end(self, record: dict | None) -> None:
        """After an optimizer step (``record``: its steps.jsonl record, when one is kept)."""
        run = self._run
        state = run.state
        self.state.global_step = state["global_step"]
        per_iteration = state["steps_per_iteration"]
        if per_iteration:
            self.state.max_steps = per_iteration * run.cfg.num_iterations
            self.state.epoch = state["global_step"] / per_iteration
        self.call("on_step_end")
        if record is not None:
            self.log(record)

    def log(self, record: dict) -> None:
        self.state.log_history.append(dict(record))
        self.call("on_log", logs=record)

    def agree(self, backend) -> None:
        """Every process's requests held by all (one small collective)."""
        flags = (self.control.should_training_stop, self.control.should_save, self.control.should_evaluate)
        combined = [any(f) for f in zip(*backend.all_gather_object(flags))]
        self.control.should_training_stop, self.control.should_save, self.control.should_evaluate = combined
