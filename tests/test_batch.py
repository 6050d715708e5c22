"""Batch: rows of S sequences, selection and concatenation keep every per-row and per-token field aligned, and a
micro-batch is padded to its own longest sequence only."""

import pytest
import torch

from prefopt.batch import Batch, pair_sequences
from prefopt.rollout.engine import Sample


def pairs_batch() -> Batch:
    # Two rows of two sequences: row r's sequences are at 2r and 2r + 1.
    return Batch(
        prompt_ids=[[1, 2], [1, 2], [3], [3]],
        response_ids=[[10], [11, 12], [13, 14, 15], [16]],
        seqs_per_row=2,
        row_data={"target": torch.tensor([0.5, -0.5]), "ref_logps": torch.tensor([[-1.0, -2.0], [-3.0, -4.0]])},
        token_data={"logps": [torch.tensor(x) for x in ([-0.5], [-0.25, -0.75], [-1.0] * 3, [-2.0])]},
    )


def test_select_keeps_rows_whole_and_in_the_given_order():
    picked = pairs_batch().select([1, 0])
    assert picked.num_rows == 2
    assert picked.response_ids == [[13, 14, 15], [16], [10], [11, 12]]
    assert picked.row_data["target"].tolist() == [-0.5, 0.5]
    assert picked.row_data["ref_logps"].tolist() == [[-3.0, -4.0], [-1.0, -2.0]]
    assert [t.tolist() for t in picked.token_data["logps"]] == [[-1.0] * 3, [-2.0], [-0.5], [-0.25, -0.75]]


def test_concat_appends_rows_and_refuses_mismatched_batches():
    batch = pairs_batch()
    both = Batch.concat([batch, batch.select([0])])
    assert both.num_rows == 3 and both.response_ids[4:] == [[10], [11, 12]]
    assert both.row_data["target"].tolist() == [0.5, -0.5, 0.5]
    singles = Batch([[1]], [[2]], seqs_per_row=1, row_data={"target": torch.tensor([0.0])})
    with pytest.raises(ValueError, match="same sequences per row"):
        Batch.concat([batch, singles])


def test_shapes_are_checked_at_construction():
    with pytest.raises(ValueError, match="R \\* seqs_per_row"):
        Batch([[1]] * 3, [[2]] * 3, seqs_per_row=2)
    with pytest.raises(ValueError, match="row_data\\['target'\\] has 3 rows, expected 2"):
        Batch([[1]] * 4, [[2]] * 4, seqs_per_row=2, row_data={"target": torch.zeros(3)})
    with pytest.raises(ValueError, match="row_weights"):
        Batch([[1]] * 2, [[2]] * 2, seqs_per_row=1, row_weights=torch.ones(3))


def test_minibatch_pads_per_token_data_to_its_own_longest_response():
    mb = pairs_batch().select([0]).to_minibatch()
    assert mb.rows == 1 and mb.seqs_per_row == 2
    assert mb.response_ids == [[10], [11, 12]] and mb.prompt_ids == [[1, 2], [1, 2]]  # what the forward scores
    assert mb.mask.tolist() == [[[True, False], [True, True]]]  # width 2: this row's longest
    assert mb.token["logps"].tolist() == [[[-0.5, 0.0], [-0.25, -0.75]]]
    assert mb.row["ref_logps"].shape == (1, 2)


def test_weights_are_scaled_to_mean_one_and_follow_rows():
    batch = Batch([[1]] * 3, [[2]] * 3, seqs_per_row=1, row_weights=torch.tensor([0.1, 0.3, 0.2]))
    assert batch.weights().tolist() == pytest.approx([0.5, 1.5, 1.0])
    assert batch.select([2, 0]).row_weights.tolist() == pytest.approx([0.2, 0.1])
    assert Batch.concat([batch, batch.select([1])]).row_weights.tolist() == pytest.approx([0.1, 0.3, 0.2, 0.3])
    assert Batch([[1]], [[2]], seqs_per_row=1).weights().tolist() == [1.0]
    with pytest.raises(ValueError, match="weighting"):
        Batch.concat([batch, Batch([[1]], [[2]], seqs_per_row=1)])


def test_pair_sequences_flattens_winner_then_loser():
    def sample(ids, logp):
        return Sample(0, 0, [7], ids, "", torch.tensor(logp), "stop")

    pairs = [(sample([1], [-0.5]), sample([2, 3], [-1.0, -1.0])), (sample([4], [-3.0]), sample([5], [-4.0]))]
    prompt_ids, response_ids, logps = pair_sequences(pairs)
    assert response_ids == [[1], [2, 3], [4], [5]] and prompt_ids == [[7]] * 4
    assert logps.tolist() == [[-0.5, -2.0], [-3.0, -4.0]]
