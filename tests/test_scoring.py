"""The scorer's forward: packed rows and the chunked output head give the padded forward's log-probs and gradients,
and a minibatch's gradient does not depend on how it is cut into micro-batches; the probe keeps them on where they
reproduce the padded forward up to rounding (the tiny model, random-init real-shape Qwen2, Mistral and Gemma) and
refuses packing where attention crosses sequences. The real model's check is tests/test_scoring_real.py."""

import json
import re

import pytest
import torch
from helpers import ADAM_ARGS, ALGORITHM_ARGS, REPO, assert_same_weights, train

from prefopt.ops import build_sequence_batch, response_token_logps
from prefopt.scoring import (
    Plan,
    Scorer,
    best_fit_rows,
    pack_sequences,
    padded_predict_at,
    rounding_bound,
    token_bins,
)

# Mixed lengths: prompts of 1 to 9 tokens, responses of 1 to 12 (the long one alone, the short ones sharing rows).
PROMPTS_IDS = [[1, 4, 30, 31], [1], [1, 4, 50, 51, 52, 53, 54, 55, 56], [7, 8], [9, 10, 11]]
RESPONSES = [[60, 61, 2], [70], list(range(80, 92)), [33, 34], [40, 41, 42, 43, 44]]


def test_best_fit_rows_and_token_bins_by_hand():
    # Longest first: 6 opens row 0; 5 does not fit its 4 free tokens and opens row 1; 4 fits both, best in row 0
    # (exactly); 3 goes to row 1 (5 free), and 2 fills row 1's last 2 tokens.
    assert best_fit_rows([2, 6, 5, 4, 3], 10) == [[1, 3], [2, 4, 0]]
    assert best_fit_rows([12], 5) == [[0]]  # too long: a row of its own
    padded = lambda lengths: len(lengths) * max(lengths)  # noqa: E731
    # Items of two sequences each, longest first: [4, 4] (8), then [3, 1] padded with it to 4 x 4 = 16 <= 16.
    assert token_bins([[1, 3], [4, 4], [2, 2]], 16, padded) == [[1, 0], [2]]
    assert token_bins([[1, 3], [4, 4], [2, 2]], 16, sum) == [[1, 0, 2]]  # packed: 8 + 4 + 4 = 16 <= 16
    assert token_bins([[1, 3], [4, 4], [2, 2]], 12, sum) == [[1, 0], [2]]  # 12, then 4
    assert token_bins([[9, 9]], 4, sum) == [[0]]  # over budget alone
    assert token_bins([], 4, sum) == []


def test_pack_sequences_layout_by_hand():
    batch = pack_sequences([[5, 6], [7], [8]], [[9, 10, 11], [12], [13, 14]], pad_token_id=0)
    # Lengths 5, 2, 3 into rows of 5: [seq 0], then seq 2 (3) and seq 1 (2).
    assert batch["input_ids"].tolist() == [[5, 6, 9, 10, 11], [8, 13, 14, 7, 12]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4], [0, 1, 2, 0, 1]]
    # Flat positions predicting each response token: seq 0 at 1, 2, 3; seq 1 (row 1, column 3) at 8; seq 2 at 5, 6.
    assert batch["predict_at"].tolist() == [1, 2, 3, 8, 5, 6]
    assert batch["response_ids"].tolist() == [[9, 10, 11], [12, 0, 0], [13, 14, 0]]
    one = pack_sequences([[5, 6], [7]], [[9], [12, 3]], pad_token_id=0, one_row=True)
    assert one["input_ids"].tolist() == [[5, 6, 9, 7, 12, 3]] and one["position_ids"].tolist() == [[0, 1, 2, 0, 1, 2]]
    tail = pack_sequences([[5, 6, 7], [8]], [[9], [1]], pad_token_id=0)  # row 1 holds 2 of 4 tokens
    assert tail["input_ids"].tolist() == [[5, 6, 7, 9], [8, 1, 0, 0]]
    assert tail["position_ids"].tolist() == [[0, 1, 2, 3], [0, 1, 0, 1]]  # the tail is a sequence of its own
    padded = build_sequence_batch([[5, 6], [7]], [[9, 10], [12]], 0)  # T = 4, L = 2
    assert padded_predict_at(padded).tolist() == [1, 2, 5]


def test_token_budget_bins_pack_rows_first_then_group_them_by_hand(tiny_model_dir):
    from prefopt.models import load_causal_lm

    model = load_causal_lm(tiny_model_dir)
    items = [[2, 3], [9], [4], [6], [1, 1], [7]]  # totals 5, 9, 4, 6, 2, 7
    packed = Scorer(0, "cpu")
    assert packed.plan(model) == Plan(True, True)
    # Rows of 9 (the longest item), best-fit decreasing: [9], [7, 2], [6], [5, 4]; a budget of 20 takes 2 rows.
    assert packed.bins(model, items, 20) == ([[1, 5, 4], [3, 0, 2]], 9)
    assert packed.bins(model, items, 5) == ([[1], [5, 4], [3], [0, 2]], 9)  # under one row: a row each
    # Padded, longest item first while sequences × longest <= 20: [9, 7] (2 × 9 = 18), then [6, 2, 3] (3 × 6;
    # adding 4 would make 4 × 6 = 24), then [4, 1, 1] (3 × 4).
    padded = Scorer(0, "cpu", padding_free=False)
    assert padded.bins(model, items, 20) == ([[1, 5], [3, 0], [2, 4]], 0)
    # The forward packs into rows of the planned width: 5 + 4 tokens share a row of 9, nothing else is padding.
    with packed.row_width(9):
        packed.token_logps(model, [[1, 2], [3]], [[4, 5, 6], [7, 8, 9]])
    assert (packed.real_tokens, packed.forward_tokens_seen) == (9, 9)
    packed.token_logps(model, [[1, 2], [3]], [[4, 5, 6], [7, 8, 9]])  # rows of the longest (5): 2 x 5
    assert (packed.real_tokens, packed.forward_tokens_seen) == (18, 19)


def _all_paths(model, prompts, responses):
    """(plain padded full-logits log-probs, {plan: log-probs}) on the same sequences."""
    scorer = Scorer(0, "cpu", chunk_size=4)  # several chunks even on these few tokens
    plain = response_token_logps(model, {k: v for k, v in build_sequence_batch(prompts, responses, 0).items()})
    plans = [Plan(True, False), Plan(False, True), Plan(True, True), Plan(True, True, one_row=True)]
    return plain, {plan: scorer._forward(model, prompts, responses, plan)[0] for plan in plans}


def _grads(model, logps):
    model.zero_grad()
    (logps * torch.linspace(0.5, 1.5, logps.numel()).view_as(logps)).sum().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("adapter", ["none", "lora"])
def test_packed_and_chunked_log_probs_and_gradients_equal_the_padded_forward(tiny_model_dir, adapter):
    from peft import LoraConfig, get_peft_model

    from prefopt.models import load_causal_lm

    model = load_causal_lm(tiny_model_dir)
    if adapter == "lora":  # the head adapted too: the chunked path calls the (LoRA) head module itself
        config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "lm_head"], lora_dropout=0.0)
        model = get_peft_model(model, config)
        with torch.no_grad():  # B = 0 at init: make the adapter matter
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.1)
    model.eval()
    plain, paths = _all_paths(model, PROMPTS_IDS, RESPONSES)
    reference = _grads(model, plain)
    assert len(reference) > 0
    for plan, logps in paths.items():
        assert logps.shape == plain.shape
        assert torch.allclose(logps, plain, atol=1e-5, rtol=0), plan
        grads = _grads(model, logps)
        assert grads.keys() == reference.keys()
        assert all(torch.allclose(grads[k], reference[k], atol=1e-5, rtol=1e-4) for k in grads), plan


def test_the_probe_keeps_both_paths_on_llama_and_the_chunked_path_never_builds_full_logits(tiny_model_dir):
    from prefopt.models import load_causal_lm

    model = load_causal_lm(tiny_model_dir)
    notices = []
    scorer = Scorer(0, "cpu", chunk_size=3, notice=notices.append)
    assert scorer.plan(model) == Plan(True, True) and notices == []
    head = model.get_output_embeddings()
    seen = []
    handle = head.register_forward_hook(lambda _m, args, _o: seen.append(args[0].shape[:-1].numel()))
    try:
        scorer.token_logps(model, PROMPTS_IDS, RESPONSES)
    finally:
        handle.remove()
    # The model's own call sees no position; then chunks of at most 3 of the 23 response tokens, never more.
    assert seen[0] == 0 and max(seen[1:]) == 3 and sum(seen) == sum(map(len, RESPONSES))


def test_a_soft_capped_head_falls_back_to_the_models_own_logits_with_a_notice(tmp_path):
    """Gemma 2 soft-caps its logits after the head: the hidden-state path would miss the cap, so the probe keeps
    the model's own logits, and the scores still equal the plain forward's."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    config = Gemma2Config(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=2, num_key_value_heads=1, head_dim=16, final_logit_softcapping=2.0,
                          attn_logit_softcapping=None,
                          attn_implementation="eager")  # fmt: skip
    torch.manual_seed(0)
    model = Gemma2ForCausalLM(config).eval()
    notices = []
    scorer = Scorer(0, "cpu", notice=notices.append)
    assert scorer.plan(model) == Plan(True, False)
    [notice] = notices
    found = re.fullmatch(
        r"\[prefopt\] logprob_chunk_size: gemma2's logits are not its output head applied to its decoder's hidden "
        r"states \(by (\S+) in log-prob, over its rounding bound (\S+): a logit transform\?\); using its own logits",
        notice,
    )
    assert found and float(found[1]) > 100 * float(found[2]), notice
    with torch.no_grad():
        ours = scorer.token_logps(model, PROMPTS_IDS, RESPONSES)
        plain = response_token_logps(model, build_sequence_batch(PROMPTS_IDS, RESPONSES, 0))
    assert torch.allclose(ours, plain, atol=1e-5, rtol=0)


class Crossing(torch.nn.Module):
    """A model whose attention crosses packed sequences: given no attention mask, it passes an all-ones one, so
    transformers builds one causal mask over the whole row (the position ids still restart per sequence). The scorer
    unwraps it like DDP (its ``module``)."""

    def __init__(self, lm):
        super().__init__()
        self.module = lm

    def forward(self, **inputs):
        if inputs.get("attention_mask") is None:
            inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
        return self.module(**inputs)


CROSSING_NOTICE = (
    r"\[prefopt\] padding_free: \w+ \(attn_implementation=\w+\) changes its outputs on packed sequences by (\S+) in "
    r"log-prob, over its rounding bound (\S+) \(its attention crosses them\); padding instead"
)


def crossing_margin(model) -> float:
    """The probe's refusal of ``model`` wrapped in :class:`Crossing`: its deviation over the rounding bound."""
    notices = []
    assert Scorer(0, "cpu", notice=notices.append).plan(Crossing(model)).packed is False
    [notice] = notices
    found = re.fullmatch(CROSSING_NOTICE, notice)
    assert found, notice
    return float(found[1]) / float(found[2])


def test_the_rounding_bound_by_hand():
    # τ = K·φ + c·ε·max(1, max |P|), K = c = 8, ε = 2⁻²³: φ = 2⁻¹¹ (exact in float32 at 30), scale 30.
    plain = torch.tensor([[-30.0, -2.0], [-0.5, 0.0]])
    alone = plain.clone()
    alone[0, 0] += 2**-11
    assert rounding_bound(plain, alone) == pytest.approx(8 * 2**-11 + 8 * 2**-23 * 30, rel=1e-12)
    assert rounding_bound(plain, plain) == pytest.approx(8 * 2**-23 * 30, rel=1e-12)  # rounds alike: c ulps
    small = torch.tensor([[-0.25]])
    assert rounding_bound(small, small) == pytest.approx(8 * 2**-23, rel=1e-12)  # scale at least 1


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_model_whose_attention_crosses_packed_sequences_is_scored_padded_with_a_notice(tiny_model_dir, dtype):
    from prefopt.models import load_causal_lm

    model = load_causal_lm(tiny_model_dir, dtype=dtype)
    # Measured: φ = 0 in both dtypes (the bound is its 8 ulps, 6.3e-6), crossing 0.27: 4·10⁴ times the bound.
    assert crossing_margin(model) > 1000
    scorer = Scorer(0, "cpu")
    crossing = Crossing(model)
    assert scorer.plan(crossing) == Plan(False, True)
    with torch.no_grad():  # the refused layout does cross; the scorer's padded one gives the plain forward
        ours = scorer.token_logps(crossing, PROMPTS_IDS, RESPONSES)
        crossed = scorer._forward(crossing, PROMPTS_IDS, RESPONSES, Plan(True, False))[0]
        plain = response_token_logps(model, build_sequence_batch(PROMPTS_IDS, RESPONSES, 0))
    assert torch.equal(ours, plain)
    assert float((crossed - plain).abs().max()) > 1e-2


# Real configs' widths, heads and vocabularies (Qwen2-0.5B, Mistral-7B-v0.1, gemma-2b); 2 of their layers, 1 of
# Gemma's (its 256,000-token head is most of a forward's time).
REAL_SHAPES = {
    "qwen2": ("Qwen2", dict(num_hidden_layers=2, vocab_size=151936, hidden_size=896, intermediate_size=4864,
                            num_attention_heads=14, num_key_value_heads=2, rope_theta=1e6, rms_norm_eps=1e-6,
                            tie_word_embeddings=True)),
    "mistral": ("Mistral", dict(num_hidden_layers=2, vocab_size=32000, hidden_size=4096, intermediate_size=14336,
                                num_attention_heads=32, num_key_value_heads=8, rope_theta=1e4, rms_norm_eps=1e-5,
                                sliding_window=4096, tie_word_embeddings=False)),
    "gemma": ("Gemma", dict(num_hidden_layers=1, vocab_size=256000, hidden_size=2048, intermediate_size=16384,
                            num_attention_heads=8, num_key_value_heads=1, head_dim=256,
                            hidden_activation="gelu_pytorch_tanh", rope_theta=1e4, rms_norm_eps=1e-6,
                            tie_word_embeddings=True)),
}  # fmt: skip


def real_shape_model(family: str):
    """A random-init model of ``family``'s real shape, its config's own initialisation (normal(0, 0.02) weights):
    built uninitialised, then initialised once, which skips torch's default init of every layer first."""
    import transformers
    from transformers.initialization import no_init_weights

    prefix, sizes = REAL_SHAPES[family]
    config = getattr(transformers, f"{prefix}Config")(**sizes)
    torch.manual_seed(0)
    with no_init_weights():
        model = getattr(transformers, f"{prefix}ForCausalLM")(config)
    model.init_weights()
    return model.eval()


def assert_keeps_packing_and_refuses_crossing(model):
    """Both paths kept with no notice under sdpa and eager attention; the model made to cross refused, its deviation
    over 10³ times the bound."""
    for attn in ("sdpa", "eager"):
        model.set_attn_implementation(attn)
        notices = []
        assert Scorer(0, "cpu", notice=notices.append).plan(model) == Plan(True, True), (attn, notices)
        assert notices == []
    assert crossing_margin(model) > 1000


@pytest.mark.parametrize("family", sorted(REAL_SHAPES))
def test_the_probe_keeps_packing_on_real_shape_models_and_refuses_crossing(family):
    """Random-init Qwen2, Mistral and Gemma of their real widths and vocabularies, float32 (measured: a correct
    path's deviation at most 1.1·φ, crossing 1.6·10⁴ to 3.6·10⁴ times the bound, at 4 to 24 layers)."""
    assert_keeps_packing_and_refuses_crossing(real_shape_model(family))


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(REAL_SHAPES))
def test_the_probe_keeps_packing_on_real_shape_models_in_bfloat16_and_refuses_crossing(family):
    """The same in bfloat16, where CPU matmuls round every layout alike (φ = 0: the bound is its c ulps; measured:
    the paths' deviation 0, crossing 8·10⁴ to 10⁵ times the bound)."""
    assert_keeps_packing_and_refuses_crossing(real_shape_model(family).to(torch.bfloat16))


@pytest.mark.parametrize("name", sorted(ALGORITHM_ARGS))
def test_every_algorithms_loss_is_the_same_packed_and_padded(name, tiny_model_dir, tmp_path):
    """One collect, then the loss and its gradient on all rows with the default scorer (packed, chunked head) and
    with padded rows and full logits: equal within 1e-5."""
    from test_trainers import cli_args, config_for

    from prefopt.algorithms import get_algorithm
    from prefopt.build import build_run
    from prefopt.context import collect_shard
    from prefopt.objective import loss_on_rows

    args = [*cli_args(name), "--max_new_tokens", "12"]
    config = config_for(name, args, output_dir=tmp_path, model_name_or_path=tiny_model_dir)
    run = build_run(name, *config.split())
    algorithm = get_algorithm(name)
    batch, _ = collect_shard(run.ctx, algorithm, run.train_prompts, 0)
    assert batch.num_rows > 0
    model = run.ctx.backend.model
    packed = run.ctx.scorer
    padded = Scorer(
        packed.pad_token_id, packed.device, padding_free=False, chunk_size=0, allowed_token_ids=packed.allowed
    )
    results = []
    for scorer in (packed, padded):
        run.ctx.anchors.scorer = scorer
        model.zero_grad()
        losses, _ = loss_on_rows(run.ctx, algorithm.loss, batch, list(range(batch.num_rows)))
        losses.sum().backward()
        results.append(
            (losses.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        )
    assert packed.plan(model) == Plan(True, True)
    (l1, g1), (l2, g2) = results
    assert torch.allclose(l1, l2, atol=1e-5, rtol=1e-5), name
    # Gradients to 1e-5 of each tensor's largest entry: INPO's reach 34 on the embeddings, where float32 sums in
    # another order differ by ~7e-5 (2e-6 relative).
    assert g1.keys() == g2.keys()
    for k in g1:
        assert float((g1[k] - g2[k]).abs().max()) <= 1e-5 * max(1.0, float(g1[k].abs().max())), (name, k)


@pytest.mark.parametrize("name", ["rebel", "sppo"])
def test_one_minibatchs_gradient_is_the_same_however_it_is_cut_into_micro_batches(name, tiny_model_dir, tmp_path):
    """The rows of one minibatch in one micro-batch, one row per micro-batch, and token budgets that bin them
    (longest first) into a few: the accumulated gradient is the same within 1e-6 of its largest entry. The
    weights are float64, so rounding (float32 sums in another order differ by ~2e-6) cannot hide a wrong cut.
    REBEL's rows hold two sequences, SPPO's one."""
    import dataclasses

    from test_trainers import cli_args, config_for

    from prefopt.algorithms import get_algorithm
    from prefopt.build import build_run
    from prefopt.context import collect_shard

    args = [*cli_args(name), "--max_new_tokens", "12"]
    config = config_for(name, args, output_dir=tmp_path, model_name_or_path=tiny_model_dir)
    run = build_run(name, *config.split())
    batch, _ = collect_shard(run.ctx, get_algorithm(name), run.train_prompts, 0)
    run.backend.model.double()  # float64 weights and gradients: a difference left is the cut's, not rounding
    rows = list(range(batch.num_rows))
    lengths = [len(p) + len(r) for p, r in zip(batch.prompt_ids, batch.response_ids)]
    per_row = [sum(lengths[r * batch.seqs_per_row : (r + 1) * batch.seqs_per_row]) for r in rows]
    assert len(set(per_row)) > 1  # mixed lengths, so the budgets below cut unevenly
    opt, base = run.optimisation, run.optimisation.cfg
    cuts = {
        "one micro-batch": dict(per_device_train_batch_size=len(rows)),
        "row by row": dict(per_device_train_batch_size=1),
        "budget of the longest row": dict(max_tokens_per_micro_batch=max(per_row)),
        "budget of three rows": dict(max_tokens_per_micro_batch=3 * max(per_row)),
    }
    grads, counts = {}, {}
    for label, keys in cuts.items():
        opt.cfg = dataclasses.replace(base, **keys)
        counts[label] = len(opt._cutter(run.ctx, batch)(rows)[0])
        run.backend.model.zero_grad()
        opt._step(run.ctx, batch, batch.weights(), rows)
        grads[label] = {n: p.grad.clone() for n, p in run.backend.model.named_parameters() if p.grad is not None}
    assert counts["one micro-batch"] == 1 and counts["row by row"] == len(rows)
    assert 1 < counts["budget of three rows"] < counts["budget of the longest row"] <= len(rows)
    reference = grads.pop("one micro-batch")
    for label, grad in grads.items():
        assert grad.keys() == reference.keys()
        worst = max(float((grad[k] - reference[k]).abs().max()) for k in grad)
        scale = max(float(g.abs().max()) for g in reference.values())
        assert worst <= 1e-6 * scale, (label, worst, scale)  # measured: ~1e-15


@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_packed_training_under_zero_matches_padded_training(tiny_model_dir, tmp_path, stage):
    """The CLI under DeepSpeed (one process), with the packed, chunked default and with padded rows and full
    logits: the same weights and loss after an iteration (ZeRO-3 partitions the head the hook reads)."""
    args = ["--num_iterations", "1", *ADAM_ARGS, "--deepspeed", REPO / f"configs/deepspeed/{stage}.json"]
    packed = train(tiny_model_dir, tmp_path / "packed", *args)
    train(tiny_model_dir, tmp_path / "padded", *args, "--padding_free", "false", "--logprob_chunk_size", "0")
    assert "padding_free:" not in packed.stdout and "logprob_chunk_size:" not in packed.stdout  # no fallback
    assert_same_weights(tmp_path / "padded", tmp_path / "packed")
    m_padded, m_packed = (json.loads((tmp_path / d / "metrics.jsonl").read_text()) for d in ("padded", "packed"))
    assert m_packed["loss/total"] == pytest.approx(m_padded["loss/total"], rel=1e-5)
    # The same tokens scored (same samples), on no more positions (these prompts differ by a few tokens, too little
    # for two sequences to share a row as wide as the longest).
    assert m_packed["forward/tokens"] == m_padded["forward/tokens"] > 0
    assert 0 < m_packed["forward/padding_fraction"] <= m_padded["forward/padding_fraction"] < 0.5
