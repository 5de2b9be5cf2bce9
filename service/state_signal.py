"""A cheap "has anything changed?" signal shared by every worker process of one machine.

The shared value is a generation: writers move it on by one after each change commits
(and so does service/change_listener.py when it hears of another instance's change).
Readers compare it with the generation they last applied before each decision; any
difference means "read the changes from the database", the source of truth. Values
never repeat, so a late or repeated publish costs a re-read and nothing else; a value
that could go back (an audit sequence number heard late, say) could match what a
reader applied before a newer change and hide that change. The value is 8 bytes in a
memory-mapped file, so checking it costs well under a microsecond.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import threading
from pathlib import Path

from models import sqlite_file

_SIZE = 8
# The file's name. It held the last change's audit sequence number under the name
# "changes"; a generation under the old name would mix with an older worker's numbers
# during an upgrade (one could write back what a reader applied and hide a change).
SUFFIX = "generation"
# Another generation: of the policy, moved on when a worker's policy state changes (a new
# version loaded, new files failed on: service/policy_reload.py), so that the other
# workers load the files too before their next answer.
POLICY_SUFFIX = "policy-generation"


class SharedCounter:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)  # kept open: publish locks it
        if os.fstat(self._fd).st_size < _SIZE:
            os.ftruncate(self._fd, _SIZE)
        # One aligned 8-byte word, read and written whole: struct.pack_into writes byte by
        # byte, and a reader could see half of a carry (255 -> 256 read as 0 or 511).
        self._word = memoryview(mmap.mmap(self._fd, _SIZE)).cast("Q")
        self._thread_lock = threading.Lock()  # flock does not exclude threads sharing the file
        self._pid = os.getpid()

    def value(self) -> int:
        return self._word[0]

    def publish(self) -> None:
        """Move the generation on by one (every process of the machine sees it at once)."""
        if self._pid != os.getpid():
            # A forked child shares its parent's open file, and flock with it: open its own.
            self._fd, self._pid = os.open(self.path, os.O_RDWR), os.getpid()
            self._thread_lock = threading.Lock()
        with self._thread_lock:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                self._word[0] = (self._word[0] + 1) % (1 << 64)
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)


class ProcessCounter:
    """For an in-memory database (one process): the same interface without a file."""

    def __init__(self) -> None:
        self._value = 0
        self._lock = threading.Lock()

    def value(self) -> int:
        return self._value

    def publish(self) -> None:
        with self._lock:
            self._value += 1


def counter_for(
    database_url: str, journal_directory: Path, suffix: str = SUFFIX
) -> SharedCounter | ProcessCounter:
    """SQLite: a file beside the database (every process using that file shares it).
    A server database: a file beside this machine's read journal for it, which its
    processes share; other machines hear of changes through service/change_listener.py."""
    if database_url.startswith("sqlite") and ":memory:" not in database_url:
        return SharedCounter(f"{sqlite_file(database_url)}.{suffix}")
    if database_url.startswith("sqlite"):
        return ProcessCounter()
    return SharedCounter(journal_directory.parent / f"{journal_directory.stem}.{suffix}")
