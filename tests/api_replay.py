"""A real OpenAI-compatible HTTP server in a thread, answering from recorded responses: what the ``openai``
judge's tests talk to (the vLLM suite talks to a real `vllm serve`)."""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

RECORDED = Path(__file__).parent / "data" / "api_judge"


def recorded(name: str) -> dict:
    """A recorded chat-completion answer (tests/data/api_judge/NAME.json)."""
    return json.loads((RECORDED / f"{name}.json").read_text())


def with_text(text: str) -> dict:
    """A recorded text answer with its content replaced by ``text``."""
    answer = copy.deepcopy(recorded("openai_text"))
    answer["choices"][0]["message"]["content"] = text
    return answer


def with_logprobs(logprobs: dict[str, float]) -> dict:
    """A recorded one-token log-prob answer whose top log-probs are ``logprobs`` (token → log-prob)."""
    answer = copy.deepcopy(recorded("openai_logprobs"))
    top = [{"token": t, "bytes": list(t.encode()), "logprob": lp} for t, lp in logprobs.items()]
    best = max(top, key=lambda t: t["logprob"])
    answer["choices"][0]["logprobs"]["content"] = [{**best, "top_logprobs": top}]
    answer["choices"][0]["message"]["content"] = best["token"]
    return answer


class ReplayServer:
    """``/v1/models`` and ``/v1/chat/completions`` on 127.0.0.1.

    Args:
        respond: request body → answer dict (the default behaviour).
        models: the model ids ``/v1/models`` lists.
        key: the bearer key it accepts (None: any).
    Attributes:
        script: (status, headers, body bytes, delay_s) replies served first, one per completion request.
        bodies, headers: every completion request received.
    """

    def __init__(self, respond: Callable[[dict], dict], models=("judge",), key: str | None = None):
        self.respond, self.models, self.key = respond, list(models), key
        self.script: list[tuple[int, dict, bytes, float]] = []
        self.models_reply: tuple[int, bytes] | None = None
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, status: int, body: bytes, headers: dict | None = None):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _authorised(self) -> bool:
                if server.key is None or self.headers.get("Authorization") == f"Bearer {server.key}":
                    return True
                self._send(401, json.dumps({"error": {"message": "Incorrect API key provided"}}).encode())
                return False

            def do_GET(self):
                if not self._authorised():
                    return
                if server.models_reply is not None:
                    self._send(*server.models_reply)
                    return
                data = [{"id": m, "object": "model"} for m in server.models]
                self._send(200, json.dumps({"object": "list", "data": data}).encode())

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.bodies.append(body)
                    server.headers.append(dict(self.headers))
                    step = server.script.pop(0) if server.script else None
                if not self._authorised():
                    return
                if step is not None:
                    status, headers, raw, delay = step
                    time.sleep(delay)
                    self._send(status, raw, headers)
                    return
                self._send(200, json.dumps(server.respond(body)).encode())

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> ReplayServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
