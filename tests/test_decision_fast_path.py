"""The WSGI fast path for the decision routes answers exactly as the Flask routes do."""

from __future__ import annotations

import io
import json
import time

import pytest
from werkzeug.test import Client

from service.decision_endpoint import FastDecisions
from tests.conftest import auth, read_check, token


def _without_ids(body):
    """Answers compared without their decision ids (unique per decision by design)."""
    if isinstance(body, dict):
        return {k: _without_ids(v) for k, v in body.items() if k != "decision_id"}
    if isinstance(body, list):
        return [_without_ids(v) for v in body]
    return body


def _cases(ticket_id: str) -> list[tuple[str, str, dict, bytes]]:
    """(name, path, headers, body) of requests that cover every answer and error."""
    client = {**auth("diag-tool"), "Content-Type": "application/json"}
    single, batch = "/v1/decisions", "/v1/decisions/batch"

    def dumps(value) -> bytes:
        return json.dumps(value).encode()

    return [
        ("allowed", single, client, dumps(read_check())),
        ("allowed with explain", single, client, dumps(read_check(explain=True))),
        ("denied, other tenant", single, client, dumps(read_check(tenant_id="fabrikam", explain=True))),
        ("denied, write", single, client, dumps({**read_check(), "action": "write"})),
        ("denied, not diagnostic", single, client, dumps(read_check(resource="users/1", explain=True))),
        (
            "batch, one not diagnostic",
            batch,
            client,
            dumps({"checks": [read_check(), read_check(resource="x")]}),
        ),
        ("ticket that matches", single, client, dumps(read_check(support_request_id=ticket_id))),
        ("batch", batch, client, dumps({"checks": [read_check(), read_check(principal="frank")] * 3})),
        ("no token", single, {"Content-Type": "application/json"}, dumps(read_check())),
        ("bad token", single, {"Authorization": "Bearer x.y.z", "Content-Type": "application/json"}, b"{}"),
        (
            "not a decision client",
            single,
            {**auth("eve"), "Content-Type": "application/json"},
            dumps(read_check()),
        ),
        ("not JSON", single, {**auth("diag-tool"), "Content-Type": "text/plain"}, b"hello"),
        ("invalid JSON", single, client, b"{nope"),
        ("not an object", single, client, b"[1, 2]"),
        ("null", single, client, b"null"),
        ("NUL in a field", single, client, dumps(read_check(principal="eve\u0000"))),
        ("NUL in a batch", batch, client, dumps({"checks": [read_check(), read_check(tenant_id="a\u0000")]})),
        ("a backslash, not a NUL", single, client, dumps(read_check(principal="eve\\u0000"))),
        ("empty body", single, client, b""),
        ("unknown field", single, client, dumps({**read_check(), "colour": "red"})),
        ("upper-case action", single, client, dumps({**read_check(), "action": "READ"})),
        ("too many checks", batch, client, dumps({"checks": [read_check()] * 1001})),
        ("no checks", batch, client, dumps({"checks": []})),
        ("too large", batch, client, b" " * (3 * 1024 * 1024)),
        ("a query, which the routes ignore", single + "?explain=1", client, dumps(read_check())),
        ("a query that is not UTF-8", single + "?x=%FF", client, dumps(read_check())),
        ("a NUL in a query", batch + "?x=a%00b", client, dumps({"checks": [read_check()]})),
    ]


@pytest.fixture
def flask_only(app):
    """A client for the same app with the fast path skipped."""
    fast = app.wsgi_app.next  # inside service.unread_body.ReadUnreadBody
    assert isinstance(fast, FastDecisions)
    return Client(fast.next)


def test_fast_path_and_flask_routes_give_the_same_answers(app, client, flask_only, approved_request, ticket):
    for name, path, headers, body in _cases(ticket["id"]):
        fast = client.post(path, headers=headers, data=body)
        reference = flask_only.post(path, headers=headers, data=body)
        assert fast.status_code == reference.status_code, name
        assert fast.mimetype == "application/json", name
        fast_body, reference_body = json.loads(fast.data), json.loads(reference.data)
        assert _without_ids(fast_body) == _without_ids(reference_body), name


def test_fast_path_answers_decisions_and_records_reads(app, client, approved_request):
    answer = client.post("/v1/decisions", json=read_check(), headers=auth("diag-tool"))
    assert answer.status_code == 200 and answer.get_json()["allowed"] is True
    events = client.get("/v1/audit-events?tenant_id=contoso&activity=diagnostics.read", headers=auth("alice"))
    assert [e["details"]["decision_id"] for e in events.get_json()["items"]] == [
        answer.get_json()["decision_id"]
    ]


def decisions_counted(client, allowed: str, reason: str) -> float:
    """support_access_decisions_total{allowed, reason} as /metrics shows it."""
    prefix = f'support_access_decisions_total{{allowed="{allowed}",reason="{reason}"}} '
    lines = client.get("/metrics").get_data(as_text=True).splitlines()
    return next((float(line[len(prefix) :]) for line in lines if line.startswith(prefix)), 0.0)


def test_metrics_count_decisions_by_outcome_and_reason(client, approved_request):
    granted, read_only = (
        decisions_counted(client, "true", "granted"),
        decisions_counted(client, "false", "read_only"),
    )
    assert client.post("/v1/decisions", json=read_check(), headers=auth("diag-tool")).status_code == 200
    checks = [read_check(), read_check(), read_check(action="write")]
    answer = client.post("/v1/decisions/batch", json={"checks": checks}, headers=auth("diag-tool"))
    assert answer.status_code == 200
    assert decisions_counted(client, "true", "granted") == granted + 3
    assert decisions_counted(client, "false", "read_only") == read_only + 1
    refused = client.post("/v1/decisions", json={"principal": "eve"}, headers=auth("diag-tool"))
    assert refused.status_code == 400  # no answer, nothing counted
    assert decisions_counted(client, "true", "granted") == granted + 3


def test_other_methods_and_paths_still_go_to_flask(client):
    assert client.get("/v1/decisions", headers=auth("diag-tool")).status_code == 405
    assert client.post("/v1/decisions/other", headers=auth("diag-tool")).status_code == 404
    expired = {"Authorization": f"Bearer {token('diag-tool')}x"}
    assert client.post("/v1/decisions", headers=expired, json=read_check()).status_code == 401


class SlowBody(io.BytesIO):
    """A request body that arrives slowly: while it is read, `meanwhile` runs."""

    def __init__(self, data: bytes, meanwhile):
        super().__init__(data)
        self.meanwhile = meanwhile

    def _arriving(self) -> None:
        if self.meanwhile is not None:
            self.meanwhile, meanwhile = None, self.meanwhile
            meanwhile()

    def read(self, *args):
        self._arriving()
        return super().read(*args)

    def readinto(self, buffer):  # how Werkzeug's request.stream reads it
        self._arriving()
        return super().readinto(buffer)


def post_slowly(client, url: str, body: bytes, meanwhile):
    """A decision client's POST whose body arrives slowly: `meanwhile` runs as it is read."""
    return client.post(
        url,
        headers=auth("diag-tool"),
        content_type="application/json",
        content_length=len(body),
        input_stream=SlowBody(body, meanwhile),
    )


@pytest.mark.parametrize("fast", [True, False])
def test_a_revocation_answered_while_a_body_arrives_is_in_force_in_the_answer(
    app, approved_request, flask_only, client, fast
):
    """A decision reads the index again once its body is in: a client sending slowly
    gets no allow decided from the state before a revocation answered meanwhile."""
    from tests.test_read_journal import revoke_from_another_thread

    body = json.dumps(read_check()).encode()

    def revoke() -> None:
        revoke_from_another_thread(app, approved_request["id"])

    answer = post_slowly(client if fast else flask_only, "/v1/decisions", body, revoke)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.get_json()["allowed"] is False


@pytest.mark.parametrize("fast", [True, False])
def test_a_decision_client_removed_while_its_body_arrives_gets_no_answer(app, flask_only, client, fast):
    """The caller's role is checked again once the body is in: a decision client removed
    by an operator meanwhile gets a 403, not the decisions it asked for."""
    from tests.test_read_journal import from_another_thread

    removed = []

    def remove_the_client() -> None:
        url = "/v1/tenants/provider/role-assignments/diag-tool/Decision Client"
        from_another_thread(app, "DELETE", url, "ops", status=204)
        removed.append(url)

    body = json.dumps({"checks": [read_check()]}).encode()
    answer = post_slowly(client if fast else flask_only, "/v1/decisions/batch", body, remove_the_client)
    assert len(removed) == 1
    assert answer.status_code == 403, answer.get_data(as_text=True)
    assert answer.get_json()["error"]["code"] == "not_decision_client"


@pytest.mark.parametrize("fast", [True, False])
def test_an_index_that_cannot_catch_up_with_the_store_is_a_503_not_an_answer(
    app, approved_request, flask_only, client, monkeypatch, fast
):
    """Each sync is slow and another change always came meanwhile: after
    decision_endpoint.SYNC_ATTEMPTS syncs the index may still miss a revocation, so
    nothing is decided from it (SPEC §6: fail closed)."""
    from service import decision_endpoint

    index = app.extensions["decision_index"]
    monkeypatch.setattr(decision_endpoint, "SLOW_SYNC", -1.0)  # every sync counts as slow
    monkeypatch.setattr(index, "is_current", lambda: False)

    answer = (client if fast else flask_only).post(
        "/v1/decisions", json=read_check(), headers=auth("diag-tool")
    )

    assert answer.status_code == 503, answer.get_data(as_text=True)
    assert answer.get_json()["error"]["code"] == "store_unavailable"


@pytest.mark.parametrize("fast", [True, False])
def test_a_revocation_answered_while_the_index_syncs_is_in_force(
    app, api, approved_request, flask_only, client, monkeypatch, fast
):
    """The last sync before deciding stalls (its store query, reloading a ticket changed
    while the body arrived) while access is removed: it is done again, so the removal is
    in force in the answer."""
    from tests.test_read_journal import from_another_thread, revoke_from_another_thread

    # Another ticket, whose change the last sync applies (a ticket's reload also reloads
    # its own grants, so it must not be the ticket of the grant removed).
    other = api.post("/v1/support-requests", "bob", {"tenant_id": "fabrikam", "title": "Another problem"})
    assert other.status_code == 201, other.get_json()
    assert api.post("/v1/decisions", "diag-tool", read_check()).get_json()["allowed"] is True  # index current
    index = app.extensions["decision_index"]
    reload_ticket, hung = index._reload_ticket, []

    def stalls_while_access_is_removed(ticket_id):
        if not hung:
            hung.append(ticket_id)
            revoke_from_another_thread(app, approved_request["id"])
            time.sleep(0.05)  # a stall, longer than a sync takes
        return reload_ticket(ticket_id)

    monkeypatch.setattr(index, "_reload_ticket", stalls_while_access_is_removed)
    body = json.dumps(read_check()).encode()

    def ticket_changes():  # another client's change, for the last sync to apply
        url = f"/v1/support-requests/{other.get_json()['id']}"
        from_another_thread(app, "PATCH", url, "bob", {"allow_advanced_diagnostics": True})

    answer = post_slowly(client if fast else flask_only, "/v1/decisions", body, ticket_changes)
    assert hung == [other.get_json()["id"]]
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.get_json()["allowed"] is False
