"""The decision log: one JSON line per decision (input, answer, decision_id, policy
version), appended to a file, as OPA's decision log does. `policy diff` replays it."""

from __future__ import annotations

import threading
from pathlib import Path

import orjson


class DecisionLog:
    def __init__(self, path: str | None):
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        self._file = None

    def write(self, entries: list[dict]) -> None:
        if self.path is None or not entries:
            return
        lines = b"".join(orjson.dumps(entry) + b"\n" for entry in entries)
        with self._lock:
            if self._file is None:  # opened lazily: in the serving process, after a fork
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = open(self.path, "ab")  # noqa: SIM115 (kept open for the process)
            self._file.write(lines)
            self._file.flush()
