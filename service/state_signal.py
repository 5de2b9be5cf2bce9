"""A cheap "has anything changed?" signal shared by every worker process of one machine.

Writers publish the audit sequence number of their change after it commits; readers
compare the shared value with the last one they saw before each decision. Any
difference means "read the changes from the database". The shared value is 8 bytes in a
memory-mapped file beside the SQLite database, so checking it costs well under a
microsecond and needs no database round trip.
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path

_FORMAT = "<Q"
_SIZE = struct.calcsize(_FORMAT)


class SharedCounter:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < _SIZE:
                os.ftruncate(fd, _SIZE)
            self._map = mmap.mmap(fd, _SIZE)
        finally:
            os.close(fd)

    def value(self) -> int:
        return struct.unpack_from(_FORMAT, self._map)[0]

    def publish(self, seq: int) -> None:
        # Any change of value wakes readers; they then read the database, the source of
        # truth, so a lost race between two writers costs nothing but a re-read.
        struct.pack_into(_FORMAT, self._map, 0, seq)


class ProcessCounter:
    """For an in-memory database (one process): the same interface without a file."""

    def __init__(self) -> None:
        self._value = 0

    def value(self) -> int:
        return self._value

    def publish(self, seq: int) -> None:
        self._value = seq


def counter_for(database_url: str, journal_directory: Path) -> SharedCounter | ProcessCounter:
    """SQLite: a file beside the database (every process using that file shares it).
    A server database: a file beside this machine's read journal for it, which its
    processes share; other machines hear of changes through service/change_listener.py."""
    if database_url.startswith("sqlite") and ":memory:" not in database_url:
        database_file = database_url.split("///", 1)[1]
        return SharedCounter(f"{database_file}.changes")
    if database_url.startswith("sqlite"):
        return ProcessCounter()
    return SharedCounter(journal_directory.parent / f"{journal_directory.stem}.changes")
