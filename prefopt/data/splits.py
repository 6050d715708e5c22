"""Which prompts each iteration uses, and the held-out evaluation split (seeded, never the global RNG)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from prefopt.errors import ConfigError, DataError


def _permutation(num_items: int, seed: int, pass_index: int = 0) -> list[int]:
    # A private Generator keyed on (seed, pass): never touches global RNG state, same result on every platform.
    return np.random.default_rng([seed, pass_index]).permutation(num_items).tolist()


def iteration_prompts(
    num_prompts: int, per_iteration: int | None, iteration: int, num_iterations: int, seed: int
) -> list[int]:
    """Indices of the prompts used by iteration ``iteration`` (0-based).

    ``per_iteration=None``: one seeded permutation split into ``num_iterations`` disjoint parts whose sizes
    differ by at most one (SPPO's disjoint splits); iteration t gets part t. An int k: iteration t takes
    positions [t·k, (t+1)·k) of a stream of permutations, a fresh one (seeded by seed and pass number) each time
    the data runs out, so every prompt is used once per pass. A block that straddles two passes may repeat a
    prompt; within a pass there are no repeats.

    Args:
        seed: a non-negative integer.
    """
    if num_iterations < 1:
        raise ConfigError(f"num_iterations must be at least 1, got {num_iterations}")
    if not 0 <= iteration < num_iterations:
        raise ValueError(f"iteration must be in [0, {num_iterations}), got {iteration}")
    if num_prompts < 1:
        raise DataError("there are no prompts to split into iterations")
    if per_iteration is None:
        if num_prompts < num_iterations:
            raise DataError(f"cannot split {num_prompts} prompts into {num_iterations} disjoint non-empty parts")
        order = _permutation(num_prompts, seed)
        start = iteration * num_prompts // num_iterations
        stop = (iteration + 1) * num_prompts // num_iterations
        return order[start:stop]
    if per_iteration < 1:
        raise ConfigError(f"per_iteration must be at least 1 or None, got {per_iteration}")
    orders: dict[int, list[int]] = {}
    indices = []
    for position in range(iteration * per_iteration, (iteration + 1) * per_iteration):
        pass_index, offset = divmod(position, num_prompts)
        if pass_index not in orders:
            orders[pass_index] = _permutation(num_prompts, seed, pass_index)
        indices.append(orders[pass_index][offset])
    return indices


def holdout_split(examples: Sequence, num_eval: int, seed: int) -> tuple[list, list]:
    """Remove ``num_eval`` seeded-random examples for evaluation.

    Returns:
        (train, eval), each in the original order.
    """
    if num_eval < 0:
        raise ConfigError(f"num_eval must be non-negative, got {num_eval}")
    if num_eval >= len(examples):
        raise DataError(f"cannot hold out {num_eval} of {len(examples)} examples: no training examples would remain")
    held_out = set(_permutation(len(examples), seed)[:num_eval])
    train = [example for i, example in enumerate(examples) if i not in held_out]
    evaluation = [example for i, example in enumerate(examples) if i in held_out]
    return train, evaluation
