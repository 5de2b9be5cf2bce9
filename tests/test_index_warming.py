"""A serving worker starts answering before its whole decision index is loaded
(service/decision_index.py, `start`): it loads the directory, then each engineer's grants
and tickets the first time a decision asks, while a thread loads the whole index. Its
answers must be those of a whole index all along: before the whole index is in place,
when it is put in place (changes committed while it was read are applied to it first),
and when loading it fails for a while.
"""

from __future__ import annotations

import threading
import time

import pytest
from peewee import OperationalError

from service import create_app, decision_index
from service.decision_index import DecisionIndex
from service.decisions import Check, decide
from tests.conftest import Api, read_check
from tests.test_decision_index import granted, live_grant, refuse
from tests.test_decisions import CLIENT, DECIDE, assign, new_ticket

CHECKED = [
    read_check(principal, tenant, **extra)
    for principal in ("eve", "frank", "alice", "nobody")
    for tenant in ("contoso", "fabrikam", "nowhere")
    for extra in ({}, {"explain": True})
]


@pytest.fixture
def warm_app(app):
    """A second worker on the same database, started as `make serve` starts one."""

    def start():
        config = {key: app.config[key] for key in ("TESTING", "DATABASE_URL", "JWT_SECRET", "POLICY_DIR")}
        config.update(DECISION_LOG=app.config["DECISION_LOG"], CLOCK=app.config["CLOCK"])
        return create_app({**config, "DECISION_INDEX_WARM_START": True})

    yield start
    # A whole load still going would read the next test's database (one peewee database).
    for thread in threading.enumerate():
        if thread.name == "index-warming":
            thread.join(10)
            assert not thread.is_alive(), "a whole load was still going at the end of the test"


def answers(api: Api, checks: list[dict]) -> list[dict]:
    """Each check's answer, without the per-decision id."""
    found = []
    for check in checks:
        body = api.post(DECIDE, CLIENT, check).get_json()
        body.pop("decision_id", None)
        found.append(body)
    return found


def wait_whole(index: DecisionIndex, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while index.warming and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not index.warming, "the whole index was not put in place"


@pytest.fixture
def held_back(monkeypatch):
    """The whole index is built, then held until `release` is set."""
    built, release = threading.Event(), threading.Event()
    put_in_place = DecisionIndex._put_in_place

    def held(index, fresh):
        built.set()
        assert release.wait(10)
        put_in_place(index, fresh)

    monkeypatch.setattr(DecisionIndex, "_put_in_place", held)
    yield built, release
    release.set()  # a test that failed before it let go


def test_a_worker_is_ready_and_answers_as_a_whole_index_before_it_is_whole(api, clock, warm_app, held_back):
    advanced_ticket = assign(api, new_ticket(api, "alice", "contoso", advanced=True))
    granted(api, "eve", "bob", "fabrikam")
    clock.advance(hours=9)  # past the grant's end
    assert api.get("/v1/access-requests", "ops").status_code == 200  # ends it
    live_grant(api)
    closed, _ = granted(api, "frank", "alice", "contoso")
    assert api.post(f"/v1/support-requests/{closed['id']}/close", "frank").status_code == 200
    checks = [*CHECKED, read_check(support_request_id=advanced_ticket["id"])]
    checks.append(read_check("frank", support_request_id=closed["id"]))
    expected = answers(api, checks)
    reasons = {(a["reason"], c["principal"], c["tenant_id"]) for a, c in zip(expected, checks, strict=True)}
    assert {("grant_expired", "eve", "fabrikam"), ("support_request_closed", "frank", "contoso")} <= reasons
    assert {("granted", "eve", "contoso"), ("unknown_principal", "nobody", "contoso")} <= reasons

    worker = warm_app()
    index = worker.extensions["decision_index"]
    assert index.warming and not index.grants and not index.tickets  # the directory only
    warm_api = Api(worker.test_client())
    assert warm_api.get("/readyz", None).status_code == 200
    built, release = held_back
    assert answers(warm_api, checks) == expected
    assert index.warming and set(index.grants) <= {"eve", "frank"}  # what was asked, no more
    assert built.wait(10)  # the first request started the whole load
    release.set()
    wait_whole(index)
    assert answers(warm_api, checks) == expected


def test_a_revocation_made_while_the_whole_index_was_read_holds_when_it_is_put_in_place(
    api, warm_app, held_back
):
    """The whole index was read before the revocation and is put in place after it: it
    must be brought current first, or the decision after the revocation's answer would
    allow once more."""
    request_id = live_grant(api)
    worker = warm_app()
    warm_api = Api(worker.test_client())
    built, release = held_back
    assert warm_api.post(DECIDE, CLIENT, read_check()).get_json()["allowed"] is True
    assert built.wait(10)  # read while the grant was live
    assert api.post(f"/v1/access-requests/{request_id}/revoke", "alice").status_code == 200
    assert warm_api.post(DECIDE, CLIENT, read_check()).get_json()["reason"] == "no_active_grant"
    release.set()
    wait_whole(worker.extensions["decision_index"])
    assert warm_api.post(DECIDE, CLIENT, read_check()).get_json()["reason"] == "no_active_grant"


def test_a_failed_whole_load_is_tried_again_and_answers_stay_exact_meanwhile(api, warm_app, monkeypatch):
    monkeypatch.setattr(decision_index, "FINISH_RETRY_SECONDS", 0.05)
    built = DecisionIndex._built
    failures: list[int] = []

    def fail_twice(index, now):
        if len(failures) < 2:
            failures.append(1)
            raise OperationalError("database is locked")
        return built(index, now)

    monkeypatch.setattr(DecisionIndex, "_built", fail_twice)
    request_id = live_grant(api)
    worker = warm_app()
    warm_api = Api(worker.test_client())
    assert warm_api.post(DECIDE, CLIENT, read_check()).get_json()["allowed"] is True
    assert api.post(f"/v1/access-requests/{request_id}/revoke", "alice").status_code == 200
    assert warm_api.post(DECIDE, CLIENT, read_check()).get_json()["reason"] == "no_active_grant"
    wait_whole(worker.extensions["decision_index"])
    assert len(failures) == 2
    assert warm_api.post(DECIDE, CLIENT, read_check()).get_json()["reason"] == "no_active_grant"


def test_a_long_backlog_while_warming_loads_the_whole_index_at_once(api, warm_app, monkeypatch, held_back):
    """More new events than the index holds tickets (plus RELOAD_ALL_AFTER): a warming
    index loads the whole index there and then, as a whole one does. Warming again from
    the directory would drop what another thread has just warmed for its decision."""
    first = live_grant(api)
    worker = warm_app()
    warm_api = Api(worker.test_client())
    index = worker.extensions["decision_index"]
    assert warm_api.post(DECIDE, CLIENT, read_check()).get_json()["allowed"] is True
    monkeypatch.setattr(decision_index, "RELOAD_ALL_AFTER", 0)
    monkeypatch.setattr(DecisionIndex, "start", refuse("start"))
    second = live_grant(api)
    assert api.post(f"/v1/access-requests/{first}/revoke", "alice").status_code == 200
    index.sync()  # on the next request's thread: what `warm_for` loaded stays until the swap
    assert not index.warming and index._warm_engineers == set()
    body = warm_api.post(DECIDE, CLIENT, read_check(explain=True)).get_json()
    assert body["allowed"] is True
    assert [e["access_request_id"] for e in body["explain"] if e["effect"] == "allow"] == [second]
    held_back[1].set()  # the thread's own whole index, built meanwhile, is not put in place


def test_a_principal_without_a_role_is_warmed_too(app, api, clock):
    """Another thread may give it a role between its warm-up and its decision (here: in
    that order on one thread); its grants must be there when the decision reads them."""
    ticket, _ = granted(api, "eve", "alice", "contoso")
    assert api.post(f"/v1/support-requests/{ticket['id']}/close", "eve").status_code == 200
    role = "/v1/tenants/provider/role-assignments"
    assert api.delete(f"{role}/eve/Support Engineer", "ops").status_code in (200, 204)
    policy = app.extensions["policy_store"].current
    provider = app.extensions["decision_index"].provider
    check = Check("eve", "contoso", "read", "diagnostics/signInLogs", None)
    with app.app_context():
        warming = DecisionIndex(app.extensions["decision_index"].signal, policy.timing.retention, clock)
        warming.start(clock())
        warming.warm_for([check])
        assert decide(policy, warming, check, clock(), provider).reason == "unknown_principal"
        given = api.put(role, "ops", {"principal": "eve", "role": "Support Engineer"})
        assert given.status_code in (200, 201), given.get_json()
        warming.sync()
        answer = decide(policy, warming, check, clock(), provider)
        assert (answer.allowed, answer.reason) == (False, "support_request_closed")


def test_a_cli_command_loads_only_the_directory(app, warm_app, api):
    """Outside a server (a CLI command) nothing starts the whole load: no thread."""
    live_grant(api)
    worker = warm_app()
    index = worker.extensions["decision_index"]
    result = worker.test_cli_runner().invoke(args=["policy", "check"])
    assert result.exit_code == 0, result.output
    assert index.warming and not index.grants
    assert not [t for t in threading.enumerate() if t.name == "index-warming"]
