"""The audit log (API.md "Audit"): the hash chain `flask audit verify` checks, and each
tenant's view of the log."""

from __future__ import annotations

import json
import os
import re
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask.cli import FlaskGroup

from models import AuditEvent, AuditHead, AuditReadIndex, AuditVisibility, database, transaction
from service import audit, create_app
from service.audit import ACTIVITIES, event_hash, flush_reads
from service.clock import isoformat, parse_iso
from service.validation import openapi_document
from tests.conftest import DIRECTORY_FILE, SECRET, START, read_check
from tests.helpers import app_config, corrupt_sqlite_file

EVENT_FIELDS = {"id", "time", "activity", "actor", "tenant_id", "target", "result", "details"}
ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")


def verify(runner):
    return runner.invoke(args=["audit", "verify"])


def events_in_db() -> list[AuditEvent]:
    with database.connection_context():
        return list(AuditEvent.select().order_by(AuditEvent.seq))


def view(api, who: str, tenant: str, **params) -> list[dict]:
    query = "&".join(f"{k}={v}" for k, v in {"tenant_id": tenant, **params}.items())
    answer = api.get(f"/v1/audit-events?{query}", who)
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json()["items"]


@pytest.fixture
def history(app, api, approved_request):
    """Several events: import, ticket created/assigned, request created, two approvals,
    approved, and a data read (imported from the read journal)."""
    allowed = api.post("/v1/decisions", "diag-tool", read_check()).get_json()
    assert allowed["allowed"] is True
    with app.app_context(), database.connection_context():
        flush_reads()
    events = events_in_db()
    assert len(events) >= 8
    return events


# --- verify ----------------------------------------------------------------------------------


def test_verify_passes_on_an_intact_log(runner, history):
    result = verify(runner)
    assert result.exit_code == 0, result.output


def test_verify_tells_an_unreadable_store_from_a_tampered_log(app, runner, tmp_path, database_url):
    """The store goes away after the command started (as a PostgreSQL restart during a
    long verify would): exit 2, not the 1 of a tampered log."""
    if not database_url.startswith("sqlite"):
        pytest.skip("makes the SQLite file unopenable")
    path = tmp_path / "test.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.mkdir()  # a directory where the database file was: it cannot be opened

    result = verify(runner)

    assert result.exit_code == 2, result.output
    assert "cannot read the audit log" in result.output and "tampered" not in result.output


def test_verify_says_a_corrupt_store_cannot_be_read(runner, history, tmp_path, database_url):
    """A file whose header was overwritten: exit 2 and one line, not a traceback and
    not the 1 of a tampered log."""
    if not database_url.startswith("sqlite"):
        pytest.skip("overwrites a SQLite file")
    database.close()
    corrupt_sqlite_file(tmp_path / "test.db")

    result = verify(runner)

    assert result.exit_code == 2, result.output
    assert result.output.splitlines() == ["cannot read the audit log: file is not a database"]


def flask_command(config: dict, *args: str):
    """`flask --app service ARGS` in process: the Flask CLI builds the app before it
    knows the command (create_app then opens no store, service.command_app)."""
    return CliRunner().invoke(FlaskGroup(create_app=lambda: create_app(config)), list(args))


def test_verify_creates_no_database_at_a_mistyped_path(tmp_path):
    """It used to create an empty one there and report "ok: 0 events". The commands meant
    to create the schema on first use still do (API.md: start or import)."""
    path = tmp_path / "typo.db"
    config = app_config(tmp_path, f"sqlite:///{path}", SECRET)

    result = flask_command(config, "audit", "verify")

    assert result.exit_code == 2, result.output
    assert result.output.splitlines() == [f"cannot read the audit log: no database at {path}"]
    assert list(tmp_path.iterdir()) == []

    assert flask_command(config, "directory", "import", str(DIRECTORY_FILE)).exit_code == 0
    verified = flask_command(config, "audit", "verify")
    assert verified.exit_code == 0 and verified.output.startswith("ok: "), verified.output


def test_commands_that_do_not_work_on_the_store_do_not_open_it(tmp_path):
    config = app_config(tmp_path, f"sqlite:///{tmp_path / 'store.db'}", SECRET)
    minted = flask_command(config, "token", "--sub", "ops", "--tenant", "provider")
    assert minted.exit_code == 0 and minted.output.startswith("eyJ"), minted.output
    assert flask_command(config, "policy", "check").exit_code == 0
    assert list(tmp_path.iterdir()) == []


def test_verify_passes_on_the_initial_log(runner):
    assert verify(runner).exit_code == 0


def test_verify_detects_edited_details(runner, history):
    victim = history[3]
    with database.connection_context():
        details = json.loads(victim.details)
        details["justification"] = "nothing to see here"
        AuditEvent.update(details=json.dumps(details, sort_keys=True)).where(
            AuditEvent.seq == victim.seq
        ).execute()
    result = verify(runner)
    assert result.exit_code != 0
    assert victim.id in result.output, result.output


@pytest.mark.parametrize(
    ("field", "value"),
    [("actor", "mallory"), ("activity", "access_request.rejected"), ("result", "failure"), ("target", "x")],
)
def test_verify_detects_edited_fields(runner, history, field, value):
    victim = history[4]
    with database.connection_context():
        AuditEvent.update({getattr(AuditEvent, field): value}).where(AuditEvent.seq == victim.seq).execute()
    result = verify(runner)
    assert result.exit_code != 0
    assert victim.id in result.output, result.output


def test_verify_detects_edited_time(runner, history):
    victim = history[2]
    with database.connection_context():
        later = victim.time + timedelta(hours=3)
        AuditEvent.update(time=later).where(AuditEvent.seq == victim.seq).execute()
    result = verify(runner)
    assert result.exit_code != 0
    assert victim.id in result.output, result.output


@pytest.mark.parametrize(("field", "value"), [("time", "not a time"), ("visible_to", "[unclosed")])
def test_verify_names_an_event_holding_an_unreadable_value_as_tampered(runner, history, field, value):
    """A value that is no longer of its kind was a traceback; it is an altered event."""
    if field == "time" and os.environ.get("SUPPORT_ACCESS_TEST_POSTGRES"):
        pytest.skip("PostgreSQL's timestamp column holds only times")
    victim, table = history[3], AuditEvent._meta.table_name
    with database.connection_context():
        statement = f"UPDATE {table} SET {field} = {database.param} WHERE seq = {database.param}"
        database.execute_sql(statement, (value, victim.seq))
    result = verify(runner)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 1, result.output
    assert f"audit log tampered at event {victim.seq} ({victim.id}, {victim.activity}): contents altered" in (
        result.output
    )


def test_verify_detects_edit_with_recomputed_hash(runner, history):
    """An attacker who rehashes the edited event still breaks the link to the next one."""
    victim, following = history[3], history[4]
    with database.connection_context():
        event = AuditEvent.get_by_id(victim.seq)
        event.actor = "mallory"
        event.hash = event_hash(event)
        event.save()
    result = verify(runner)
    assert result.exit_code != 0
    assert following.id in result.output, result.output


def test_verify_detects_a_deleted_middle_event(runner, history):
    victim, following = history[3], history[4]
    with database.connection_context():
        AuditEvent.delete().where(AuditEvent.seq == victim.seq).execute()
    result = verify(runner)
    assert result.exit_code != 0
    assert following.id in result.output, result.output


def test_verify_detects_swapped_events(runner, history):
    first, second = history[3], history[4]
    with database.connection_context():
        AuditEvent.update(seq=-1).where(AuditEvent.seq == first.seq).execute()
        AuditEvent.update(seq=first.seq).where(AuditEvent.seq == second.seq).execute()
        AuditEvent.update(seq=second.seq).where(AuditEvent.seq == -1).execute()
    result = verify(runner)
    assert result.exit_code != 0
    assert first.id in result.output or second.id in result.output, result.output


def test_verify_detects_a_deleted_last_event(runner, history):
    last = history[-1]
    with database.connection_context():
        AuditEvent.delete().where(AuditEvent.seq == last.seq).execute()
    result = verify(runner)
    assert result.exit_code != 0
    assert re.search(rf"\b{last.seq}\b", result.output) or last.id in result.output, result.output


def test_verify_names_an_altered_chain_head_as_such(runner, history):
    with database.connection_context():
        AuditHead.update(last_hash="f" * 64).execute()
    result = verify(runner)
    assert result.exit_code != 0
    expected = f"the chain head's hash is not that of the last event ({history[-1].seq})"
    assert expected in result.output and "removed" not in result.output, result.output


def test_verify_detects_a_chain_head_set_back_behind_the_log(runner, history):
    """A head row moved back (its hash left alone) would make the next append reuse a
    sequence number."""
    with database.connection_context():
        AuditHead.update(last_seq=history[-1].seq - 1).execute()
    result = verify(runner)
    assert result.exit_code == 1
    assert f"the log goes on to event {history[-1].seq} past its chain head" in result.output, result.output


def test_verify_detects_a_renumbered_event(runner, history):
    """Each event's hash covers its sequence number: an event moved to another seq, with
    the head and the rows that point at it moved to match, is found."""
    last, moved = history[-1], history[-1].seq + 7
    with database.connection_context():
        AuditEvent.update(seq=moved).where(AuditEvent.seq == last.seq).execute()
        AuditVisibility.update(event_seq=moved).where(AuditVisibility.event_seq == last.seq).execute()
        AuditReadIndex.update(event_seq=moved).where(AuditReadIndex.event_seq == last.seq).execute()
        AuditHead.update(last_seq=moved).execute()
    result = verify(runner)
    assert result.exit_code == 1
    assert f"event {moved} ({last.id}" in result.output, result.output


def test_verify_detects_a_deleted_first_event(runner, history):
    first, following = history[0], history[1]
    with database.connection_context():
        AuditEvent.delete().where(AuditEvent.seq == first.seq).execute()
    result = verify(runner)
    assert result.exit_code != 0
    assert following.id in result.output, result.output


def test_verify_detects_a_forged_appended_event(runner, history):
    last = history[-1]
    with database.connection_context():
        AuditEvent.insert(
            seq=last.seq + 1,
            id="forged-event",
            time=last.time,
            activity="access_request.approved",
            actor="alice",
            actor_tenant_id=None,
            tenant_id="contoso",
            visible_to='["contoso"]',
            target=last.target,
            result="success",
            details="{}",
            prev_hash=last.hash,
            hash="0" * 64,
        ).execute()
    result = verify(runner)
    assert result.exit_code != 0
    assert "forged-event" in result.output, result.output


def test_verify_detects_a_read_moved_out_of_its_tenants_view(runner, history):
    read = next(event for event in history if event.activity == "diagnostics.read")
    with database.connection_context():
        AuditEvent.update(read_bucket=(read.read_bucket + 1) % 256).where(
            AuditEvent.seq == read.seq
        ).execute()
    result = verify(runner)
    assert result.exit_code != 0
    assert read.id in result.output and "read_bucket" in result.output, result.output


def test_verify_detects_middle_deletion_despite_edited_head(runner, history):
    """Editing the chain head cannot hide an event removed from the middle."""
    victim, following = history[2], history[3]
    with database.connection_context():
        AuditEvent.delete().where(AuditEvent.seq == victim.seq).execute()
        AuditHead.update(last_seq=history[-1].seq, last_hash=history[-1].hash).execute()
    result = verify(runner)
    assert result.exit_code != 0
    assert following.id in result.output


def verified_head(runner) -> str:
    result = verify(runner)
    assert result.exit_code == 0, result.output
    found = re.search(r"; head (\d+:[0-9a-f]{64})$", result.output.strip())
    assert found, result.output
    return found.group(1)


def test_verify_prints_the_head_and_accepts_it_as_an_anchor(runner, history):
    head = verified_head(runner)
    assert head == f"{history[-1].seq}:{history[-1].hash}"
    older = f"{history[2].seq}:{history[2].hash.upper()}"  # an earlier head still in the chain
    result = runner.invoke(args=["audit", "verify", "--anchor", older, "--anchor", head])
    assert result.exit_code == 0, result.output


def test_verify_checks_and_names_as_head_the_reads_still_in_the_journal(api, approved_request, runner):
    """A read answered but not yet imported is in the chain verify checks, and in the head
    it prints for a later --anchor."""
    answer = api.post("/v1/decisions", "diag-tool", read_check()).get_json()
    assert answer["allowed"] is True

    head_seq = int(verified_head(runner).split(":")[0])

    [last] = [event for event in events_in_db() if event.seq == head_seq]
    assert last.activity == "diagnostics.read" and answer["decision_id"] in last.details


def test_an_anchor_catches_events_removed_from_the_end_with_the_head_rewritten(runner, history):
    """Dropping the newest events and rewriting the head row to match leaves a chain that
    is intact on its own; a head kept from an earlier run is what shows the loss."""
    kept_head = verified_head(runner)
    last, before = history[-1], history[-2]
    with database.connection_context():
        AuditEvent.delete().where(AuditEvent.seq == last.seq).execute()
        AuditHead.update(last_seq=before.seq, last_hash=before.hash).execute()
    assert verify(runner).exit_code == 0  # the limit of a chain checked against itself
    result = runner.invoke(args=["audit", "verify", "--anchor", kept_head])
    assert result.exit_code == 1
    assert f"anchor {kept_head} is gone" in result.output, result.output


def test_an_anchor_catches_a_chain_rewritten_from_an_earlier_event(runner, history):
    """An attacker who edits an event and rehashes every event after it, and the head,
    leaves a chain intact on its own, but the kept head no longer matches."""
    kept_head = verified_head(runner)
    victim = history[3]
    with database.connection_context():
        prev_hash = None
        for event in AuditEvent.select().where(AuditEvent.seq >= victim.seq).order_by(AuditEvent.seq):
            if event.seq == victim.seq:
                event.actor = "mallory"
            else:
                event.prev_hash = prev_hash
            event.hash = prev_hash = event_hash(event)
            event.save()
        AuditHead.update(last_hash=prev_hash).execute()
    assert verify(runner).exit_code == 0
    result = runner.invoke(args=["audit", "verify", "--anchor", kept_head])
    assert result.exit_code == 1
    assert f"anchor {kept_head} does not match" in result.output, result.output
    assert history[-1].id in result.output, result.output


@pytest.mark.parametrize(
    "anchor",
    [
        "12",
        "x:" + "0" * 64,
        "3:" + "0" * 63,
        "3:" + "G" * 64,
        "0:" + "0" * 64,
        "\u0663:" + "0" * 64,
        "9" * 30 + ":" + "0" * 64,  # past SQL's integers: no event can have it (was an OverflowError)
        "9" * 5000 + ":" + "0" * 64,  # past what int() reads by default
    ],
)
def test_verify_refuses_a_malformed_anchor(runner, history, anchor):
    result = runner.invoke(args=["audit", "verify", "--anchor", anchor])
    assert result.exit_code == 2
    assert "is not <seq>:<hash>" in result.output, result.output


def test_log_keeps_growing_intact_after_many_writes(api, runner, approved_request, clock):
    checks = [read_check() for _ in range(20)]
    assert api.post("/v1/decisions/batch", "diag-tool", {"checks": checks}).status_code == 200
    clock.advance(hours=1)
    api.post(f"/v1/access-requests/{approved_request['id']}/revoke", "alice")
    assert verify(runner).exit_code == 0


# --- the view --------------------------------------------------------------------------------


def test_events_have_the_contract_fields_oldest_first(api, history):
    items = view(api, "alice", "contoso")
    assert items
    for item in items:
        assert EVENT_FIELDS <= set(item), item
        assert ISO_Z.match(item["time"]), item["time"]
        assert isinstance(item["details"], dict)
    times = [parse_iso(item["time"]) for item in items]
    assert times == sorted(times)
    order = {event.id: event.seq for event in history}
    seqs = [order[item["id"]] for item in items]
    assert seqs == sorted(seqs)
    assert items[0]["activity"] == "directory.changed"
    assert items[-1]["activity"] == "diagnostics.read"


def test_limit_takes_the_oldest_events_whatever_their_kind(api, approved_request, clock):
    """Reads and other events are found by different indexes; the view interleaves them."""
    for n in range(3):
        clock.advance(minutes=1)
        assert api.post("/v1/decisions", "diag-tool", read_check()).get_json()["allowed"] is True
        clock.advance(minutes=1)
        assert api.put("/v1/tenants/contoso", "ops", {"name": f"Contoso {n}"}).status_code == 200
    full = view(api, "alice", "contoso")
    kinds = [item["activity"] for item in full]
    assert kinds[-6:] == ["diagnostics.read", "directory.changed"] * 3
    for limit in (1, 3, len(full) - 2, len(full) - 1, len(full)):
        assert view(api, "alice", "contoso", limit=limit) == full[:limit]
    since = full[-4]["time"]
    assert view(api, "alice", "contoso", since=since, limit=3) == full[-4:-1]


def test_a_view_asked_for_without_paging_holds_a_whole_batch_and_what_follows(api, approved_request):
    """A caller that does not page (API.md knows no paging) sees a full batch of 1,000
    reads together with the workflow before and after it."""
    checks = [read_check() for _ in range(1000)]
    answer = api.post("/v1/decisions/batch", "diag-tool", {"checks": checks})
    assert all(r["allowed"] for r in answer.get_json()["results"])
    url = f"/v1/access-requests/{approved_request['id']}/revoke"
    assert api.post(url, "alice").status_code == 200

    kinds = [event["activity"] for event in view(api, "alice", "contoso")]

    assert kinds.count("diagnostics.read") == 1000
    assert kinds.index("access_request.approved") < kinds.index("diagnostics.read")
    assert kinds[-1] == "access_request.revoked"


@pytest.mark.parametrize("limit", [1, 2, 5, 7])
def test_paging_with_after_returns_every_event_once_even_when_times_tie(api, approved_request, limit):
    """A batch's reads share one time (and one chain row), so `since` cannot page through
    them; `after`, set to the answer's `next_after`, does, for any page size."""
    checks = [read_check(resource=f"diagnostics/{c}") for c in ("signInLogs", "auditLogs")] * 6
    assert api.put("/v1/tenants/contoso", "ops", {"name": "Contoso again"}).status_code == 200
    answer = api.post("/v1/decisions/batch", "diag-tool", {"checks": checks})
    assert all(r["allowed"] for r in answer.get_json()["results"])
    assert api.put("/v1/tenants/contoso", "ops", {"name": "Contoso"}).status_code == 200
    everything = view(api, "alice", "contoso")
    assert len({e["time"] for e in everything if e["activity"] == "diagnostics.read"}) == 1

    pages, after = [], None
    for _ in range(len(everything) + 1):  # bounded: a broken `after` would page forever
        query = f"tenant_id=contoso&limit={limit}" + (f"&after={after}" if after else "")
        answer = api.get(f"/v1/audit-events?{query}", "alice").get_json()
        pages.append(answer["items"])
        if len(answer["items"]) < limit:
            break
        after = answer["next_after"]

    assert [e for page in pages for e in page] == everything
    assert len(pages) == len(everything) // limit + 1


def test_next_after_shows_nothing_of_the_log_and_polls_on_from_the_end(api, approved_request):
    first = api.get("/v1/audit-events?tenant_id=contoso", "alice").get_json()
    token = first["next_after"]
    assert token and not re.search(r"[0-9]+\.[0-9]+", token)  # opaque: no row number to read
    assert api.get(f"/v1/audit-events?tenant_id=contoso&after={token}", "alice").get_json() == {
        "items": [],
        "next_after": token,  # nothing new: poll on from the same place
    }
    assert api.put("/v1/tenants/contoso", "ops", {"name": "Contoso renamed"}).status_code == 200
    new = api.get(f"/v1/audit-events?tenant_id=contoso&after={token}", "alice").get_json()
    assert [e["activity"] for e in new["items"]] == ["directory.changed"]


@pytest.mark.parametrize("after", ["", "12", "1.0", "99999999999999999999.0", "gAAAAAB-not-a-token"])
def test_a_bad_after_is_a_400(api, after):
    answer = api.get(f"/v1/audit-events?tenant_id=contoso&after={after}", "alice")
    assert answer.status_code == 400
    assert answer.get_json()["error"]["code"] == "invalid_query"
    assert "after" in answer.get_json()["error"]["message"]


def test_view_shows_the_support_access_story(api, history):
    activities = [item["activity"] for item in view(api, "alice", "contoso")]
    for expected in (
        "access_request.created",
        "access_request.approval_added",
        "access_request.approved",
        "diagnostics.read",
    ):
        assert expected in activities
    assert activities.index("access_request.approved") < activities.index("diagnostics.read")


def test_since_filter(api, clock):
    clock.advance(hours=2)
    created = api.post("/v1/support-requests", "alice", {"tenant_id": "contoso", "title": "later"})
    assert created.status_code == 201
    everything = view(api, "alice", "contoso")
    assert [e["activity"] for e in everything] == ["directory.changed", "support_request.created"]
    cutoff = isoformat(START + timedelta(hours=1))
    later = view(api, "alice", "contoso", since=cutoff)
    assert [e["activity"] for e in later] == ["support_request.created"]
    exact = view(api, "alice", "contoso", since=isoformat(START + timedelta(hours=2)))
    assert [e["activity"] for e in exact] == ["support_request.created"]
    assert view(api, "alice", "contoso", since=isoformat(START + timedelta(hours=3))) == []


def test_since_accepts_an_offset(api, clock):
    clock.advance(hours=2)
    api.post("/v1/support-requests", "alice", {"tenant_id": "contoso", "title": "later"})
    # 10:00+00:00 == 11:00+01:00, URL-encoded '+'
    items = view(api, "alice", "contoso", since="2026-11-02T11:00:00%2B01:00")
    assert [e["activity"] for e in items] == ["support_request.created"]


@pytest.mark.parametrize("since", ["yesterday", "2026-13-01T00:00:00Z", "2026-11-02T10:00:00"])
def test_bad_since_is_400_naming_it(api, since):
    answer = api.get(f"/v1/audit-events?tenant_id=contoso&since={since}", "alice")
    assert answer.status_code == 400
    assert "since" in answer.get_json()["error"]["message"]


def test_activity_filter(api, history):
    approvals = view(api, "alice", "contoso", activity="access_request.approval_added")
    assert len(approvals) == 2
    assert {e["activity"] for e in approvals} == {"access_request.approval_added"}
    reads = view(api, "alice", "contoso", activity="diagnostics.read")
    assert len(reads) == 1
    assert view(api, "alice", "contoso", activity="no.such.activity") == []


def test_a_repeated_activity_filter_shows_events_of_each(api, history):
    """`activity=a&activity=b`: both kinds, in log order (not just the first one named)."""
    answer = api.get(
        "/v1/audit-events?tenant_id=contoso&activity=diagnostics.read"
        "&activity=access_request.approval_added&activity=no.such.activity",
        "alice",
    )
    assert answer.status_code == 200, answer.get_json()
    kinds = [e["activity"] for e in answer.get_json()["items"]]
    assert kinds == ["access_request.approval_added"] * 2 + ["diagnostics.read"]


def test_too_many_different_activities_are_a_400_not_a_store_error(api, history):
    """Each value is a query parameter: a long list must not look like a store outage."""
    query = "&".join(f"activity=made.up{n}" for n in range(51))
    answer = api.get(f"/v1/audit-events?tenant_id=contoso&{query}", "alice")
    assert answer.status_code == 400 and answer.get_json()["error"]["code"] == "invalid_query"
    repeated = "&".join(["activity=diagnostics.read"] * 200)  # one value, however often
    answer = api.get(f"/v1/audit-events?tenant_id=contoso&{repeated}", "alice")
    assert answer.status_code == 200
    assert [e["activity"] for e in answer.get_json()["items"]] == ["diagnostics.read"]


def test_since_and_activity_combine(api, approved_request, clock):
    api.post("/v1/decisions", "diag-tool", read_check())
    clock.advance(hours=1)
    second = api.post("/v1/decisions", "diag-tool", read_check()).get_json()
    items = view(
        api, "alice", "contoso", activity="diagnostics.read", since=isoformat(START + timedelta(minutes=30))
    )
    assert [e["details"]["decision_id"] for e in items] == [second["decision_id"]]


def test_tenant_id_is_required(api):
    answer = api.get("/v1/audit-events", "alice")
    assert answer.status_code == 400
    assert "tenant_id" in answer.get_json()["error"]["message"]


@pytest.mark.parametrize(
    ("who", "tenant"),
    [
        ("nina", "contoso"),  # admin of another tenant
        ("carol", "contoso"),  # Global Reader: no audit logs
        ("bob", "contoso"),  # admin of the ticket tenant, not of contoso
        ("eve", "contoso"),  # support engineer
        ("diag-tool", "contoso"),
        ("stranger", "contoso"),
        ("alice", "fabrikam"),
        ("alice", "no-such-tenant"),
    ],
)
def test_non_readers_get_404(api, history, who, tenant):
    answer = api.get(f"/v1/audit-events?tenant_id={tenant}", who)
    assert answer.status_code == 404
    assert set(answer.get_json()["error"]) == {"code", "message"}


def test_non_reader_404_is_same_as_unknown_tenant(api):
    real = api.get("/v1/audit-events?tenant_id=contoso", "nina").get_json()
    fake = api.get("/v1/audit-events?tenant_id=zzz", "nina").get_json()
    assert real["error"]["code"] == fake["error"]["code"]


def test_security_reader_reads_the_full_view(api, history):
    items = view(api, "sam", "contoso")
    activities = {e["activity"] for e in items}
    assert "directory.changed" in activities
    assert "diagnostics.read" in activities
    assert items == view(api, "alice", "contoso")


def test_reports_reader_and_security_admin_read_the_view(api, history):
    for principal, role in (("rita", "Reports Reader"), ("sol", "Security Administrator")):
        body = {"principal": principal, "role": role}
        assert api.put("/v1/tenants/contoso/role-assignments", "ops", body).status_code == 201
        assert view(api, principal, "contoso")


def test_support_ticket_admin_sees_only_the_support_trail(api, history):
    """alice2 (Service Support Administrator) is no log reader: no directory changes."""
    items = view(api, "alice2", "contoso")
    activities = {e["activity"] for e in items}
    assert "access_request.approved" in activities
    assert "directory.changed" not in activities


def test_operator_reads_any_view(api, history):
    assert view(api, "ops", "contoso")
    assert view(api, "ops", "provider")


def test_views_are_per_tenant(api, history):
    contoso = {e["id"] for e in view(api, "alice", "contoso")}
    other = {e["id"] for e in view(api, "nina", "northwind")}
    assert contoso.isdisjoint(other - {e.id for e in history if e.activity == "directory.changed"})
    fabrikam = view(api, "bob", "fabrikam")
    assert "diagnostics.read" not in {e["activity"] for e in fabrikam}


def test_support_request_tenant_does_not_see_the_removal(api, history, approved_request):
    revoked = api.post(f"/v1/access-requests/{approved_request['id']}/revoke", "alice")
    assert revoked.status_code == 200
    assert "access_request.revoked" in {e["activity"] for e in view(api, "alice", "contoso")}
    fabrikam = view(api, "bob", "fabrikam")
    assert "access_request.revoked" not in {e["activity"] for e in fabrikam}
    assert "revoke" not in json.dumps(fabrikam)
    assert "access_request.approved" in {e["activity"] for e in fabrikam}


def test_the_support_trail_is_policy_data(tmp_path):
    """Narrowing workflow.yaml audit.support_trail narrows what non-log-reader admins see."""
    from service import create_app
    from tests.conftest import DIRECTORY_FILE, SECRET, Api
    from tests.helpers import copy_policies, edit

    policies = copy_policies(tmp_path)
    edit(
        policies / "workflow.yaml",
        "support_trail: [support_request.*, access_request.*, diagnostics.read]",
        "support_trail: [support_request.created]",
    )
    app = create_app(
        {
            "TESTING": True,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'trail.db'}",
            "JWT_SECRET": SECRET,
            "POLICY_DIR": str(policies),
            "DECISION_LOG": "",
        }
    )
    assert app.test_cli_runner().invoke(args=["directory", "import", str(DIRECTORY_FILE)]).exit_code == 0
    api = Api(app.test_client())
    ticket = api.post("/v1/support-requests", "bob", {"tenant_id": "fabrikam", "title": "t"}).get_json()
    assert api.post(f"/v1/support-requests/{ticket['id']}/close", "bob").status_code == 200
    answer = api.get("/v1/audit-events?tenant_id=fabrikam", "bob")
    assert [e["activity"] for e in answer.get_json()["items"]] == ["support_request.created"]


def test_a_database_made_before_newer_columns_gains_them(tmp_path):
    import sqlite3

    from models import connect_database

    path = tmp_path / "older.db"
    connect_database(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as older:  # as the schema was before the columns existed
        older.execute("DROP INDEX auditevent_reads")
        older.execute("ALTER TABLE auditevent DROP COLUMN read_bucket")
        older.execute("ALTER TABLE accessrequest DROP COLUMN support_request_view_finished_at")
    db = connect_database(f"sqlite:///{path}")
    with db.connection_context():
        assert "read_bucket" in {column.name for column in db.get_columns("auditevent")}
        assert "auditevent_reads" in {index.name for index in db.get_indexes("auditevent")}
        columns = {column.name for column in db.get_columns("accessrequest")}
        assert "support_request_view_finished_at" in columns


# --- a request's several reads: one event in the chain, each read in its tenant's view ---


@pytest.fixture
def batch_reads(app, api, approved_request):
    """One batch: eve reads contoso (granted) twice and fabrikam (advanced diagnostics on
    a fabrikam ticket) once; a northwind check is denied. Returns the answers."""
    ticket = api.post(
        "/v1/support-requests",
        "bob",
        {"tenant_id": "fabrikam", "title": "slow sign-ins", "allow_advanced_diagnostics": True},
    ).get_json()
    assert (
        api.post(f"/v1/support-requests/{ticket['id']}/assign", "eve", {"engineer": "eve"}).status_code == 200
    )
    checks = [
        read_check(),
        read_check(tenant_id="fabrikam"),
        read_check(tenant_id="northwind"),
        read_check(resource="diagnostics/auditLogs"),
    ]
    answer = api.post("/v1/decisions/batch", "diag-tool", {"checks": checks})
    results = answer.get_json()["results"]
    assert [r["allowed"] for r in results] == [True, True, False, True], results
    with app.app_context(), database.connection_context():
        flush_reads()
    return results


def rows_holding_reads() -> list[AuditEvent]:
    return [event for event in events_in_db() if event.activity == "diagnostics.read"]


def test_a_batchs_reads_are_one_chain_event_and_each_tenant_sees_its_own(api, runner, batch_reads):
    [row] = rows_holding_reads()  # one row and one hash for the request's three reads
    assert row.tenant_id is None and json.loads(row.visible_to) == ["contoso", "fabrikam"]
    contoso = view(api, "alice", "contoso", activity="diagnostics.read")
    assert [e["id"] for e in contoso] == [batch_reads[0]["decision_id"], batch_reads[3]["decision_id"]]
    assert [e["target"] for e in contoso] == ["diagnostics/signInLogs", "diagnostics/auditLogs"]
    for event in contoso:
        assert set(event) >= EVENT_FIELDS and event["activity"] == "diagnostics.read"
        assert event["actor"] == "diag-tool" and event["tenant_id"] == "contoso"
        assert event["time"] == isoformat(START) and event["result"] == "success"
        assert event["details"]["decision_id"] == event["id"] and event["details"]["reason"] == "granted"
    fabrikam = view(api, "ops", "fabrikam", activity="diagnostics.read")
    assert [e["id"] for e in fabrikam] == [batch_reads[1]["decision_id"]]
    assert fabrikam[0]["details"]["reason"] == "advanced_diagnostics"
    assert not view(api, "nina", "northwind", activity="diagnostics.read")
    assert verify(runner).exit_code == 0


def test_the_view_limit_counts_reads_not_rows(api, batch_reads):
    first = view(api, "alice", "contoso", activity="diagnostics.read", limit=1)
    assert [e["id"] for e in first] == [batch_reads[0]["decision_id"]]
    everything = view(api, "alice", "contoso")
    assert everything[-1]["id"] == batch_reads[3]["decision_id"]  # merged in chain order
    assert [e["id"] for e in view(api, "alice", "contoso", limit=len(everything) - 1)] == [
        e["id"] for e in everything[:-1]
    ]


def test_reads_of_a_tenant_in_the_same_read_bucket_stay_out_of_the_view(app, api, approved_request):
    """Reads are indexed by a bucket of the tenant id (audit.read_bucket). A tenant whose
    id falls in contoso's bucket must not see its reads in contoso's view, alone or in a
    batch with contoso's, nor push contoso's own reads off a page."""
    twin = next(f"t{n}" for n in range(10_000) if audit.read_bucket(f"t{n}") == audit.read_bucket("contoso"))
    assert api.put(f"/v1/tenants/{twin}", "ops", {"name": "Twin"}).status_code == 201
    admin = {"principal": "zoe", "role": "Global Administrator"}
    assert api.put(f"/v1/tenants/{twin}/role-assignments", "ops", admin).status_code == 201
    body = {"tenant_id": twin, "title": "slow sign-ins", "allow_advanced_diagnostics": True}
    ticket = api.post("/v1/support-requests", "zoe", body).get_json()
    assert (
        api.post(f"/v1/support-requests/{ticket['id']}/assign", "eve", {"engineer": "eve"}).status_code == 200
    )

    alone = api.post("/v1/decisions", "diag-tool", read_check(tenant_id=twin)).get_json()
    checks = [read_check(tenant_id=twin), read_check()]
    batch = api.post("/v1/decisions/batch", "diag-tool", {"checks": checks}).get_json()["results"]
    assert [answer["allowed"] for answer in (alone, *batch)] == [True, True, True]

    contoso = view(api, "alice", "contoso", activity="diagnostics.read")
    assert [event["id"] for event in contoso] == [batch[1]["decision_id"]]
    first = view(api, "alice", "contoso", activity="diagnostics.read", limit=1)
    assert [event["id"] for event in first] == [batch[1]["decision_id"]]
    twins = view(api, "zoe", twin, activity="diagnostics.read")
    assert [event["id"] for event in twins] == [alone["decision_id"], batch[0]["decision_id"]]


def index_rows() -> list[tuple]:
    with database.connection_context():
        return list(AuditReadIndex.select().tuples())


@pytest.mark.parametrize(
    "tamper",
    ["delete", "other_tenant", "wrong_bucket", "stray_row"],
)
def test_verify_detects_a_read_hidden_from_or_shown_to_a_tenant(runner, batch_reads, tamper):
    [row] = rows_holding_reads()
    fabrikam = AuditReadIndex.tenant_id == "fabrikam"
    with database.connection_context():
        if tamper == "delete":  # fabrikam's view would no longer show its read
            AuditReadIndex.delete().where(fabrikam).execute()
        elif tamper == "other_tenant":
            AuditReadIndex.update(tenant_id="northwind").where(fabrikam).execute()
        elif tamper == "wrong_bucket":
            AuditReadIndex.update(read_bucket=AuditReadIndex.read_bucket + 1).where(fabrikam).execute()
        else:  # a row naming an event that is not in the log
            AuditReadIndex.insert(read_bucket=1, event_seq=row.seq + 1000, tenant_id="northwind").execute()
    assert len(index_rows()) == (1 if tamper == "delete" else 2 if tamper != "stray_row" else 3)
    result = verify(runner)
    assert result.exit_code != 0
    assert "read index" in result.output, result.output
    if tamper != "stray_row":
        assert row.id in result.output, result.output
    else:  # the first bad event is named, though it is not in the log
        assert f"read index name event {row.seq + 1000}, which is not in the log" in result.output


@pytest.mark.parametrize("tamper", ["shown_to_another", "hidden_from_one", "stray_row"])
def test_verify_detects_an_event_shown_to_or_hidden_from_a_tenant(runner, approved_request, tamper):
    """The audit view finds an event through its visibility rows. They are derived from
    the event's visible_to (which the hash covers): a row added, removed or naming an
    event not in the log is tampering, as an altered event is."""
    with database.connection_context():
        approved = AuditEvent.get(AuditEvent.activity == "access_request.approved")
        if tamper == "shown_to_another":  # northwind would read contoso's and fabrikam's event
            AuditVisibility.insert(tenant_id="northwind", event_seq=approved.seq).execute()
        elif tamper == "hidden_from_one":  # contoso's view would no longer show it
            rows = AuditVisibility.tenant_id == "contoso", AuditVisibility.event_seq == approved.seq
            assert AuditVisibility.delete().where(*rows).execute() == 1
        else:
            AuditVisibility.insert(tenant_id="northwind", event_seq=approved.seq + 1000).execute()
    result = verify(runner)
    assert result.exit_code == 1, result.output
    assert "visibility rows" in result.output, result.output
    if tamper != "stray_row":
        assert f"event {approved.seq} ({approved.id}, access_request.approved)" in result.output
    else:
        assert f"audit log tampered at event {approved.seq + 1000}:" in result.output, result.output


def test_verify_sees_one_moment_while_reads_are_imported(app, monkeypatch):
    """The importer commits a batch's reads between verify's read of the index and its
    walk of the events: an intact log must still verify (no false alarm)."""
    import threading

    from models import transaction
    from service import audit

    def batch(event_id: str) -> list:
        reads = [(f"{event_id}-{t}", t, "diagnostics/signInLogs", {}) for t in ("contoso", "fabrikam")]
        return audit.reads_record(event_id, audit.time_forms(START), ("diag-tool", None), reads)

    def import_elsewhere(records: list) -> None:
        def work():
            with database.connection_context(), transaction():
                audit.append_records(records)

        thread = threading.Thread(target=work)
        thread.start()
        thread.join()

    real_init = audit._RowsByEvent.__init__

    def index_then_import(self, model, columns):
        real_init(self, model, columns)
        import_elsewhere([batch(f"during-{model.__name__}")])

    with app.app_context(), database.connection_context():
        import_elsewhere([batch("before")])
        monkeypatch.setattr(audit._RowsByEvent, "__init__", index_then_import)
        report = audit.verify_chain()
        monkeypatch.undo()
        assert report.ok, report
        assert audit.verify_chain().ok  # and the batch imported meanwhile is checked next time


def test_a_big_batchs_reads_are_split_into_bounded_events(app, api, approved_request):
    """The view parses a whole event to show a tenant its reads in it: an event holds at
    most READS_PER_EVENT reads, so a batch of 1,000 costs the view no more than 50 do."""
    from service.audit import READS_PER_EVENT

    count = 2 * READS_PER_EVENT + 1
    answer = api.post("/v1/decisions/batch", "diag-tool", {"checks": [read_check()] * count})
    results = answer.get_json()["results"]
    assert all(result["allowed"] for result in results)
    with app.app_context(), database.connection_context():
        flush_reads()
    rows = rows_holding_reads()
    # Two events of READS_PER_EVENT reads, and the last read as an event of its own.
    assert [row.tenant_id for row in rows] == [None, None, "contoso"]
    shown = view(api, "alice", "contoso", activity="diagnostics.read")
    assert [e["id"] for e in shown] == [r["decision_id"] for r in results]


def test_the_activities_written_are_the_documented_ones():
    """API.md and the OpenAPI document list the activities a client may filter on;
    audit.ACTIVITIES (which `policy check` lints support_trail against) is the same list."""
    described = openapi_document()["components"]["schemas"]["AuditEvent"]["properties"]["activity"]
    documented = {
        f"{family}.{name}"
        for family, names in re.findall(r"`([a-z_]+)\.([a-z_|]+)`", described["description"])
        for name in names.split("|")
    }
    assert documented == ACTIVITIES


def test_an_event_of_an_unknown_activity_is_refused_not_written(app):
    with app.app_context():
        before = AuditEvent.select().count()
        with pytest.raises(ValueError, match="unknown audit activity"), transaction():
            audit.record("access_request.deleted", "system", "contoso", ["contoso"], None, {}, START)
        assert AuditEvent.select().count() == before
