"""Edge cases of the read journal (service/read_journal.py): races with stopping writers,
several journal directories on one database, partial rounds, failures on the way; and
the importer's own process (service/read_importer.py): when it stops, waits or goes on."""

from __future__ import annotations

import fcntl
import logging
import os
import random
import shutil
import signal
import time
from datetime import timedelta
from types import SimpleNamespace

import peewee
import pytest

from models import database, transaction
from service import audit, create_app, read_importer, read_journal
from tests.conftest import SECRET, START, read_check
from tests.test_read_journal import chain, flush, journal_dir, read_events, read_ids, write_records


def decide(api) -> str:
    answer = api.post("/v1/decisions", "diag-tool", read_check()).get_json()
    assert answer["allowed"] is True
    return answer["decision_id"]


def open_fds(directory) -> int:
    """Descriptors of this process open on files in `directory`. Only those: the test
    process's other descriptors come and go with other apps' background threads."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile (the listing's own descriptor, or a thread's)
            continue
        count += target.startswith(f"{directory}/")
    return count


def test_a_read_journalled_just_before_its_writer_stops_is_not_lost(app, api, approved_request, monkeypatch):
    monkeypatch.setattr(read_journal, "CHECK_INTERVAL", 3600.0)  # the writer does not import itself
    journal = app.extensions["read_journal"]
    first = decide(api)
    real_writer_gone = read_journal._writer_gone
    late = read_events(1)

    def writer_answers_once_more_then_stops(handle):
        # Between the importer's fstat and its lock check, the worker journals one more
        # allowed read (its answer is sent) and then stops: a restart, or rotation.
        if late:
            journal.append([late.pop()])
            journal.close()
        return real_writer_gone(handle)

    monkeypatch.setattr(read_journal, "_writer_gone", writer_answers_once_more_then_stops)
    flush(app)
    flush(app)
    assert read_ids(chain(app)) == [first, "d-0"]


def test_an_importer_of_another_journal_directory_does_not_reimport_this_ones_reads(
    app, api, approved_request, tmp_path
):
    """Another instance on the same database with its own journal directory (PostgreSQL:
    each host's instance folder; SQLite: another READ_JOURNAL_DIR)."""
    decision = decide(api)  # its writer is alive: the file stays, with its position row
    flush(app)
    keys = ("DATABASE_URL", "JWT_SECRET", "POLICY_DIR", "DECISION_LOG", "CLOCK")
    other = create_app(
        {"TESTING": True, "READ_JOURNAL_DIR": str(tmp_path / "other"), **{k: app.config[k] for k in keys}}
    )
    assert other.test_cli_runner().invoke(args=["audit", "verify"]).exit_code == 0
    flush(app)
    assert read_ids(chain(app)) == [decision]


def test_a_partial_round_imports_the_oldest_reads_first(app):
    """A round smaller than the backlog: a helping worker's (HELP_RECORDS), or any
    round while the importer is behind."""
    events = read_events(6)
    directory = journal_dir(app)
    write_records(directory, "100-2.jsonl", events[3:])  # a worker with a lower pid, later reads
    write_records(directory, "200-1.jsonl", events[:3])
    with app.app_context(), database.connection_context():
        with transaction():
            assert read_journal.import_round(directory, 3) == 3
    flush(app)
    assert read_ids(chain(app)) == [f"d-{n}" for n in range(6)]


def test_a_record_longer_than_a_rounds_read_is_imported_whole(app):
    """A batch of 1,000 allowed reads is one record of ~300 KB: a round of one record
    (a helping worker's are small) still takes all of it, not an empty prefix."""
    reads = [
        (f"d-{n}", "contoso", "diagnostics/signInLogs", {"decision_id": f"d-{n}", "pad": "x" * 200})
        for n in range(1000)
    ]
    big = audit.reads_record("batch-1", audit.time_forms(START), ("diag-tool", None), reads)
    directory = journal_dir(app)
    write_records(directory, "1-1.jsonl", [big, *read_events(1)])
    assert (
        directory / "1-1.jsonl"
    ).stat().st_size > 100 * read_journal.RECORD_BYTES_GUESS  # a round of 1 reads 1 KB
    with app.app_context(), database.connection_context():
        with transaction():
            assert read_journal.import_round(directory, 1) == 1
    assert read_ids(chain(app)) == [f"d-{n}" for n in range(1000)]
    flush(app)
    assert read_ids(chain(app))[-1] == "d-0" and len(read_ids(chain(app))) == 1001


def test_the_importer_waits_while_a_live_writer_finishes_a_record(app):
    """A file ending in part of a record whose writer is alive: the rest is on its way.
    The importer must not take it for records left over and go round again at once."""
    directory = journal_dir(app)
    path = write_records(directory, "1-1.jsonl", read_events(1), tail=b'["d-1","2026')
    writer = os.open(path, os.O_RDONLY)
    fcntl.flock(writer, fcntl.LOCK_SH)  # what a live writer holds
    try:
        with app.app_context(), database.connection_context():
            importer = read_journal.Importer(directory, database.obj)
            seen, intervals = {}, []
            for _ in range(3):
                seen, interval = importer.round(seen)
                intervals.append(interval)
        assert min(intervals) > 0, intervals
        assert read_ids(chain(app)) == ["d-0"]
    finally:
        os.close(writer)


def test_flush_imports_everything_after_an_unreadable_line(app):
    path = write_records(journal_dir(app), "1-1.jsonl", read_events(read_journal.ROUND_RECORDS + 1))
    path.write_bytes(b"{garbage\n" + path.read_bytes())
    assert flush(app) == read_journal.ROUND_RECORDS + 1  # what `audit verify` and the view rely on


def test_a_journal_file_that_cannot_be_set_up_leaks_no_descriptor(app, api, approved_request, monkeypatch):
    decide(api)
    app.extensions["read_journal"].close()  # the next request opens a new file
    before = open_fds(journal_dir(app))

    def rename_fails(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(read_journal.os, "rename", rename_fails)
    for _ in range(5):
        assert api.post("/v1/decisions", "diag-tool", read_check()).status_code == 503
    monkeypatch.undo()
    assert open_fds(journal_dir(app)) == before


def test_a_forked_writer_does_not_keep_the_parents_journal_file_open(app, api, approved_request, monkeypatch):
    monkeypatch.setattr(read_journal, "CHECK_INTERVAL", 3600.0)  # no database in the child
    journal = app.extensions["read_journal"]
    decide(api)
    parents = os.fstat(journal._fd)
    pid = os.fork()
    if pid == 0:  # the child journals a read of its own, in a file of its own
        try:
            journal.append(read_events(1))
            leaked = any(
                os.fstat(int(fd)).st_ino == parents.st_ino
                for fd in os.listdir("/proc/self/fd")
                if os.path.exists(f"/proc/self/fd/{fd}")
            )
            os._exit(1 if leaked else 0)
        finally:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_removed_journal_directory_is_made_again_and_reads_still_recorded(
    app, api, approved_request, monkeypatch
):
    monkeypatch.setattr(read_journal, "CHECK_INTERVAL", 0.0)
    decide(api)  # the worker has its journal file open
    shutil.rmtree(journal_dir(app))  # e.g. cleaned away by an operator
    answer = api.post("/v1/decisions", "diag-tool", read_check())
    assert answer.status_code == 200 and answer.get_json()["allowed"] is True
    assert read_ids(chain(app)) == []  # journalled, not yet imported
    flush(app)
    assert read_ids(chain(app))[-1] == answer.get_json()["decision_id"]


def test_a_journal_that_cannot_be_read_does_not_stop_a_revocation(app, api, approved_request, monkeypatch):
    """A state change imports waiting reads first, but only as far as it can."""
    decision = decide(api)

    def unreadable(path, start, budget):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(read_journal, "_take", unreadable)
    answer = api.post(f"/v1/access-requests/{approved_request['id']}/revoke", "alice")
    assert answer.status_code == 200 and answer.get_json()["status"] == "revoked"
    assert api.post("/v1/decisions", "diag-tool", read_check()).get_json()["allowed"] is False
    monkeypatch.undo()
    flush(app)
    assert decision in read_ids(chain(app))  # the read stayed in the journal, imported later


@pytest.mark.parametrize("seed", range(30))
def test_rounds_of_any_size_import_every_record_once_oldest_first(app, seed):
    """Random journals (1-4 files, equal times across and within files) imported in
    rounds of 1-5 records: every record lands once, in the order of its time."""
    rng = random.Random(seed)
    directory = journal_dir(app)
    time_of: dict[str, int] = {}
    for writer in range(rng.randint(1, 4)):
        at, records = 0, []
        for _ in range(rng.randint(0, 12)):
            at += rng.randint(0, 3)
            records.append(read_record(f"r-{len(time_of)}", at))
            time_of[records[-1][0]] = at
        write_records(directory, f"{100 + writer}-{writer}.jsonl", records)
    with app.app_context(), database.connection_context():
        left = len(time_of)
        for _ in range(len(time_of) + 5):  # more than enough rounds of one record or more
            with transaction():
                done = read_journal._import(directory, rng.randint(1, 5))
            left -= done.consumed
            assert done.more == (left > 0)  # what tells the importer to go on at once
            if done.consumed == 0:
                break
        else:
            pytest.fail("the rounds did not end")
    imported = read_ids(chain(app))
    assert sorted(imported) == sorted(time_of)  # each once
    times = [time_of[decision_id] for decision_id in imported]
    assert times == sorted(times)  # oldest first


def read_record(decision_id: str, seconds: int) -> list:
    details = {"decision_id": decision_id}
    at = START + timedelta(seconds=seconds)
    event = audit.build(
        "diagnostics.read",
        "diag-tool",
        "contoso",
        ["contoso"],
        "diagnostics/x",
        details,
        at,
        event_id=decision_id,
    )
    return audit.as_record(event)


def test_the_importer_removes_new_files_a_stopped_writer_left(app):
    """A writer that stopped between creating its file and renaming it leaves an empty
    `.new` file; the importer removes it once it is old, and leaves a fresh one (a writer
    may be about to rename it) and anything not empty alone."""
    directory = journal_dir(app)
    old = (directory / "100-1.new", b"")
    fresh = (directory / "100-2.new", b"")
    not_empty = (directory / "100-3.new", b"[]\n")
    for path, content in (old, fresh, not_empty):
        path.write_bytes(content)
    long_ago = time.time() - read_journal.ABANDONED_AFTER - 5
    for path in (old[0], not_empty[0]):
        os.utime(path, (long_ago, long_ago))
    with app.app_context(), database.connection_context():
        read_journal.Importer(directory, database.obj).round({})
    assert not old[0].exists()
    assert fresh[0].exists() and not_empty[0].exists()


def restart_writer(app) -> None:
    """The worker stops (its file's lock goes) and starts again with a new file."""
    app.extensions["read_journal"].close()


def test_a_journal_directory_not_made_yet_reads_as_empty(app, tmp_path):
    """Readers import before they read (the audit view, `audit verify`), also before any
    allowed read has made the journal directory."""
    assert flush(app, tmp_path / "none-yet.reads") == 0
    assert not (tmp_path / "none-yet.reads").exists()


def test_a_journal_that_cannot_be_read_makes_readers_unavailable_not_a_500(
    app, api, approved_request, monkeypatch
):
    """The log cannot be read whole: the audit view is a 503 and `audit verify` exits 2
    (the store is unavailable), not a 500 page, and not "tampered" (exit 1)."""
    decide(api)

    def cannot_list(directory):
        raise PermissionError(13, "Permission denied", str(directory))

    monkeypatch.setattr(read_journal, "_sizes", cannot_list)
    answer = api.get("/v1/audit-events?tenant_id=contoso", "alice")
    assert answer.status_code == 503, answer.get_json()
    assert answer.get_json()["error"] == {
        "code": "store_unavailable",
        "message": "the read journal cannot be read; see the service log",
    }
    result = app.test_cli_runner().invoke(args=["audit", "verify"])
    assert result.exit_code == 2, result.output
    assert "the read journal cannot be read" in result.output


def test_a_file_cut_short_after_its_import_is_removed(app, api, approved_request):
    """A position past the file's end (the file cut short after its reads were imported:
    a restore, a stray truncate) finishes it; the read of a negative length raised in
    every round, and nothing else in the directory was imported again."""
    first = decide(api)
    flush(app)
    restart_writer(app)
    [path] = journal_dir(app).glob("*.jsonl")
    os.truncate(path, path.stat().st_size // 2)
    assert flush(app) == 0
    assert not path.exists()
    second = decide(api)
    flush(app)
    assert read_ids(chain(app)) == [first, second]


def test_a_reader_after_the_writers_stopped_leaves_the_journal_empty(app, api, approved_request):
    """What README "Known limits" tells an operator to do before moving or renaming an
    instance: once its writers have stopped, a reader's import removes their files."""
    decide(api)
    restart_writer(app)
    assert app.test_cli_runner().invoke(args=["audit", "verify"]).exit_code == 0
    assert not list(journal_dir(app).glob("*.jsonl"))


class Stopped(Exception):
    """Raised by a stand-in where the importer should not have got to."""


def importer_setup(monkeypatch, database_url: str, journal, server_pid: int) -> dict:
    """`python -m service.read_importer`'s environment, as service/serve.py sets it; the
    signal handlers it installs are kept in the returned dict (pytest keeps its own)."""
    monkeypatch.setenv("SUPPORT_ACCESS_DATABASE_URL", database_url)
    monkeypatch.setenv("SUPPORT_ACCESS_JWT_SECRET", SECRET)
    monkeypatch.setenv("SUPPORT_ACCESS_READ_JOURNAL_DIR", str(journal))
    monkeypatch.setenv("SUPPORT_ACCESS_SERVER_PID", str(server_pid))
    handlers = {}
    monkeypatch.setattr(
        read_importer.signal, "signal", lambda number, handler: handlers.setdefault(number, handler)
    )
    return handlers


def test_an_importer_whose_server_has_already_stopped_ends_without_opening_the_store(monkeypatch, tmp_path):
    """The server ended before the importer got going: its parent is no longer the server
    named in SUPPORT_ACCESS_SERVER_PID (it is init, or whoever adopted it)."""

    def connect(url: str, background_checkpoints: bool):
        raise Stopped

    monkeypatch.setattr(read_importer, "connect_database", connect)
    importer_setup(monkeypatch, f"sqlite:///{tmp_path / 'store.db'}", tmp_path / "reads", os.getpid())
    read_importer.main()  # returns: no Stopped
    assert not (tmp_path / "reads").exists()


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_the_importer_stops_on_a_signal_while_it_waits_for_the_store(monkeypatch, tmp_path, stop):
    attempts = []

    def connect(url: str, background_checkpoints: bool):
        attempts.append(url)
        if len(attempts) > 1:
            raise Stopped  # the signal did not stop it
        raise peewee.OperationalError("unable to open database file")

    def sleep(seconds):  # the signal arrives while the importer waits to try again
        handlers[stop](stop, None)

    monkeypatch.setattr(read_importer, "connect_database", connect)
    monkeypatch.setattr(read_importer, "time", SimpleNamespace(sleep=sleep))
    handlers = importer_setup(
        monkeypatch, f"sqlite:///{tmp_path / 'store.db'}", tmp_path / "reads", os.getppid()
    )
    read_importer.main()
    assert len(attempts) == 1
    assert handlers[signal.SIGHUP] is signal.SIG_IGN  # a hangup to the server's group is the server's


def test_the_importer_ends_on_a_database_error_that_is_no_store_failure(monkeypatch, tmp_path):
    """Only a store that cannot be opened is waited for; anything else is a bug to show."""
    attempts = []

    def connect(url: str, background_checkpoints: bool):
        attempts.append(url)
        if len(attempts) > 1:
            raise Stopped  # tried again
        raise peewee.ProgrammingError("no such table: audit_event")

    monkeypatch.setattr(read_importer, "connect_database", connect)
    monkeypatch.setattr(read_importer, "time", SimpleNamespace(sleep=lambda seconds: None))
    importer_setup(monkeypatch, f"sqlite:///{tmp_path / 'store.db'}", tmp_path / "reads", os.getppid())
    with pytest.raises(peewee.ProgrammingError):
        read_importer.main()
    assert len(attempts) == 1


def run_importer_one_round(monkeypatch, app, journal) -> list:
    """Run the importer's main() on the app's database until its first round is done,
    then stop it as SIGTERM does. Returns the rounds' results."""
    handlers = importer_setup(monkeypatch, app.config["DATABASE_URL"], journal, os.getppid())
    rounds = []

    class StopsAfterOneRound(read_journal.Importer):
        def round(self, seen):
            rounds.append(super().round(seen))
            handlers[signal.SIGTERM](signal.SIGTERM, None)
            return rounds[-1]

    monkeypatch.setattr(read_importer, "Importer", StopsAfterOneRound)
    read_importer.main()
    return rounds


def test_the_importer_imports_the_journal_while_its_server_runs(monkeypatch, app):
    directory = journal_dir(app)
    write_records(directory, "100-1.jsonl", read_events(3))  # a writer that has stopped
    rounds = run_importer_one_round(monkeypatch, app, directory)
    assert len(rounds) == 1
    assert read_ids(chain(app)) == ["d-0", "d-1", "d-2"]


def test_the_importer_makes_a_journal_directory_not_made_yet(monkeypatch, app, tmp_path):
    """No allowed read yet: no worker has made the directory the importer holds its lease in."""
    directory = tmp_path / "not-yet" / "reads"
    assert len(run_importer_one_round(monkeypatch, app, directory)) == 1
    assert directory.is_dir()


def test_a_legacy_journal_that_cannot_be_imported_does_not_stop_the_importer(monkeypatch, app, caplog):
    def locked(database_url, instance_path):
        raise peewee.OperationalError("database is locked")

    monkeypatch.setattr(read_importer, "import_legacy_journal", locked)
    directory = journal_dir(app)
    write_records(directory, "100-1.jsonl", read_events(1))
    with caplog.at_level(logging.WARNING):
        rounds = run_importer_one_round(monkeypatch, app, directory)
    assert len(rounds) == 1 and read_ids(chain(app)) == ["d-0"]
    assert "could not be imported: database is locked" in caplog.text
