"""The pairrm judge on a tiny random PairRM-shaped checkpoint: layout, lengths, probabilities, loading, errors.

Parity with llm-blender's own code is in tests/test_pairrm_parity.py (it needs the transformers 4 environment).
"""

from __future__ import annotations

import json

import pytest
import torch

from prefopt.errors import JudgeError
from prefopt.judges import build_judge
from prefopt.judges.pairrm import CONVERSATION_INSTRUCTION, PairRMJudge, conversation_texts, load_pairrm
from prefopt.tiny_pairrm import build_tiny_pairrm

LONG = " ".join(["tell me a story about the old city by the river"] * 200)  # ~2000 tokens


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return build_tiny_pairrm(tmp_path_factory.mktemp("pairrm") / "ckpt", seed=0)


@pytest.fixture(scope="module")
def judge(checkpoint):
    return PairRMJudge(str(checkpoint), batch_size=4)


# Scoring tests run PairRM's code with shorter lengths (48 + 2 * 24 tokens a row): the same code, 20x less compute.
SHORT = {"source_max_length": 48, "candidate_max_length": 24}


@pytest.fixture(scope="module")
def short(checkpoint):
    return PairRMJudge(str(checkpoint), batch_size=4, **SHORT)


ROWS = (
    ["hello world", "tell me a story", LONG, "why is the sky blue?", [{"role": "user", "content": "what is a cat"}]],
    ["hi there", "a cat sat on the mat", "short", "", "a small animal"],
    ["go away", "", LONG, "because of the sun", "a dog"],
)


def piece_ids(judge, text: str) -> list[int]:
    """The tiny tokenizer's pieces, looked up by hand: every word of ``text`` is one ▁-prefixed piece."""
    return [judge.tokenizer.token_to_id("▁" + word) for word in text.split()]


def test_one_row_has_pairrm_layout(judge):
    ids, marks = judge.encode("hello world", "a cat", "")
    cls, sep = 1, 2
    source, cand1, cand2 = judge.marker_ids
    expected = [cls, source, *piece_ids(judge, "hello world"), sep, cls, cand1, *piece_ids(judge, "a cat"), sep]
    expected += [cls, cand2, sep]  # an empty response is its marker alone
    assert ids == expected
    assert marks == (1, 6, 11) and [ids[m] for m in marks] == judge.marker_ids
    assert None not in expected


def test_truncation_lengths(checkpoint, judge):
    # A long source keeps its first 1224 tokens, [SEP] last; each candidate then gets (2048 - 1224) // 2 = 412.
    ids, marks = judge.encode(LONG, LONG, LONG)
    assert marks == (1, 1225, 1225 + 412) and len(ids) == 2048
    assert ids[1222:1226] == [ids[1222], 2, 1, judge.marker_ids[1]]
    assert ids[2:8] == piece_ids(judge, "tell me a story about the")  # cut from the right: the start survives
    # A short source leaves its unused room to the candidates: (2048 - len(source)) // 2 each.
    ids, marks = judge.encode("hello world", LONG, LONG)
    room = (2048 - 5) // 2  # the source is [CLS] <|source|> hello world [SEP]
    assert marks == (1, 6, 6 + room) and len(ids) == 5 + 2 * room
    # Other lengths follow the same rule: 10 for the source, (10 + 2 * 6 - 10) // 2 = 6 for each candidate.
    small = PairRMJudge(str(checkpoint), source_max_length=10, candidate_max_length=6)
    ids, marks = small.encode(LONG, LONG, "a cat")
    assert marks == (1, 11, 17) and len(ids) == 10 + 6 + 5


def test_probability_is_sigmoid_of_both_orders(short):
    judge = short
    prompts, a, b = ROWS
    forward, backward = judge.logits(prompts, a, b).double(), judge.logits(prompts, b, a).double()
    probs = judge.preference(prompts, a, b)
    assert torch.allclose(probs, torch.sigmoid(forward - backward), atol=1e-6, rtol=0)  # batching round-off
    swapped = judge.preference(prompts, b, a)
    assert torch.allclose(probs + swapped, torch.ones_like(probs), atol=1e-12, rtol=0)
    assert ((probs > 0) & (probs < 1)).all() and probs.std() > 0.01


def test_same_response_is_exactly_a_half(short):
    judge = short
    probs = judge.preference(["hello world", LONG, ""], ["a cat", LONG, ""], ["a cat", LONG, ""])
    assert probs.tolist() == [0.5, 0.5, 0.5]


def test_batch_size_and_order_do_not_change_scores(checkpoint, short):
    judge = short
    prompts, a, b = ROWS
    reference = judge.preference(prompts, a, b)
    one = PairRMJudge(str(checkpoint), batch_size=1, **SHORT).preference(prompts, a, b)
    assert torch.allclose(one, reference, atol=1e-6, rtol=0)
    order = [3, 0, 4, 2, 1]
    shuffled = judge.preference([prompts[i] for i in order], [a[i] for i in order], [b[i] for i in order])
    assert torch.allclose(shuffled, reference[order], atol=1e-6, rtol=0)


def test_conversation_follows_compare_conversations():
    messages = [
        {"role": "system", "content": "be kind"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "a poem"},
    ]
    source, candidate = conversation_texts(messages, "the moon")
    turns = "USER: be kind\nhi\nAssistant: <Response 1>\nUSER: a poem\nAssistant: <Response 2>"
    assert source == CONVERSATION_INSTRUCTION + turns
    assert candidate == "<Response 1>: hello\n<Response 2>: the moon"
    for bad in ([{"role": "assistant", "content": "x"}], messages[:3], []):
        with pytest.raises(JudgeError, match="alternating user/assistant"):
            conversation_texts(bad, "y")


def test_markers_inside_texts_do_not_move_the_read_positions(judge):
    ids, marks = judge.encode("<|candidate2|> hello", "<|candidate1|>", "<|source|>")
    assert [ids[m] for m in marks] == judge.marker_ids and ids.count(judge.marker_ids[1]) == 2
    prob = judge.preference(["<|candidate2|> hello"], ["<|candidate1|>"], ["<|source|>"])
    assert 0 < prob.item() < 1


def test_checkpoint_round_trip(checkpoint, tmp_path):
    from safetensors.torch import load_file

    model, tokenizer, marker_ids = load_pairrm(str(checkpoint), dtype="auto")
    saved = load_file(checkpoint / "model.safetensors")
    state = model.state_dict()
    assert set(state) == set(saved) and all(torch.equal(state[k], saved[k]) for k in saved)
    assert {k.split(".")[0] for k in saved} == {"pretrained_model", "head_layer"}
    config = json.loads((checkpoint / "config.json").read_text())
    assert marker_ids == [config[k] for k in ("source_prefix_id", "cand1_prefix_id", "cand2_prefix_id")]
    assert marker_ids == [tokenizer.token_to_id(t) for t in ("<|source|>", "<|candidate1|>", "<|candidate2|>")]
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    # Same seed, same files; another seed, other weights.
    again = build_tiny_pairrm(tmp_path / "again", seed=0)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (again / name).read_bytes() == (checkpoint / name).read_bytes(), name
    other = load_file(build_tiny_pairrm(tmp_path / "other", seed=1) / "model.safetensors")
    assert not torch.equal(other["head_layer.4.weight"], saved["head_layer.4.weight"])


def test_bfloat16_is_close_to_float32(checkpoint, short):
    judge = short
    prompts, a, b = ROWS
    half = PairRMJudge(str(checkpoint), dtype="bfloat16", **SHORT)
    assert next(half.model.parameters()).dtype == torch.bfloat16
    assert torch.allclose(half.preference(prompts, a, b), judge.preference(prompts, a, b), atol=0.1)


def test_build_judge(checkpoint):
    judge = build_judge("pairrm", model_name_or_path=str(checkpoint), batch_size=3)
    assert isinstance(judge, PairRMJudge) and judge.batch_size == 3
    with pytest.raises(JudgeError, match="judge_model_name_or_path"):
        build_judge("pairrm")


def _one_line(err: pytest.ExceptionInfo, path) -> str:
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "PairRM-hf layout" in message
    return message


def test_not_a_pairrm_checkpoint(checkpoint, tmp_path):
    from safetensors.torch import load_file, save_file

    missing = tmp_path / "nothing"
    with pytest.raises(JudgeError) as err:
        PairRMJudge(str(missing))
    assert "no such folder" in _one_line(err, missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(JudgeError) as err:
        PairRMJudge(str(empty))
    assert "config.json" in _one_line(err, empty)
    llama = tmp_path / "llama"
    llama.mkdir()
    (llama / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(JudgeError) as err:
        PairRMJudge(str(llama))
    assert "'llama'" in _one_line(err, llama) and "source_prefix_id" in str(err.value)
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_bytes((checkpoint / "config.json").read_bytes())
    with pytest.raises(JudgeError) as err:
        PairRMJudge(str(no_weights))
    assert "model.safetensors" in _one_line(err, no_weights)
    (no_weights / "model.safetensors").write_bytes((checkpoint / "model.safetensors").read_bytes())
    with pytest.raises(JudgeError) as err:
        PairRMJudge(str(no_weights))
    assert "no tokenizer.json" in _one_line(err, no_weights)
    tokenizer = json.loads((checkpoint / "tokenizer.json").read_text())
    tokenizer["added_tokens"] = [t for t in tokenizer["added_tokens"] if t["content"] != "<|candidate2|>"]
    (no_weights / "tokenizer.json").write_text(json.dumps(tokenizer))
    with pytest.raises(JudgeError) as err:
        PairRMJudge(str(no_weights))
    assert "does not give <|source|>" in _one_line(err, no_weights)
    (no_weights / "tokenizer.json").write_bytes((checkpoint / "tokenizer.json").read_bytes())
    headless = {k: v for k, v in load_file(checkpoint / "model.safetensors").items() if "head_layer" not in k}
    save_file(headless, no_weights / "model.safetensors")
    with pytest.raises(JudgeError) as err:
        PairRMJudge(str(no_weights))
    assert "missing weights ['head_layer" in _one_line(err, no_weights)
    (no_weights / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(JudgeError) as err:
        PairRMJudge(str(no_weights))
    assert "model.safetensors: " in _one_line(err, no_weights)


def test_cost_is_two_encoder_rows_per_comparison(judge):
    calls = []
    forward = judge.model.forward

    def counting(input_ids, attention_mask, marks):
        calls.append(input_ids.shape[0])
        return forward(input_ids, attention_mask, marks)

    judge.model.forward = counting
    try:
        judge.preference(["x", "y", "z"], ["a", "b", "c"], ["d", "e", "f"])
    finally:
        del judge.model.forward
    assert sum(calls) == 6 and max(calls) <= judge.batch_size


def test_group_matrices_follow_sppo_scores(checkpoint, short):
    """SPPO's pipeline: s_i = (1/K) Σ_j (l_ij − l_ji), P(i ≻ j) = σ(s_i − s_j); matrix="pairs": σ(l_ij − l_ji)."""
    group = ["Paris.", "It is Paris, the capital.", "London", "I do not know."]
    k = len(group)
    firsts = [group[i] for i in range(k) for j in range(k)]
    seconds = [group[j] for i in range(k) for j in range(k)]
    logits = short.logits(["Capital of France?"] * k * k, firsts, seconds).double().reshape(k, k)
    gap = (logits - logits.T) * (1 - torch.eye(k, dtype=torch.float64))  # l_ij − l_ji; the diagonal is 0
    scores = gap.sum(dim=1) / k
    (matrix,) = short.preference_matrices(["Capital of France?"], [group])
    assert torch.allclose(matrix, torch.sigmoid(scores[:, None] - scores[None, :]), atol=1e-6)
    pairs = PairRMJudge(str(checkpoint), batch_size=3, matrix="pairs", **SHORT)
    (per_pair,) = pairs.preference_matrices(["Capital of France?"], [group])
    assert torch.allclose(per_pair, torch.sigmoid(gap), atol=1e-6)
    two = [short.preference_matrices(["q"], [group[:2]])[0], pairs.preference_matrices(["q"], [group[:2]])[0]]
    assert torch.allclose(two[0], two[1], atol=1e-12)  # K = 2: the same
    with pytest.raises(JudgeError, match="judge_pairrm_matrix must be scores or pairs"):
        PairRMJudge(str(checkpoint), matrix="rank")
