"""The ``openai`` judge's on-disk cache: one row per distinct request, so a re-run judges nothing twice.

The key is the SHA-256 of the request body as sent (canonical JSON): the endpoint's model name, the filled
template (hence the template, the prompt and both outputs, in their order) and every decoding field. The endpoint's
address is not part of it, so the same model served elsewhere reuses the verdicts. SQLite makes the file safe to
share between the processes of a distributed run and between runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path

from prefopt.errors import JudgeError


def default_cache_path() -> Path:
    root = os.environ.get("PREFOPT_CACHE_DIR") or Path.home() / ".cache" / "prefopt"
    return Path(root) / "judge_api.sqlite"


def request_key(body: dict) -> str:
    """SHA-256 hex digest of ``body`` as canonical JSON."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class ResponseCache:
    """Responses by request key, in a SQLite file (created with its folder)."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else default_cache_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=60, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, response TEXT NOT NULL)")
            self.db.commit()
        except (OSError, sqlite3.Error) as err:
            raise JudgeError(f"judge_cache_path '{self.path}': cannot open the judge cache ({err})") from err

    def get(self, key: str) -> dict | None:
        row = self.db.execute("SELECT response FROM responses WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key: str, response: dict) -> None:
        self.db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?)", (key, json.dumps(response)))
        self.db.commit()
