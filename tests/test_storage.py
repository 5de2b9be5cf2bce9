"""The database wiring (models/__init__.py): which URLs name a store, what a connection is
opened with, and a store in memory for one-off runs."""

from __future__ import annotations

import multiprocessing
import threading

import peewee
import pytest

from models import (
    CONNECTION_BOUNDS,
    WriteLockBusy,
    connect_database,
    database,
    transaction,
    write_transaction_number,
)
from service import create_app, starting
from service.policy import REPO_POLICY_DIR
from tests.conftest import SECRET, Api
from tests.helpers import DIRECTORY_FILE, app_config

# Nothing listens on port 1: a connection is refused at once, no server needed.
UNREACHABLE_POSTGRES = "postgresql://support@127.0.0.1:1/support_access"


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "postgresql+pool"])
def test_a_postgresql_url_is_taken_and_a_server_that_cannot_be_reached_is_not_ready(
    tmp_path, monkeypatch, restore_database, scheme
):
    """A server URL has a host (SQLite's may not): it is not refused as a bad setting, the
    process is up but not ready until the server answers."""
    monkeypatch.setattr(starting, "RETRY_INTERVAL", 3600.0)
    url = UNREACHABLE_POSTGRES.replace("postgresql", scheme, 1)
    app = create_app(app_config(tmp_path, url, SECRET, POLICY_DIR=str(REPO_POLICY_DIR)))
    client = app.test_client()
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["error"]["code"] == "not_ready"


def test_a_postgresql_urls_own_connection_settings_win_over_the_defaults(restore_database):
    with pytest.raises(peewee.OperationalError):
        connect_database(f"{UNREACHABLE_POSTGRES}?connect_timeout=2&keepalives_idle=30")
    params = database.obj.connect_params
    assert params["connect_timeout"] in (2, "2") and params["keepalives_idle"] in (30, "30")
    assert params["keepalives_count"] == CONNECTION_BOUNDS["keepalives_count"]  # the rest still bounded


def test_a_store_in_memory_keeps_what_was_written_for_the_life_of_the_app(tmp_path):
    """`sqlite:///:memory:` (one-off runs): connections are closed after each request, which
    would lose a real in-memory database; a private temporary file stands in for it."""
    app = create_app(app_config(tmp_path, "sqlite:///:memory:", SECRET, POLICY_DIR=str(REPO_POLICY_DIR)))
    imported = app.test_cli_runner().invoke(args=["directory", "import", str(DIRECTORY_FILE)])
    assert imported.exit_code == 0, imported.output
    api = Api(app.test_client())
    created = api.post("/v1/support-requests", "bob", {"tenant_id": "fabrikam", "title": "in memory"})
    assert created.status_code == 201, created.get_json()
    listed = api.get("/v1/support-requests", "bob")
    assert listed.status_code == 200, listed.get_json()
    assert [t["title"] for t in listed.get_json()["items"]] == ["in memory"]


@pytest.mark.parametrize(("background", "pages"), [(False, 1000), (True, 50_000)])
def test_commits_checkpoint_the_log_often_unless_a_background_thread_does(
    tmp_path, restore_database, background, pages
):
    """Without the checkpointer thread, commits keep SQLite's write-ahead log small
    themselves; with it, they do so only past a large cap (service/checkpointer.py)."""
    connect_database(f"sqlite:///{tmp_path / 'store.db'}", background_checkpoints=background)
    with database.connection_context():
        assert database.execute_sql("PRAGMA wal_autocheckpoint").fetchone()[0] == pages


def test_a_sqlite_store_keeps_a_write_ahead_log(tmp_path, restore_database):
    """Readers (decisions' index syncs, `audit verify`) do not wait behind a writer."""
    connect_database(f"sqlite:///{tmp_path / 'store.db'}")
    with database.connection_context():
        assert database.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"


def _open(url: str, barrier) -> None:
    barrier.wait(timeout=30)
    connect_database(url, background_checkpoints=True)  # an exception ends the process with 1


def test_workers_starting_together_on_an_empty_sqlite_file_both_open_it(tmp_path):
    """An empty file (made by hand, or left by a start that failed) is a new database: it is
    switched to WAL on opening, which does not wait for another process doing the same."""
    processes = multiprocessing.get_context("fork")
    for start in range(10):
        path = tmp_path / f"empty-{start}.db"
        path.touch()
        barrier = processes.Barrier(2)
        workers = [processes.Process(target=_open, args=(f"sqlite:///{path}", barrier)) for _ in range(2)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)
        assert [worker.exitcode for worker in workers] == [0, 0], f"start {start}"


# --- write transactions --------------------------------------------------------------------


def _try_to_write_beside(url: str) -> list:
    """What another thread meets asking for the write lock without waiting: [] if it got it,
    [the exception] if not."""
    met = []

    def other_writer():
        try:
            with database.connection_context(), transaction(wait=False):
                pass
        except Exception as exc:  # noqa: BLE001 - reported to the test
            met.append(exc)

    thread = threading.Thread(target=other_writer)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), "the other writer waited although told not to"
    return met


@pytest.fixture
def new_store(tmp_path, restore_database) -> str:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    connect_database(url)
    return url


def test_opening_a_new_store_leaves_its_write_lock_free_for_other_threads(new_store):
    """The file lock taken while a new database's schema is made is let go after."""
    assert _try_to_write_beside(new_store) == []


def test_a_writer_that_will_not_wait_is_told_the_lock_is_busy(new_store):
    with database.connection_context(), transaction():
        met = _try_to_write_beside(new_store)
    assert len(met) == 1 and isinstance(met[0], WriteLockBusy), met
    assert _try_to_write_beside(new_store) == []  # let go with the transaction


def test_a_nested_transaction_is_part_of_the_outer_one(new_store):
    """It neither counts as a write transaction of its own (work done once per
    transaction) nor lets go of the write lock the outer one still needs."""
    with database.connection_context(), transaction():
        number = write_transaction_number()
        with transaction():
            assert write_transaction_number() == number
        met = _try_to_write_beside(new_store)
    assert len(met) == 1 and isinstance(met[0], WriteLockBusy), met


BUSY_EXIT = 3


def _write_without_waiting(url: str, opened, locked) -> None:
    """In another process: opens the store, then, once the test holds the writers' lock,
    exits BUSY_EXIT if told that lock is busy, 0 if it got it (any other failure, such as
    SQLite's own "database is locked", ends it with 1)."""
    connect_database(url, create=False)  # opening writes too, so before the test's lock
    opened.set()
    locked.wait(timeout=30)
    try:
        with database.connection_context(), transaction(wait=False):
            pass
    except WriteLockBusy:
        raise SystemExit(BUSY_EXIT) from None


def test_a_worker_that_names_the_file_through_a_link_meets_the_same_writers_lock(new_store, tmp_path):
    """Two workers whose URLs spell one file differently (here a symbolic link) take one
    writers' lock: the one that will not wait is told it is busy, instead of each taking a
    lock of its own and one then waiting on SQLite's."""
    link = tmp_path / "link.db"
    link.symlink_to(tmp_path / "store.db")
    processes = multiprocessing.get_context("fork")
    opened, locked = processes.Event(), processes.Event()
    other = processes.Process(target=_write_without_waiting, args=(f"sqlite:///{link}", opened, locked))
    other.start()
    assert opened.wait(timeout=60)
    with database.connection_context(), transaction():
        locked.set()
        other.join(timeout=60)
    assert other.exitcode == BUSY_EXIT
