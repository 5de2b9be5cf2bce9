"""peewee models and the database wiring (SQLite by default, PostgreSQL by URL)."""

from __future__ import annotations

import atexit
import fcntl
import os
import re
import tempfile
import threading
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from urllib.parse import urlparse

import peewee
from peewee import (
    AutoField,
    BooleanField,
    CharField,
    CompositeKey,
    DatabaseProxy,
    DateTimeField,
    ForeignKeyField,
    IntegerField,
    IntegrityError,
    Model,
    OperationalError,
    PostgresqlDatabase,
    ProgrammingError,
    SqliteDatabase,
    TextField,
)
from playhouse.db_url import connect, parse, register_database
from playhouse.migrate import SchemaMigrator, migrate
from playhouse.pool import PooledPostgresqlDatabase
from psycopg2.extensions import TRANSACTION_STATUS_UNKNOWN

database = DatabaseProxy()
# SQL sent on a raw cursor (the audit log's hot inserts) raises the driver's own errors
# (psycopg2's, sqlite3's): inside this, peewee turns them into its classes, as it does
# for its own queries, so a lost connection is a 503 like any other (service/errors.py).
as_peewee_errors = peewee.__exception_wrapper__


class _ReplacesLostConnections:
    """PostgreSQL: peewee keeps one connection per thread and hands it out again after the
    server has ended it (a restart, a failover, a terminated backend), so every statement
    would fail until the process restarted. Here a lost connection is dropped: outside a
    transaction the next statement opens a new one, and the rollback of a transaction
    that lost it just lets it go (a ROLLBACK needs no new connection). Nothing is retried:
    the statement that met the loss fails (a 503), and so does its transaction. A
    connection in a failed transaction (an SQL error) is not lost: its ROLLBACK clears it."""

    def _lost(self) -> bool:
        if self.is_closed():
            return False
        connection = self._state.conn
        return bool(connection.closed) or connection.get_transaction_status() == TRANSACTION_STATUS_UNKNOWN

    def cursor(self, named_cursor=None):
        if not self.in_transaction() and self._lost():
            self._drop_lost_connection(reconnect=True)
        return super().cursor(named_cursor)

    def rollback(self):
        if not self.in_transaction() and self._lost():
            self._drop_lost_connection(reconnect=False)  # the server has rolled it back already
            return
        super().rollback()

    def _drop_lost_connection(self, reconnect: bool) -> None:
        contexts = self._state.ctx
        self.close()
        self._state.ctx = contexts  # see connect
        if reconnect:
            self.connect()

    def connect(self, reuse_if_open=False):
        # peewee's close() and connect() empty its stack of connection_context()s, whose
        # exits (the importer's whole run, a CLI command) would then find nothing to pop
        # once a lost connection was replaced: an IndexError in place of their own end.
        # Those still open stay open, whichever statement opens the new connection.
        contexts = self._state.ctx
        try:
            return super().connect(reuse_if_open)
        finally:
            self._state.ctx = contexts


class ReconnectingPostgresqlDatabase(_ReplacesLostConnections, PostgresqlDatabase):
    pass


class ReconnectingPooledPostgresqlDatabase(_ReplacesLostConnections, PooledPostgresqlDatabase):
    pass


# Bounds on a PostgreSQL connection's waits, so a server that is gone ends a statement or
# a reconnect in seconds, not after TCP's minutes (a URL's own settings win).
CONNECTION_BOUNDS = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 1,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,  # ms that sent data may stay unacknowledged
}

register_database(ReconnectingPostgresqlDatabase, "postgres", "postgresql")
register_database(ReconnectingPooledPostgresqlDatabase, "postgres+pool", "postgresql+pool")


class UTCDateTimeField(DateTimeField):
    """Stores naive UTC, returns aware UTC: SQLite keeps no zone and PostgreSQL's
    `timestamp` column would otherwise shift by the server's zone."""

    def db_value(self, value):
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return super().db_value(value)

    def python_value(self, value):
        value = super().python_value(value)
        if isinstance(value, datetime) and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class BaseModel(Model):
    class Meta:
        database = database


class Tenant(BaseModel):
    id = CharField(primary_key=True, max_length=128)
    name = CharField(max_length=256)
    created_at = UTCDateTimeField()


class RoleAssignment(BaseModel):
    id = AutoField()
    tenant_id = CharField(max_length=128)
    principal = CharField(max_length=256, index=True)
    role = CharField(max_length=256)  # the role's display name in roles.yaml
    created_at = UTCDateTimeField()

    class Meta:
        indexes = ((("tenant_id", "principal", "role"), True),)


class SupportRequest(BaseModel):
    id = CharField(primary_key=True, max_length=64)
    tenant_id = CharField(max_length=128, index=True)
    resource_tenant_id = CharField(max_length=128, index=True)
    title = CharField(max_length=512)
    status = CharField(max_length=16)  # open | closed
    allow_advanced_diagnostics = BooleanField(default=False)
    assigned_engineer = CharField(max_length=256, null=True, index=True)
    created_by = CharField(max_length=256)
    created_at = UTCDateTimeField()
    closed_at = UTCDateTimeField(null=True)


class AccessRequest(BaseModel):
    id = CharField(primary_key=True, max_length=64)
    support_request = ForeignKeyField(SupportRequest, backref="access_requests")
    engineer = CharField(max_length=256)
    resource_tenant_id = CharField(max_length=128, index=True)
    support_request_tenant_id = CharField(max_length=128, index=True)
    justification = TextField()
    status = CharField(max_length=16)
    # The approval requirement in force when the request was filed, as JSON
    # [{"party": ..., "approvals": n}], so a policy change does not rewrite history.
    requirements = TextField()
    policy_version = CharField(max_length=64)
    created_at = UTCDateTimeField()
    expires_at = UTCDateTimeField()  # when a pending request expires
    approved_at = UTCDateTimeField(null=True)
    access_expires_at = UTCDateTimeField(null=True)
    finished_at = UTCDateTimeField(null=True)  # any final state
    finished_by = CharField(max_length=256, null=True)
    # What the support request tenant is shown: a revocation there stays "approved"
    # until the access would have ended without it (SPEC §5), and when that was.
    support_request_view_status = CharField(max_length=16)
    support_request_view_finished_at = UTCDateTimeField(null=True)
    rejection_reason = TextField(null=True)

    class Meta:
        indexes = (
            (("engineer", "resource_tenant_id", "status"), False),
            (("status", "expires_at"), False),
            (("status", "access_expires_at"), False),
        )


class Approval(BaseModel):
    id = AutoField()
    access_request = ForeignKeyField(AccessRequest, backref="approvals")
    tenant_id = CharField(max_length=128)
    party = CharField(max_length=32)
    approver = CharField(max_length=256)
    at = UTCDateTimeField()

    class Meta:
        indexes = ((("access_request", "party", "approver"), True),)


class AuditEvent(BaseModel):
    seq = IntegerField(primary_key=True)  # assigned by service.audit.append, in chain order
    id = CharField(max_length=64)  # a uuid4; no index: random keys would cost a page write each
    time = UTCDateTimeField()
    activity = CharField(max_length=64)
    actor = CharField(max_length=256)
    actor_tenant_id = CharField(max_length=128, null=True)  # the token's tid
    tenant_id = CharField(max_length=128, null=True)  # the tenant the event is about
    visible_to = TextField()  # JSON list of tenant ids whose audit view shows it
    target = CharField(max_length=256, null=True)
    result = CharField(max_length=16)
    details = TextField()  # JSON object
    prev_hash = CharField(max_length=64)
    hash = CharField(max_length=64)
    # Reads (diagnostics.read) are seen by their own tenant only, and they are most of the
    # log. They are found through this bucket of their tenant (service.audit.read_bucket)
    # instead of an AuditVisibility row: importing a batch of reads then appends at the
    # end of a few hundred index ranges, rather than at one random place per read.
    read_bucket = IntegerField(null=True)


AuditEvent.add_index(
    AuditEvent.index(
        AuditEvent.read_bucket,
        AuditEvent.seq,
        AuditEvent.tenant_id,
        where=AuditEvent.read_bucket.is_null(False),
        name="auditevent_reads",
    )
)


# Activities that change no state a decision reads (they do not wake other workers'
# decision indexes). The workers read the other events after each change, through a
# partial index of those alone: reads are most of the log.
NOT_STATE_CHANGES = ("diagnostics.read", "policy.reloaded")
AuditEvent.add_index(
    AuditEvent.index(
        AuditEvent.seq, where=AuditEvent.activity.not_in(NOT_STATE_CHANGES), name="auditevent_changes"
    )
)


class AuditVisibility(BaseModel):
    """Which tenant's audit view shows which event (indexed for the view query)."""

    id = AutoField()
    tenant_id = CharField(max_length=128)
    event_seq = IntegerField()

    class Meta:
        indexes = ((("tenant_id", "event_seq"), True),)


class AuditReadIndex(BaseModel):
    """Where a tenant's reads are in an event that holds several reads (a diagnostics.read
    event without a tenant_id: one decision request's allowed reads, service/audit.py).
    One row per tenant per such event, keyed by the tenant's read bucket first, so that
    importing appends at the end of a few hundred index ranges (see read_bucket)."""

    read_bucket = IntegerField()
    event_seq = IntegerField()
    tenant_id = CharField(max_length=128)

    class Meta:
        primary_key = CompositeKey("read_bucket", "event_seq", "tenant_id")


class AuditHead(BaseModel):
    """One row: the newest event's hash. Writers lock it, so the chain is serial and a
    truncated log (last events deleted) is detected."""

    id = IntegerField(primary_key=True)
    last_seq = IntegerField()
    last_hash = CharField(max_length=64)


class AuditJournalPosition(BaseModel):
    """How far each read-journal file is imported into the audit chain
    (service/read_journal.py); moved in the transaction that imports."""

    file = CharField(max_length=128, primary_key=True)
    position = IntegerField()


class DirectorySetting(BaseModel):
    """A setting the directory decides, one row each: "provider_tenant", the support
    provider's tenant, once a directory file has named one other than the default
    (service/directory.py provider_tenant)."""

    name = CharField(max_length=64, primary_key=True)
    value = CharField(max_length=128)


MODELS = [Tenant, RoleAssignment, SupportRequest, AccessRequest, Approval, AuditEvent]
MODELS += [AuditVisibility, AuditReadIndex, AuditHead, AuditJournalPosition, DirectorySetting]


# WAL lets readers run beside the writer. synchronous=NORMAL syncs at checkpoints rather
# than every commit: a committed transaction survives a crash of the process (which is
# what the audit log promises) and only a power loss can drop the last commits.
SQLITE_PRAGMAS = {"journal_mode": "wal", "synchronous": "normal", "foreign_keys": 1, "busy_timeout": 10000}
SQLITE_PRAGMAS["journal_size_limit"] = 64 * 1024 * 1024  # the WAL file shrinks back to this on restart


DATABASE_URL_FORMS = "sqlite:////abs/path.db or postgresql://user:password@host/database"
# peewee's schemes for the two stores the service runs on (the code tells them apart by
# the "sqlite" prefix); MySQL, CockroachDB and the like lack what it relies on.
DATABASE_SCHEMES = ("sqlite", "sqlite+pool", "postgresql", "postgres", "postgresql+pool", "postgres+pool")


def database_url_problem(url: str) -> str | None:
    """What keeps `url` from naming a SQLite file or a PostgreSQL database, or None. The
    URL itself is not repeated: it may hold a password."""
    try:
        parsed = urlparse(url)
        parsed.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        return f"not a URL ({exc})"
    if parsed.scheme not in DATABASE_SCHEMES:
        return f"unsupported scheme {parsed.scheme!r}" if parsed.scheme else "not a URL"
    sqlite = parsed.scheme.startswith("sqlite")
    if sqlite and parsed.netloc:  # sqlite://file.db reads "file.db" as a host
        return "a SQLite URL takes three slashes before a relative path, four before an absolute one"
    if not parsed.path[1:]:
        return "it names no SQLite file" if sqlite else "it names no database"
    return None


def connect_database(url: str, background_checkpoints: bool = False, create: bool = True):
    """Open the database at `url` and create the schema if it is not there yet.

    background_checkpoints: a thread checkpoints SQLite's write-ahead log
    (service/checkpointer.py), so commits need not; they do it only past a large cap.
    create=False: a SQLite file that does not exist is an OperationalError ("no database
    at PATH"), not a new empty database (for readers such as `audit verify`).
    """
    if url.startswith("sqlite") and ":memory:" in url:
        # Connections are per thread and closed after use, which would lose an in-memory
        # database: use a private temporary file instead (for one-off CLI runs).
        handle, path = tempfile.mkstemp(prefix="support-access-", suffix=".db")
        os.close(handle)
        atexit.register(lambda: os.path.exists(path) and os.remove(path))
        url = f"sqlite:///{path}"
    if url.startswith("sqlite"):
        pragmas = {**SQLITE_PRAGMAS, "wal_autocheckpoint": 50_000 if background_checkpoints else 1000}
        db = connect(url, pragmas=pragmas)
    else:
        db = connect(url)
        db.connect_params = {**CONNECTION_BOUNDS, **db.connect_params}
    if not create and is_sqlite(db) and not os.path.exists(db.database):
        raise OperationalError(f"no database at {db.database}")
    folder = os.path.dirname(os.path.abspath(db.database)) if is_sqlite(db) else None
    if folder is not None and not os.path.isdir(folder):
        # SQLite's own "unable to open database file" names neither the file nor the cause.
        # Not created here: a typo in the path would otherwise make a new directory.
        raise OperationalError(f"no directory {folder} for {db.database}")
    database.initialize(db)
    # The key is all the row holds: SQLite need not keep a rowid table beside it
    # (peewee would write WITHOUT ROWID for PostgreSQL too).
    AuditReadIndex._meta.without_rowid = is_sqlite(db)
    with _one_setup_at_a_time(db), db.connection_context(), _postgres_setup_lock(db):
        _add_new_columns(db)
        try:
            db.create_tables(MODELS, safe=True)
        except (IntegrityError, OperationalError, ProgrammingError):
            # Another process starting at the same moment created a new table first: now
            # it is there.
            db.create_tables(MODELS, safe=True)
        AuditHead.insert(id=1, last_seq=0, last_hash="0" * 64).on_conflict_ignore().execute()
    return db


SCHEMA_LOCK_KEY = 0x5A5E7C0DE  # any number, the same in every process of the service


@contextmanager
def _postgres_setup_lock(db):
    """PostgreSQL: one process at a time creates the schema. CREATE TABLE IF NOT EXISTS
    is not safe against itself there (a unique violation on the table's type), and two
    workers starting together on a new database create it table by table side by side:
    one retry was not enough, and the worker that lost twice crashed the server."""
    if is_sqlite(db):
        yield
        return
    db.execute_sql("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK_KEY,))
    try:
        yield
    finally:
        db.execute_sql("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK_KEY,))


@contextmanager
def _one_setup_at_a_time(db):
    """SQLite, a new database: hold the writers' file lock while the first connection opens
    and the schema is created. Opening switches a new database to WAL, which fails at once
    with "database is locked" (no busy wait) while another process does the same: two
    workers starting together on a new database, half the time. Waits as long as SQLite's
    busy timeout, then raises that error, which leaves the worker up but not ready
    (service/starting.py). An existing database is in WAL mode already, and a reader
    (`audit verify`) must not wait for a long write to open it."""
    try:
        new = is_sqlite(db) and (not os.path.exists(db.database) or os.path.getsize(db.database) == 0)
        lock = _write_lock.file(db.database) if new else None
    except OSError:  # a read-only or missing directory: no lock file (opening fails anyway)
        lock = None
    if lock is None:
        yield
        return
    deadline = time.monotonic() + SQLITE_PRAGMAS["busy_timeout"] / 1000
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise OperationalError("database is locked (another process holds its write lock)") from None
            time.sleep(0.01)
    try:
        yield
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)


def _add_new_columns(db) -> None:
    """Columns added after a database was created (create_tables adds tables only).
    Each is nullable: rows written before it hold NULL, which the code reading it handles."""
    migrator = SchemaMigrator.from_database(db)
    for field in (AuditEvent.read_bucket, AccessRequest.support_request_view_finished_at):
        table, column = field.model._meta.table_name, field.column_name
        if not db.table_exists(table) or column in {c.name for c in db.get_columns(table)}:
            continue
        try:
            migrate(migrator.add_column(table, column, type(field)(null=True)))
        except (OperationalError, ProgrammingError):
            # Another process starting at the same moment added it first.
            if column not in {c.name for c in db.get_columns(table)}:
                raise


def server_database_name(url: str) -> str:
    """A file-name-safe name for a server database (host, port, database), for the files
    a machine's processes share about it: two databases on one machine must not share them."""
    parts = parse(url)
    name = f"{parts.get('host') or 'local'}-{parts.get('port') or 'default'}-{parts.get('database')}"
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def sqlite_file(url: str) -> str:
    """The SQLite file `url` names, without its query string and resolved (a symbolic link
    to the file): the processes of one database, however they name it, share the files
    kept beside it (the change counter, the read journal, the write lock)."""
    return os.path.realpath(parse(url)["database"])


def is_sqlite(db) -> bool:
    return isinstance(db, SqliteDatabase)


class WriteLockBusy(Exception):
    """transaction(wait=False) found another writer at work."""


class _Begun(threading.local):
    count = 0  # outermost write transactions begun on this thread


_begun = _Begun()


def write_transaction_number() -> int:
    """Which of this thread's write transactions is open (or was the last): for work done
    once per transaction, however many events it records (audit: importing the read
    journal before a change)."""
    return _begun.count


@contextmanager
def transaction(wait: bool = True):
    """A write transaction.

    SQLite: writers first take a file lock beside the database, then BEGIN IMMEDIATE.
    SQLite's own wait for a busy database polls with sleeps of a millisecond and more;
    the kernel hands a file lock over the moment it is released, so writers from several
    worker processes queue without that delay (and never fail to upgrade a read lock).
    PostgreSQL: writers take an advisory lock first (_lock_writers), so they are serial too.
    wait=False: raise WriteLockBusy rather than queue behind another writer.
    """
    db = database.obj
    # Decided before db.atomic(): peewee runs a nested atomic() as a savepoint, which
    # transaction_depth() does not count, so inside it a nested block looks outermost too.
    outermost = db.transaction_depth() == 0
    if not is_sqlite(db):
        with db.atomic():
            if outermost:
                _lock_writers(db, wait)
                _begun.count += 1
            yield
        return
    if outermost:
        _begun.count += 1
    lock = _write_lock.file(db.database) if outermost else None
    if lock is not None:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WriteLockBusy() from None
    try:
        with db.atomic("IMMEDIATE"):
            yield
    finally:
        if lock is not None:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextmanager
def snapshot():
    """A read transaction that sees the database as it was at its first read, throughout
    (SQLite in WAL mode: any transaction; PostgreSQL: REPEATABLE READ). For a reader that
    checks several tables against each other while writers go on (`audit verify`)."""
    db = database.obj
    with db.atomic(**({} if is_sqlite(db) else {"isolation_level": "REPEATABLE READ"})):
        yield


# PostgreSQL: writers take this transaction-level advisory lock first, so they run one at
# a time as SQLite's do. The workflow reads a row, decides and writes it back; without it,
# under READ COMMITTED, an approval and a ticket close could both act on what they read.
WRITERS_LOCK_KEY = 0x5A_CCE55  # any constant; only our writers take it


def _lock_writers(db, wait: bool) -> None:
    if wait:
        db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (WRITERS_LOCK_KEY,))
    elif not db.execute_sql("SELECT pg_try_advisory_xact_lock(%s)", (WRITERS_LOCK_KEY,)).fetchone()[0]:
        raise WriteLockBusy()


class _WriteLock(threading.local):
    """One open lock file per thread: flock excludes between open files, so threads of
    one process exclude each other too."""

    def file(self, database_file: str):
        handles = self.__dict__.setdefault("handles", {})
        if database_file not in handles:
            lock_file = f"{os.path.realpath(database_file)}.writelock"  # see sqlite_file
            handles[database_file] = open(lock_file, "a+b")  # noqa: SIM115
        return handles[database_file]


_write_lock = _WriteLock()
