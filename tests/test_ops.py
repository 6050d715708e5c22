"""Pure tensor helpers: hand-computed values and padding invariance."""

import math

import pytest
import torch

from prefopt.ops import (
    build_sequence_batch,
    gather_token_logps,
    group_advantages,
    masked_mean,
    pad_sequences,
    response_token_logps,
    restricted_log_softmax,
)


def test_gather_token_logps_matches_log_softmax():
    logits = torch.tensor([[[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]])
    labels = torch.tensor([[2, 1]])
    out = gather_token_logps(logits, labels)
    # log softmax([1,2,3])[2] = 3 - log(e + e^2 + e^3); uniform over 3 -> -log 3
    expected = [3 - math.log(math.e + math.e**2 + math.e**3), -math.log(3)]
    assert out[0].tolist() == pytest.approx(expected, abs=1e-6)


def test_restricted_log_softmax_normalises_over_allowed_only():
    logits = torch.tensor([[1.0, 5.0, 2.0, 0.0]])
    logps = restricted_log_softmax(logits, torch.tensor([0, 2]))
    assert torch.isinf(logps[0, 1]) and torch.isinf(logps[0, 3])
    # softmax over {1.0, 2.0}: 1/(1+e), e/(1+e)
    assert logps[0, 0].exp().item() == pytest.approx(1 / (1 + math.e), abs=1e-6)
    assert logps[0, [0, 2]].exp().sum().item() == pytest.approx(1.0, abs=1e-6)


def test_masked_mean_and_empty_mask():
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]]).bool()
    assert masked_mean(values, mask).tolist() == [1.5, 0.0]
    assert masked_mean(values, mask, dim=None).item() == 1.5


def test_group_advantages_population_std_along_the_last_dim():
    out = group_advantages(torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 2.0, 2.0]]), eps=0.0)
    # mean 2.5, population std sqrt(1.25); the second group: mean 1, std 1
    expected = [(v - 2.5) / math.sqrt(1.25) for v in (1, 2, 3, 4)]
    assert out[0].tolist() == pytest.approx(expected, abs=1e-6)
    assert out[1].tolist() == [-1.0, -1.0, 1.0, 1.0]
    assert group_advantages(torch.tensor([0.0, 2.0]), scale=False).tolist() == [-1.0, 1.0]


def test_build_sequence_batch_layout():
    batch = build_sequence_batch([[5, 6], [7]], [[8, 9, 10], [11]], pad_token_id=0)
    # Responses right-aligned to the end after right padding to width 3; rows left-padded to a common length.
    assert batch["input_ids"].tolist() == [[5, 6, 8, 9, 10], [0, 7, 11, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [0, 1, 1, 0, 0]]
    assert batch["position_ids"][1, 1:3].tolist() == [0, 1]
    assert batch["response_ids"].tolist() == [[8, 9, 10], [11, 0, 0]]
    assert batch["response_mask"].tolist() == [[True, True, True], [True, False, False]]
    assert pad_sequences([[1], [2, 3]], 9, side="left").tolist() == [[9, 1], [2, 3]]


def test_response_token_logps_is_padding_invariant(tiny_model_dir):
    from prefopt.models import load_causal_lm

    model = load_causal_lm(tiny_model_dir).eval()
    prompts = [[1, 4, 30, 31, 32, 40], [1, 4, 50]]
    responses = [[60, 61], [70, 71, 72, 73, 2]]
    with torch.no_grad():
        together = response_token_logps(model, build_sequence_batch(prompts, responses, 0))
        for i in range(2):
            alone = response_token_logps(model, build_sequence_batch([prompts[i]], [responses[i]], 0))
            n = len(responses[i])
            assert torch.allclose(together[i, :n], alone[0, :n], atol=1e-5)
            # Manual: the unpadded sequence's logits at positions len(prompt)-1 .. end-1
            full = torch.tensor([prompts[i] + responses[i]])
            logits = model(full).logits[0, len(prompts[i]) - 1 : -1]
            manual = torch.log_softmax(logits, -1).gather(-1, torch.tensor(responses[i])[:, None]).squeeze(-1)
            assert torch.allclose(together[i, :n], manual, atol=1e-5)
        assert together[0, 2:].abs().sum() == 0  # padding positions are zero
