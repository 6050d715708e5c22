"""HTTP client of the ``openai`` judge: any OpenAI-compatible ``/chat/completions`` endpoint (OpenAI, vLLM's
``vllm serve``, SGLang, TGI, LiteLLM, ...).

Requests go out on ``max_concurrency`` threads under the request and token rate limits; 429, 5xx, timeouts and
lost connections are retried with exponential backoff (the server's Retry-After first); any other failure is a
one-line :class:`JudgeError` naming the endpoint and the status, never the key. Answers are cached on disk by
request (``cache.py``), and each request's tokens, cost and latency are counted (:meth:`ApiClient.take_usage`)
and, with ``usage_log``, appended to a JSONL file. The standard library's HTTP client is enough here: no SDK.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed

from prefopt.api_judge_config import ApiOptions
from prefopt.errors import JudgeError
from prefopt.judges.api.cache import ResponseCache, request_key
from prefopt.judges.api.limits import TokenBucket, backoff_delay

RETRY_STATUS = {408, 409, 429}  # and every 5xx
USAGE_KEYS = ("requests", "cached", "retries", "prompt_tokens", "completion_tokens", "cost", "rate_limit_wait_s")


class _Refused(JudgeError):
    """The endpoint answered with an error status that a retry will not change."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.retry_after = retry_after


def read_api_key(env_name: str | None, base_url: str) -> str | None:
    """The key from the environment variable ``env_name`` (None, "" or "none": the endpoint needs none)."""
    if not env_name or env_name.lower() == "none":
        return None
    key = os.environ.get(env_name)
    if not key:
        raise JudgeError(
            f"judge_api_key_env: the environment variable {env_name} is not set (the key of {base_url}); "
            "set it, or judge_api_key_env: none for an endpoint without a key"
        )
    return key


def _server_message(err: urllib.error.HTTPError) -> str:
    try:
        body = err.read().decode("utf-8", "replace")
        message = json.loads(body).get("error", body)
        message = message.get("message", message) if isinstance(message, dict) else message
    except (ValueError, AttributeError, OSError):
        message = ""
    return " ".join(str(message).split())[:200]


class ApiClient:
    """Chat completions against ``options.base_url`` with limits, retries, a cache and a usage count."""

    def __init__(self, options: ApiOptions, *, seed: int = 0):
        self.options = options
        self.base_url = options.base_url.rstrip("/")
        self._key = read_api_key(options.api_key_env, self.base_url)
        self.requests_bucket = TokenBucket(options.requests_per_minute)
        self.tokens_bucket = TokenBucket(options.tokens_per_minute)
        self.cache = ResponseCache(options.cache_path) if options.cache else None
        self.rng = random.Random(seed)
        self.usage = dict.fromkeys(USAGE_KEYS, 0)
        self.totals = dict.fromkeys(USAGE_KEYS, 0)
        self.lock = threading.Lock()  # the counts are updated from the request threads too

    def __repr__(self) -> str:  # never the key
        return f"ApiClient({self.base_url!r}, model={self.options.model!r})"

    # --- one HTTP exchange -------------------------------------------------------------------------------------
    def _http(self, method: str, path: str, body: dict | None = None) -> dict:
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, headers=headers, method=method)
        where = f"judge endpoint {self.base_url}{path}"
        try:
            with urllib.request.urlopen(request, timeout=self.options.timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as err:
            if err.code in RETRY_STATUS or err.code >= 500:
                retry_after = err.headers.get("Retry-After") if err.headers else None
                try:
                    retry_after = float(retry_after) if retry_after is not None else None
                except ValueError:
                    retry_after = None
                raise _Retryable(f"HTTP {err.code}", retry_after) from err
            if err.code in (401, 403):
                raise _Refused(
                    f"{where}: HTTP {err.code}, the key was refused ({self._key_source()})", err.code
                ) from err
            raise _Refused(f"{where}: HTTP {err.code} {_server_message(err)}".rstrip(), err.code) from err
        except TimeoutError as err:
            raise _Retryable(f"no answer within judge_timeout_s={self.options.timeout_s}") from err
        except urllib.error.URLError as err:
            if isinstance(err.reason, TimeoutError):
                raise _Retryable(f"no answer within judge_timeout_s={self.options.timeout_s}") from err
            raise _Retryable(f"unreachable ({err.reason})") from err
        except (OSError, http.client.HTTPException) as err:
            raise _Retryable(f"connection lost ({err})") from err
        try:
            return json.loads(raw)
        except ValueError as err:
            raise JudgeError(f"{where}: malformed JSON in the answer: {raw[:80]!r}") from err

    def _key_source(self) -> str:
        return f"${self.options.api_key_env}" if self._key else "no key sent"

    def preflight(self) -> None:
        """Check before any compute that the endpoint answers, accepts the key and serves ``options.model``."""
        try:
            listing = self._http("GET", "/models")
        except _Retryable as err:
            raise JudgeError(f"judge endpoint {self.base_url}: {err}") from err
        except _Refused as err:
            if err.status not in (404, 405):
                raise
            listing = None  # no model listing here: one tiny request tells whether the model is served
        if listing is None:
            self.send({"model": self.options.model, "messages": [{"role": "user", "content": "1"}], "max_tokens": 1})
            return
        served = [m.get("id") for m in listing.get("data", []) if isinstance(m, dict)]
        if not isinstance(listing.get("data"), list):
            raise JudgeError(f"judge endpoint {self.base_url}/models: malformed JSON, no 'data' list of models")
        if self.options.model not in served:
            raise JudgeError(
                f"judge_model {self.options.model!r} is not served by {self.base_url}; it serves: {', '.join(served)}"
            )

    # --- one request with its retries --------------------------------------------------------------------------
    def send(self, body: dict) -> tuple[dict, int, float]:
        """POST ``body`` to /chat/completions with retries; returns (answer, retries used, seconds)."""
        estimate = sum(len(str(m.get("content", ""))) for m in body.get("messages", [])) / 4 + body.get(
            "max_tokens", 1
        )
        waited = self.requests_bucket.take(1) + self.tokens_bucket.take(estimate)
        start = time.perf_counter()
        for attempt in range(self.options.max_retries + 1):
            try:
                answer = self._http("POST", "/chat/completions", body)
                break
            except _Retryable as err:
                if attempt == self.options.max_retries:
                    raise JudgeError(
                        f"judge endpoint {self.base_url}: {err} after {attempt + 1} attempts (judge_max_retries)"
                    ) from err
                time.sleep(backoff_delay(attempt + 1, self.options.retry_backoff_s, err.retry_after, self.rng))
        if not isinstance(answer, dict) or not isinstance(answer.get("choices"), list) or not answer["choices"]:
            raise JudgeError(f"judge endpoint {self.base_url}/chat/completions: malformed JSON, no 'choices'")
        used = (answer.get("usage") or {}).get("total_tokens")
        if used is not None:
            self.tokens_bucket.give_back(estimate - used)
        self._count(rate_limit_wait_s=waited)
        return answer, attempt, time.perf_counter() - start

    def complete(self, bodies: list[dict]) -> list[dict]:
        """The answers to ``bodies``, in order: cached ones from disk, the rest fetched concurrently, each distinct
        request once (two equal samples judged against the same response are one request)."""
        keys = [request_key(body) for body in bodies]
        answers: list[dict | None] = [self.cache.get(k) if self.cache else None for k in keys]
        first = {}
        for i, key in enumerate(keys):
            if answers[i] is None:
                first.setdefault(key, i)
        todo = list(first.values())
        self._count(cached=len(bodies) - len(todo))
        failure = None
        if todo:
            with ThreadPoolExecutor(max_workers=min(self.options.max_concurrency, len(todo))) as pool:
                futures = {pool.submit(self.send, bodies[i]): i for i in todo}
                for future in as_completed(futures):  # every answer that came is kept, even when one failed
                    i = futures[future]
                    try:
                        answers[i], retries, seconds = future.result()
                    except JudgeError as err:
                        failure = failure or err
                        continue
                    if self.cache:
                        self.cache.put(keys[i], answers[i])
                    self._log(answers[i], retries, seconds, keys[i])
        if failure is not None:
            raise failure
        return [answers[first.get(k, i)] for i, k in enumerate(keys)]  # type: ignore[misc]

    # --- usage ---------------------------------------------------------------------------------------------
    def _count(self, **amounts) -> None:
        with self.lock:
            for name, amount in amounts.items():
                self.usage[name] += amount
                self.totals[name] += amount

    def _log(self, answer: dict, retries: int, seconds: float, key: str) -> None:
        usage = answer.get("usage") or {}
        prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        cost = (
            prompt * self.options.price_input_per_million + completion * self.options.price_output_per_million
        ) / 1e6
        self._count(requests=1, retries=retries, prompt_tokens=prompt, completion_tokens=completion, cost=cost)
        if self.options.usage_log:
            line = {
                "time": time.time(),
                "model": self.options.model,
                "request": key[:16],
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "cost": cost,
                "retries": retries,
                "latency_s": round(seconds, 4),
            }
            with open(self.options.usage_log, "a", encoding="utf-8") as log:
                log.write(json.dumps(line) + "\n")

    def take_usage(self) -> dict:
        """The counts since the last call (requests sent, answers from the cache, retries, tokens, cost)."""
        with self.lock:
            usage, self.usage = self.usage, dict.fromkeys(USAGE_KEYS, 0)
        return usage
