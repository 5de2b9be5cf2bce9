"""The service as `make serve` runs it: several worker processes, each with its own
decision index, and allowed reads committed before their answer leaves."""

from __future__ import annotations

import http.client
import json
import sqlite3
import threading
import time

from service import audit
from service.policy import REPO_POLICY_DIR
from tests.conftest import auth, read_check
from tests.served import call, served

CONNECTIONS = 12


def _approved_request(port: int) -> tuple[str, str]:
    body = {"tenant_id": "fabrikam", "resource_tenant_id": "contoso", "title": "t"}
    status, ticket = call(port, "POST", "/v1/support-requests", "bob", body)
    assert status == 201, ticket
    assert (
        call(port, "POST", f"/v1/support-requests/{ticket['id']}/assign", "eve", {"engineer": "eve"})[0]
        == 200
    )
    body = {"support_request_id": ticket["id"], "justification": "j"}
    status, request = call(port, "POST", "/v1/access-requests", "eve", body)
    assert status == 201, request
    url = f"/v1/access-requests/{request['id']}/approve"
    assert call(port, "POST", url, "alice", {"tenant_id": "contoso"})[0] == 200
    status, approved = call(port, "POST", url, "bob", {"tenant_id": "fabrikam"})
    assert approved["status"] == "approved", approved
    return ticket["id"], request["id"]


class Client:
    """One kept-alive connection, so it stays with the worker that accepted it."""

    def __init__(self, port: int):
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.headers = {"Content-Type": "application/json", **auth("diag-tool")}
        self.pid = self.get("/healthz")["pid"]

    def get(self, path: str) -> dict:
        self.connection.request("GET", path)
        return json.loads(self.connection.getresponse().read())

    def decide(self, check: dict) -> dict:
        self.connection.request("POST", "/v1/decisions", json.dumps(check), self.headers)
        answer = self.connection.getresponse()
        assert answer.status == 200
        return json.loads(answer.read())


def _clients_on_two_workers(port: int) -> list[Client]:
    """Kept-alive connections spread over at least two workers. The kernel hands new
    connections to whichever worker accepts first, so open more until two answer."""
    clients = [Client(port) for _ in range(CONNECTIONS)]
    for _ in range(200):
        if len({client.pid for client in clients}) >= 2:
            return clients
        time.sleep(0.01)
        clients.append(Client(port))
    raise AssertionError("the connections did not reach two workers")


def test_a_revocation_is_in_force_in_every_worker_before_its_answer_returns(tmp_path):
    with served(tmp_path, REPO_POLICY_DIR, workers=2) as (port, _):
        clients = _clients_on_two_workers(port)
        for _round in range(3):
            ticket_id, request_id = _approved_request(port)
            check = read_check(support_request_id=ticket_id)
            assert all(client.decide(check)["allowed"] for client in clients)  # every worker allows
            stop, revoked_at, answers = threading.Event(), [], []

            def ask(client: Client, check=check, stop=stop, answers=answers) -> None:
                while not stop.is_set():
                    sent = time.monotonic()
                    answers.append((sent, client.pid, client.decide(check)["allowed"]))

            threads = [threading.Thread(target=ask, args=(client,)) for client in clients]
            for thread in threads:
                thread.start()
            time.sleep(0.2)
            status, body = call(port, "POST", f"/v1/access-requests/{request_id}/revoke", "alice")
            revoked_at.append(time.monotonic())
            assert status == 200 and body["status"] == "revoked", body
            time.sleep(0.3)
            stop.set()
            for thread in threads:
                thread.join(timeout=10)
            after = [(pid, allowed) for sent, pid, allowed in answers if sent > revoked_at[0]]
            assert after and not any(allowed for _, allowed in after), "an allow after the revocation"
            assert len({pid for pid, _ in after}) >= 2, "only one worker answered after the revocation"
            assert any(allowed for sent, _, allowed in answers if sent < revoked_at[0])


def test_an_allowed_answer_is_sent_only_after_its_read_is_committed(
    app, api, approved_request, tmp_path, monkeypatch
):
    real_append = audit.append

    def slow_append(events):
        time.sleep(0.2)  # if the answer did not wait for the commit, it would leave first
        real_append(events)

    monkeypatch.setattr("service.audit.append", slow_append)
    answer = api.post("/v1/decisions", "diag-tool", read_check()).get_json()
    assert answer["allowed"] is True
    # Read through a connection of our own: what is committed, not what one session sees.
    with sqlite3.connect(tmp_path / "test.db") as outside:
        rows = outside.execute(
            "SELECT details FROM auditevent WHERE activity = 'diagnostics.read'"
        ).fetchall()
    assert [json.loads(details)["decision_id"] for (details,) in rows] == [answer["decision_id"]]


def test_concurrent_allowed_reads_share_transactions(app, approved_request, tmp_path, monkeypatch):
    real_append = audit.append
    monkeypatch.setattr("service.audit.append", lambda events: (time.sleep(0.02), real_append(events)))
    recorder = app.extensions["read_recorder"]
    before = recorder.commits
    decision_ids: list[str] = []

    def ask() -> None:
        client = app.test_client()
        for _ in range(5):
            body = client.post("/v1/decisions", json=read_check(), headers=auth("diag-tool")).get_json()
            assert body["allowed"] is True
            decision_ids.append(body["decision_id"])

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(decision_ids) == 40
    assert recorder.commits - before < 40  # reads were grouped into fewer transactions
    with sqlite3.connect(tmp_path / "test.db") as outside:
        rows = outside.execute(
            "SELECT details FROM auditevent WHERE activity = 'diagnostics.read'"
        ).fetchall()
    assert sorted(json.loads(details)["decision_id"] for (details,) in rows) == sorted(decision_ids)
