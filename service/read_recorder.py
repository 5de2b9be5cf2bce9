"""Group commit for allowed reads (`diagnostics.read` audit events).

Every allowed decision must be in the audit log before its answer is sent, but one
transaction per decision would cap throughput at the store's commit rate. So requests
commit together, the way databases group-commit their log: a request that finds no
commit under way becomes the leader and commits its own events and everything queued
meanwhile, in one transaction; requests arriving while a commit is under way queue and
wait, and the next leader takes them all. An idle service commits at once, in the
request's own thread; a busy one commits ever larger batches. No answer waits longer
than the commit in progress plus its own. If a commit fails, every request in it gets
the error and the service answers 503, never an unrecorded allow.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from flask import Flask

from models import AuditEvent, transaction
from service import audit
from service.errors import Unavailable

WAIT_SECONDS = 10.0


@dataclass
class _Pending:
    events: list[AuditEvent]
    done: threading.Event | None = None  # only a request that waits for a leader needs one
    error: Exception | None = None


class ReadRecorder:
    def __init__(self, app: Flask):
        self.app = app
        self._queue: list[_Pending] = []
        self._lock = threading.Lock()
        self._leading = False
        self.commits = 0  # transactions used, for tests and metrics

    def record(self, events: list[AuditEvent]) -> None:
        """Return once `events` are committed; raise Unavailable if they cannot be."""
        if not events:
            return
        pending = _Pending(events)
        with self._lock:
            self._queue.append(pending)
            lead = not self._leading
            self._leading = True
            if not lead:
                pending.done = threading.Event()
        if lead:
            self._lead()
        elif not pending.done.wait(WAIT_SECONDS):
            raise Unavailable("the audit log did not commit in time", code="store_unavailable")
        if pending.error is not None:
            raise Unavailable("the audit log is unavailable", code="store_unavailable") from pending.error

    def _lead(self) -> None:
        """Commit batches until nothing is queued, then hand leadership back."""
        while True:
            with self._lock:
                batch, self._queue = self._queue, []
                if not batch:
                    self._leading = False
                    return
            self._commit(batch)

    def _commit(self, batch: list[_Pending]) -> None:
        error = None
        try:
            with transaction():
                audit.append([event for pending in batch for event in pending.events])
            self.commits += 1
        except Exception as exc:  # every waiter must hear of it; none may be left allowed
            self.app.logger.exception("recording allowed reads failed")
            error = exc
        for pending in batch:
            pending.error = error
            if pending.done is not None:
                pending.done.set()
