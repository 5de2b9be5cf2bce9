"""Group commit for allowed reads (`diagnostics.read` audit events).

Every allowed decision must be in the audit log before its answer is sent, but one
transaction per decision would cap throughput at the store's commit rate. Requests hand
their events to one writer thread per process and wait; the writer commits everything
that arrived since its last commit in one transaction, then wakes the waiters. While a
commit is in flight, new events queue for the next one, so batches grow with load and
an idle service commits at once: the wait is one commit, a few milliseconds at most.
If the commit fails, every waiter gets the error and the service answers 503, never an
unrecorded allow.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from flask import Flask

from models import AuditEvent, transaction
from service import audit
from service.errors import Unavailable

WAIT_SECONDS = 10.0


@dataclass
class _Pending:
    events: list[AuditEvent]
    done: threading.Event = field(default_factory=threading.Event)
    error: Exception | None = None


class ReadRecorder:
    def __init__(self, app: Flask):
        self.app = app
        self._queue: list[_Pending] = []
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self.commits = 0  # for tests and metrics: how many transactions were used

    def record(self, events: list[AuditEvent]) -> None:
        """Block until `events` are committed; raise Unavailable if they cannot be."""
        if not events:
            return
        pending = _Pending(events)
        with self._lock:
            self._start_if_needed()
            self._queue.append(pending)
            self._wake.notify()
        if not pending.done.wait(WAIT_SECONDS):
            raise Unavailable("the audit log did not commit in time", code="store_unavailable")
        if pending.error is not None:
            raise Unavailable("the audit log is unavailable", code="store_unavailable") from pending.error

    def _start_if_needed(self) -> None:
        # Started lazily, so it runs in the serving process (after a fork), not the parent.
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="read-recorder", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._queue:
                    self._wake.wait()
                batch, self._queue = self._queue, []
            self._commit(batch)

    def _commit(self, batch: list[_Pending]) -> None:
        error = None
        try:
            with self.app.app_context(), transaction():
                audit.append([event for pending in batch for event in pending.events])
            self.commits += 1
        except Exception as exc:  # every waiter must hear of it; none may be left allowed
            self.app.logger.exception("recording allowed reads failed")
            error = exc
        for pending in batch:
            pending.error = error
            pending.done.set()
