"""The fast decision path agrees with a plain casbin.Enforcer on random states.

Hypothesis draws a directory, tickets and access requests in every state, then random
checks. The reference builds a fresh `casbin.Enforcer` from policies/access.conf with
the access.yaml rules as p rows and every live grant / advanced-diagnostics ticket as a g
link, straight from the database rows, and asks it. The service answers from its
in-memory index and per-version caches. The two must agree on every allow/deny.
"""

from __future__ import annotations

import json
from datetime import timedelta

import casbin
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models import AccessRequest, RoleAssignment, SupportRequest, Tenant, database
from service import create_app
from service.decisions import Check, decide
from service.policy import REPO_POLICY_DIR
from tests.conftest import SECRET, START

TENANTS = ["t0", "t1", "t2", "t3"]
ENGINEERS = ["e0", "e1", "e2"]
CATEGORIES = ["signInLogs", "auditLogs", "riskDetections", "notACategory"]
ACTIONS = ["read", "read", "read", "write"]
# Weighted towards live grants, the interesting case.
STATUSES = ["approved"] * 5 + ["pending", "revoked", "completed", "cancelled"]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    path = tmp_path_factory.mktemp("property") / "property.db"
    config = {
        "TESTING": True,
        "DATABASE_URL": f"sqlite:///{path}",
        "JWT_SECRET": SECRET,
        "POLICY_DIR": str(REPO_POLICY_DIR),
        "DECISION_LOG": "",
        "CLOCK": lambda: START,
    }
    return create_app(config)


tickets_strategy = st.lists(
    st.fixed_dictionaries(
        {
            "tenant": st.sampled_from(TENANTS[:3]),
            "resource": st.sampled_from(TENANTS[:3]),
            "engineer": st.sampled_from([*ENGINEERS, *ENGINEERS, None]),
            "advanced": st.booleans(),
            "open": st.sampled_from([True, True, True, False]),
        }
    ),
    min_size=1,
    max_size=5,
)
requests_strategy = st.lists(
    st.fixed_dictionaries(
        {
            "ticket": st.integers(0, 4),
            # None: the engineer assigned to the ticket (the usual case)
            "engineer": st.sampled_from([None, None, None, None, *ENGINEERS]),
            "status": st.sampled_from(STATUSES),
            "hours_left": st.integers(-3, 8),  # access_expires_at relative to now
        }
    ),
    min_size=1,
    max_size=6,
)
check_fields = {
    "principal": st.sampled_from([*ENGINEERS, *ENGINEERS, "admin", "nobody"]),
    "tenant": st.sampled_from(TENANTS),
    "action": st.sampled_from(ACTIONS),
    "category": st.sampled_from(CATEGORIES),
    "ticket": st.one_of(st.none(), st.integers(0, 5)),
    # Aim at access request N: its engineer and resource tenant (most checks
    # otherwise miss every grant).
    "aim": st.sampled_from([None, 0, 0, 0, 1, 1, 2, 3, 4, 5]),
    # An aimed check names the aimed request's ticket, none, or the drawn one.
    "aimed_ticket": st.sampled_from(["aimed", "none", "drawn"]),
}
# Half the checks are reads of a real category aimed at a request, so that the allow
# paths (a grant, a grant for one ticket, advanced diagnostics) are compared often too.
aimed_read = {
    **check_fields,
    "action": st.just("read"),
    "category": st.sampled_from(CATEGORIES[:3]),
    "aim": st.integers(0, 5),
}
checks_strategy = st.lists(
    st.one_of(st.fixed_dictionaries(check_fields), st.fixed_dictionaries(aimed_read)),
    min_size=1,
    max_size=8,
)


def _store(tickets, requests, engineers_with_role) -> None:
    for model in (AccessRequest, SupportRequest, RoleAssignment, Tenant):
        model.delete().execute()
    for tenant in ["provider", *TENANTS[:3]]:
        Tenant.create(id=tenant, name=tenant, created_at=START)
    for engineer in engineers_with_role:
        RoleAssignment.create(
            tenant_id="provider", principal=engineer, role="Support Engineer", created_at=START
        )
    RoleAssignment.create(tenant_id="t0", principal="admin", role="Global Administrator", created_at=START)
    for number, ticket in enumerate(tickets):
        SupportRequest.create(
            id=f"sr{number}",
            tenant_id=ticket["tenant"],
            resource_tenant_id=ticket["resource"],
            title="t",
            status="open" if ticket["open"] else "closed",
            allow_advanced_diagnostics=ticket["advanced"],
            assigned_engineer=ticket["engineer"],
            created_by="x",
            created_at=START - timedelta(days=1),
            closed_at=None if ticket["open"] else START - timedelta(hours=1),
        )
    for number, request in enumerate(requests):
        if request["ticket"] >= len(tickets):
            continue
        ticket = tickets[request["ticket"]]
        request["engineer"] = request["engineer"] or ticket["engineer"] or "e0"
        expires = START + timedelta(hours=request["hours_left"])
        live = request["status"] in ("pending", "approved")
        AccessRequest.create(
            id=f"ar{number}",
            support_request=f"sr{request['ticket']}",
            engineer=request["engineer"],
            resource_tenant_id=ticket["resource"],
            support_request_tenant_id=ticket["tenant"],
            justification="j",
            status=request["status"],
            requirements=json.dumps([{"party": "resource", "approvals": 1}]),
            policy_version="x",
            created_at=START - timedelta(hours=9),
            expires_at=START + timedelta(hours=15),
            approved_at=None if request["status"] == "pending" else START - timedelta(hours=1),
            access_expires_at=None if request["status"] == "pending" else expires,
            finished_at=None if live else min(expires, START),
            support_request_view_status=request["status"],
        )


def _reference(policy, check: Check, engineers_with_role: set[str]) -> bool:
    """Plain Casbin: every live link as a g row, asked once."""
    if check.action not in policy.allowed_actions or check.principal not in engineers_with_role:
        return False
    if check.resource.split("/", 1)[1] not in policy.categories:
        return False
    enforcer = casbin.Enforcer(casbin.Enforcer.new_model(path=str(REPO_POLICY_DIR / "access.conf")))
    for rule in policy.access_rules:
        enforcer.add_policy(*rule.values)
    wanted = check.support_request_id
    for request in AccessRequest.select().join(SupportRequest):
        ticket = request.support_request
        if (
            request.status == "approved"
            and request.access_expires_at > START
            and ticket.status == "open"
            and ticket.assigned_engineer == request.engineer
            and wanted in (None, ticket.id)
        ):
            enforcer.add_grouping_policy(request.engineer, "grant", request.resource_tenant_id)
    for ticket in SupportRequest.select():
        if ticket.status == "open" and ticket.allow_advanced_diagnostics and ticket.assigned_engineer:
            if wanted in (None, ticket.id):
                enforcer.add_grouping_policy(
                    ticket.assigned_engineer, "advanced_diagnostics", ticket.tenant_id
                )
    return enforcer.enforce(check.principal, check.tenant_id, check.resource, check.action)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    tickets=tickets_strategy,
    requests=requests_strategy,
    checks=checks_strategy,
    engineers_with_role=st.sets(st.sampled_from(ENGINEERS), min_size=2),
)
def test_fast_path_agrees_with_plain_casbin(app, tickets, requests, checks, engineers_with_role):
    with app.app_context(), database.atomic():
        _store(tickets, requests, engineers_with_role)
    index = app.extensions["decision_index"]
    index.load(START)
    policy = app.extensions["policy_store"].current
    for drawn in checks:
        aimed = requests[drawn["aim"]] if drawn["aim"] is not None and drawn["aim"] < len(requests) else None
        if aimed is not None and aimed["ticket"] < len(tickets):
            drawn["principal"] = aimed["engineer"]
            drawn["tenant"] = tickets[aimed["ticket"]]["resource"]
            if drawn["aimed_ticket"] != "drawn":
                drawn["ticket"] = aimed["ticket"] if drawn["aimed_ticket"] == "aimed" else None
        ticket = None if drawn["ticket"] is None else f"sr{drawn['ticket']}"
        check = Check(
            drawn["principal"], drawn["tenant"], drawn["action"], f"diagnostics/{drawn['category']}", ticket
        )
        with app.app_context():
            expected = _reference(policy, check, engineers_with_role)
        answer = decide(policy, index, check, START, "provider")
        assert answer.allowed == expected, (check, answer.reason)
        if not answer.allowed:
            assert answer.reason != "granted"
