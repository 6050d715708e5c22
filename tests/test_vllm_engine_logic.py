"""The vLLM engine's own logic against a recording stand-in for ``vllm`` (runs in the main environment, no vLLM):
request mapping, EOS handling, the allowed-token renormalisation, when weights are pushed, and the sleep-mode order
(CUDA only, so otherwise untested on a CPU machine). The real vLLM runs in tests/test_vllm.py."""

import contextlib
import sys
import types
from dataclasses import dataclass

import pytest
import torch

from prefopt.errors import ConfigError
from prefopt.rollout.engine import SamplingParams, derive_seed
from prefopt.rollout.vllm import VLLMRolloutEngine

EOS = 2


@dataclass
class Logprob:
    logprob: float


class FakeLLM:
    """Records calls; each request answers ``script`` (token ids) with raw log-prob −(position + 1) for the chosen
    token and −(token id) / 10 for every other listed id."""

    script = [7, 8, EOS, 9]

    def __init__(self, **kwargs):
        self.kwargs, self.calls, self.loaded, self.requests = kwargs, [], {}, []

    def sleep(self, level):
        self.calls.append(f"sleep{level}")

    def wake_up(self, tags=None):
        self.calls.append("wake:" + ",".join(tags or ["all"]))

    def reset_prefix_cache(self):
        self.calls.append("reset")

    def collective_rpc(self, method, kwargs):
        self.calls.append(method)
        self.loaded.update({name: t.clone() for name, t in kwargs["weights_iterator"]})

    def generate(self, prompts, params, use_tqdm):
        self.calls.append("generate")
        self.requests += list(zip(prompts, params))
        outputs = []
        for p in params:
            ids = self.script[: p.max_tokens]
            listed = set(p.logprob_token_ids or [])
            steps = [{u: Logprob(-(k + 1.0) if u == t else -u / 10) for u in listed | {t}} for k, t in enumerate(ids)]
            outputs.append(types.SimpleNamespace(outputs=[types.SimpleNamespace(token_ids=ids, logprobs=steps)]))
        return outputs


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.LLM = FakeLLM
    module.SamplingParams = lambda **kw: types.SimpleNamespace(**kw)
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = lambda prompt_token_ids: list(prompt_token_ids)
    module.inputs = inputs
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setitem(sys.modules, "vllm.inputs", inputs)
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")  # the engine sets it to 0; restored after the test
    return module


class FakeBackend:
    def __init__(self, model):
        self.unwrapped, self.weights_version, self.gathers = model, 0, 0

    @contextlib.contextmanager
    def gathered(self):
        self.gathers += 1
        yield


class Decoder:
    def decode(self, ids, skip_special_tokens):
        return " ".join(str(i) for i in ids if not (skip_special_tokens and i == EOS))


def build(backend=None, **kw):
    return VLLMRolloutEngine("model", Decoder(), backend, eos_token_ids=[EOS], **kw)


def test_requests_and_samples(fake_vllm):
    engine = build()
    assert engine.llm.kwargs["logprobs_mode"] == "raw_logprobs" and engine.llm.kwargs["tensor_parallel_size"] == 1
    params = SamplingParams(max_new_tokens=4, temperature=0.7, top_p=0.9, top_k=0)
    batch = engine.generate([[1, 5], [1, 6, 6]], [2, 0], params, seeds=[10, 11])
    assert [(s.prompt_index, s.sample_index) for s in batch.samples] == [(0, 0), (0, 1)]
    (_, first), (_, second) = engine.llm.requests
    assert (first.seed, second.seed) == (derive_seed(10, 0), derive_seed(10, 1))
    assert (first.temperature, first.top_p, first.top_k, first.max_tokens) == (0.7, 0.9, -1, 4)
    assert first.stop_token_ids == [EOS] and first.logprobs == 0 and first.allowed_token_ids is None
    s = batch.samples[0]
    assert s.response_ids == [7, 8, EOS] and s.finish_reason == "stop" and s.text == "7 8"
    assert s.prompt_ids == [1, 5] and torch.equal(s.token_logps, torch.tensor([-1.0, -2.0, -3.0]))
    short = engine.generate([[1]], 1, SamplingParams(max_new_tokens=2), seeds=[0]).samples[0]
    assert short.response_ids == [7, 8] and short.finish_reason == "length"


def test_allowed_tokens_renormalised_over_the_set(fake_vllm):
    engine = build()
    allowed = (7, 8, 20)
    s = engine.generate([[1]], 1, SamplingParams(max_new_tokens=2, allowed_token_ids=allowed), seeds=[0]).samples[0]
    request = engine.llm.requests[0][1]
    assert request.allowed_token_ids == list(allowed) == request.logprob_token_ids and request.logprobs is None
    step0 = torch.tensor([-1.0, -0.8, -2.0])  # token 7 chosen (−1), 8 and 20 listed (−id/10)
    step1 = torch.tensor([-0.7, -2.0, -2.0])  # token 8 chosen (−2)
    expected = torch.stack([step0[0] - step0.logsumexp(0), step1[1] - step1.logsumexp(0)])
    assert torch.allclose(s.token_logps, expected)


def test_weights_pushed_once_per_version_even_for_an_empty_call(fake_vllm):
    model = torch.nn.Linear(2, 2)
    backend = FakeBackend(model)
    engine = build(backend)
    engine.generate([], 1, SamplingParams(), seeds=[])
    assert engine.llm.calls == ["reload_weights", "reset"] and backend.gathers == 1  # first call: never synced
    assert set(engine.llm.loaded) == {"weight", "bias"}
    engine.generate([[1]], 1, SamplingParams(max_new_tokens=1), seeds=[0])
    assert engine.llm.calls[2:] == ["generate"]  # same version: nothing pushed
    with torch.no_grad():
        model.weight.add_(1.0)
    backend.weights_version += 1
    engine.generate([], 1, SamplingParams(), seeds=[])
    assert engine.llm.calls[3:] == ["reload_weights", "reset"]
    assert torch.equal(engine.llm.loaded["weight"], model.weight)


def test_sleep_mode_order(fake_vllm, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [])
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: None)
    engine = build(FakeBackend(torch.nn.Linear(2, 2)), enable_sleep_mode=True)
    assert engine.llm.kwargs["enable_sleep_mode"] and engine.llm.calls == ["sleep1"]
    engine.generate([[1]], 1, SamplingParams(max_new_tokens=1), seeds=[0])
    # Weights woken and synced before the KV cache comes back; asleep again after the rollout.
    assert engine.llm.calls[1:] == ["wake:weights", "reload_weights", "wake:kv_cache", "reset", "generate", "sleep1"]


def test_refusals(fake_vllm):
    with pytest.raises(ConfigError, match="CUDA"):
        build(enable_sleep_mode=True)
    engine = build()
    with pytest.raises(ConfigError, match="use_vllm: false"):
        engine.generate([[1]], 1, SamplingParams(ref_mixture=0.1), seeds=[0])
    with pytest.raises(ConfigError, match="use_vllm: false"):
        engine.generate([[1]], 1, SamplingParams(allowed_token_ids=tuple(range(129))), seeds=[0])


def test_missing_vllm_is_a_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(ConfigError, match="vllm"):
        build()
