"""Evaluation: win rates and their uncertainty. Imports nothing from the training code."""

from prefopt.eval.winrate import WinRate, win_rate

__all__ = ["WinRate", "win_rate"]
