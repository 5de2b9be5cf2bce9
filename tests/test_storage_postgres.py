"""The PostgreSQL-only wiring in models/__init__.py: the writers' advisory lock, the
schema lock while the schema is made, the snapshot's isolation, and replacing a
connection the server ended on a pooled URL. Skipped without a PostgreSQL server (the
PostgreSQL pass of make test, tests/postgres.sh)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import peewee
import psycopg2
import pytest
from playhouse.db_url import parse

from models import (
    SCHEMA_LOCK_KEY,
    WRITERS_LOCK_KEY,
    Tenant,
    WriteLockBusy,
    connect_database,
    database,
    snapshot,
    transaction,
    write_transaction_number,
)
from tests.conftest import START
from tests.postgres import end_connections

pytestmark = pytest.mark.skipif(
    not os.environ.get("SUPPORT_ACCESS_TEST_POSTGRES"),
    reason="needs a PostgreSQL server (the PostgreSQL pass of make test, tests/postgres.sh)",
)


@pytest.fixture
def store(database_url, restore_database) -> str:
    """The schema made on a new database through connect_database."""
    connect_database(database_url)
    return database_url


def _close_all() -> None:
    if not database.is_closed():
        database.close()
    if hasattr(database.obj, "close_all"):  # a pool keeps the connections it was handed back
        database.obj.close_all()


@contextlib.contextmanager
def other_connection(url: str, autocommit: bool = True) -> Iterator:
    """A connection of another process (its own backend), not the service's."""
    parts = parse(url)
    parts["dbname"] = parts.pop("database")
    connection = psycopg2.connect(**parts)
    connection.autocommit = autocommit
    try:
        yield connection
    finally:
        connection.close()


def _lock_is_free(url: str, key: int) -> bool:
    """Whether another backend could take the advisory lock `key` now (without waiting).
    Autocommit: a transaction-level lock taken here is let go at once again."""
    with other_connection(url) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", (key,))
        free = cursor.fetchone()[0]
        if free:
            cursor.execute("SELECT pg_advisory_unlock(%s)", (key,))
        return free


@contextlib.contextmanager
def writers_lock_held_elsewhere(url: str) -> Iterator[None]:
    """Another instance's writer in the middle of its transaction."""
    with other_connection(url, autocommit=False) as connection:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", (WRITERS_LOCK_KEY,))
        try:
            yield
        finally:
            connection.rollback()


def _give_up_waiting_for_locks() -> None:
    """A wait for a lock held elsewhere ends in an error (lock_timeout) rather than never:
    the lock is not let go while the test waits, so this is no race."""
    database.execute_sql("SET lock_timeout = '1s'")


# --- the writers' lock -------------------------------------------------------------------


def test_a_writer_holds_the_writers_lock_until_its_transaction_ends(store):
    """Writers of every instance run one at a time: the lock is taken by the outermost
    transaction, kept through a nested one, and let go at commit or rollback (a lock
    that outlived its transaction would stop every other instance's writers)."""
    with database.connection_context():
        assert _lock_is_free(store, WRITERS_LOCK_KEY)
        with transaction():
            assert not _lock_is_free(store, WRITERS_LOCK_KEY)
            with transaction():
                pass
            assert not _lock_is_free(store, WRITERS_LOCK_KEY)
        assert _lock_is_free(store, WRITERS_LOCK_KEY)
        with pytest.raises(ZeroDivisionError), transaction():
            assert not _lock_is_free(store, WRITERS_LOCK_KEY)
            1 / 0  # noqa: B018
        assert _lock_is_free(store, WRITERS_LOCK_KEY)


def test_a_writer_that_will_not_wait_is_told_the_lock_is_busy(store):
    with database.connection_context():
        _give_up_waiting_for_locks()  # a writer that waited would fail otherwise, not hang
        with writers_lock_held_elsewhere(store):
            with pytest.raises(WriteLockBusy), transaction(wait=False):
                Tenant.create(id="busy", name="written while busy", created_at=START)
        assert not Tenant.select().where(Tenant.id == "busy").exists()
        with transaction(wait=False):  # free again: taken at once
            Tenant.create(id="free", name="written once free", created_at=START)
        assert Tenant.select().where(Tenant.id == "free").exists()


def test_a_writer_that_waits_does_not_begin_while_another_holds_the_lock(store):
    """The workflow reads a row, decides and writes it back: a writer that went on beside
    another (READ COMMITTED) could act on what the other is changing."""
    began = []
    with database.connection_context():
        _give_up_waiting_for_locks()
        with writers_lock_held_elsewhere(store):
            with pytest.raises(peewee.OperationalError, match="lock timeout"), transaction():
                began.append(True)
        assert began == []
        with transaction():  # let go: the next writer begins
            began.append(True)
        assert began == [True]


def test_each_write_transaction_has_a_number_of_its_own(store):
    """Work done once per write transaction (service/audit.py imports the read journal
    before a change) keys on this number: the next transaction must not look like the last."""
    with database.connection_context():
        with transaction():
            first = write_transaction_number()
        assert write_transaction_number() == first
        with transaction(wait=False):
            assert write_transaction_number() == first + 1


def test_a_nested_transaction_is_numbered_as_part_of_the_outer_one(store):
    """As on SQLite (tests/test_storage.py): a nested transaction is not one of its own.
    peewee runs it as a savepoint, which transaction_depth() does not count, so it was
    numbered anew, and the audit log imported the read journal again mid-transaction."""
    with database.connection_context(), transaction():
        first = write_transaction_number()
        with transaction():
            assert write_transaction_number() == first


# --- the snapshot --------------------------------------------------------------------------


def test_a_snapshot_sees_the_database_as_at_its_first_read(store):
    """`audit verify` checks several tables against each other while writers go on."""
    with database.connection_context():
        with snapshot():
            assert database.execute_sql("SHOW transaction_isolation").fetchone()[0] == "repeatable read"
            before = Tenant.select().count()
            with other_connection(store) as connection, connection.cursor() as cursor:
                cursor.execute(
                    "INSERT INTO tenant (id, name, created_at) VALUES ('later', 'committed meanwhile', now())"
                )
            assert Tenant.select().count() == before
        assert Tenant.select().count() == before + 1  # after it, the commit is seen


# --- the schema lock and pooled URLs -----------------------------------------------------------


def _pooled(url: str) -> str:
    return url.replace("postgresql://", "postgresql+pool://", 1)


@pytest.mark.parametrize("pooled", [False, True], ids=["plain", "pooled"])
def test_making_the_schema_lets_go_of_the_schema_lock(database_url, restore_database, pooled):
    """A pooled connection outlives the setup: a schema lock it kept would stop every other
    process's start (connect_database waits for it) for as long as this one runs."""
    connect_database(_pooled(database_url) if pooled else database_url)
    assert _lock_is_free(database_url, SCHEMA_LOCK_KEY)
    with database.connection_context():  # the connection that made it, from the pool
        assert Tenant.select().count() == 0
        assert _lock_is_free(database_url, SCHEMA_LOCK_KEY)
    connect_database(database_url)  # opening an existing database takes and lets go of it too
    assert _lock_is_free(database_url, SCHEMA_LOCK_KEY)


def test_a_start_waits_while_another_process_makes_the_schema(database_url, restore_database):
    """CREATE TABLE IF NOT EXISTS is not safe against itself on PostgreSQL: a process does
    not make the schema beside another that holds the schema lock (here it gives up after
    lock_timeout, as the lock is not let go meanwhile), and makes it once that is done."""
    with other_connection(database_url) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK_KEY,))
        with pytest.raises(peewee.OperationalError, match="lock timeout"):
            connect_database(f"{database_url}?options=-c%20lock_timeout%3D1000")
        _close_all()
        cursor.execute("SELECT to_regclass('tenant') IS NULL")
        assert cursor.fetchone()[0], "the schema was made beside the process that holds the lock"
        cursor.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK_KEY,))
    connect_database(database_url)
    with database.connection_context():
        assert Tenant.select().count() == 0


def test_a_pooled_connection_the_server_ended_is_replaced_not_used_again(database_url, restore_database):
    """postgresql+pool:// is replaced as postgresql:// is (a restart or failover ends every
    pooled connection at once)."""
    connect_database(_pooled(database_url))
    with database.connection_context():
        Tenant.create(id="contoso", name="Contoso", created_at=START)
        end_connections(database_url)
        with contextlib.suppress(peewee.OperationalError, peewee.InterfaceError):
            Tenant.select().count()  # may fail: it met the loss
        assert Tenant.select().count() == 1  # on a new connection
        with transaction():
            Tenant.create(id="fabrikam", name="Fabrikam", created_at=START)
    assert database.is_closed()
    with database.connection_context():
        assert Tenant.select().count() == 2


@pytest.mark.parametrize("pooled", [False, True], ids=["plain", "pooled"])
def test_every_connection_bounds_its_waits(database_url, restore_database, pooled):
    """A server that is gone ends a connect, an idle connection and unacknowledged sends
    in seconds, not after TCP's minutes: the connection itself carries each bound."""
    connect_database(_pooled(database_url) if pooled else database_url)
    with database.connection_context():
        opened_with = database.connection().get_dsn_parameters()
    for bound in ("connect_timeout", "keepalives_idle", "keepalives_interval", "keepalives_count"):
        assert int(opened_with.get(bound, 0)) > 0, (bound, opened_with)
    assert opened_with.get("keepalives") == "1", opened_with
    assert int(opened_with.get("tcp_user_timeout", 0)) > 0, opened_with


# --- a connection lost inside a transaction ------------------------------------------------------


def _allow_connections(url: str, allow: bool) -> None:
    server, name = url.rsplit("/", 1)
    with other_connection(server + "/postgres") as connection, connection.cursor() as cursor:
        cursor.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS {str(allow).lower()}")


def test_a_transaction_that_lost_its_connection_keeps_none_of_its_writes(store):
    """Nothing is retried: what the transaction wrote before the loss is gone with it, and
    what it writes after fails, rather than landing on a new connection outside it."""
    with database.connection_context():
        with pytest.raises(peewee.OperationalError), transaction():
            Tenant.create(id="before-loss", name="written before", created_at=START)
            end_connections(store)
            Tenant.create(id="after-loss", name="written after", created_at=START)
    with database.connection_context():
        assert [t.id for t in Tenant.select()] == []


def test_the_rollback_of_a_transaction_that_lost_its_connection_opens_none(store):
    """The server has rolled it back already: the rollback lets the connection go. Opening
    a new one there would wait for a server that is gone (up to connect_timeout) and answer
    with that failure in place of the loss the transaction met."""
    with database.connection_context():
        try:
            with pytest.raises(peewee.OperationalError) as met, transaction():
                Tenant.create(id="before-loss", name="written before", created_at=START)
                _allow_connections(store, False)  # as a server that is gone: none can be opened
                end_connections(store)
                Tenant.create(id="after-loss", name="written after", created_at=START)
            assert "accepting connections" not in str(met.value), met.value
            assert database.is_closed()  # let go, no new one yet
        finally:
            _allow_connections(store, True)
        assert Tenant.select().count() == 0  # the next statement opens one
