"""The importer's WAL checkpoints (service/checkpointer.py): serving processes raise
SQLite's own checkpoint mark, so the log reaches the database file only through these."""

from __future__ import annotations

import logging
from pathlib import Path

import peewee
import pytest

from service import checkpointer
from service.checkpointer import Checkpointer
from tests.helpers import FakeMonotonic

ROWS = 2_000  # ~100 pages of log per write


@pytest.fixture
def db(tmp_path):
    # As a serving process opens it: WAL, and no checkpoint by commits within these writes.
    db = peewee.SqliteDatabase(tmp_path / "wal.db", pragmas={"journal_mode": "wal", "wal_autocheckpoint": 0})
    db.execute_sql("CREATE TABLE filler (text TEXT)")
    yield db
    db.close()


def write(db) -> None:
    with db.atomic():
        db.execute_sql("INSERT INTO filler VALUES " + ", ".join(["(?)"] * ROWS), ["x" * 200] * ROWS)


def sizes(db) -> tuple[int, int]:
    """(database file, log file) in bytes."""
    path = Path(db.database)
    return path.stat().st_size, Path(f"{path}-wal").stat().st_size


def write_checkpoint_write(db) -> tuple[tuple[int, int], tuple[int, int]]:
    """The sizes after a write, and after a checkpoint (if due) and another write."""
    write(db)
    before = sizes(db)
    Checkpointer(db).checkpoint_if_due()
    write(db)
    return before, sizes(db)


def test_a_due_checkpoint_copies_the_log_and_the_next_write_reuses_it(db, monkeypatch):
    monkeypatch.setattr(checkpointer, "INTERVAL_SECONDS", 0.0)
    (database_before, log_before), (database_after, log_after) = write_checkpoint_write(db)
    assert database_after > database_before  # the first write's pages are in the file
    assert log_after == log_before  # the second write started the log afresh


def test_no_checkpoint_before_the_interval_has_passed(db, monkeypatch):
    monkeypatch.setattr(checkpointer, "INTERVAL_SECONDS", 3600.0)
    (database_before, log_before), (database_after, log_after) = write_checkpoint_write(db)
    assert database_after == database_before
    assert log_after > log_before  # the log only grew


def test_a_failing_checkpoint_is_logged_and_does_not_stop_the_caller(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(checkpointer, "INTERVAL_SECONDS", 0.0)
    unreachable = peewee.SqliteDatabase(tmp_path / "no such directory" / "wal.db")

    with caplog.at_level(logging.WARNING, logger="support_access"):
        Checkpointer(unreachable).checkpoint_if_due()

    assert "WAL checkpoint failed" in caplog.text


def test_other_databases_are_left_to_checkpoint_themselves(monkeypatch, caplog):
    monkeypatch.setattr(checkpointer, "INTERVAL_SECONDS", 0.0)
    # Never connected: any statement would fail, and be logged, on this closed port.
    postgres = peewee.PostgresqlDatabase("support_access", host="127.0.0.1", port=1)

    with caplog.at_level(logging.WARNING, logger="support_access"):
        Checkpointer(postgres).checkpoint_if_due()

    assert "WAL checkpoint failed" not in caplog.text
    assert postgres.is_closed()


@pytest.fixture
def clock(monkeypatch) -> FakeMonotonic:
    fake = FakeMonotonic()
    monkeypatch.setattr(checkpointer, "time", fake)
    return fake


def test_the_first_checkpoint_waits_an_interval_from_the_start(db, clock):
    due = Checkpointer(db)
    write(db)
    before = sizes(db)
    due.checkpoint_if_due()  # no time has passed
    write(db)
    database_after, log_after = sizes(db)
    assert database_after == before[0] and log_after > before[1]


def test_after_a_checkpoint_the_next_waits_a_whole_interval(db, clock, monkeypatch):
    monkeypatch.setattr(checkpointer, "INTERVAL_SECONDS", 10.0)
    due = Checkpointer(db)
    clock.now += 10.0
    write(db)
    due.checkpoint_if_due()  # due: copies the log
    write(db)  # starts the log afresh
    database_before, log_before = sizes(db)
    clock.now += 5.0
    due.checkpoint_if_due()  # not due yet
    write(db)
    database_after, log_after = sizes(db)
    assert database_after == database_before and log_after > log_before
    clock.now += 5.0
    due.checkpoint_if_due()  # a whole interval since the last: due
    write(db)
    assert sizes(db)[0] > database_after
