"""Changes made by other instances, with PostgreSQL: LISTEN for the writers' NOTIFY.

The worker processes of one machine share a change counter (service/state_signal.py);
instances on other machines do not. So every write transaction that changes state also
sends NOTIFY on CHANNEL (service/audit.py), which PostgreSQL delivers when it commits.
Each serving process listens on a connection of its own and, for what it hears, moves
its machine's counter on; the decision index then reads the changes from the database.

The bound (SPEC §8): the listener confirms its connection every HEARTBEAT seconds, and
everything committed before a confirmation has been heard by then. A decision asked
when the last confirmation is older than STALE_AFTER seconds is refused with 503
rather than answered from an index that may be missing another instance's revocation.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time

import psycopg2
from playhouse.db_url import parse

from models import CONNECTION_BOUNDS
from service.audit import CHANGES_CHANNEL as CHANNEL
from service.errors import Unavailable

HEARTBEAT = 0.25  # seconds between confirmations of the connection
STALE_AFTER = 2.0  # seconds without one before decisions are refused
RECONNECT_AFTER = 0.5  # seconds between connection attempts while the server is away

log = logging.getLogger(__name__)


class ChangeListener:
    def __init__(self, database_url: str, signal):
        self.database_url = database_url
        self.signal = signal
        self.stopped = threading.Event()
        self._confirmed_at: float | None = None  # time.monotonic()
        self._thread: threading.Thread | None = None
        self._pid = 0  # the process the thread runs in
        self._started_at = 0.0
        self._start_lock = threading.Lock()

    # --- the decision side -------------------------------------------------------

    def check_fresh(self) -> None:
        """Raise Unavailable (503) unless this process's listener confirmed its connection
        within STALE_AFTER seconds. In its first STALE_AFTER seconds, wait for the first
        confirmation; later a stale listener is refused at once (no request is held)."""
        if self._pid == os.getpid() and self._is_fresh():
            return
        self.start_once()
        while time.monotonic() < self._started_at + STALE_AFTER and not self._is_fresh():
            time.sleep(HEARTBEAT / 5)
        if not self._is_fresh():
            raise Unavailable("changes made by other instances cannot be heard (database unreachable)")

    def _is_fresh(self) -> bool:
        confirmed = self._confirmed_at
        return confirmed is not None and time.monotonic() - confirmed <= STALE_AFTER

    # --- the listening thread ------------------------------------------------------

    def start_once(self) -> None:
        """Start the thread in this process (again in a forked child, where it is gone)."""
        with self._start_lock:
            if self._pid != os.getpid() and not self.stopped.is_set():
                self._pid, self._confirmed_at = os.getpid(), None
                self._started_at = time.monotonic()
                self._thread = threading.Thread(target=self._run, name="change-listener", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        self.stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self.stopped.is_set():
            try:
                self._listen()
            except Exception as exc:  # whatever it was, listen again: decisions wait on it
                log.warning("change listener: %s; reconnecting", str(exc).strip() or type(exc).__name__)
            self.stopped.wait(RECONNECT_AFTER)

    def _listen(self) -> None:
        connection = psycopg2.connect(**_connection_options(self.database_url))
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(f"LISTEN {CHANNEL}")
                self.signal.publish()  # changes committed while nobody here listened: re-read
                while not self.stopped.is_set():
                    select.select([connection], [], [], HEARTBEAT)
                    sent = time.monotonic()  # all committed before this is delivered by the reply
                    cursor.execute("SELECT 1")  # confirms the connection; delivers what waits
                    connection.poll()
                    if connection.notifies:
                        # The payload (a sequence number) only helps a person reading
                        # the traffic; the database says what changed.
                        connection.notifies.clear()
                        self.signal.publish()
                    self._confirmed_at = sent
        finally:
            # The last confirmation stands until it is STALE_AFTER old: what was committed
            # before it was heard, and reconnecting re-reads whatever came after.
            connection.close()


def _connection_options(database_url: str) -> dict:
    """psycopg2.connect's arguments: the URL's, plus bounds on every wait, so a lost
    network ends in a reconnect within seconds rather than TCP's minutes (the URL's own
    settings win)."""
    options = parse(database_url)
    options["dbname"] = options.pop("database")
    bounds = {  # tighter than the other connections': past STALE_AFTER decisions are refused
        **CONNECTION_BOUNDS,
        "connect_timeout": 2,
        "keepalives_count": 2,
        "tcp_user_timeout": int(STALE_AFTER * 1000),  # ms unacknowledged before the socket gives up
    }
    return {**bounds, **options}
