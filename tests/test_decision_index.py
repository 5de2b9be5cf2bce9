"""The decision index's grants: one object per grant, chained per engineer and tenant
(service/decision_index.py, Grant). What decisions depend on: a grant is never mistaken
for another or for a number, and every live grant of an engineer in a tenant counts, in
the order they were granted, after any of them is revoked."""

from __future__ import annotations

import gc
import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from peewee import OperationalError

from models import AccessRequest, SupportRequest
from service.decision_index import LOADED, DecisionIndex, Grant, _collector_paused, chain, chained, seconds
from service.decisions import Check, decide
from service.state_signal import ProcessCounter
from tests.conftest import Api, read_check
from tests.test_decisions import CLIENT, DECIDE, assign, new_ticket


def grant(request_id: str, expires_at: float = 1000.0) -> Grant:
    return Grant(request_id, "sr-" + request_id, "approved", expires_at, None, "open", "eve", None)


def test_a_grant_is_its_expiry_time_and_equal_only_to_itself():
    first, twin = grant("ar-1"), grant("ar-2")
    assert first.access_expires_at == 1000.0 and first < 1000.5 and not first <= 999.0
    assert first != twin and first == first
    assert first != 1000.0 and 1000.0 != first  # never equal as a number, either way round
    assert len({first, twin}) == 2
    assert "ar-1" in repr(first)


def test_a_grant_is_never_changed_in_place():
    live = grant("ar-1")
    with pytest.raises(AttributeError):
        live.status = "revoked"
    with pytest.raises(AttributeError):
        live.next_grant = grant("ar-2")
    assert live.status == "approved" and live.next_grant is None


def test_a_chain_keeps_its_grants_in_order_and_reuses_a_lone_grant():
    lone = grant("ar-1")
    assert chain([lone]) is lone and chain([]) is None
    grants = [grant("ar-1", 1.0), grant("ar-2", 2.0), grant("ar-3", 3.0)]
    linked = chained(chain(grants))
    assert [g.id for g in linked] == ["ar-1", "ar-2", "ar-3"]
    assert [g.access_expires_at for g in linked] == [1.0, 2.0, 3.0]
    kept = chained(chain([g for g in linked if g.id != "ar-2"]))
    assert [g.id for g in kept] == ["ar-1", "ar-3"]
    assert all(g.next_grant is None for g in grants)  # chaining copies: the originals stay as they were


def granted(api, engineer: str, admin: str, tenant: str) -> tuple[dict, str]:
    """A same-tenant ticket assigned to `engineer`, and their approved access request."""
    ticket = assign(api, new_ticket(api, admin, tenant), engineer)
    body = {"support_request_id": ticket["id"], "justification": "read sign-in logs"}
    created = api.post("/v1/access-requests", engineer, body)
    assert created.status_code == 201, created.get_json()
    url = f"/v1/access-requests/{created.get_json()['id']}/approve"
    approved = api.post(url, admin, {"tenant_id": tenant})
    assert approved.get_json()["status"] == "approved", approved.get_json()
    return ticket, approved.get_json()["id"]


def live_grant(api) -> str:
    """A same-tenant ticket in contoso, assigned to eve, and her approved access request."""
    return granted(api, "eve", "alice", "contoso")[1]


def granting_request(api) -> str | None:
    """The access request that the decision for eve reading contoso rests on (None: denied)."""
    answer = api.post(DECIDE, CLIENT, read_check(explain=True))
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    if not body["allowed"]:
        return None
    return next(entry["access_request_id"] for entry in body["explain"] if entry["effect"] == "allow")


@pytest.mark.parametrize("revoked_first", [0, 1, 2])
def test_every_live_grant_counts_after_any_other_is_revoked(api, revoked_first):
    grants = [live_grant(api) for _ in range(3)]
    assert granting_request(api) == grants[0]  # the earliest grant answers, as it always did
    revoked = api.post(f"/v1/access-requests/{grants[revoked_first]}/revoke", "alice")
    assert revoked.status_code == 200, revoked.get_json()
    left = [g for g in grants if g != grants[revoked_first]]
    assert granting_request(api) == left[0]
    for request_id in left:
        assert api.post(f"/v1/access-requests/{request_id}/revoke", "alice").status_code == 200
    assert granting_request(api) is None


def test_a_grant_without_an_expiry_never_allows_and_the_index_still_loads(app, api, clock):
    request_id = live_grant(api)
    assert granting_request(api) == request_id
    with app.app_context():
        # Approval always sets the expiry: this is a row edited by hand.
        AccessRequest.update(access_expires_at=None).where(AccessRequest.id == request_id).execute()
        policy = app.extensions["policy_store"].current
        fresh = DecisionIndex(ProcessCounter(), policy.timing.retention)
        fresh.load(clock())
        answer = decide(policy, fresh, Check(**read_check()), clock(), fresh.provider)
    assert (answer.allowed, answer.reason) == (False, "no_active_grant")


def test_a_grant_counts_only_while_its_ticket_is_assigned_to_its_engineer(app, api, clock):
    """Over HTTP a reassignment completes the grant in the same transaction, so only a
    row edited by hand reaches this: an approved grant on a ticket now assigned to
    someone else must not let its engineer read: access is for the ticket's engineer."""
    request_id = live_grant(api)
    with app.app_context():
        ticket_id = AccessRequest.get_by_id(request_id).support_request_id
        policy = app.extensions["policy_store"].current

        def fresh_decision():
            fresh = DecisionIndex(ProcessCounter(), policy.timing.retention)
            fresh.load(clock())
            answer = decide(policy, fresh, Check(**read_check()), clock(), fresh.provider)
            return answer.allowed, answer.reason

        assert fresh_decision() == (True, "granted")
        SupportRequest.update(assigned_engineer="mallory").where(SupportRequest.id == ticket_id).execute()
        assert fresh_decision() == (False, "no_active_grant")


def refuse(name: str):
    def refused(*args, **kwargs):
        raise AssertionError(f"{name} was called")

    return refused


def test_a_long_backlog_of_changes_is_applied_by_loading_the_whole_index(app, api, monkeypatch):
    """A worker that finds more new events than the index holds tickets (a bulk setup made
    through another worker) loads the index again rather than re-read each row one by one;
    it answers as it would have, and a short backlog is still applied row by row."""
    from service import decision_index

    index = app.extensions["decision_index"]
    assert granting_request(api) is None  # synced, with no ticket yet
    tickets_before = len(index.tickets)
    monkeypatch.setattr(decision_index, "RELOAD_ALL_AFTER", 0)
    with monkeypatch.context() as patch:
        patch.setattr(DecisionIndex, "_reload_ticket", refuse("_reload_ticket"))
        patch.setattr(DecisionIndex, "_reload_grant", refuse("_reload_grant"))
        granted = [live_grant(api), live_grant(api)]  # ten events, about two tickets
        assert granting_request(api) == granted[0]
    assert len(index.tickets) == tickets_before + 2
    with monkeypatch.context() as patch:
        patch.setattr(DecisionIndex, "_load", refuse("_load"))
        # One event, fewer than the index's tickets: re-read row by row, in force at once.
        assert api.post(f"/v1/access-requests/{granted[0]}/revoke", "alice").status_code == 200
        assert granting_request(api) == granted[1]
    with monkeypatch.context() as patch:
        patch.setattr(DecisionIndex, "_reload_grant", refuse("_reload_grant"))
        patch.setattr(DecisionIndex, "_reload_ticket", refuse("_reload_ticket"))
        for _ in range(3):  # 3 tickets, 15 events: a whole load again
            live_grant(api)
        assert api.post(f"/v1/access-requests/{granted[1]}/revoke", "alice").status_code == 200
        assert granting_request(api) not in (None, *granted)  # the revocations hold, the new grants count


def test_a_change_that_adds_no_tenant_keeps_the_tenant_set(app, api):
    """At 10,000 tenants, copying the set on every change cost ~0.1-0.25 ms of the time a
    grant or revocation takes to be in force; a new tenant still counts at once."""
    index = app.extensions["decision_index"]
    assert granting_request(api) is None  # synced
    tenants = index.tenants
    request_id = live_grant(api)
    assert granting_request(api) == request_id
    assert index.tenants is tenants
    assert api.put("/v1/tenants/tailspin", "ops", {"name": "Tailspin"}).status_code == 201
    answer = api.post(DECIDE, CLIENT, read_check(tenant_id="tailspin"))
    assert answer.get_json()["reason"] == "no_active_grant"  # not unknown_tenant
    assert "tailspin" in index.tenants


def test_a_loaded_index_is_frozen_out_of_the_garbage_collectors_scans_when_serving(app, api, clock):
    """Under `make serve` each load, the whole reload after a long backlog too, freezes
    what it built (gc.freeze): a full collection walking 100,000 grants would land ~50 ms
    on some request."""
    live_grant(api)
    with app.app_context():
        policy = app.extensions["policy_store"].current
        for serving in (False, True):
            gc.unfreeze()
            index = DecisionIndex(ProcessCounter(), policy.timing.retention, serving=serving)
            index.load(clock())
            assert (gc.get_freeze_count() > 0) is serving
    gc.unfreeze()


def test_a_load_pauses_the_garbage_collector_and_always_turns_it_back_on(app, api, clock, monkeypatch):
    """A load builds a few hundred thousand objects with the cyclic collector off (its
    scans were an eighth of start-up). It must come back on after every load, a failed one
    too, or a worker would leak every reference cycle from then on; and a load must not
    turn on a collector that someone else turned off."""
    live_grant(api)
    seen_during_load = []
    build_directory = DecisionIndex._load_directory

    def recording(index):
        seen_during_load.append(gc.isenabled())
        build_directory(index)

    def failing(index):
        raise OperationalError("database is locked")

    with app.app_context():
        policy = app.extensions["policy_store"].current
        index = DecisionIndex(ProcessCounter(), policy.timing.retention)
        assert gc.isenabled()
        monkeypatch.setattr(DecisionIndex, "_load_directory", recording)
        index.load(clock())
        assert seen_during_load == [False] and gc.isenabled()
        assert len(index.tickets) == 1
        monkeypatch.setattr(DecisionIndex, "_load_directory", failing)
        with pytest.raises(OperationalError):
            index.load(clock())
        assert gc.isenabled()
        assert len(index.tickets) == 1  # the index it had is kept
        monkeypatch.setattr(DecisionIndex, "_load_directory", build_directory)
        gc.disable()
        try:
            index.load(clock())
            assert not gc.isenabled()
        finally:
            gc.enable()


def test_loads_on_two_threads_share_one_pause_of_the_garbage_collector():
    """A warming worker's whole load (its own thread) and a request's load can overlap,
    and need not end in the order they began: the collector stays off until the last
    ends, and is on after it."""
    first, second = _collector_paused(), _collector_paused()
    first.__enter__()
    second.__enter__()
    assert not gc.isenabled()
    first.__exit__(None, None, None)
    assert not gc.isenabled()  # the second load is still building
    second.__exit__(None, None, None)
    assert gc.isenabled()


@given(
    st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1)),
    st.integers(min_value=-14 * 60, max_value=14 * 60),
)
def test_a_stored_time_reads_as_the_same_posix_seconds_as_python_gives_it(moment, offset_minutes):
    """Expiries and closes are compared with the clock to the microsecond: the index's
    own arithmetic must give exactly the float datetime.timestamp() gives, for naive
    times (UTC, as both databases store them), as text or datetime, and for aware ones."""
    expected = moment.replace(tzinfo=UTC).timestamp()
    assert seconds(moment) == expected
    assert seconds(moment.isoformat(" ")) == expected
    assert seconds(str(moment)) == expected
    aware = moment.replace(tzinfo=timezone(timedelta(minutes=offset_minutes)))
    assert seconds(aware) == aware.timestamp()
    assert seconds(aware.isoformat(" ")) == aware.timestamp()
    assert seconds(None) is None


def test_a_swap_puts_the_data_in_place_before_the_changes_it_has_applied():
    """`sync` skips the lock when the change counter matches what the index has applied.
    A thread that sees a new index's counter must see its data too, or it could decide
    from the old data without a revocation the new one holds."""
    written: list[str] = []

    class Recording(DecisionIndex):
        def __setattr__(self, name, value):
            written.append(name)
            super().__setattr__(name, value)

    index = Recording(ProcessCounter(), timedelta(days=30))
    written.clear()
    fresh = DecisionIndex(ProcessCounter(), timedelta(days=30))
    fresh._sql = {}  # as `_build` leaves it
    index._take(fresh)
    assert set(LOADED) <= set(written[: written.index("_applied_signal")])


# --- changes committed while the index reads the database -------------------------


def revoke_from_another_thread(app, request_id: str) -> None:
    """Revoke through another worker thread (its own connection), and wait for it."""
    result = {}

    def run():
        result["status"] = (
            Api(app.test_client()).post(f"/v1/access-requests/{request_id}/revoke", "alice").status_code
        )

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    assert result.get("status") == 200, result


def decision_of(index: DecisionIndex, app, clock):
    policy = app.extensions["policy_store"].current
    with app.app_context():
        index.sync()
        index.warm_for([Check(**read_check())])
        answer = decide(policy, index, Check(**read_check()), clock(), index.provider)
    return answer.allowed, answer.reason


def revoke_after_the_first_apply(monkeypatch, app, request_id: str) -> list[bool]:
    """Make the next DecisionIndex._apply_changes be followed, before it returns, by a
    revocation committed through another thread. The list returned holds True once done."""
    original, done = DecisionIndex._apply_changes, []

    def apply_then_revoke(self):
        original(self)
        if not done:
            done.append(True)
            revoke_from_another_thread(app, request_id)

    monkeypatch.setattr(DecisionIndex, "_apply_changes", apply_then_revoke)
    return done


def test_a_change_committed_while_sync_applies_events_is_read_by_the_next_sync(
    app, api, approved_request, monkeypatch
):
    """sync must take the counter's value *before* reading the events: one read after
    would cover a change committed meanwhile, whose events were never read."""
    index = app.extensions["decision_index"]
    assert api.post(DECIDE, CLIENT, read_check()).get_json()["allowed"] is True
    # Any state change, so that the next sync has events to apply.
    assert (
        api.post("/v1/support-requests", "alice", {"tenant_id": "contoso", "title": "t"}).status_code == 201
    )
    done = revoke_after_the_first_apply(monkeypatch, app, approved_request["id"])
    with app.app_context():
        index.sync()
    assert done
    monkeypatch.undo()
    answer = api.post(DECIDE, CLIENT, read_check()).get_json()
    assert answer["allowed"] is False and answer["reason"] == "no_active_grant", answer


def test_a_change_committed_while_a_whole_index_is_loaded_is_read_by_the_next_sync(
    app, approved_request, clock, monkeypatch
):
    """A load must take the counter and the last event's seq *before* reading the rows:
    read after, they would cover a revocation committed while the grants were read."""
    policy = app.extensions["policy_store"].current
    signal = app.extensions["decision_index"].signal
    original = DecisionIndex._put_grant
    done = []

    def put_then_revoke(self, *row):
        original(self, *row)
        if not done and row[0] == approved_request["id"]:
            done.append(True)
            revoke_from_another_thread(app, approved_request["id"])

    index = DecisionIndex(signal, policy.timing.retention, clock)
    monkeypatch.setattr(DecisionIndex, "_put_grant", put_then_revoke)
    with app.app_context():
        index.load(clock())
    assert done
    monkeypatch.setattr(DecisionIndex, "_put_grant", original)
    assert decision_of(index, app, clock) == (False, "no_active_grant")


def test_a_change_committed_while_a_warmed_index_is_brought_current_is_read_by_the_next_sync(
    app, approved_request, clock, monkeypatch
):
    """Putting the whole index in place must record the counter it saw *before* applying
    the events: recorded after, it would cover a revocation committed meanwhile."""
    policy = app.extensions["policy_store"].current
    signal = app.extensions["decision_index"].signal
    warming = DecisionIndex(signal, policy.timing.retention, clock)
    with app.app_context():
        warming.start(clock())
        whole = warming._built(clock())
    assert decision_of(warming, app, clock)[0] is True
    done = revoke_after_the_first_apply(monkeypatch, app, approved_request["id"])
    with app.app_context():
        warming._put_in_place(whole)
    assert done and not warming.warming
    monkeypatch.undo()
    assert decision_of(warming, app, clock) == (False, "no_active_grant")


def test_a_grant_on_a_ticket_not_yet_warmed_is_indexed_when_it_is_approved(app, api, ticket, clock):
    """A warming index that warmed eve before she held any grant has not loaded her
    ticket (no grant, no advanced diagnostics); the events of her new grant must bring
    the ticket in with it, or the grant is dropped and she is denied."""
    policy = app.extensions["policy_store"].current
    warming = DecisionIndex(app.extensions["decision_index"].signal, policy.timing.retention, clock)
    with app.app_context():
        warming.start(clock())
    assert decision_of(warming, app, clock) == (False, "no_active_grant")  # eve warmed, no grant
    assert ticket["id"] not in warming.tickets
    body = {"support_request_id": ticket["id"], "justification": "read sign-in logs"}
    created = api.post("/v1/access-requests", "eve", body)
    assert created.status_code == 201, created.get_json()
    url = f"/v1/access-requests/{created.get_json()['id']}/approve"
    assert api.post(url, "alice", {"tenant_id": "contoso"}).status_code == 200
    assert api.post(url, "bob", {"tenant_id": "fabrikam"}).get_json()["status"] == "approved"
    assert warming.warming
    assert decision_of(warming, app, clock)[0] is True
