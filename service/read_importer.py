"""`python -m service.read_importer`: the read journal's importer as a process of its own.

`make serve` (service/serve.py) starts it beside the server's workers; it stops when the
server does (its parent process changes). It moves allowed reads from the read journal
into the audit chain every few milliseconds and checkpoints SQLite's write-ahead log
(service/read_journal.py, service/checkpointer.py). Without it nothing is lost: workers
import once the journal holds more than 8 MB, and every reader imports first.
"""

from __future__ import annotations

import logging
import os
import signal
import time

from models import connect_database
from service import configured_app, read_journal_directory
from service.errors import DATABASE_ERRORS, store_failed
from service.read_journal import Importer, import_legacy_journal
from service.starting import RETRY_INTERVAL


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="[importer] %(levelname)s %(message)s")
    app = configured_app()
    # The server that started us (service/serve.py says which): we end when it has, also
    # if that happened before we got here (then our parent is no longer it).
    server = int(os.environ.get("SUPPORT_ACCESS_SERVER_PID") or os.getppid())
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    # A hangup sent to the server's whole process group (its terminal closed) is the
    # server's to act on: the workers reload; this process goes on (it ended mid-round).
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

    def keep_going() -> bool:
        return not stopping and os.getppid() == server

    db = None
    while db is None and keep_going():
        try:
            db = connect_database(app.config["DATABASE_URL"], background_checkpoints=True)
        except DATABASE_ERRORS as exc:
            if not store_failed(exc):
                raise
            # The workers wait too (service/starting.py).
            logging.warning("the data store cannot be opened, retrying: %s", exc)
            time.sleep(RETRY_INTERVAL)
    if db is None:
        return
    directory = read_journal_directory(app)
    directory.mkdir(parents=True, exist_ok=True)
    with db.connection_context():
        try:
            import_legacy_journal(app.config["DATABASE_URL"], app.instance_path)
        except DATABASE_ERRORS as exc:  # its reads wait there for the next start
            logging.warning("a read journal named before af644fd could not be imported: %s", exc)
        Importer(directory, db).run(keep_going)


if __name__ == "__main__":
    main()
