"""The decision index stays exact: after any sequence of workflow steps, the index of a
long-running worker (kept current change by change) answers exactly what an index loaded
fresh from the database answers: the same allows, and the same reasons for denies.

Random steps through the HTTP API (file, assign and reassign, request, approve, revoke,
close, toggle advanced diagnostics, time passing beyond expiry and retention, a role
given or taken away); after each one, both indexes answer the same checks.
"""

from __future__ import annotations

import random

import pytest
from peewee import OperationalError

from service.decision_index import DecisionIndex
from service.decisions import Check, decide
from service.state_signal import ProcessCounter
from tests.conftest import read_check

ENGINEERS = ["eve", "frank"]
TENANTS = ["contoso", "fabrikam"]
STEPS = ["ticket", "assign", "assign", "request", "request", "approve", "approve", "approve"]
STEPS += ["revoke", "close", "advanced", "time", "role"]
# More grants, and more of them ended (closed, expired, revoked) before the index starts.
GRANTING_STEPS = STEPS + ["assign", "request", "request"] + ["approve"] * 8 + ["time", "close"]
# (filing admin, ticket tenant, resource tenant) and (approver, tenant) from tests/directory.yaml
FILERS = [("bob", "fabrikam", "contoso"), ("alice", "contoso", None), ("dana", "contoso", "fabrikam")]
APPROVERS = [("alice", "contoso"), ("alice2", "contoso"), ("bob", "fabrikam"), ("dana", "fabrikam")]


def answers_of_both(app, clock, checks: list[Check]) -> list[tuple[Check, tuple, tuple]]:
    policy = app.extensions["policy_store"].current
    provider = app.extensions["decision_index"].provider
    with app.app_context():
        fresh = DecisionIndex(ProcessCounter(), policy.timing.retention)
        fresh.load(clock())
        running = app.extensions["decision_index"]
        running.sync()
        answers = []
        for check in checks:
            by_running = decide(policy, running, check, clock(), provider)
            by_fresh = decide(policy, fresh, check, clock(), provider)
            answers.append(
                (check, (by_running.allowed, by_running.reason), (by_fresh.allowed, by_fresh.reason))
            )
        return answers


def take_step(
    api, clock, rng: random.Random, tickets: list[str], requests: list[str], choices: list[str] = STEPS
) -> str:
    step = rng.choice(choices)
    if step == "ticket":
        admin, tenant, resource = rng.choice(FILERS)
        body = {"tenant_id": tenant, "title": "t", "allow_advanced_diagnostics": rng.random() < 0.3}
        if resource:
            body["resource_tenant_id"] = resource
        created = api.post("/v1/support-requests", admin, body)
        if created.status_code == 201:
            tickets.append(created.get_json()["id"])
    elif step == "assign" and tickets:
        engineer = rng.choice(ENGINEERS)
        body = {"engineer": engineer}
        api.post(f"/v1/support-requests/{rng.choice(tickets)}/assign", rng.choice([engineer, "ops"]), body)
    elif step == "request" and tickets:
        body = {"support_request_id": rng.choice(tickets), "justification": "j"}
        filed = api.post("/v1/access-requests", rng.choice(ENGINEERS), body)
        if filed.status_code == 201:
            requests.append(filed.get_json()["id"])
    elif step == "approve" and requests:
        approver, tenant = rng.choice(APPROVERS)
        api.post(f"/v1/access-requests/{rng.choice(requests)}/approve", approver, {"tenant_id": tenant})
    elif step == "revoke" and requests:
        api.post(f"/v1/access-requests/{rng.choice(requests)}/revoke", rng.choice(["alice", "dana"]))
    elif step == "close" and tickets:
        api.post(f"/v1/support-requests/{rng.choice(tickets)}/close", rng.choice(["bob", "alice", "eve"]))
    elif step == "advanced" and tickets:
        body = {"allow_advanced_diagnostics": rng.random() < 0.5}
        api.patch(f"/v1/support-requests/{rng.choice(tickets)}", rng.choice(["bob", "alice", "dana"]), body)
    elif step == "time":
        clock.advance(hours=rng.choice([1, 5, 9, 24 * 20, 24 * 40]))  # past expiry, past retention
        api.get("/v1/access-requests", "ops")  # listing applies the timed transitions
    elif step == "role":
        engineer = rng.choice(ENGINEERS)
        if rng.random() < 0.5:
            api.delete(f"/v1/tenants/provider/role-assignments/{engineer}/Support Engineer", "ops")
        else:
            body = {"principal": engineer, "role": "Support Engineer"}
            api.put("/v1/tenants/provider/role-assignments", "ops", body)
    return step


@pytest.mark.parametrize("seed", range(100))
def test_a_running_index_answers_as_a_fresh_one(app, api, clock, seed):
    rng = random.Random(seed)
    tickets: list[str] = []
    requests: list[str] = []
    steps: list[str] = []
    for _ in range(40):
        steps.append(take_step(api, clock, rng, tickets, requests))
        checks = [
            Check(engineer, tenant, "read", "diagnostics/signInLogs", ticket)
            for engineer in ENGINEERS
            for tenant in TENANTS
            for ticket in [None, *tickets[-3:]]
        ]
        for check, running, fresh in answers_of_both(api.client.application, clock, checks):
            assert running == fresh, (steps, check, running, fresh)


@pytest.mark.parametrize("seed", range(60))
def test_a_warming_index_answers_as_a_fresh_one(app, api, clock, seed):
    """A worker's index while it warms (service/decision_index.py, `start`): loaded
    engineer by engineer as decisions ask, in random order, while changes go on; the whole
    index is read at one step and put in place at a later one."""
    rng = random.Random(seed)
    policy = app.extensions["policy_store"].current
    provider = app.extensions["decision_index"].provider
    start_at = rng.randrange(30)
    read_at = rng.randrange(start_at, 50)
    put_at = rng.randrange(read_at, 50)
    tickets: list[str] = []
    requests: list[str] = []
    steps: list[str] = []
    for step in range(40):
        steps.append(take_step(api, clock, rng, tickets, requests, GRANTING_STEPS))
        if step < start_at:
            continue
        checks = [
            Check(engineer, tenant, "read", "diagnostics/signInLogs", ticket)
            for engineer in ENGINEERS
            for tenant in TENANTS
            for ticket in [None, *tickets[-3:]]
        ]
        asked = rng.sample(checks, rng.randint(1, len(checks)))
        with app.app_context():
            if step == start_at:
                signal = app.extensions["decision_index"].signal  # to hear of the changes
                warming = DecisionIndex(signal, policy.timing.retention, clock)
                warming.start(clock())
            if step == read_at:
                whole = warming._built(clock())
            if step == put_at:
                warming._put_in_place(whole)
            warming.sync()
            warming.warm_for(asked)
            fresh = DecisionIndex(ProcessCounter(), policy.timing.retention)
            fresh.load(clock())
            for check in asked:
                by_warming = decide(policy, warming, check, clock(), provider)
                by_fresh = decide(policy, fresh, check, clock(), provider)
                answer = (by_warming.allowed, by_warming.reason)
                expected = (by_fresh.allowed, by_fresh.reason)
                assert answer == expected, (steps, start_at, read_at, put_at, check, answer, expected)
    assert warming.warming == (put_at >= 40)


def test_a_change_whose_reload_failed_is_read_again(app, api, approved_request, monkeypatch):
    """The database went away in the middle of applying a revocation: that decision may
    fail, but no later one may allow as if the revocation had been applied."""
    assert api.post("/v1/decisions", "diag-tool", read_check()).get_json()["allowed"] is True
    assert api.post(f"/v1/access-requests/{approved_request['id']}/revoke", "alice").status_code == 200
    reload_grant = DecisionIndex._reload_grant
    failures = []

    def fail_once(index, request_id):
        if not failures:
            failures.append(request_id)
            raise OperationalError("connection reset")
        return reload_grant(index, request_id)

    monkeypatch.setattr(DecisionIndex, "_reload_grant", fail_once)
    during = api.post("/v1/decisions", "diag-tool", read_check())
    assert failures and during.status_code == 503, during.get_json()
    after = api.post("/v1/decisions", "diag-tool", read_check()).get_json()
    assert after["allowed"] is False and after["reason"] == "no_active_grant", after
