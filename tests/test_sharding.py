"""How an iteration is split across processes: prompt blocks, micro-batches, batches and metrics put back together.

The real multi-process runs are in test_multiprocess.py; these check the pieces by hand."""

import pytest
import torch

from prefopt.batch import Batch
from prefopt.context import combine_metrics, shard_bounds
from prefopt.optimise import _micro_batches


def test_blocks_are_contiguous_cover_every_item_and_differ_by_at_most_one():
    for n, world in [(7, 2), (10, 3), (2, 4), (0, 2)]:
        blocks = [shard_bounds(n, world, r) for r in range(world)]
        assert [i for lo, hi in blocks for i in range(lo, hi)] == list(range(n))
        sizes = [hi - lo for lo, hi in blocks]
        assert max(sizes) - min(sizes) <= 1
    assert [shard_bounds(7, 2, r) for r in range(2)] == [(0, 3), (3, 7)]


def test_weighted_blocks_cut_nearest_to_equal_shares():
    # GVM budgets 8 1 1 1 1 4 on 2 processes: total 16, the running sums 8, 9, 10, 11, 12, 16; the cut nearest to 8
    # is after the first prompt, so the blocks carry 8 and 8 samples.
    weights = [8, 1, 1, 1, 1, 4]
    assert [shard_bounds(6, 2, r, weights) for r in range(2)] == [(0, 1), (1, 6)]
    # One prompt outweighs a share: a process may get nothing; zero weights still land in some block.
    blocks = [shard_bounds(4, 3, r, [0, 0, 5, 5]) for r in range(3)]
    assert [i for lo, hi in blocks for i in range(lo, hi)] == [0, 1, 2, 3]
    # All weights zero: split by count.
    assert [shard_bounds(4, 2, r, [0, 0, 0, 0]) for r in range(2)] == [(0, 2), (2, 4)]
    with pytest.raises(ValueError, match="weights has 2 entries for 3 items"):
        shard_bounds(3, 2, 0, [1, 2])


def _rows_of(size):
    return lambda rows: [rows[i : i + size] for i in range(0, len(rows), size)]


def test_every_process_runs_as_many_micro_batches_with_spare_ones_weighted_zero():
    # A minibatch of 3 rows over 2 processes, 1 row per micro-batch: rank 0 takes rows 0 and 2, rank 1 row 1 and a
    # spare repeat of the first row with weight 0.
    assert _micro_batches([5, 6, 7], 0, 2, _rows_of(1)) == [([5], 1.0), ([7], 1.0)]
    assert _micro_batches([5, 6, 7], 1, 2, _rows_of(1)) == [([6], 1.0), ([5], 0.0)]
    # One process: nothing to pad.
    assert _micro_batches([1, 2, 3], 0, 1, _rows_of(2)) == [([1, 2], 1.0), ([3], 1.0)]
    # Fewer rows than processes: rank 2 of 3 has none, so it runs one spare.
    assert _micro_batches([4, 9], 2, 3, _rows_of(4)) == [([4], 0.0)]


def test_concatenated_batches_keep_row_order_and_every_field():
    def batch(rows, offset):
        return Batch(
            prompt_ids=[[offset + r] for r in range(rows) for _ in range(2)],
            response_ids=[[offset + r, s] for r in range(rows) for s in range(2)],
            seqs_per_row=2,
            row_data={"target": torch.arange(rows, dtype=torch.float32) + offset},
            token_data={"old_logps": [torch.tensor([float(offset + r)] * 2) for r in range(rows) for _ in range(2)]},
            metrics={"m": 1.0},
        )

    joined = Batch.concat([batch(2, 0), batch(0, 10), batch(1, 20)])
    assert joined.num_rows == 3 and joined.seqs_per_row == 2
    assert joined.row_data["target"].tolist() == [0.0, 1.0, 20.0]
    assert joined.response_ids == [[0, 0], [0, 1], [1, 0], [1, 1], [20, 0], [20, 1]]
    assert [t[0].item() for t in joined.token_data["old_logps"]] == [0, 0, 1, 1, 20, 20]
    assert joined.metrics == {}  # combined across processes separately, with their weights
    with pytest.raises(ValueError, match="same sequences per row"):
        Batch.concat([batch(1, 0), Batch([[1]], [[2]], 1, row_data={"target": torch.zeros(1)})])


def test_metrics_combine_as_weighted_means():
    # reward/mean over 3 and 5 responses: (0.5·3 + 0.1·5)/8 = 0.25; a metric only one process has keeps its value.
    parts = [{"reward/mean": (0.5, 3), "only": (7.0, 2)}, {"reward/mean": (0.1, 5)}]
    assert combine_metrics(parts) == pytest.approx({"reward/mean": 0.25, "only": 7.0})
    # No weight anywhere (no prompts on any process): the first value stands.
    assert combine_metrics([{"x": (0.3, 0)}, {"x": (0.9, 0)}]) == {"x": 0.3}
