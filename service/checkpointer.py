"""WAL checkpoints for SQLite, run by the read journal's importer (service/read_journal.py).

With write-ahead logging, SQLite copies the log back into the database file (and syncs
it) every thousand pages, inside whichever commit crosses the mark: that request pays
for everyone. In serving processes we raise that mark (see models.SQLITE_PRAGMAS) and
checkpoint from the importer's thread instead, between its import rounds: requests do
not commit on the decision path, so a checkpoint holds up only the importer and the rare
state change. Run between import rounds, a PASSIVE checkpoint every half second copies
the whole log, so the next writer starts it afresh (models.SQLITE_PRAGMAS caps the size
the file keeps).
"""

from __future__ import annotations

import logging
import time

from models import is_sqlite

log = logging.getLogger("support_access")
INTERVAL_SECONDS = 0.5


class Checkpointer:
    def __init__(self, db) -> None:
        self.db = db  # the app's own database, not the module-level proxy
        self._last = time.monotonic()

    def checkpoint_if_due(self) -> None:
        if not is_sqlite(self.db) or time.monotonic() - self._last < INTERVAL_SECONDS:
            return
        self._last = time.monotonic()
        try:
            self.db.execute_sql("PRAGMA wal_checkpoint(PASSIVE)")
        except Exception:  # a busy or missing database must not stop the caller
            log.warning("WAL checkpoint failed", exc_info=True)
