"""WAL checkpoints for SQLite, run by the read journal's importer (service/read_journal.py).

With write-ahead logging, SQLite copies the log back into the database file (and syncs
it) every thousand pages, inside whichever commit crosses the mark: that request pays
for everyone. In serving processes we raise that mark (see models.SQLITE_PRAGMAS) and
checkpoint from the importer's thread instead, between its import rounds: requests do
not commit on the decision path, so a checkpoint holds up only the importer and the rare
state change. Run between import rounds, a PASSIVE checkpoint every tenth of a second
copies the whole log, so the next writer starts it afresh (models.SQLITE_PRAGMAS caps the
size the file keeps).

Often and small rather than rarely and large: a round's reads land on pages all over
the reads' index (a page or more each), so under a load of single checks half a second
of log was ~3,800 pages, copied in ~8 ms of CPU in one piece, which a worker woken on
that core waited out (bench/HISTORY.md, the 1-connection p99). A tenth of a second
of log is ~750 pages and ~3.3 ms (twice the CPU in all: part of each is fixed).
"""

from __future__ import annotations

import logging
import time

from models import is_sqlite

log = logging.getLogger("support_access")
INTERVAL_SECONDS = 0.1


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
