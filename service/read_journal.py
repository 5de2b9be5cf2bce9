"""The read journal: allowed reads are committed here before their answer leaves, then
imported into the hash-chained audit log many at a time.

Every allowed decision must be in the audit log before its answer is sent. Writing each
request's reads in a database transaction made SQLite's single write lock the decision
path's bottleneck: with a worker process per core, a request spent more time waiting for
the other workers' commits than deciding. So a decision appends its reads to a journal
file of its own process instead - one write() for all reads of a request, no lock shared
with other processes - and returns only once that write is done. The write survives a
crash of the process just as a committed SQLite transaction does (SQLite runs with
synchronous=NORMAL: both reach the operating system, neither waits for the disk).

The importer moves complete journal records into the audit chain in one transaction per
round (group commit), and records how far it got in the same transaction, so a record
is imported exactly once whatever crashes. Importing happens
- every few milliseconds in the importer process that `make serve` runs beside the
  workers (`Importer`, service/read_importer.py);
- in a request, a round of HELP_RECORDS, when its worker finds more than BACKLOG_BYTES
  waiting (the importer is behind, or there is none): the backlog stays bounded;
- before any other audit event is written (service.audit.record), so the chain keeps a
  read before the state changes that followed it;
- before the audit log is read (the audit view, `audit verify`), so no reader misses a
  recorded read, whether or not an importer runs.

Files: `<pid>-<ns>.jsonl` in the journal directory, one JSON array per line: a request's
allowed read, or its several reads as one record (audit.reads_record). A writer
holds a shared flock on its open file; a file whose writer is gone (unlocked) and that is
fully imported is deleted. An incomplete last line of such a file is a write that never
finished (its answer was never sent) and is dropped.
"""

from __future__ import annotations

import fcntl
import hashlib
import heapq
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from models import (
    AuditJournalPosition,
    WriteLockBusy,
    database,
    server_database_name,
    sqlite_file,
    transaction,
)
from service import audit
from service.checkpointer import Checkpointer
from service.errors import DATABASE_ERRORS, Unavailable, store_failed

log = logging.getLogger("support_access")

ROTATE_BYTES = 64 * 1024 * 1024  # a writer starts a new file past this size
# Past this much not yet imported (~20,000 reads: 0.15 s of batch load on two cores),
# writers help. Lower, they helped whenever the importer lost the CPU for a few tens of
# milliseconds to the workers, and the lock they then took cost more than it saved.
BACKLOG_BYTES = 8 * 1024 * 1024
FAR_BEHIND_BYTES = 64 * 1024 * 1024  # past this (~150,000 reads) they wait their turn to help
HELP_RECORDS = 200  # records a helping writer imports (at most ~200 KB: a few ms of its request)
# Seconds between a writer's backlog checks (each lists the journal and reads positions).
CHECK_INTERVAL = 0.02
ROUND_RECORDS = 5_000  # most records per import transaction (and ~5 MB: ~50 ms of work)
RECORD_BYTES_GUESS = 1024  # bytes read per record wanted (one read's is ~500; a batch's, more)
# Background importer: seconds between rounds (a round has a fixed cost; every 2 ms it
# took CPU from the workers for little). Back to back while a full round's worth waits.
ROUND_INTERVAL = 0.010
LEASE_RETRY = 1.0  # a process without the lease checks this often whether it is free
# A writer renames its new file microseconds after creating it; one older than this was
# left by a writer that stopped in between.
ABANDONED_AFTER = 60.0


def directory_for(database_url: str, instance_path: str) -> Path:
    """Beside the SQLite file (every process using that database shares it); for a
    server database, in the instance folder, named after the database."""
    if database_url.startswith("sqlite") and ":memory:" not in database_url:
        return Path(sqlite_file(database_url) + ".reads")
    if database_url.startswith("sqlite"):  # one process's throw-away database
        return Path(instance_path) / "read-journal"
    return Path(instance_path) / f"{server_database_name(database_url)}.reads"


def import_legacy_journal(database_url: str, instance_path: str) -> int:
    """Import a journal a worker before af644fd left under the URL's own spelling of the
    SQLite file (`<db>?timeout=10.reads`, `<link to db>.reads`): nothing reads there
    any more, and a read journalled there must still reach the audit log. Returns the
    number imported; the importer calls this once, at its start."""
    if not database_url.startswith("sqlite") or ":memory:" in database_url:
        return 0
    legacy = Path(database_url.split("///", 1)[1] + ".reads")
    if not legacy.is_dir() or legacy.resolve() == directory_for(database_url, instance_path).resolve():
        return 0
    imported = flush(legacy)
    if imported:
        log.warning("imported %d reads from %s, a read journal named before af644fd", imported, legacy)
    return imported


class ReadJournal:
    """The writing side: one file per process, appended under a thread lock."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._pid: int | None = None
        self._size = 0
        self._checked_at = -CHECK_INTERVAL  # monotonic time of the last backlog check
        self._keep_up_lock = threading.Lock()
        self._store_down = False
        self._far_behind = False

    def keep_up(self) -> None:
        """Every CHECK_INTERVAL: see that the journal is being imported (`_keep_up`). Call
        it before deciding, not between a decision and its answer: it queries the store,
        and a hung connection would hold an answer computed before a revocation for as
        long as it hangs. One thread checks; the others go on without waiting for it,
        unless the journal is far behind (then they wait their turn: the backlog's bound).
        It does not raise: while the store is down, `append` refuses (503) and denials
        are still answered."""
        if time.monotonic() - self._checked_at < CHECK_INTERVAL:
            return
        if not self._keep_up_lock.acquire(blocking=self._far_behind):
            return
        try:
            if time.monotonic() - self._checked_at >= CHECK_INTERVAL:
                self._keep_up()
        finally:
            self._keep_up_lock.release()

    def append(self, records: list[list]) -> None:
        """Return once `records` (audit.RECORD_FIELDS order) are in the journal; raise
        Unavailable if they are not, or if the last `keep_up` found the store down."""
        if not records:
            return
        if self._store_down:
            raise Unavailable("the audit log is unavailable", code="store_unavailable")
        data = b"".join([orjson.dumps(record) + b"\n" for record in records])
        with self._lock:
            try:
                fd = self._file()
                written = os.write(fd, data)
                if written != len(data):
                    raise OSError(f"short write: {written} of {len(data)} bytes")
                self._size += written
            except OSError as exc:
                # Whatever part was written stays as an incomplete line at the end of a
                # file this process no longer writes: the importer drops it.
                self._close()
                log.error("read journal write failed: %s", exc)
                raise Unavailable("the audit journal is unavailable", code="store_unavailable") from exc

    def _keep_up(self) -> None:
        """Every few milliseconds: if more than BACKLOG_BYTES wait to be imported (the
        background importer is behind, or there is none), import them here, so the time a
        recorded read takes to reach the audit log stays bounded. If the store cannot be
        reached, `append` refuses (503) until a check finds it again: reads are not piled
        up unboundedly."""
        self._checked_at = time.monotonic()
        try:
            waiting = backlog(self.directory)
            self._far_behind = waiting > FAR_BEHIND_BYTES
            if waiting > BACKLOG_BYTES:
                # Help with one round; if another process is writing, it is likely the
                # importer: queue behind it only when far behind.
                with transaction(wait=waiting > FAR_BEHIND_BYTES):
                    import_round(self.directory, HELP_RECORDS)
            self._store_down = False
        except WriteLockBusy:
            self._store_down = False
        except DATABASE_ERRORS as exc:
            if not store_failed(exc):
                raise
            self._store_down = True
            log.error("read journal: the audit store is unavailable: %s", exc)
        except OSError as exc:  # the journal directory cannot be listed (its permissions)
            self._store_down = True
            log.error("read journal: cannot check the journal: %s", exc)

    def close(self) -> None:
        with self._lock:
            self._close()

    def _file(self) -> int:
        if self._fd is not None and (
            self._pid != os.getpid() or self._size > ROTATE_BYTES or os.fstat(self._fd).st_nlink == 0
        ):
            # Forked (the file is the parent's), big enough, or removed under us (what is
            # written to a removed file would never be imported): start another.
            self._close()
        if self._fd is None:
            self.directory.mkdir(parents=True, exist_ok=True)  # if it was removed meanwhile
            name = self.directory / f"{os.getpid()}-{time.time_ns()}"
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
            fd = os.open(f"{name}.new", flags, 0o600)
            try:
                # Locked before the importer can see it (it reads only *.jsonl): an unlocked
                # file is one whose writer is gone, and a finished one is deleted.
                fcntl.flock(fd, fcntl.LOCK_SH)
                os.rename(f"{name}.new", f"{name}.jsonl")
            except OSError:
                os.close(fd)
                Path(f"{name}.new").unlink(missing_ok=True)
                raise
            self._fd, self._pid, self._size = fd, os.getpid(), 0
        return self._fd

    def _close(self) -> None:
        if self._fd is not None:
            # In a forked child this closes the child's copy only: the parent's file must
            # not look in use for as long as the child lives.
            os.close(self._fd)
            self._fd = None


def _record(line: bytes) -> list:
    """A journal line back as an audit record; ValueError if it is not one."""
    record = orjson.loads(line)
    if not isinstance(record, list) or len(record) != len(audit.RECORD_FIELDS):
        raise ValueError("not an audit record")
    return record


# --- importing ------------------------------------------------------------------------


@dataclass
class _Slice:
    """What one round reads from one file."""

    name: str
    start: int  # the file's imported position
    lines: list[bytes]  # complete records from `start` on, each with its newline
    finished: bool  # no writer holds it and `lines` reach its end: it can go once imported
    cut: bool  # the budget stopped the read before the file's end: records may follow


def import_round(directory: Path, max_records: int | None = None) -> int:
    """Import up to `max_records` (default ROUND_RECORDS) journal records into the audit
    chain, oldest decision first. Must run inside models.transaction(). Returns the
    number imported."""
    return _import(directory, max_records or ROUND_RECORDS).imported


@dataclass
class _Round:
    imported: int  # records imported
    consumed: int  # lines consumed: imported, unreadable or unfinished
    more: bool  # records were left for another round


def _no_pause() -> None:
    pass


def _import(directory: Path, budget: int, pause: Callable[[], None] = _no_pause) -> _Round:
    """`pause()` runs between the round's CPU-heavy steps (reading, chaining, committing)."""
    audit.lock_chain()  # first: with PostgreSQL, two importers must not read the same positions
    prefix = _directory_key(directory)
    positions = _positions(prefix)
    names = sorted(path.name for path in directory.glob("*.jsonl"))
    slices = [s for s in (_take(directory / name, positions.get(name, 0), budget) for name in names) if s]
    if len(slices) == 1:  # nothing to merge
        taken = [(None, 0, line) for line in slices[0].lines[:budget]]
    else:
        # Each file is in decision order; take the oldest `budget` records across the
        # files (lazily: lines past the budget are not looked at).
        keyed = [_keyed(piece.lines, n) for n, piece in enumerate(slices)]
        taken = list(itertools.islice(heapq.merge(*keyed), budget))
    consumed = [0] * len(slices)
    records = []
    for _, n, line in taken:
        consumed[n] += 1
        try:
            records.append(_record(line))
        except ValueError as exc:  # orjson.JSONDecodeError is one
            log.error("read journal %s: unreadable record skipped (%s): %.200r", slices[n].name, exc, line)
    if records:
        pause()
        audit.append_records(records)
        pause()
    finished, more = [], False
    for n, piece in enumerate(slices):
        end = piece.start + sum(len(line) for line in piece.lines[: consumed[n]])
        # Records left over, not a live writer's unfinished tail: that would spin the importer.
        more = more or piece.cut or consumed[n] < len(piece.lines)
        if end != piece.start or piece.name not in positions:
            _save_position(prefix + piece.name, end, piece.name in positions)
        if piece.finished and consumed[n] == len(piece.lines):
            finished.append(piece.name)
    gone = [prefix + name for name in positions if name not in names]
    if gone:
        AuditJournalPosition.delete().where(AuditJournalPosition.file.in_(gone)).execute()
    if finished:
        database.after_commit(lambda: _remove(directory, finished))
    return _Round(len(records), len(taken), more)


def _keyed(lines: list[bytes], n: int) -> Iterator[tuple[bytes, int, bytes]]:
    """A file's lines keyed for merging: (stored time, file number, line)."""
    for line in lines:
        yield _stored_time_of(line), n, line


def _stored_time_of(line: bytes) -> bytes:
    """A record's stored time, without parsing it: the second field, always a string in
    one fixed format, so the bytes sort as the times do (unreadable lines sort first)."""
    start = line.find(b'","') + 3
    return line[start : line.find(b'"', start)] if start > 2 else b""


def _take(path: Path, start: int, budget: int) -> _Slice | None:
    """Up to `budget` complete records of one file from `start` on."""
    try:
        with path.open("rb") as handle:
            # Whether the writer is gone, before the size: a writer that appends and then
            # stops in between must not have its last record taken for the file's end.
            writer_gone = _writer_gone(handle)
            size = os.fstat(handle.fileno()).st_size
            if size <= start and not writer_gone:
                return None
            handle.seek(start)
            data = handle.read(max(0, min(size - start, budget * RECORD_BYTES_GUESS)))
            if b"\n" not in data:  # one record longer than that (a big batch's reads): all of it
                data += handle.readline(size - start - len(data))
    except FileNotFoundError:
        return None
    complete = data.rfind(b"\n") + 1
    lines = data[:complete].splitlines(keepends=True)[:budget]
    taken = sum(len(line) for line in lines)
    cut = taken < complete or start + len(data) < size
    finished = writer_gone and start + taken >= size  # past its end: cut short after its import
    if writer_gone and taken == complete < len(data) and start + len(data) == size and len(lines) < budget:
        # A write that never finished (its process stopped; its answer was never sent).
        log.error("read journal %s: dropped an unfinished record of a writer that stopped", path.name)
        lines.append(data[complete:])  # consumed as an unreadable record
        finished = True
    return _Slice(path.name, start, lines, finished, cut)


def _writer_gone(handle) -> bool:
    """No process has this file open for writing (a writer holds a shared lock on it)."""
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    return True


def _directory_key(directory: Path) -> str:
    """The prefix of this journal directory's position rows: several hosts (PostgreSQL) or
    directories may journal into one database, and each keeps its own positions."""
    where = f"{socket.gethostname()}:{directory.resolve()}"
    return hashlib.sha256(where.encode()).hexdigest()[:12] + ":"


def _save_position(key: str, position: int, exists: bool) -> None:
    if exists:
        AuditJournalPosition.update(position=position).where(AuditJournalPosition.file == key).execute()
    else:
        AuditJournalPosition.insert(file=key, position=position).execute()


def _remove(directory: Path, names: list[str]) -> None:
    """Delete imported files whose writer is gone. Their position rows go in a later
    round (a row without a file): were a row removed first and the unlink then failed,
    the file would be imported twice."""
    for name in names:
        try:
            (directory / name).unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:  # runs after commit: raising would skip the change signal
            log.warning("could not remove the imported journal file %s: %s", name, exc)


def remove_abandoned(directory: Path, now: float) -> None:
    """Delete the new files writers created and never renamed (they stopped in between):
    nothing is written to a file before its rename, so they are empty."""
    for path in directory.glob("*.new"):
        try:
            info = path.stat()
            if info.st_size == 0 and now - info.st_mtime > ABANDONED_AFTER:
                path.unlink()
        except FileNotFoundError:
            pass


def flush(directory: Path) -> int:
    """Import everything journalled before the call (readers call this before reading);
    what writers add meanwhile may wait for the importer. Returns the number imported."""
    target = _sizes(directory)
    total = 0
    while True:
        with transaction():
            done = _import(directory, ROUND_RECORDS)
        total += done.imported
        if done.consumed == 0 or _reached(directory, target):
            return total


def _reached(directory: Path, sizes: dict[str, int]) -> bool:
    positions = _positions(_directory_key(directory))
    return all(
        positions.get(name, 0) >= size or not (directory / name).exists() for name, size in sizes.items()
    )


def backlog(directory: Path) -> int:
    """Bytes journalled and not yet imported."""
    sizes = _sizes(directory)
    if not sizes:
        return 0
    positions = _positions(_directory_key(directory))
    return sum(max(0, size - positions.get(name, 0)) for name, size in sizes.items())


def _positions(prefix: str) -> dict[str, int]:
    """This directory's files' imported positions, by file name (a handful of rows;
    plain SQL, as it runs often)."""
    table = AuditJournalPosition._meta.table_name
    rows = database.execute_sql(f"SELECT file, position FROM {table}").fetchall()
    return {key[len(prefix) :]: position for key, position in rows if key.startswith(prefix)}


def import_within(directory: Path) -> None:
    """Inside a write transaction that is about to record other events: import what the
    journal holds first, so the chain keeps reads before the changes that followed. At
    most one round: on an overloaded machine a change does not wait for the whole
    backlog, and reads still to come keep the time they were decided at."""
    if not any(directory.glob("*.jsonl")):
        return
    try:
        with database.atomic():  # a savepoint: a failed import leaves the change's transaction clean
            import_round(directory)
    except Exception:
        # Best effort: a revocation must not fail because the journal cannot be read.
        # The reads stay in the journal for the importer.
        log.exception("read journal: import before a state change failed")


class Importer:
    """The background importer: rounds every few milliseconds while reads arrive, WAL
    checkpoints between them. Run by its own process (service/read_importer.py), so its
    work never waits for, or holds up, a request in a worker; only the holder of the
    lease file imports, so two serving instances on one database do not compete."""

    def __init__(self, directory: Path, db):
        self.directory = Path(directory)
        self.checkpointer = Checkpointer(db)
        self._last_round = 0.0
        self._last_sweep = 0.0

    def run(self, keep_going) -> None:
        """Import until `keep_going()` turns false (checked every round)."""
        with open(self.directory / "importer.lease", "a+b") as lease:
            while not _try_lock(lease):
                if not keep_going():
                    return
                time.sleep(LEASE_RETRY)
            seen: dict[str, int] = {}
            while keep_going() and self.directory.exists():
                seen, interval = self.round(seen)
                self.checkpointer.checkpoint_if_due()
                time.sleep(interval)
            flush(self.directory)  # a clean stop leaves nothing behind

    def round(self, seen: dict[str, int]) -> tuple[dict[str, int], float]:
        """One round if the journal changed since `seen` (or a second passed: a writer
        that stopped leaves a file to remove); (what it saw, seconds to wait)."""
        try:
            sizes = _sizes(self.directory)
            if sizes == seen and time.monotonic() - self._last_round < LEASE_RETRY:
                return seen, ROUND_INTERVAL
            if time.monotonic() - self._last_sweep >= LEASE_RETRY:
                self._last_sweep = time.monotonic()
                remove_abandoned(self.directory, time.time())
            self._last_round = time.monotonic()
            with transaction():
                done = _import(self.directory, ROUND_RECORDS, pause=give_way)
            give_way()  # the commit was one more such step
            if done.more:  # behind: go on at once
                return {}, 0.0
            # While reads arrive, keep `seen` empty so the next round looks again.
            return ({} if done.imported else sizes), ROUND_INTERVAL
        except Exception:  # a busy or broken store must not end the importer; readers import too
            log.warning("read journal import failed", exc_info=True)
            return {}, LEASE_RETRY


def give_way() -> None:
    """Let a task waiting for this core run first. A worker's thread woken on the
    importer's core waited out a whole round, 1–2 ms of CPU, even with the other core
    idle (`perf sched`, bench/HISTORY.md); between a round's steps it waits for one
    step. Only the background importer gives way: a request helping to import should not."""
    os.sched_yield()


def _sizes(directory: Path) -> dict[str, int]:
    sizes = {}
    if not directory.exists():
        return sizes
    for entry in os.scandir(directory):
        if entry.name.endswith(".jsonl"):
            try:
                sizes[entry.name] = entry.stat().st_size
            except FileNotFoundError:
                pass
    return sizes


def _try_lock(handle) -> bool:
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
