"""The vLLM rollout engine against the transformers one, on the tiny policy (runs where vllm imports:
``bash scripts/vllm_env.sh``; skipped in the main environment).

Log-prob tolerance: both engines run float32 on the CPU, but vLLM fuses q/k/v and gate/up into single GEMMs and
has its own attention kernel, so the logits differ by float32 rounding, not by any difference in what is
computed: the measured max |Δ log π| is about 1e-6 here; the bound, TOL = 1e-4, leaves two orders of margin and is
still far below any real difference (a wrong weight, a temperature applied, a renormalisation: ≥ 1e-2).
"""

import contextlib
import os

import pytest
import torch

pytest.importorskip("vllm")

from helpers import chat_prompt_ids  # noqa: E402

from prefopt.backend import Backend  # noqa: E402
from prefopt.config import TrainConfig  # noqa: E402
from prefopt.errors import ConfigError  # noqa: E402
from prefopt.rollout.engine import SamplingParams  # noqa: E402
from prefopt.rollout.hf import HFRolloutEngine, eos_token_ids  # noqa: E402
from prefopt.rollout.vllm import VLLMRolloutEngine  # noqa: E402

TOL = 1e-4
TEXTS = [
    "hi",
    "Tell me about the long river and the bright sun please",
    "why is the sky blue",
    "play rock paper scissors",
    "write a short poem about the moon",
    "hello world",
    "what is a good book",
    "explain the game",
]
GREEDY = SamplingParams(max_new_tokens=24, temperature=0)
SAMPLED = SamplingParams(max_new_tokens=12, temperature=1.0, top_p=0.95, top_k=50)
STICKY_TOKEN = 284  # a token greedy decoding of the tiny model emits on some prompts: EOS is made to win over it


def load(model_dir):
    from prefopt.models import load_causal_lm

    return load_causal_lm(model_dir).eval()


@pytest.fixture(scope="module")
def policy_dir(tiny_model_dir, tokenizer, tmp_path_factory):
    """The tiny policy with EOS's output row set to 1.1× that of a frequent token, so greedy decoding ends with
    EOS on some prompts and runs to max_new_tokens on others (a random model almost never emits EOS)."""
    model = load(tiny_model_dir)
    with torch.no_grad():
        head = model.get_output_embeddings().weight
        head[tokenizer.eos_token_id] = 1.1 * head[STICKY_TOKEN]
    out = tmp_path_factory.mktemp("vllm") / "policy"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def engine(policy_dir, tokenizer):
    torch.set_num_threads(1)
    return VLLMRolloutEngine(
        policy_dir,
        tokenizer,
        eos_token_ids=eos_token_ids(load(policy_dir), tokenizer),
        dtype="float32",
        max_model_len=256,
        seed=0,
        kv_cache_memory_bytes=64 << 20,  # on CPU the default reserves a fraction of the machine's memory
        enforce_eager=True,
    )


@pytest.fixture(scope="module")
def prompts(tokenizer):
    return chat_prompt_ids(tokenizer, TEXTS)


def hf_engine(model, tokenizer):
    return HFRolloutEngine(lambda: contextlib.nullcontext(model), tokenizer, 64, show_progress=False)


def backend_with(model, tmp_path, lr=0.5):
    cfg = TrainConfig(model_name_or_path="x", dataset_name="x", output_dir=str(tmp_path))
    backend = Backend(cfg)
    backend.prepare(model, torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr))
    return backend


def optimizer_step(backend, prompts):
    """One real SGD step on the NLL of the prompts (the weights change, weights_version is bumped)."""
    ids = torch.tensor([prompts[1][:12], prompts[2][:12]])
    model = backend.unwrapped.train()
    backend.backward(model(input_ids=ids, labels=ids).loss)
    backend.step()
    model.eval()


def assert_same_rollouts(vllm_batch, hf_batch, check_text=True) -> float:
    """Token ids, finish reasons (and texts) equal; returns max |Δ token log-prob|."""
    assert [(s.prompt_index, s.sample_index) for s in vllm_batch.samples] == [
        (s.prompt_index, s.sample_index) for s in hf_batch.samples
    ]
    worst = 0.0
    for v, h in zip(vllm_batch.samples, hf_batch.samples):
        assert v.response_ids == h.response_ids and v.finish_reason == h.finish_reason
        assert v.prompt_ids == h.prompt_ids
        assert not check_text or v.text == h.text
        assert v.token_logps.dtype == torch.float32 and v.token_logps.shape == (len(v.response_ids),)
        worst = max(worst, float((v.token_logps - h.token_logps).abs().max()))
    print(f"max |Δ logp| = {worst:.2e}")
    assert worst < TOL
    return worst


def test_greedy_equals_the_hf_engine(engine, policy_dir, tokenizer, prompts):
    batch = engine.generate(prompts, 1, GREEDY, seeds=range(len(prompts)))
    reference = hf_engine(load(policy_dir), tokenizer).generate(prompts, 1, GREEDY, seeds=range(len(prompts)))
    assert_same_rollouts(batch, reference)
    reasons = {s.finish_reason for s in batch.samples}
    assert reasons == {"stop", "length"}  # both endings are covered
    for s in batch.samples:
        ends_with_eos = s.response_ids[-1] == tokenizer.eos_token_id
        assert ends_with_eos == (s.finish_reason == "stop")
        assert len(s.response_ids) == GREEDY.max_new_tokens or s.finish_reason == "stop"
        assert tokenizer.eos_token_id not in s.response_ids[:-1]


def test_log_probs_are_the_policy_itself_whatever_the_sampling_filters(engine, policy_dir, tokenizer, prompts):
    """top_k = 1 at temperature 1 is greedy decoding: the same tokens, and the recorded log-probs are still log π
    (raw), not the truncated distribution's (which would be 0)."""
    greedy = engine.generate(prompts[:3], 1, GREEDY, seeds=[0, 1, 2])
    top1 = engine.generate(prompts[:3], 1, SamplingParams(max_new_tokens=24, top_k=1), seeds=[7, 8, 9])
    for g, t in zip(greedy.samples, top1.samples):
        assert g.response_ids == t.response_ids
        assert torch.allclose(g.token_logps, t.token_logps, atol=TOL) and (t.token_logps < -0.1).any()


def test_sampled_log_probs_match_a_forward_pass(engine, policy_dir, prompts):
    from prefopt.ops import build_sequence_batch, response_token_logps

    batch = engine.generate(prompts, 2, SAMPLED, seeds=range(len(prompts)))
    seq = build_sequence_batch([s.prompt_ids for s in batch.samples], [s.response_ids for s in batch.samples], 0)
    with torch.no_grad():
        forward = response_token_logps(load(policy_dir), seq)
    for row, s in enumerate(batch.samples):
        assert (s.token_logps - forward[row, : len(s.response_ids)]).abs().max() < TOL


def test_seeded_samples_do_not_depend_on_the_batch(engine, prompts):
    seeds = [11, 12, 13, 14]
    together = engine.generate(prompts[:4], 3, SAMPLED, seeds=seeds)
    again = engine.generate(prompts[:4], 3, SAMPLED, seeds=seeds)
    alone = [engine.generate([prompts[i]], 3, SAMPLED, seeds=[seeds[i]]) for i in range(4)]
    key = [(s.prompt_index, s.sample_index, s.response_ids) for s in together.samples]
    assert key == [(s.prompt_index, s.sample_index, s.response_ids) for s in again.samples]
    for s in together.samples:
        assert s.response_ids == alone[s.prompt_index].samples[s.sample_index].response_ids
    assert len({tuple(s.response_ids) for s in together.groups()[1]}) > 1  # distinct streams per sample
    other = engine.generate(prompts[:4], 3, SAMPLED, seeds=[21, 22, 23, 24])
    assert key != [(s.prompt_index, s.sample_index, s.response_ids) for s in other.samples]


def test_more_requests_than_one_scheduler_step_holds(engine):
    """480 seeded requests of 40-55 prompt tokens: vLLM schedules them over several steps (on CPU chunked prefill
    broke seeded requests; the engine turns it off there), and the samples are still those of a one-prompt call."""
    prompts = [list(range(3, 43 + i)) for i in range(16)]
    batch = engine.generate(prompts, 30, SAMPLED, seeds=range(16))
    assert len(batch.samples) == 480
    alone = engine.generate(prompts[5:6], 30, SAMPLED, seeds=[5])
    assert [s.response_ids for s in batch.groups()[5]] == [s.response_ids for s in alone.samples]


def test_per_prompt_counts_with_zeros(engine, prompts):
    batch = engine.generate(prompts[:4], [2, 0, 3, 0], SAMPLED, seeds=[1, 2, 3, 4])
    assert [len(g) for g in batch.groups()] == [2, 0, 3, 0] and batch.num_prompts == 4
    assert [(s.prompt_index, s.sample_index) for s in batch.samples] == [(0, 0), (0, 1), (2, 0), (2, 1), (2, 2)]
    assert engine.generate([], 1, SAMPLED, seeds=[]).samples == []


def test_allowed_tokens_are_renormalised_like_the_hf_engine(engine, policy_dir, tokenizer, prompts):
    allowed = tuple(tokenizer.convert_tokens_to_ids(list("0123456789")))
    params = SamplingParams(max_new_tokens=3, temperature=0, allowed_token_ids=allowed)
    batch = engine.generate(prompts, 1, params, seeds=range(len(prompts)))
    reference = hf_engine(load(policy_dir), tokenizer).generate(prompts, 1, params, seeds=range(len(prompts)))
    assert_same_rollouts(batch, reference)
    sampled = engine.generate(prompts, 4, SamplingParams(max_new_tokens=3, allowed_token_ids=allowed), range(8))
    assert all(set(s.response_ids) <= set(allowed) for s in sampled.samples)
    assert all((s.token_logps <= 0).all() and (s.token_logps > -5).all() for s in sampled.samples)


def test_weight_sync_after_an_optimizer_step(engine, policy_dir, tokenizer, prompts, tmp_path):
    model = load(policy_dir)
    backend = backend_with(model, tmp_path)
    engine.follow(backend)
    initial = backend.snapshot()
    before = engine.generate(prompts, 1, GREEDY, seeds=range(8))
    optimizer_step(backend, prompts)
    assert engine.generate([], 1, GREEDY, seeds=[]).samples == []  # even an empty call syncs
    assert not engine.sync_weights()  # nothing new to push
    after = engine.generate(prompts, 1, GREEDY, seeds=range(8))
    assert_same_rollouts(after, hf_engine(backend.unwrapped, tokenizer).generate(prompts, 1, GREEDY, range(8)))
    assert any(
        (a.token_logps[:1] - b.token_logps[:1]).abs().max() > 1e-2 for a, b in zip(after.samples, before.samples)
    )
    backend.restore(initial)  # back to the disk weights for the next test (a version bump: pushed on the next call)
    assert_same_rollouts(engine.generate(prompts, 1, GREEDY, range(8)), before)


def test_weight_sync_pushes_merged_lora_weights(engine, policy_dir, tokenizer, prompts, tmp_path):
    from types import SimpleNamespace

    from prefopt.adapters import DEFAULT, attach_adapter, lora_layers

    lora = SimpleNamespace(
        adapter="lora",
        lora_r=4,
        lora_alpha=8.0,
        lora_dropout=0.0,
        lora_target_modules=["all-linear"],
        use_rslora=False,
    )
    model = attach_adapter(load(policy_dir), lora)
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        for layer in lora_layers(model).values():
            B = layer.lora_B[DEFAULT].weight
            B.copy_(0.3 * torch.randn(B.shape, generator=g))
    engine.load_weights(load(policy_dir).named_parameters())  # vLLM back on the base weights, whatever ran before
    backend = backend_with(model, tmp_path, lr=0.1)
    engine.follow(backend)
    optimizer_step(backend, prompts)
    batch = engine.generate(prompts, 1, GREEDY, seeds=range(8))
    assert_same_rollouts(batch, hf_engine(backend.unwrapped, tokenizer).generate(prompts, 1, GREEDY, range(8)))
    base = hf_engine(load(policy_dir), tokenizer).generate(prompts, 1, GREEDY, range(8))
    assert [s.response_ids for s in batch.samples] != [s.response_ids for s in base.samples]
    engine.load_weights(load(policy_dir).named_parameters())
    engine.follow(None)


def test_refusals(engine, prompts, tokenizer, policy_dir):
    with pytest.raises(ConfigError, match="use_vllm: false"):
        engine.generate(prompts, 1, SamplingParams(ref_mixture=0.5), seeds=range(8))
    with pytest.raises(ConfigError, match="use_vllm: false"):
        engine.generate(prompts, 1, SamplingParams(allowed_token_ids=tuple(range(200))), seeds=range(8))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA"):
            VLLMRolloutEngine(policy_dir, tokenizer, eos_token_ids=[2], enable_sleep_mode=True)


def test_building_the_engine_leaves_the_global_rng_alone(engine):
    # vLLM seeds the global RNGs when it starts; the module's engine was built before this test, so check by state.
    assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    from prefopt.rollout.vllm import _rng_preserved

    with _rng_preserved():
        torch.manual_seed(0)
    assert torch.equal(torch.rand(3), expected)


TWO_RANKS = """
import json, sys, torch, torch.distributed as dist
dist.init_process_group("gloo")
torch.set_num_threads(1)
from prefopt.models import load_tokenizer
from prefopt.rollout.engine import SamplingParams
from prefopt.rollout.vllm import VLLMRolloutEngine
model_dir, out = sys.argv[1], sys.argv[2]
engine = VLLMRolloutEngine(model_dir, load_tokenizer(model_dir), eos_token_ids=[2], dtype="float32", max_model_len=256,
                           kv_cache_memory_bytes=64 << 20, enforce_eager=True)
assert engine.llm.llm_engine.vllm_config.parallel_config.distributed_executor_backend == "external_launcher"
batch = engine.generate([list(range(3, 20))], 3, SamplingParams(max_new_tokens=8), seeds=[dist.get_rank()])
json.dump([s.response_ids for s in batch.samples], open(f"{out}/rank{dist.get_rank()}.json", "w"))
"""


def test_one_engine_per_process_under_a_launcher(engine, policy_dir, tmp_path):
    """Two training processes (a gloo group, as the Backend makes on CPU), each with its own colocated engine on the
    existing group (external_launcher): rank r's samples for seed r equal a one-process engine's."""
    import json
    import subprocess
    import sys

    script = tmp_path / "two_ranks.py"
    script.write_text(TWO_RANKS)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script), policy_dir]
    result = subprocess.run([*cmd, str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    for rank in range(2):
        alone = engine.generate([list(range(3, 20))], 3, SamplingParams(max_new_tokens=8), seeds=[rank])
        assert json.loads((tmp_path / f"rank{rank}.json").read_text()) == [s.response_ids for s in alone.samples]
