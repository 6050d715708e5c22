"""The ``openai`` judge on recorded responses served over real HTTP (tests/api_replay.py): reading verdicts,
prompts, rate limits, retries, the cache, the usage log and the one-line errors. The vLLM suite runs it against
a real `vllm serve` (tests/test_vllm_judge.py)."""

import json
import math
import re

import pytest
from api_replay import ReplayServer, recorded, with_logprobs, with_text

from prefopt.api_judge_config import ApiJudgeKeys, ApiOptions
from prefopt.errors import ConfigError, JudgeError
from prefopt.judges import build_judge
from prefopt.judges.api.arena import ArenaSettings, read_arena_settings
from prefopt.judges.api.limits import TokenBucket, backoff_delay
from prefopt.judges.api.templates import alpaca_eval_prompt, file_prompt
from prefopt.judges.api.verdicts import arena_preference, logprob_preference, rating

KEY = "sk-test-0123456789abcdef"


def options(server, tmp_path, **kw) -> ApiOptions:
    values = dict(base_url=server.url, model="judge", api_key_env=None, cache_path=str(tmp_path / "cache.sqlite"))
    values.update(kw)
    return ApiOptions(**values)


def user_text(body: dict) -> str:
    return (
        body["messages"][-1]["content"] if body["messages"][-1]["role"] == "user" else body["messages"][1]["content"]
    )


# --- reading answers ----------------------------------------------------------------------------------------------
def test_logprob_preference_matches_alpaca_eval_parser():
    """AlpacaEval's own logprob_parser on its recorded example: P(m) = e^-4.0488 / (e^-4.0488 + e^-0.0176)."""
    from alpaca_eval.completion_parsers import logprob_parser

    top = recorded("openai_logprobs")["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
    p = logprob_preference(top, "m", ["m", "M"])
    by_hand = math.exp(-4.048847) / (math.exp(-4.048847) + math.exp(-0.017597131))
    assert p == pytest.approx(by_hand, rel=1e-12)
    theirs = logprob_parser(recorded("openai_logprobs")["choices"][0], "m", ["m", "M"], is_binarize=False)[0]
    assert p == pytest.approx(2 - theirs, rel=1e-12)  # AlpacaEval's 1..2 scale: 1 means output_1 wins
    assert logprob_preference([{"token": "m", "logprob": -3.0}], "m", ["m", "M"]) == 1.0
    assert logprob_preference([{"token": "M", "logprob": -3.0}], "m", ["m", "M"]) == 0.0
    assert logprob_preference([{"token": "The", "logprob": -0.1}], "m", ["m", "M"]) is None


def test_arena_verdicts_and_weights():
    v01 = ArenaSettings("{question_1}{answer_1}{answer_2}", {"": "S"})  # v0.1's rule: exactly one distinct label
    assert v01.verdict(with_text("x")["choices"][0]["message"]["content"]) is None
    assert v01.verdict(recorded("openai_text")["choices"][0]["message"]["content"]) == "A>B"
    assert v01.verdict("[[A>>B]] and again [[A>>B]]") == "A>>B"
    assert v01.verdict("[[A>>B]] or maybe [[B>A]]") is None  # several labels: no verdict
    assert v01.verdict("[[AB]]") is None
    assert v01.has_label("[[A>>B]] or maybe [[B>A]]") and not v01.has_label("no label")
    patterns = [re.compile(r"\[\[([AB<>=]+)\]\]"), re.compile(r"\[([AB<>=]+)\]")]
    v2 = ArenaSettings("{question_1}{answer_1}{answer_2}", {"": "S"}, patterns, rule="last", attempts=1)
    assert v2.verdict("first [[A>>B]], on reflection [[b>a]]") == "B>A"  # v2.0: the last, read upper-cased
    assert v2.verdict("only single brackets: [B<<A]") == "B<<A"  # the second pattern; a mirrored spelling
    assert v2.verdict("[[A>>>B]]") is None
    assert arena_preference("A>>B", "A>B") == pytest.approx(3 / 4)  # 3 battles won by a, 1 by b
    assert arena_preference("B>A", "B>>A") == pytest.approx(3 / 4)  # the swapped game: b shown as A loses 3
    assert arena_preference("A=B", None) == 0.5
    assert arena_preference("B>>A", "A>>B") == 0.0
    assert arena_preference(None, None) is None


def test_rating_reads_mt_bench_formats():
    assert rating("Good answer. Rating: [[7]]") == 7.0
    assert rating("Rating: [8.5], not [[x]]") == 8.5
    assert rating("Rating: [[3]] ... [[9]]") == 3.0  # the first, as FastChat reads it
    assert rating("no grade") is None


# --- prompts ----------------------------------------------------------------------------------------------------
def test_alpaca_eval_prompt_comes_from_the_installed_package():
    prompt, settings = alpaca_eval_prompt(None)
    assert [m["role"] for m in prompt.messages] == ["system", "user"]
    assert settings == {"numerator": "m", "tokens": ["m", "M"], "top_logprobs": 5, "token_index": 0, "max_tokens": 1}
    _, cot = alpaca_eval_prompt("weighted_alpaca_eval_cot_gpt4_turbo")  # reasons first: its last token is read
    assert (cot["token_index"], cot["max_tokens"]) == (-1, 300)
    filled = prompt.fill(instruction="Say {output_2}", output_1="one {output_2}", output_2="two")
    user = filled[1]["content"]
    assert '"""one {output_2}"""' in user and '"""two"""' in user and "Say {output_2}" in user
    with pytest.raises(JudgeError, match="not a weighted"):
        alpaca_eval_prompt("alpaca_eval_gpt4_turbo_fn")


def test_arena_settings_v01_and_v20(tmp_path):
    yaml_file = tmp_path / "arena.yaml"
    yaml_file.write_text(
        'system_prompt: Judge A and B.\nprompt_template: ["<|User Prompt|>\\n{question_1}\\n\\nA: {answer_1}\\n'
        'B: {answer_2}"]\nregex_pattern: \\[\\[([AB<>=]+)\\]\\]\nnumber_of_judgment_attempts: 3\n'
    )
    v01 = read_arena_settings(str(yaml_file))
    assert v01.messages("q", "a {answer_2}", "b") == [
        {"role": "system", "content": "Judge A and B."},
        {"role": "user", "content": "<|User Prompt|>\nq\n\nA: a {answer_2}\nB: b"},
    ]
    assert (v01.rule, v01.attempts) == ("unique", 3)
    # v2.0: the YAML of arena-hard-auto's config/ folder, system prompts per category from ../utils/judge_utils.py
    (tmp_path / "config").mkdir()
    (tmp_path / "utils").mkdir()
    (tmp_path / "utils" / "judge_utils.py").write_text(
        'BASE = "Compare A and B."\nimport os\nJUDGE_SETTINGS = {"hard_prompt": {"baseline": "m0", "system_prompt": '
        'BASE}, "creative_writing": {"baseline": "m1", "system_prompt": BASE + " Creatively."}}\n'
    )
    (tmp_path / "config" / "v2.yaml").write_text(
        "bench_name: arena-hard-v2.0\nregex_patterns:\n  - \\[\\[([AB<>=]+)\\]\\]\n"
        'prompt_template: "Q {QUESTION} A {ANSWER_A} B {ANSWER_B}"\n'
    )
    v2 = read_arena_settings(str(tmp_path / "config" / "v2.yaml"))
    assert (v2.rule, v2.attempts, v2.baselines) == ("last", 1, {"hard_prompt": "m0", "creative_writing": "m1"})
    assert v2.messages("q", "a", "b")[0]["content"] == "Compare A and B."
    assert v2.messages("q", "a", "b", "creative_writing") == [
        {"role": "system", "content": "Compare A and B. Creatively."},
        {"role": "user", "content": "Q q A a B b"},
    ]
    (tmp_path / "utils" / "judge_utils.py").unlink()
    with pytest.raises(JudgeError, match="no system_prompt, and there is no arena-hard-auto utils/judge_utils.py"):
        read_arena_settings(str(tmp_path / "config" / "v2.yaml"))
    plain = tmp_path / "arena.txt"  # plain text: the user message, v0.1's rules
    plain.write_text("{question_1}\n[A]\n{answer_1}\n[B]\n{answer_2}")
    assert read_arena_settings(str(plain)).messages("q", "a", "b") == [
        {"role": "user", "content": "q\n[A]\na\n[B]\nb"}
    ]
    text = tmp_path / "t.yaml"
    text.write_text("system_prompt: S\nprompt_template: '{question_1} {answer_1}'\n")
    with pytest.raises(JudgeError, match=r"lacks the field\(s\) \{answer_2\}"):
        read_arena_settings(str(text))


def test_template_files(tmp_path):
    jsonl = tmp_path / "judge_prompts.jsonl"
    lines = [
        {"name": "single-v1", "system_prompt": "S", "prompt_template": "Q {question} A {answer} [[rating]]"},
        {"name": "single-math-v1", "system_prompt": "S", "prompt_template": "{question} {ref_answer_1} {answer}"},
    ]
    jsonl.write_text("\n".join(json.dumps(line) for line in lines))
    assert not file_prompt(str(jsonl), "single-v1", "grade").uses_reference
    assert file_prompt(str(jsonl), "single-math-v1", "grade").uses_reference
    with pytest.raises(JudgeError, match="no line named 'single-v2'"):
        file_prompt(str(jsonl), "single-v2", "grade")
    text = tmp_path / "t.txt"
    text.write_text("{question} and no answer")
    with pytest.raises(JudgeError, match=r"lacks the field\(s\) \{answer\}"):
        file_prompt(str(text), None, "grade")


# --- limits -----------------------------------------------------------------------------------------------------
def test_token_bucket_spaces_requests_evenly():
    now = [0.0]
    waits = []

    def sleep(s):
        waits.append(s)
        now[0] += s

    bucket = TokenBucket(120, clock=lambda: now[0], sleep=sleep)  # 2 per second, holds 2
    assert [bucket.take() for _ in range(2)] == [0.0, 0.0]
    assert bucket.take() == pytest.approx(0.5)  # the third waits for half a second's refill
    now[0] += 10  # a long pause refills only up to the capacity
    assert bucket.take() == 0.0 and bucket.take() == 0.0 and bucket.take() == pytest.approx(0.5)
    tokens = TokenBucket(600, clock=lambda: now[0], sleep=sleep)  # 10 tokens/s, holds 10
    assert tokens.take(25) == 0.0  # larger than the bucket: goes when full, then overdraws
    assert tokens.take(5) == pytest.approx(2.0)  # level -15 → +5 needs 2 s
    tokens.give_back(5)  # the request was smaller than estimated
    assert tokens.level == pytest.approx(5.0)
    assert TokenBucket(None).take(1e9) == 0.0


def test_backoff_delay():
    import random

    rng = random.Random(0)
    assert backoff_delay(3, 1.0, 7.0, rng) == 7.0  # Retry-After wins
    assert backoff_delay(1, 1.0, 500.0, rng) == 60.0
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (4, 8.0), (10, 60.0)]:
        delay = backoff_delay(attempt, 1.0, None, rng)
        assert ceiling / 2 <= delay <= ceiling


# --- the judges over HTTP ---------------------------------------------------------------------------------------
def alpaca_responder(body: dict) -> dict:
    """Prefers the output "good": P(m) = 0.8 when it is output_1, else 0.3 (a position bias of +0.1 for m)."""
    text = user_text(body)
    good_first = text.index('"""good"""') < text.index('"""bad"""')
    p = 0.8 if good_first else 0.3
    return with_logprobs({"m": math.log(p), "M": math.log(1 - p), "The": math.log(1e-4)})


def test_alpaca_eval_mode_both_orders_cache_and_usage(tmp_path):
    log = tmp_path / "usage.jsonl"
    with ReplayServer(alpaca_responder) as server:
        opts = options(server, tmp_path, usage_log=str(log), price_input_per_million=10.0)
        judge = build_judge("openai", api=opts)
        probs = judge.preference(["q1", "q2"], ["good", "bad"], ["bad", "good"])
        # P(good ≻ bad) = ½ [0.8 + 1 − 0.3] = 0.75: the position bias cancels.
        assert probs.tolist() == pytest.approx([0.75, 0.25])
        assert len(server.bodies) == 4
        body = server.bodies[0]
        assert body["model"] == "judge" and body["max_tokens"] == 1 and body["logprobs"] is True
        assert body["top_logprobs"] == 5 and body["temperature"] == 0.0
        metrics = judge.take_metrics()
        assert metrics["judge/requests"] == 4 and metrics["judge/cached"] == 0
        assert metrics["judge/prompt_tokens"] == 4 * 388 and metrics["judge/cost"] == pytest.approx(4 * 388 * 10 / 1e6)
        assert len(log.read_text().splitlines()) == 4
        again = build_judge("openai", api=opts).preference(["q1", "q2"], ["good", "bad"], ["bad", "good"])
        assert again.tolist() == probs.tolist() and len(server.bodies) == 4  # a re-run asks nothing
        unparsed = ReplayServer(lambda body: with_logprobs({"The": -0.1}))
    with unparsed:
        judge = build_judge("openai", api=options(unparsed, tmp_path, cache=False))
        assert judge.preference(["q"], ["a"], ["b"]).tolist() == [0.5]  # counted, not silent:
        assert judge.take_metrics()["judge/unparsed"] == 1
        with pytest.raises(JudgeError, match=r"11 of 11 verdicts unreadable"):
            judge.preference(["q"] * 10, ["a"] * 10, ["b"] * 10)


def test_chain_of_thought_annotator_reads_the_last_token(tmp_path):
    def reasoned(body):
        answer = alpaca_responder(body)
        verdict = answer["choices"][0]["logprobs"]["content"][0]
        filler = {"token": "Thinking", "logprob": -0.1, "top_logprobs": [{"token": "m", "logprob": -0.01}]}
        answer["choices"][0]["logprobs"]["content"] = [filler, verdict]
        return answer

    with ReplayServer(reasoned) as server:
        opts = options(server, tmp_path, template_name="weighted_alpaca_eval_cot_gpt4_turbo")
        judge = build_judge("openai", api=opts)
        assert judge.preference(["q"], ["good"], ["bad"]).tolist() == pytest.approx([0.75])
        assert server.bodies[0]["max_tokens"] == 300


def arena_responder(body: dict) -> dict:
    """A first answer without a verdict; the follow-up turn gives A>>B when answer A is "good", else B>A."""
    if len(body["messages"]) < 3:
        return with_text("Let me think about both answers.")
    return with_text("[[A>>B]]" if "A: good" in body["messages"][1]["content"] else "[[B>A]]")


def test_arena_hard_mode_follow_up_and_weights(tmp_path):
    template = tmp_path / "arena.yaml"
    template.write_text("system_prompt: Judge.\nprompt_template: '{question_1}\\nA: {answer_1}\\nB: {answer_2}'\n")
    with ReplayServer(arena_responder) as server:
        opts = options(server, tmp_path, mode="arena_hard", template_file=str(template))
        judge = build_judge("openai", api=opts)
        # good vs bad: [[A>>B]] (3 for good), swapped [[B>A]] (1 for good): P = 1; bad vs good: 0.
        assert judge.preference(["q", "q"], ["good", "bad"], ["bad", "good"]).tolist() == [1.0, 0.0]
        # 2 distinct first answers (the second pair is the first one swapped), 2 follow-ups with the first answer
        assert len(server.bodies) == 4
        assert server.bodies[-1]["messages"][2]["role"] == "assistant" and server.bodies[0]["max_tokens"] == 4096


def test_grade_mode_is_a_reward_judge(tmp_path):
    def grader(body):
        answer = user_text(body)
        return with_text(
            "Rating: [[9]]" if "ANSWER good" in answer else "no idea" if "ANSWER ???" in answer else "[[3]]"
        )

    template = tmp_path / "grade.txt"
    template.write_text("Q {question} REF {ref_answer_1} ANSWER {answer}")
    with ReplayServer(grader) as server:
        judge = build_judge("openai", api=options(server, tmp_path, mode="grade", template_file=str(template)))
        assert judge.needs_references
        rewards = judge.reward(["q"] * 3, ["good", "bad", "???"], ["r"] * 3)
        assert rewards.tolist() == [9.0, 3.0, 6.0]  # the unreadable grade takes the call's mean, and is counted
        assert judge.take_metrics()["judge/unparsed"] == 1
        assert any("REF r ANSWER good" in user_text(body) for body in server.bodies)
        with pytest.raises(JudgeError, match="reference answer"):
            judge.reward(["q"], ["good"])


def test_retries_on_429_5xx_and_timeouts(tmp_path):
    with ReplayServer(alpaca_responder) as server:
        server.script = [
            (429, {"Retry-After": "0"}, b'{"error": {"message": "Rate limit reached"}}', 0.0),
            (503, {}, b"<html>Service Unavailable</html>", 0.0),
            (
                200,
                {},
                json.dumps(
                    alpaca_responder({"messages": [{"role": "user", "content": '"""good""" """bad"""'}]})
                ).encode(),
                1.5,
            ),
        ]
        judge = build_judge("openai", api=options(server, tmp_path, retry_backoff_s=0.01, timeout_s=0.5, cache=False))
        assert judge.preference(["q"], ["good"], ["bad"]).tolist() == pytest.approx([0.75])
        assert judge.take_metrics()["judge/retries"] == 3  # 429, 503, the timed-out answer
        server.script = [(500, {}, b"{}", 0.0)] * 4
        judge = build_judge("openai", api=options(server, tmp_path, retry_backoff_s=0.01, max_retries=1, cache=False))
        with pytest.raises(JudgeError, match=r"HTTP 500 after 2 attempts \(judge_max_retries\)"):
            judge.preference(["q"], ["good"], ["bad"])


def test_request_rate_limit_waits(tmp_path):
    with ReplayServer(alpaca_responder) as server:
        opts = options(server, tmp_path, requests_per_minute=240, max_concurrency=4, cache=False)  # 4/s, holds 4
        judge = build_judge("openai", api=opts)
        # 8 distinct requests: 4 at once, then one per 0.25 s (each later one waits for its predecessors too)
        judge.preference([f"q{i}" for i in range(4)], ["good"] * 4, ["bad"] * 4)
        assert judge.take_metrics()["judge/rate_limit_wait_s"] >= 0.25 + 0.5 + 0.75 + 1.0 - 0.05


def test_preflight_errors_name_the_problem_and_never_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", KEY)
    errors = []

    def refused(opts, match):
        with pytest.raises(JudgeError, match=match) as err:
            build_judge("openai", api=opts)
        errors.append(str(err.value))

    with ReplayServer(alpaca_responder, models=["judge", "other"], key=KEY) as server:
        ok = options(server, tmp_path, api_key_env="JUDGE_KEY")
        judge = build_judge("openai", api=ok)
        judge.preference(["q"], ["good"], ["bad"])
        assert server.headers[0]["Authorization"] == f"Bearer {KEY}"
        assert KEY not in repr(judge.client) and KEY.encode() not in (tmp_path / "cache.sqlite").read_bytes()
        refused(options(server, tmp_path, api_key_env="NO_SUCH_VARIABLE"), "NO_SUCH_VARIABLE is not set")
        refused(
            options(server, tmp_path, api_key_env="JUDGE_KEY", model="gpt-9"), "not served by .* serves: judge, other"
        )
        monkeypatch.setenv("JUDGE_KEY", "sk-wrong")
        refused(ok, r"HTTP 401, the key was refused \(\$JUDGE_KEY\)")
        server.key, server.models_reply = None, (200, b"<html>not json</html>")
        refused(ok, "malformed JSON")
    refused(ok, r"unreachable \(.*refused")
    assert all(KEY not in e and "sk-wrong" not in e and "\n" not in e for e in errors)


def test_config_keys():
    keys = ApiJudgeKeys(judge_base_url="http://x/v1", judge_model="m", judge_max_concurrency=2)
    assert keys.api_options().max_concurrency == 2
    with pytest.raises(ConfigError, match="'judge_model' is required"):
        ApiJudgeKeys(judge_base_url="http://x/v1").api_options()
    with pytest.raises(ConfigError, match="'judge_timeout_s' must be > 0"):
        ApiJudgeKeys(judge_base_url="http://x/v1", judge_model="m", judge_timeout_s=0).api_options()


# --- in the commands --------------------------------------------------------------------------------------------
def prefer_longer(body: dict) -> dict:
    """AlpacaEval-shaped answer preferring the longer output: P(m) = 0.9, 0.1, or 0.5 on equal lengths."""
    import re

    _, first, second = re.findall(r'"""(.*?)"""', user_text(body), flags=re.S)[:3]
    p = 0.9 if len(first) > len(second) else 0.1 if len(first) < len(second) else 0.5
    return with_logprobs({"m": math.log(p), "M": math.log(1 - p)})


def test_training_with_an_api_judge_and_its_usage_metrics(tmp_path, tiny_model_dir):
    from helpers import PROMPTS, prefopt, train

    with ReplayServer(prefer_longer) as server:
        api = ["--judge", "openai", "--judge_base_url", server.url, "--judge_model", "judge"]
        api += ["--judge_api_key_env", "none", "--judge_cache_path", tmp_path / "cache.sqlite"]
        train(tiny_model_dir, tmp_path / "run", *api, "--num_iterations", "1")
        metrics = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
        # 16 prompts × 3 samples: 3 pairs each, both orders; equal requests are sent once.
        assert metrics["judge/requests"] + metrics["judge/cached"] == 16 * 3 * 2
        assert metrics["judge/requests"] == len(server.bodies) and metrics["judge/unparsed"] == 0
        assert metrics["judge/prompt_tokens"] == 388 * len(server.bodies)
        sent = len(server.bodies)
        bad = prefopt(
            "train", "sppo", "--model_name_or_path", tiny_model_dir, "--output_dir", tmp_path / "bad",
            "--dataset_name", PROMPTS, *api[:-2], "--judge_model", "gpt-9",
        )  # fmt: skip
    assert bad.returncode == 2 and len(server.bodies) == sent
    assert "judge_model 'gpt-9' is not served" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    base = ["train", "sppo", "--model_name_or_path", tiny_model_dir, "--output_dir", tmp_path / "bad"]
    base += ["--dataset_name", PROMPTS, "--judge", "openai", "--judge_model", "judge"]
    for args, message in [
        (
            ["--judge_base_url", server.url, "--judge_api_key_env", "PREFOPT_NO_SUCH_KEY"],
            "PREFOPT_NO_SUCH_KEY is not set",
        ),
        (["--judge_base_url", server.url, "--judge_api_key_env", "none", "--judge_timeout_s", "0"], "judge_timeout_s"),
        (["--judge_base_url", server.url, "--judge_api_key_env", "none"], "unreachable"),  # the server is gone
    ]:
        bad = prefopt(*base, *args)
        assert bad.returncode == 2 and message in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists()


def test_eval_with_an_api_judge(tmp_path):
    from helpers import REPO, prefopt

    from prefopt.eval.formats import outputs_rows, write_json

    eval_set = json.loads((REPO / "eval/sets/quickstart.json").read_text())[:10]
    (tmp_path / "set.json").write_text(json.dumps(eval_set))
    for name, length in [("short", 3), ("long", 30)]:
        write_json(tmp_path / f"{name}.json", outputs_rows(eval_set, ["x" * length] * len(eval_set), name))
    with ReplayServer(prefer_longer) as server:
        result = prefopt(
            "eval", "--eval_set", tmp_path / "set.json", "--models", tmp_path / "short.json", tmp_path / "long.json",
            "--judge", "openai", "--judge_base_url", server.url, "--judge_model", "judge", "--judge_api_key_env",
            "none", "--judge_cache", "false", "--judge_max_concurrency", "3", "--output_dir", tmp_path / "out",
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    board = {row["generator"]: row for row in results["leaderboard"]}
    assert board["long"]["win_rate"] == pytest.approx(0.9)  # ½ [0.9 + 1 − 0.1] on every instruction
    judge = results["judge"]
    assert judge["api"]["model"] == "judge" and judge["api"]["max_concurrency"] == 3
    assert judge["usage"]["judge/requests"] == 20 and judge["usage"]["judge/cached"] == 0  # both orders


def test_extra_body_from_the_command_line_and_trainer_config():
    from prefopt.config import coerce_keys
    from prefopt.trainers.config import SPPOConfig

    given = coerce_keys(
        ApiJudgeKeys, {"judge_extra_body": '{"chat_template_kwargs": {"enable_thinking": false}}'}, "cli"
    )
    assert given == {"judge_extra_body": {"chat_template_kwargs": {"enable_thinking": False}}}
    with pytest.raises(ConfigError, match="'judge_extra_body' .* expects"):
        coerce_keys(ApiJudgeKeys, {"judge_extra_body": "[1, 2]"}, "cli")
    config = SPPOConfig(judge="openai", judge_base_url="http://x/v1", judge_model="m", judge_mode="grade")
    assert config.split()[0].api_options().mode == "grade"


def grade_by_length(body: dict) -> dict:
    """A grader's answer: the answer's length in characters, capped to 1–10."""
    answer = user_text(body).split("[The Start of the Assistant's Answer]\n", 1)[1].split("\n[The End", 1)[0]
    return with_text(f"Rating: [[{min(10, max(1, len(answer)))}]]")


def _algorithms(reward: bool) -> list[str]:
    from prefopt.algorithms import ALGORITHMS, get_algorithm

    return [n for n in ALGORITHMS if get_algorithm(n).needs_reward_judge == reward and n != "sppo"]


def _one_iteration(name, model, out, server, *judge_args):
    from helpers import PROMPTS, prefopt

    return prefopt(
        "train", name, "--model_name_or_path", model, "--dataset_name", PROMPTS, "--output_dir", out,
        "--num_iterations", "1", "--prompts_per_iteration", "4", "--max_new_tokens", "4", "--disable_tqdm", "true",
        "--torch_num_threads", "1", "--judge", "openai", "--judge_base_url", server.url, "--judge_model", "judge",
        "--judge_api_key_env", "none", "--judge_cache", "false", *judge_args,
    )  # fmt: skip


def test_grpo_trains_on_api_grades(tmp_path, tiny_model_dir):
    """grade mode is a reward judge: an outcome-reward method trains on it (every other method: the slow test)."""
    with ReplayServer(grade_by_length) as server:
        result = _one_iteration("grpo", tiny_model_dir, tmp_path / "run", server, "--judge_mode", "grade")
        assert result.returncode == 0, result.stderr[-3000:]
        metrics = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
        assert metrics["judge/requests"] == len(server.bodies) > 0 and metrics["judge/unparsed"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("name", _algorithms(False) + _algorithms(True))
def test_every_algorithm_trains_against_the_api_judge(name, tmp_path, tiny_model_dir):
    from helpers import REPO

    reward = name in _algorithms(True)
    with ReplayServer(grade_by_length if reward else prefer_longer) as server:
        extra = ["--judge_mode", "grade"] if reward else []
        if name == "grao":  # it also imitates a reference answer: the digit task's
            extra += ["--dataset_name", REPO / "configs/data/arithmetic.jsonl", "--reference_column", "answer"]
        result = _one_iteration(name, tiny_model_dir, tmp_path / "run", server, *extra)
        assert result.returncode == 0, result.stderr[-3000:]
        metrics = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
        assert metrics["judge/requests"] + metrics["judge/cached"] > 0 and metrics["judge/unparsed"] == 0
