"""Background WAL checkpoints for SQLite.

With write-ahead logging, SQLite copies the log back into the database file (and syncs
it) every thousand pages, inside whichever commit crosses the mark: that request pays
for everyone. In serving processes we raise that mark (see models.SQLITE_PRAGMAS) and
checkpoint from this thread instead, every 50 ms: each checkpoint stays small, so the
commits running beside it are not held up for long.
"""

from __future__ import annotations

import logging
import os
import threading

from models import database, is_sqlite

log = logging.getLogger("support_access")
INTERVAL_SECONDS = 0.05  # small, frequent checkpoints: a 1 s interval put ~10 ms stalls in the p99


class Checkpointer:
    def __init__(self) -> None:
        # The app's own database, not the module-level proxy (which the next app in the
        # same process, e.g. in tests, points elsewhere).
        self.db = database.obj
        self._thread = threading.Thread(target=self._run, name="wal-checkpointer", daemon=True)
        self._lock = threading.Lock()

    def start_once(self) -> None:
        if not self._thread.ident and is_sqlite(self.db):
            with self._lock:
                if not self._thread.ident:
                    self._thread.start()

    def _run(self) -> None:
        stop = threading.Event()
        while not stop.wait(INTERVAL_SECONDS):
            if not os.path.exists(self.db.database):
                return  # the database is gone (a test's temporary one): nothing to do
            try:
                self.db.execute_sql("PRAGMA wal_checkpoint(PASSIVE)")
            except Exception:  # a busy or missing database must not end the thread
                log.warning("WAL checkpoint failed", exc_info=True)
