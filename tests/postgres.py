"""The PostgreSQL pass of the test suite (make test-postgres, tests/postgres.sh).

With SUPPORT_ACCESS_TEST_POSTGRES set to a server's URL, each test gets a database of
its own on that server, dropped afterwards.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg2
from playhouse.db_url import parse

from models import server_database_name
from service.state_signal import POLICY_SUFFIX, SUFFIX

INSTANCE = Path(__file__).resolve().parent.parent / "instance"  # Flask's, for the `service` package


@contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """A new empty database on the server at `server_url`; yields its URL."""
    name = f"sa_test_{uuid.uuid4().hex[:12]}"
    url = server_url.rsplit("/", 1)[0] + "/" + name
    _run(server_url, f"CREATE DATABASE {name}")
    try:
        yield url
    finally:
        from models import database

        if database.obj is not None and not database.is_closed():
            database.close()
        drop_database(url)
        _remove_machine_files(url)


def _remove_machine_files(url: str) -> None:
    """A served app keeps its read journal and change signal for a server database in
    the instance folder (service/read_journal.py, service/state_signal.py)."""
    name = server_database_name(url)
    shutil.rmtree(INSTANCE / f"{name}.reads", ignore_errors=True)
    for suffix in (SUFFIX, POLICY_SUFFIX):
        (INSTANCE / f"{name}.{suffix}").unlink(missing_ok=True)


def drop_database(url: str) -> None:
    """Drop the database at `url`, ending its connections (also the store-down tests' way
    of taking the store away)."""
    server, name = url.rsplit("/", 1)
    _run(server + "/postgres", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def end_connections(url: str) -> None:
    """End every connection to the database at `url`, as a server restart or a failover
    does (the store-lost tests)."""
    server, name = url.rsplit("/", 1)
    _run(
        server + "/postgres",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        f" WHERE datname = '{name}' AND pid <> pg_backend_pid()",
    )


def _run(server_url: str, statement: str) -> None:
    parts = parse(server_url)
    parts["dbname"] = parts.pop("database")
    connection = psycopg2.connect(**parts)
    try:
        connection.autocommit = True  # CREATE/DROP DATABASE refuse to run in a transaction
        with connection.cursor() as cursor:
            cursor.execute(statement)
    finally:
        connection.close()
