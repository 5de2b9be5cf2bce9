"""Allowed reads are committed to the read journal before their answer leaves, and
imported into the hash-chained audit log in batches (service/read_journal.py)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
from datetime import timedelta
from pathlib import Path

import orjson
import peewee
import psycopg2.extras
import pytest

from models import AuditEvent, AuditJournalPosition, database, is_sqlite
from service import audit, read_journal
from service.clock import isoformat
from tests.conftest import START, read_check


def journal_dir(app) -> Path:
    return app.extensions["read_journal"].directory


def journalled_decision_ids(directory: Path) -> list[str]:
    """What the journal files hold, read as plain files (not through the app)."""
    ids = []
    for path in sorted(directory.glob("*.jsonl")):
        for line in path.read_bytes().splitlines():
            details = json.loads(json.loads(line)[10])
            reads = [read["details"] for read in details["reads"]] if "reads" in details else [details]
            ids += [read["decision_id"] for read in reads]
    return ids


def chain(app) -> list[AuditEvent]:
    with app.app_context(), database.connection_context():
        return list(AuditEvent.select().order_by(AuditEvent.seq))


def flush(app, directory: Path | None = None) -> int:
    """Import what the app's journal (or `directory`) holds, as a reader does first."""
    with app.app_context(), database.connection_context():
        return read_journal.flush(directory or journal_dir(app))


def read_ids(events) -> list[str]:
    """The decision ids of the reads the events hold, in order (an event may hold several)."""
    ids = []
    for event in events:
        if audit.holds_reads(event.activity, event.tenant_id):
            ids += [read["id"] for read in json.loads(event.details)["reads"]]
        elif event.activity == "diagnostics.read":
            ids.append(json.loads(event.details)["decision_id"])
    return ids


def view_ids(api, who="alice", tenant="contoso") -> list[str]:
    items = api.get(f"/v1/audit-events?tenant_id={tenant}&activity=diagnostics.read", who).get_json()["items"]
    return [item["details"]["decision_id"] for item in items]


def test_an_allowed_answer_leaves_only_after_its_read_is_in_the_journal(
    app, api, approved_request, monkeypatch
):
    real_write = os.write

    def slow_write(fd, data):
        time.sleep(0.2)  # were the answer not waiting for the write, it would leave first
        return real_write(fd, data)

    monkeypatch.setattr(read_journal.os, "write", slow_write)
    answer = api.post("/v1/decisions", "diag-tool", read_check()).get_json()
    assert answer["allowed"] is True
    assert journalled_decision_ids(journal_dir(app)) == [answer["decision_id"]]
    assert read_ids(chain(app)) == []  # not imported yet: nothing but the journal holds it


def test_a_crash_after_the_answer_loses_no_read(app, api, approved_request, tmp_path, clock, runner):
    answers = [api.post("/v1/decisions", "diag-tool", read_check()).get_json() for _ in range(3)]
    assert all(answer["allowed"] for answer in answers)
    # The process dies before any import. A new process over the same files:
    from service import create_app

    keys = ("DATABASE_URL", "JWT_SECRET", "POLICY_DIR", "DECISION_LOG", "CLOCK")
    restarted = create_app({"TESTING": True, **{key: app.config[key] for key in keys}})
    restarted_api = type(api)(restarted.test_client())
    assert view_ids(restarted_api) == [answer["decision_id"] for answer in answers]
    result = restarted.test_cli_runner().invoke(args=["audit", "verify"])
    assert result.exit_code == 0, result.output


def test_the_importer_commits_many_reads_in_one_transaction(app, api, approved_request, monkeypatch):
    checks = {"checks": [read_check()] * 40}
    results = api.post("/v1/decisions/batch", "diag-tool", checks).get_json()["results"]
    results += [api.post("/v1/decisions", "diag-tool", read_check()).get_json() for _ in range(10)]
    assert all(result["allowed"] for result in results)
    calls = []
    real_append = audit.append_records
    monkeypatch.setattr(
        audit, "append_records", lambda records: (calls.append(len(records)), real_append(records))[1]
    )
    assert flush(app) == 11  # records: the batch's forty reads are one
    assert calls == [11]  # one transaction for all fifty reads
    assert read_ids(chain(app)) == [result["decision_id"] for result in results]  # in decision order
    assert flush(app) == 0 and read_ids(chain(app)) == [result["decision_id"] for result in results]


def test_imported_reads_keep_their_decision_time_and_chain(app, api, approved_request, clock, runner):
    clock.advance(minutes=5)
    answer = api.post("/v1/decisions", "diag-tool", read_check()).get_json()
    [item] = api.get("/v1/audit-events?tenant_id=contoso&activity=diagnostics.read", "alice").get_json()[
        "items"
    ]
    assert item["id"] == answer["decision_id"]
    assert item["time"] == isoformat(START + timedelta(minutes=5))
    assert item["actor"] == "diag-tool" and item["target"] == "diagnostics/signInLogs"
    assert runner.invoke(args=["audit", "verify"]).exit_code == 0


def test_reads_come_before_the_state_change_that_follows_them(app, api, approved_request):
    answer = api.post("/v1/decisions", "diag-tool", read_check()).get_json()
    assert api.post(f"/v1/access-requests/{approved_request['id']}/revoke", "alice").status_code == 200
    activities = [(e.activity, e.id) for e in chain(app)]
    assert activities.index(("diagnostics.read", answer["decision_id"])) < [a for a, _ in activities].index(
        "access_request.revoked"
    )


def test_a_change_of_several_events_imports_the_journal_once(app, api, approved_request, monkeypatch):
    """Closing a ticket records its close and the end of its access request in one
    transaction: the reads decided before it are imported once, ahead of both."""
    answer = api.post("/v1/decisions", "diag-tool", read_check()).get_json()
    imports = []
    real_import_within = read_journal.import_within
    monkeypatch.setattr(read_journal, "import_within", lambda d: (imports.append(d), real_import_within(d)))
    ticket_id = approved_request["support_request_id"]
    assert api.post(f"/v1/support-requests/{ticket_id}/close", "bob").status_code == 200
    assert len(imports) == 1
    events = [(e.activity, e.id) for e in chain(app)]
    after = [activity for activity, _ in events[events.index(("diagnostics.read", answer["decision_id"])) :]]
    assert (
        "support_request.closed" in after and len([a for a in after if a.startswith("access_request.")]) >= 1
    )
    assert (
        api.post("/v1/support-requests", "bob", {"tenant_id": "fabrikam", "title": "next"}).status_code == 201
    )
    assert len(imports) == 2  # the next transaction imports again


def test_a_journal_that_cannot_be_written_is_never_an_allow(app, api, approved_request, monkeypatch):
    def disk_full(fd, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(read_journal.os, "write", disk_full)
    for answer in (
        api.post("/v1/decisions", "diag-tool", read_check()),
        api.post("/v1/decisions/batch", "diag-tool", {"checks": [read_check()] * 3}),
    ):
        assert answer.status_code == 503
        assert answer.get_json()["error"]["code"] == "store_unavailable"
    monkeypatch.undo()
    answer = api.post("/v1/decisions", "diag-tool", read_check()).get_json()
    assert answer["allowed"] is True
    assert view_ids(api) == [answer["decision_id"]]


def test_a_journal_write_that_stores_part_of_the_record_is_never_an_allow(
    app, api, approved_request, monkeypatch
):
    """write() may store less than it was given (a full disk): the read is not in the
    journal whole, so the allow must not leave."""
    real_write = os.write
    monkeypatch.setattr(read_journal.os, "write", lambda fd, data: real_write(fd, data[: len(data) // 2]))

    answer = api.post("/v1/decisions", "diag-tool", read_check())

    assert answer.status_code == 503
    assert answer.get_json()["error"]["code"] == "store_unavailable"


def test_an_audit_store_that_cannot_be_reached_is_never_an_allow(app, api, approved_request, monkeypatch):
    """The journal checks the store every few milliseconds (here: on every write)."""
    monkeypatch.setattr(read_journal, "CHECK_INTERVAL", 0.0)

    def store_down(directory):
        raise peewee.OperationalError("disk I/O error")

    monkeypatch.setattr(read_journal, "backlog", store_down)
    for answer in (
        api.post("/v1/decisions", "diag-tool", read_check()),
        api.post("/v1/decisions/batch", "diag-tool", {"checks": [read_check()] * 3}),
    ):
        assert answer.status_code == 503
    assert journalled_decision_ids(journal_dir(app)) == []


def from_another_thread(app, method: str, url: str, who: str, body=None, status: int = 200) -> None:
    """A call through the API on another thread, as another client's while this one's
    call waits; returns once it has been answered (`status`)."""
    from tests.conftest import Api

    answers = []
    thread = threading.Thread(
        target=lambda: answers.append(Api(app.test_client()).call(method, url, who, body))
    )
    thread.start()
    thread.join(30)
    assert answers and answers[0].status_code == status, answers


def revoke_from_another_thread(app, request_id: str) -> None:
    from_another_thread(app, "POST", f"/v1/access-requests/{request_id}/revoke", "alice")


def test_a_journal_check_that_hangs_never_sends_an_allow_decided_before_it(
    app, api, approved_request, monkeypatch
):
    """The journal's store check can hang (a stalled connection). It runs before the
    decision is made, so a revocation answered while it hung is in force in the answer."""
    monkeypatch.setattr(read_journal, "CHECK_INTERVAL", 0.0)
    checked = read_journal.backlog
    hung = []

    def hangs_while_access_is_removed(directory):
        if not hung:
            hung.append(True)
            revoke_from_another_thread(app, approved_request["id"])
        return checked(directory)

    monkeypatch.setattr(read_journal, "backlog", hangs_while_access_is_removed)
    answer = api.post("/v1/decisions", "diag-tool", read_check())
    assert hung and answer.status_code == 200
    assert answer.get_json()["allowed"] is False


def test_a_decision_does_not_wait_for_another_threads_journal_check(app, api, approved_request, monkeypatch):
    """One thread checks the journal's store; a hung check must not hold the others'
    decisions, denials included (they decide from the index, and record to the file)."""
    monkeypatch.setattr(read_journal, "CHECK_INTERVAL", 0.0)
    checked, entered, release, still_hung = read_journal.backlog, threading.Event(), threading.Event(), []

    def hangs_once(directory):
        if not entered.is_set():
            entered.set()
            release.wait(10)
        return checked(directory)

    monkeypatch.setattr(read_journal, "backlog", hangs_once)
    from tests.conftest import Api

    first = threading.Thread(
        target=lambda: Api(app.test_client()).post("/v1/decisions", "diag-tool", read_check())
    )
    first.start()
    assert entered.wait(10)
    try:
        allowed = api.post("/v1/decisions", "diag-tool", read_check())
        denied = api.post("/v1/decisions", "diag-tool", read_check(tenant_id="fabrikam"))
        still_hung.append(not release.is_set() and first.is_alive())
    finally:
        release.set()
        first.join(10)
    assert still_hung == [True]
    assert allowed.status_code == 200 and allowed.get_json()["allowed"] is True
    assert denied.status_code == 200 and denied.get_json()["allowed"] is False


def test_a_journal_that_cannot_be_listed_is_never_an_allow_and_still_denies(
    app, api, approved_request, monkeypatch
):
    monkeypatch.setattr(read_journal, "CHECK_INTERVAL", 0.0)

    def unreadable(directory):
        raise PermissionError(13, "Permission denied", str(directory))

    monkeypatch.setattr(read_journal, "backlog", unreadable)
    allowed = api.post("/v1/decisions", "diag-tool", read_check())
    assert allowed.status_code == 503 and allowed.get_json()["error"]["code"] == "store_unavailable"
    denied = api.post("/v1/decisions", "diag-tool", read_check(tenant_id="fabrikam"))
    assert denied.status_code == 200 and denied.get_json()["allowed"] is False
    monkeypatch.undo()
    time.sleep(read_journal.CHECK_INTERVAL)  # until the next check finds the journal again
    assert api.post("/v1/decisions", "diag-tool", read_check()).get_json()["allowed"] is True


def test_writers_import_themselves_when_the_backlog_grows(app, api, approved_request, monkeypatch):
    """No background importer runs in tests: past BACKLOG_BYTES, writers import."""
    monkeypatch.setattr(read_journal, "CHECK_INTERVAL", 0.0)
    monkeypatch.setattr(read_journal, "BACKLOG_BYTES", 2_000)
    for _ in range(5):
        assert all(
            r["allowed"]
            for r in api.post("/v1/decisions/batch", "diag-tool", {"checks": [read_check()] * 5}).get_json()[
                "results"
            ]
        )
    with app.app_context(), database.connection_context():
        assert 0 < read_journal.backlog(journal_dir(app)) <= 2_000 + 5 * 1_000
        assert len(read_ids(AuditEvent.select())) >= 10


# --- files left by writers that stopped ----------------------------------------------


def write_records(directory: Path, name: str, records: list[list], tail: bytes = b"") -> Path:
    path = directory / name
    path.write_bytes(b"".join(orjson.dumps(record) + b"\n" for record in records) + tail)
    return path


def read_events(count: int) -> list[list]:
    """Read events as journal records (audit.RECORD_FIELDS order)."""
    return [
        audit.as_record(
            audit.build(
                "diagnostics.read",
                "diag-tool",
                "contoso",
                ["contoso"],
                "diagnostics/signInLogs",
                {"decision_id": f"d-{n}"},
                START + timedelta(seconds=n),
                event_id=f"d-{n}",
            )
        )
        for n in range(count)
    ]


def test_an_unfinished_record_of_a_stopped_writer_is_dropped(app, caplog):
    directory = journal_dir(app)
    path = write_records(directory, "1-1.jsonl", read_events(2), tail=b'["d-2","2026')
    with caplog.at_level(logging.ERROR, logger="support_access"):
        assert flush(app) == 2
    assert "unfinished record" in caplog.text
    assert read_ids(chain(app)) == ["d-0", "d-1"]
    assert not path.exists()  # fully imported, no writer: removed
    assert flush(app) == 0
    with app.app_context(), database.connection_context():
        assert AuditJournalPosition.select().count() == 0  # its position went with it


def test_a_record_still_being_written_waits_for_its_end(app):
    directory = journal_dir(app)
    events = read_events(3)
    last = orjson.dumps(events[2]) + b"\n"
    path = write_records(directory, "1-2.jsonl", events[:2], tail=last[:10])
    with path.open("rb") as writer:
        fcntl.flock(writer.fileno(), fcntl.LOCK_SH)  # a live writer
        assert flush(app) == 2
        with path.open("ab") as more:
            more.write(last[10:])
        assert flush(app) == 1
    assert read_ids(chain(app)) == ["d-0", "d-1", "d-2"]


def test_an_unreadable_record_is_skipped_and_logged(app, caplog):
    directory = journal_dir(app)
    events = read_events(2)
    path = directory / "1-3.jsonl"
    path.write_bytes(orjson.dumps(events[0]) + b"\n{garbage\n" + orjson.dumps(events[1]) + b"\n")
    with caplog.at_level(logging.ERROR, logger="support_access"):
        assert flush(app) == 2
    assert "unreadable record" in caplog.text
    assert read_ids(chain(app)) == ["d-0", "d-1"]


def test_files_of_several_writers_are_imported_in_decision_order(app):
    directory = journal_dir(app)
    events = read_events(6)
    write_records(directory, "1-4.jsonl", events[0::2])
    write_records(directory, "2-5.jsonl", events[1::2])
    assert flush(app) == 6
    assert read_ids(chain(app)) == [f"d-{n}" for n in range(6)]


def test_an_import_larger_than_one_insert_page_keeps_every_row(app, api, runner, monkeypatch):
    """On PostgreSQL an import's rows go in as multi-row INSERTs of INSERT_PAGE rows: its
    events, their visibility rows and their read index rows each span several here."""
    monkeypatch.setattr(audit, "INSERT_PAGE", 3)
    statements = []  # the table of each statement sent
    real_execute_values = psycopg2.extras.execute_values

    class CountingCursor:
        def __init__(self, cursor, table: str):
            self.cursor, self.table = cursor, table

        def execute(self, sql, args=None):
            statements.append(self.table)
            return self.cursor.execute(sql, args)

        def __getattr__(self, name):
            return getattr(self.cursor, name)

    def counted(cursor, sql, rows, page_size):
        real_execute_values(CountingCursor(cursor, sql.split()[2]), sql, rows, page_size=page_size)

    monkeypatch.setattr(psycopg2.extras, "execute_values", counted)
    own = read_events(7)  # seen by contoso alone: found by its read bucket
    at = audit.time_forms(START)
    several = [  # one row for reads in two tenants: a read index row for each
        audit.reads_record(
            f"b-{n}",
            at,
            ("diag-tool", "provider"),
            [
                (f"b-{n}-c", "contoso", "diagnostics/signInLogs", {"decision_id": f"b-{n}-c"}),
                (f"b-{n}-f", "fabrikam", "diagnostics/signInLogs", {"decision_id": f"b-{n}-f"}),
            ],
        )
        for n in range(4)
    ]
    changes = [  # seen by two tenants: a visibility row for each
        audit.as_record(
            audit.build("directory.changed", "ops", "contoso", ["contoso", "provider"], None, {"n": n}, START)
        )
        for n in range(4)
    ]
    write_records(journal_dir(app), "1-6.jsonl", own + several + changes)
    assert flush(app) == 15
    assert sorted(view_ids(api)) == sorted([f"d-{n}" for n in range(7)] + [f"b-{n}-c" for n in range(4)])
    assert sorted(view_ids(api, "bob", "fabrikam")) == sorted(f"b-{n}-f" for n in range(4))
    contoso_changes = api.get("/v1/audit-events?tenant_id=contoso&activity=directory.changed", "alice")
    numbers = [item["details"].get("n") for item in contoso_changes.get_json()["items"]]
    assert sorted(n for n in numbers if n is not None) == [0, 1, 2, 3]
    assert runner.invoke(args=["audit", "verify"]).exit_code == 0
    if not is_sqlite(database.obj):  # 15 events, 8 visibility and 8 read index rows, by 3
        assert sorted(statements) == sorted(
            ["auditevent"] * 5 + ["auditvisibility"] * 3 + ["auditreadindex"] * 3
        )


@pytest.mark.parametrize("url", ["sqlite:////srv/data/sa.db", "postgresql://u@db/sa"])
def test_the_journal_lives_beside_its_database(url, tmp_path):
    directory = read_journal.directory_for(url, str(tmp_path))
    assert directory == (
        Path("/srv/data/sa.db.reads") if url.startswith("sqlite") else tmp_path / "db-default-sa.reads"
    )


@pytest.mark.parametrize("spelling", ["test.db?timeout=10", "alias.db"])
def test_workers_spelling_one_sqlite_file_differently_share_its_changes_and_journal(
    app, api, approved_request, tmp_path, spelling
):
    """A query string in one worker's URL, or a symbolic link to the file: that worker
    journals its reads where the importer reads (they reach the audit log), and hears the
    other's revocation before its next decision."""
    from service import create_app
    from tests.conftest import Api

    if not is_sqlite(database.obj):
        pytest.skip("SQLite only: a server database's files are named after its name")
    (tmp_path / "alias.db").symlink_to(tmp_path / "test.db")
    keys = ("JWT_SECRET", "POLICY_DIR", "DECISION_LOG", "CLOCK")
    config = {"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path / spelling}"}
    other = Api(create_app({**config, **{key: app.config[key] for key in keys}}).test_client())
    allowed = other.post("/v1/decisions", "diag-tool", read_check()).get_json()
    assert allowed["allowed"] is True

    reads = api.get("/v1/audit-events?tenant_id=contoso&activity=diagnostics.read", "alice").get_json()
    assert [event["details"]["decision_id"] for event in reads["items"]] == [allowed["decision_id"]]
    assert api.post(f"/v1/access-requests/{approved_request['id']}/revoke", "alice").status_code == 200
    assert other.post("/v1/decisions", "diag-tool", read_check()).get_json()["allowed"] is False


def test_reads_journalled_under_an_older_name_of_the_file_are_imported(app, api, approved_request, tmp_path):
    """Before af644fd a worker whose URL had a query string journalled beside the file
    under that spelling; the importer imports what is left there when it starts."""
    from service import create_app
    from tests.conftest import Api

    if not is_sqlite(database.obj):
        pytest.skip("SQLite only: a server database's journal was always named after its name")
    url = f"sqlite:///{tmp_path / 'test.db'}?timeout=10"
    legacy = Path(f"{tmp_path / 'test.db'}?timeout=10.reads")
    keys = ("JWT_SECRET", "POLICY_DIR", "DECISION_LOG", "CLOCK")
    config = {"TESTING": True, "DATABASE_URL": url, "READ_JOURNAL_DIR": str(legacy)}  # as it was named
    old_worker = Api(create_app({**config, **{key: app.config[key] for key in keys}}).test_client())
    allowed = old_worker.post("/v1/decisions", "diag-tool", read_check()).get_json()
    assert allowed["allowed"] is True

    with app.app_context(), database.connection_context():
        assert read_journal.import_legacy_journal(url, app.instance_path) == 1
        assert read_journal.import_legacy_journal(url, app.instance_path) == 0  # once
    reads = api.get("/v1/audit-events?tenant_id=contoso&activity=diagnostics.read", "alice").get_json()
    assert [event["details"]["decision_id"] for event in reads["items"]] == [allowed["decision_id"]]


def test_databases_on_one_server_have_journals_of_their_own(tmp_path):
    first = read_journal.directory_for("postgresql://u@db:5433/first", str(tmp_path))
    second = read_journal.directory_for("postgresql://u@db:5433/second", str(tmp_path))
    assert first != second
    assert first.parent == second.parent == tmp_path


def test_the_importer_imports_in_the_background_and_flushes_when_stopped(app, api, approved_request):
    stop = threading.Event()
    importer = read_journal.Importer(journal_dir(app), database.obj)
    worker = threading.Thread(target=importer.run, args=(lambda: not stop.is_set(),))
    worker.start()
    try:
        ids = [
            api.post("/v1/decisions", "diag-tool", read_check()).get_json()["decision_id"] for _ in range(3)
        ]
        deadline = time.monotonic() + 20  # a bound for a loaded machine, not a speed test
        while read_ids(chain(app)) != ids:
            assert time.monotonic() < deadline, "the importer did not import"
            time.sleep(0.01)
        last = api.post("/v1/decisions", "diag-tool", read_check()).get_json()["decision_id"]
    finally:
        stop.set()
        worker.join(timeout=20)
    assert not worker.is_alive()
    assert read_ids(chain(app))[-1] == last  # imported, at the latest by the final flush


def test_the_background_importer_gives_way_between_its_steps_and_helpers_do_not(
    app, api, approved_request, monkeypatch
):
    """A worker woken on the importer's core waits for one step of a round, not all of it
    (bench/HISTORY.md, the 1-connection p99); a request that helps to import does not give its core away."""
    steps = []
    real_append, real_transaction = audit.append_records, read_journal.transaction

    @contextlib.contextmanager
    def noted_transaction():
        with real_transaction():
            yield
        steps.append("commit")

    monkeypatch.setattr(read_journal, "give_way", lambda: steps.append("give way"))
    monkeypatch.setattr(read_journal, "transaction", noted_transaction)
    monkeypatch.setattr(
        audit, "append_records", lambda records: (steps.append("chain"), real_append(records))[1]
    )
    ids = [api.post("/v1/decisions", "diag-tool", read_check()).get_json()["decision_id"] for _ in range(3)]
    with app.app_context(), database.connection_context():
        read_journal.Importer(journal_dir(app), database.obj).round({})
    assert steps == ["give way", "chain", "give way", "commit", "give way"]
    assert read_ids(chain(app)) == ids

    steps.clear()
    ids.append(api.post("/v1/decisions", "diag-tool", read_check()).get_json()["decision_id"])
    assert flush(app) == 1  # as a reader (or a writer helping) imports
    assert steps == ["chain", "commit"]
    assert read_ids(chain(app)) == ids


def test_workers_find_state_changes_without_scanning_the_reads(app):
    """After a change, each worker reads the events since the last one it applied; reads
    are most of the log, so that query must go through the index of the other events."""
    index = app.extensions["decision_index"]
    with app.app_context(), database.connection_context():
        if is_sqlite(database.obj):
            plan = database.execute_sql("EXPLAIN QUERY PLAN " + index._sql["events"], (0, 1000)).fetchall()
        else:  # PostgreSQL picks a plan by the table's size: ask whether the index can serve
            with database.atomic():
                database.execute_sql("SET LOCAL enable_seqscan = off")
                plan = database.execute_sql("EXPLAIN " + index._sql["events"], (0, 1000)).fetchall()
    assert any("auditevent_changes" in str(step) for step in plan), plan
