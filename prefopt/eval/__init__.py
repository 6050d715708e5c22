"""Evaluation: win rates, length-controlled win rates and AlpacaEval's files (``run.py``: ``prefopt eval``),
Arena-Hard-Auto (``arena_hard/``) and MT-Bench (``mt_bench/``), presets, and a benchmark scored during training
(``in_training.py``, which reaches the run only through the object it is called with); apart from the training code.

Nothing here imports the trainers (loop, setup, algorithms, backend): the module evaluates any model or any
outputs file, from prefopt or from another tool. Heavy parts (models, judges) load only when used.
"""

from prefopt.eval.winrate import WinRate, bootstrap_interval, win_rate

__all__ = ["WinRate", "bootstrap_interval", "win_rate"]
