"""The HF rollout engine: determinism, seeding independent of batching, log-prob agreement, EOS and actions."""

import contextlib
import dataclasses
import math

import pytest
import torch
from helpers import chat_prompt_ids

from prefopt.ops import build_sequence_batch, response_token_logps
from prefopt.rollout.engine import SamplingParams, expand_requests
from prefopt.rollout.hf import HFRolloutEngine, filter_logits


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    from prefopt.models import load_causal_lm

    return load_causal_lm(tiny_model_dir).eval()


def engine(policy, tokenizer, batch_size=64):
    return HFRolloutEngine(lambda: contextlib.nullcontext(policy), tokenizer, batch_size, show_progress=False)


TEXTS = ["hi", "Tell me about the long river and the bright sun please", "why is the sky blue"]
PARAMS = SamplingParams(max_new_tokens=10, temperature=1.0, top_p=0.95)


def key(batch):
    return [(s.prompt_index, s.sample_index, tuple(s.response_ids)) for s in batch.samples]


def test_same_seeds_same_samples_whatever_the_batching(policy, tokenizer):
    prompts = chat_prompt_ids(tokenizer, TEXTS)
    a = engine(policy, tokenizer, 64).generate(prompts, 3, PARAMS, seeds=[1, 2, 3])
    b = engine(policy, tokenizer, 2).generate(prompts, 3, PARAMS, seeds=[1, 2, 3])
    assert key(a) == key(b)
    # Reversing the prompt order (with their seeds) gives each prompt the same samples.
    c = engine(policy, tokenizer).generate(prompts[::-1], 3, PARAMS, seeds=[3, 2, 1])
    by_prompt = {(2 - s.prompt_index, s.sample_index): s.response_ids for s in c.samples}
    assert all(by_prompt[(s.prompt_index, s.sample_index)] == s.response_ids for s in a.samples)
    d = engine(policy, tokenizer).generate(prompts, 3, PARAMS, seeds=[4, 5, 6])
    assert key(a) != key(d)
    # Samples of one prompt differ from each other (distinct streams).
    assert len({tuple(s.response_ids) for s in a.groups()[1]}) > 1


def test_logps_agree_with_a_separate_forward_pass(policy, tokenizer):
    prompts = chat_prompt_ids(tokenizer, TEXTS)
    batch = engine(policy, tokenizer).generate(prompts, 4, PARAMS, seeds=[7, 8, 9])
    seqs = build_sequence_batch(
        [s.prompt_ids for s in batch.samples], [s.response_ids for s in batch.samples], tokenizer.pad_token_id
    )
    with torch.no_grad():
        forward = response_token_logps(policy, seqs)
    for row, s in enumerate(batch.samples):
        assert torch.allclose(forward[row, : len(s.response_ids)], s.token_logps, atol=1e-4)
        assert s.logp == pytest.approx(float(s.token_logps.sum()))


def test_per_prompt_counts_including_zero(policy, tokenizer):
    prompts = chat_prompt_ids(tokenizer, TEXTS)
    batch = engine(policy, tokenizer).generate(prompts, [2, 0, 5], PARAMS, seeds=[1, 2, 3])
    assert [len(g) for g in batch.groups()] == [2, 0, 5]
    assert [s.sample_index for s in batch.groups()[2]] == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError):
        expand_requests(3, [1, 2], [1, 2, 3])


def test_stops_at_eos_and_reports_finish_reason(policy, tokenizer):
    eos = tokenizer.eos_token_id
    prompts = chat_prompt_ids(tokenizer, TEXTS)
    forced = SamplingParams(max_new_tokens=5, allowed_token_ids=(eos,))
    for s in engine(policy, tokenizer).generate(prompts, 2, forced, seeds=[1, 2, 3]).samples:
        assert s.response_ids == [eos] and s.finish_reason == "stop" and s.text == ""
        assert s.token_logps.tolist() == [0.0]  # the only allowed token has probability 1
    other = tokenizer.convert_tokens_to_ids("a")
    mixed = SamplingParams(max_new_tokens=6, allowed_token_ids=(eos, other))
    for s in engine(policy, tokenizer).generate(prompts, 8, mixed, seeds=[1, 2, 3]).samples:
        assert len(s.response_ids) <= 6 and eos not in s.response_ids[:-1]
        assert (s.finish_reason == "stop") == (s.response_ids[-1] == eos)


def test_allowed_tokens_sample_the_restricted_softmax(policy, tokenizer):
    actions = tuple(tokenizer.convert_tokens_to_ids(t) for t in ["A", "B", "C"])
    prompts = chat_prompt_ids(tokenizer, ["play"])
    params = SamplingParams(max_new_tokens=1, allowed_token_ids=actions)
    batch = engine(policy, tokenizer).generate(prompts, 3000, params, seeds=[0])
    with torch.no_grad():
        logits = policy(torch.tensor(prompts)).logits[0, -1, list(actions)]
    probs = torch.softmax(logits, -1)
    counts = torch.tensor([sum(s.response_ids[0] == a for s in batch.samples) for a in actions], dtype=torch.float)
    # Multinomial standard error at n = 3000 is <= 0.0092; 4 s.e. keeps the test stable.
    assert torch.allclose(counts / 3000, probs, atol=0.037)
    for s in batch.samples[:20]:
        assert s.token_logps[0].item() == pytest.approx(math.log(probs[actions.index(s.response_ids[0])]), abs=1e-5)


def test_full_vocabulary_draws_follow_the_tempered_truncated_softmax(policy, tokenizer):
    prompts = chat_prompt_ids(tokenizer, ["play"])
    params = SamplingParams(max_new_tokens=1, temperature=0.5, top_k=4)
    batch = engine(policy, tokenizer).generate(prompts, 3000, params, seeds=[0])
    with torch.no_grad():
        logits = policy(torch.tensor(prompts)).logits[0, -1]
    probs = torch.softmax(filter_logits(logits[None], params)[0], -1)
    top = torch.topk(probs, 4).indices.tolist()
    counts = torch.bincount(torch.tensor([s.response_ids[0] for s in batch.samples]), minlength=len(probs)).float()
    assert counts[top].sum() == 3000  # nothing outside the top 4 is ever drawn
    assert torch.allclose(counts[top] / 3000, probs[top], atol=0.037)  # 4 multinomial standard errors


def test_greedy_and_top_k_one_agree(policy, tokenizer):
    prompts = chat_prompt_ids(tokenizer, TEXTS)
    greedy = engine(policy, tokenizer).generate(prompts, 1, SamplingParams(max_new_tokens=6, temperature=0), [1, 2, 3])
    top1 = engine(policy, tokenizer).generate(prompts, 1, SamplingParams(max_new_tokens=6, top_k=1), [4, 5, 6])
    assert key(greedy) == key(top1)


def test_filter_logits_top_p_and_top_k():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    # top_p 0.79: keep tokens until the mass before them reaches 0.79 -> {0.5, 0.3}
    kept = torch.isfinite(filter_logits(logits, SamplingParams(top_p=0.79)))
    assert kept.tolist() == [[True, True, False, False]]
    kept = torch.isfinite(filter_logits(logits, SamplingParams(top_p=0.81)))
    assert kept.tolist() == [[True, True, True, False]]
    kept = torch.isfinite(filter_logits(logits, SamplingParams(top_k=3)))
    assert kept.tolist() == [[True, True, True, False]]
    scaled = filter_logits(logits, SamplingParams(temperature=2.0))
    assert torch.allclose(scaled, logits / 2)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A second tiny policy (other weights, same tokenizer) standing in for π_ref."""
    from prefopt.models import load_causal_lm
    from prefopt.tiny import write_tiny_model

    return load_causal_lm(str(write_tiny_model(tmp_path_factory.mktemp("ref") / "m", seed=3))).eval()


def mixture_engine(policy, reference, tokenizer, batch_size=64):
    return HFRolloutEngine(
        lambda: contextlib.nullcontext(policy),
        tokenizer,
        batch_size,
        show_progress=False,
        reference=lambda model: contextlib.nullcontext(reference),
    )


def test_reference_mixture_logps_are_the_token_level_geometric_mixture(policy, reference, tokenizer):
    prompts = chat_prompt_ids(tokenizer, TEXTS)  # prompts of different lengths: left padding and cached positions
    mu = 0.3
    params = SamplingParams(max_new_tokens=8, ref_mixture=mu)
    batch = mixture_engine(policy, reference, tokenizer, batch_size=5).generate(prompts, 3, params, seeds=[1, 2, 3])
    seqs = build_sequence_batch(
        [s.prompt_ids for s in batch.samples], [s.response_ids for s in batch.samples], tokenizer.pad_token_id
    )
    with torch.no_grad():
        # log π^μ(y_t) = (1 − μ) log π(y_t) + μ log π_ref(y_t) − log Σ_v π(v)^{1−μ} π_ref(v)^μ, from full passes.
        inputs = {k: seqs[k] for k in ("input_ids", "attention_mask", "position_ids")}
        out_p, out_r = policy(**inputs), reference(**inputs)
    start = seqs["input_ids"].shape[1] - seqs["response_ids"].shape[1] - 1  # logits predicting response token 0
    for row, s in enumerate(batch.samples):
        span = slice(start, start + len(s.response_ids))
        mixed = (1 - mu) * torch.log_softmax(out_p.logits[row, span], -1) + mu * torch.log_softmax(
            out_r.logits[row, span], -1
        )
        expected = torch.log_softmax(mixed, -1).gather(-1, torch.tensor(s.response_ids)[:, None]).squeeze(-1)
        assert torch.allclose(expected, s.token_logps, atol=1e-4)


def test_reference_mixture_endpoints(policy, reference, tokenizer):
    prompts = chat_prompt_ids(tokenizer, TEXTS)
    seeds = [4, 5, 6]
    plain = engine(policy, tokenizer).generate(prompts, 2, PARAMS, seeds)
    ref_only = engine(reference, tokenizer).generate(prompts, 2, PARAMS, seeds)
    mixer = mixture_engine(policy, reference, tokenizer)
    # μ = 0 is the policy itself; μ = 1 samples exactly what π_ref would with the same streams.
    assert key(mixer.generate(prompts, 2, PARAMS, seeds)) == key(plain)
    assert key(mixer.generate(prompts, 2, dataclasses.replace(PARAMS, ref_mixture=1.0), seeds)) == key(ref_only)
    with pytest.raises(ValueError, match="reference"):
        engine(policy, tokenizer).generate(prompts, 1, dataclasses.replace(PARAMS, ref_mixture=0.5), seeds)


def test_packed_samples_round_trip():
    from prefopt.rollout.engine import Sample, pack_samples, unpack_samples

    samples = [
        Sample(0, 0, [1, 2], [3, 4, 5], "abc", torch.tensor([-0.5, -1.0, -2.0]), "stop"),
        Sample(0, 1, [1, 2], [], "", torch.zeros(0), "length"),
        Sample(1, 0, [7], [8], "d", torch.tensor([-0.25]), "length", torch.tensor([-0.3])),
    ]
    back = unpack_samples(pack_samples(samples))
    for a, b in zip(samples, back):
        assert (a.prompt_index, a.sample_index, a.prompt_ids, a.response_ids, a.text, a.finish_reason) == (
            b.prompt_index, b.sample_index, b.prompt_ids, b.response_ids, b.text, b.finish_reason
        )  # fmt: skip
        assert torch.equal(a.token_logps, b.token_logps) and b.engine_logps is None  # not every sample has them
    mixed = unpack_samples(pack_samples(samples[2:]))
    assert torch.equal(mixed[0].engine_logps, torch.tensor([-0.3]))


@pytest.mark.parametrize("fraction", [0.5, 1.0])
def test_logp_check_compares_the_engines_log_probs_with_a_trainer_forward(tiny_model_dir, tmp_path, fraction):
    """The in-process engine's log-probs agree with the trainer's packed forward to rounding; a fraction of the
    samples (seeded) is checked, all of them at 1."""
    from helpers import PROMPTS

    import prefopt

    config = prefopt.SPPOConfig(output_dir=str(tmp_path / "run"), dataset_name=str(PROMPTS), num_samples=4,
                                max_new_tokens=6, prompts_per_iteration=16, num_iterations=1, disable_tqdm=True,
                                logp_check_fraction=fraction)  # fmt: skip
    trainer = prefopt.SPPOTrainer(tiny_model_dir, args=config)
    trainer.train()
    record = trainer.log_history[-1]
    tokens = record["rollout/samples"] * record["rollout/mean_length"]
    assert record["rollout/logp_gap_max"] < 1e-4
    if fraction == 1.0:
        assert record["rollout/logp_checked_tokens"] == pytest.approx(tokens)
    else:
        assert 0.25 * tokens < record["rollout/logp_checked_tokens"] < 0.75 * tokens
