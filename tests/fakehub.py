"""A local stand-in for the Hub's HTTP API, enough for `huggingface_hub`'s create_repo and upload_folder.

Point ``HF_ENDPOINT`` at :attr:`FakeHub.url`: the real client code runs up to the socket, and the server keeps
what it received (requests with their Authorization header, the created repositories, the validated model-card
YAML, the uploaded files). Uploads are answered as "regular" (inline base64), so no LFS or Xet storage is involved.
"""

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeHub:
    def __init__(self):
        self.requests: list[tuple[str, str, str | None]] = []
        self.created: list[dict] = []
        self.validated: list[dict] = []
        self.files: dict[str, bytes] = {}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()

    def _post(self, path: str, body: bytes) -> tuple[int, dict]:
        if path == "/api/repos/create":
            payload = json.loads(body)
            if payload["name"] == "forbidden":  # the Hub's answer to a namespace the token may not write to
                return 403, {"error": "You don't have the rights to create a model under this namespace"}
            self.created.append(payload)
            return 200, {"url": f"{self.url}/{payload.get('organization')}/{payload['name']}"}
        if path == "/api/validate-yaml":
            self.validated.append(json.loads(body))
            return 200, {"errors": [], "warnings": []}
        parts = path.split("/")  # /api/models/{org}/{name}/{preupload|commit}/{revision}
        if len(parts) == 7 and parts[5] == "preupload":
            files = json.loads(body)["files"]
            return 200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}
        if len(parts) == 7 and parts[5] == "commit":
            for line in body.decode().splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    self.files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            oid = "1" * 40
            return 200, {"commitUrl": f"{self.url}/{parts[3]}/{parts[4]}/commit/{oid}", "commitOid": oid}
        return 404, {"error": f"not served: {path}"}

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                hub.requests.append(("GET", self.path, self.headers.get("authorization")))
                self._reply(404, {"error": "not served"})

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                hub.requests.append(("POST", self.path, self.headers.get("authorization")))
                self._reply(*hub._post(self.path, body))

        return Handler
