"""Support access requests through HTTP: SPEC §3–§5, API.md "Support access requests".

The `ticket` fixture is cross-tenant: filed by fabrikam (bob) about contoso (alice),
assigned to eve. dana administers both tenants, alice2 is a second contoso admin, nina
administers only northwind, carol (Global Reader) and sam (Security Reader) hold no
support-ticket role, frank is another engineer, ops the operator.
"""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest

from models import AccessRequest, database
from tests.conftest import Api, read_check
from tests.helpers import counting_queries, error_of, parse_time

REQUESTS = "/v1/access-requests"
TICKETS = "/v1/support-requests"


def url(request: dict, action: str | None = None) -> str:
    return f"{REQUESTS}/{request['id']}" + (f"/{action}" if action else "")


def approve(api, request, who, tenant_id):
    return api.post(url(request, "approve"), who, {"tenant_id": tenant_id})


def status_seen_by(api, request, who, query="") -> str:
    answer = api.get(url(request) + query, who)
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json()["status"]


def audit_events(api, tenant_id, who, activity=None) -> list[dict]:
    query = f"/v1/audit-events?tenant_id={tenant_id}" + (f"&activity={activity}" if activity else "")
    answer = api.get(query, who)
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json()["items"]


def activities_for(api, tenant_id, who, target) -> list[str]:
    return [e["activity"] for e in audit_events(api, tenant_id, who) if e["target"] == target]


def decide(api, **check) -> dict:
    answer = api.post("/v1/decisions", "diag-tool", read_check(**check))
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json()


def listed(api, who, query="") -> dict[str, str]:
    """id -> status of the requests `who` gets from the list endpoint."""
    answer = api.get(f"{REQUESTS}{query}", who)
    assert answer.status_code == 200, answer.get_json()
    return {item["id"]: item["status"] for item in answer.get_json()["items"]}


def new_ticket(api, who="bob", engineer="eve", **fields) -> dict:
    body = {"tenant_id": "fabrikam", "resource_tenant_id": "contoso", "title": "help", **fields}
    created = api.post(TICKETS, who, body)
    assert created.status_code == 201, created.get_json()
    ticket = created.get_json()
    assigned = api.post(f"{TICKETS}/{ticket['id']}/assign", engineer, {"engineer": engineer})
    assert assigned.status_code == 200, assigned.get_json()
    return assigned.get_json()


def file_request(api, ticket, who="eve", justification="read sign-in logs"):
    body = {"support_request_id": ticket["id"], "justification": justification}
    return api.post(REQUESTS, who, body)


def new_request(api, ticket, who="eve") -> dict:
    created = file_request(api, ticket, who)
    assert created.status_code == 201, created.get_json()
    return created.get_json()


def by_party(entries) -> list[tuple[str, str]]:
    return sorted((e["party"], e["tenant_id"]) for e in entries)


@pytest.fixture
def same_tenant_ticket(api):
    """A ticket filed by fabrikam about fabrikam, assigned to eve."""
    return new_ticket(api, resource_tenant_id="fabrikam", title="our own sign-ins")


@pytest.fixture
def eve_is_contoso_admin(api):
    """The requesting engineer also holds a qualifying role in the resource tenant."""
    body = {"principal": "eve", "role": "Global Administrator"}
    answer = api.put("/v1/tenants/contoso/role-assignments", "ops", body)
    assert answer.status_code in (200, 201), answer.get_json()


@pytest.fixture
def revoked_request(api, approved_request, clock):
    clock.advance(hours=1)
    answer = api.post(url(approved_request, "revoke"), "alice")
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["status"] == "revoked"
    return answer.get_json()


# --- create --------------------------------------------------------------------------


def test_create_cross_tenant_returns_the_request(api, ticket, clock):
    answer = file_request(api, ticket, justification="need the sign-in logs of 2 Nov")

    assert answer.status_code == 201
    request = answer.get_json()
    assert request["id"]
    assert request["support_request_id"] == ticket["id"]
    assert request["engineer"] == "eve"
    assert request["resource_tenant_id"] == "contoso"
    assert request["support_request_tenant_id"] == "fabrikam"
    assert request["status"] == "pending"
    assert by_party(request["required_approvals"]) == [
        ("resource", "contoso"),
        ("support_request", "fabrikam"),
    ]
    assert request["approvals"] == []
    assert parse_time(request["created_at"]) == clock()
    assert parse_time(request["expires_at"]) == parse_time(request["created_at"]) + timedelta(hours=24)


def test_create_same_tenant_needs_one_resource_approval(api, same_tenant_ticket):
    request = new_request(api, same_tenant_ticket)

    assert request["resource_tenant_id"] == "fabrikam"
    assert request["support_request_tenant_id"] == "fabrikam"
    assert request["required_approvals"] == [{"tenant_id": "fabrikam", "party": "resource"}]


def test_create_is_visible_and_audited_in_both_tenants(api, access_request):
    assert status_seen_by(api, access_request, "alice") == "pending"
    assert status_seen_by(api, access_request, "bob") == "pending"
    assert activities_for(api, "contoso", "alice", access_request["id"]) == ["access_request.created"]
    assert activities_for(api, "fabrikam", "bob", access_request["id"]) == ["access_request.created"]


def test_create_by_an_engineer_not_assigned_is_forbidden(api, ticket):
    answer = file_request(api, ticket, who="frank")

    assert answer.status_code == 403
    error_of(answer)
    assert listed(api, "ops") == {}


@pytest.mark.parametrize("who", ["bob", "ops"])
def test_create_by_a_non_engineer_who_sees_the_ticket_is_forbidden(api, ticket, who):
    assert file_request(api, ticket, who=who).status_code == 403
    assert listed(api, "ops") == {}


def test_create_for_an_unassigned_ticket_is_forbidden(api):
    created = api.post(TICKETS, "bob", {"tenant_id": "fabrikam", "title": "unassigned"})
    ticket = created.get_json()

    assert file_request(api, ticket, who="eve").status_code == 403


def test_create_for_an_unknown_ticket_is_404(api):
    assert file_request(api, {"id": "sr-nope"}).status_code == 404


@pytest.mark.parametrize("length", [1, 2000])
def test_create_accepts_justification_of_1_to_2000_characters(api, ticket, length):
    answer = file_request(api, ticket, justification="j" * length)
    assert answer.status_code == 201, answer.get_json()


@pytest.mark.parametrize("justification", ["", "j" * 2001, None, 42])
def test_create_rejects_bad_justification(api, ticket, justification):
    body = {"support_request_id": ticket["id"]}
    if justification is not None:
        body["justification"] = justification

    answer = api.post(REQUESTS, "eve", body)

    assert answer.status_code == 400
    assert "justification" in error_of(answer)["message"]
    assert listed(api, "ops") == {}


@pytest.mark.parametrize("justification", [" ", " \t\n ", "\u3000", "\ufeff\u00a0"])
def test_create_refuses_a_blank_justification(api, ticket, justification):
    """A justification says why the engineer needs the data: spaces alone say nothing."""
    answer = file_request(api, ticket, justification=justification)

    assert answer.status_code == 400
    assert error_of(answer) == {"code": "invalid_field", "message": "justification: must not be blank"}
    assert listed(api, "ops") == {}


def test_create_with_unknown_field_is_bad_request(api, ticket):
    body = {"support_request_id": ticket["id"], "justification": "x", "tenant_id": "contoso"}
    answer = api.post(REQUESTS, "eve", body)
    assert answer.status_code == 400
    assert "tenant_id" in error_of(answer)["message"]


def test_create_on_a_closed_ticket_is_conflict(api, ticket):
    assert api.post(f"{TICKETS}/{ticket['id']}/close", "bob").status_code == 200

    answer = file_request(api, ticket)

    assert answer.status_code == 409
    assert listed(api, "ops") == {}


def test_create_while_a_request_is_pending_is_conflict(api, access_request, ticket):
    answer = file_request(api, ticket)

    assert answer.status_code == 409
    assert list(listed(api, "ops")) == [access_request["id"]]


def test_create_while_a_request_is_approved_is_conflict(api, approved_request, ticket):
    assert file_request(api, ticket).status_code == 409


def test_create_after_the_previous_request_ended_is_allowed(api, access_request, ticket):
    rejected = api.post(url(access_request, "reject"), "bob", {"tenant_id": "fabrikam", "reason": "no"})
    assert rejected.status_code == 200

    answer = file_request(api, ticket)

    assert answer.status_code == 201
    assert answer.get_json()["id"] != access_request["id"]


# --- visibility ------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["alice", "alice2", "bob", "dana", "eve", "ops"])
def test_get_visible_to_parties_requester_and_operators(api, access_request, who):
    answer = api.get(url(access_request), who)

    assert answer.status_code == 200
    assert answer.get_json()["id"] == access_request["id"]
    assert answer.get_json()["status"] == "pending"


@pytest.mark.parametrize("who", ["frank", "nina", "carol", "sam", "diag-tool"])
def test_get_hidden_from_others_with_404(api, access_request, who):
    answer = api.get(url(access_request), who)

    assert answer.status_code == 404
    error_of(answer)


def test_get_with_tenant_of_which_caller_is_not_admin_is_404(api, access_request):
    assert api.get(url(access_request) + "?tenant_id=contoso", "bob").status_code == 404
    assert api.get(url(access_request) + "?tenant_id=fabrikam", "alice").status_code == 404


def test_get_unknown_request_is_404(api):
    assert api.get(f"{REQUESTS}/ar-nope", "ops").status_code == 404


# --- approve ----------------------------------------------------------------------------


def test_cross_tenant_approval_happy_path(api, access_request, clock):
    assert decide(api)["allowed"] is False

    clock.advance(minutes=10)
    first = approve(api, access_request, "alice", "contoso")
    assert first.status_code == 200
    body = first.get_json()
    assert body["status"] == "pending"
    assert [(a["tenant_id"], a["party"], a["approver"]) for a in body["approvals"]] == [
        ("contoso", "resource", "alice")
    ]
    assert parse_time(body["approvals"][0]["at"]) == clock()
    assert decide(api)["allowed"] is False  # one party is not enough

    clock.advance(minutes=20)
    second = approve(api, access_request, "bob", "fabrikam")
    assert second.status_code == 200
    body = second.get_json()
    assert body["status"] == "approved"
    assert by_party(body["approvals"]) == [("resource", "contoso"), ("support_request", "fabrikam")]
    approved_at = parse_time(body["approved_at"])
    assert approved_at == clock()
    assert parse_time(body["access_expires_at"]) == approved_at + timedelta(hours=8)

    assert status_seen_by(api, access_request, "alice") == "approved"
    assert status_seen_by(api, access_request, "bob") == "approved"
    answer = decide(api)
    assert answer["allowed"] is True and answer["reason"] == "granted"
    # The grant covers only the resource tenant, and only reads.
    assert decide(api, tenant_id="fabrikam")["allowed"] is False
    write = api.post("/v1/decisions", "diag-tool", {**read_check(), "action": "write"})
    assert write.get_json()["allowed"] is False


def test_approval_is_audited_once_per_party_and_once_for_the_grant(api, approved_request):
    for tenant, who in (("contoso", "alice"), ("fabrikam", "bob")):
        trail = activities_for(api, tenant, who, approved_request["id"])
        assert trail.count("access_request.approval_added") == 2
        assert trail.count("access_request.approved") == 1
        assert trail.index("access_request.approved") > trail.index("access_request.created")


def test_times_in_access_request_audit_details_use_the_api_form(api, approved_request, clock):
    clock.advance(hours=9)
    assert status_seen_by(api, approved_request, "alice") == "completed"

    details = [
        e["details"] for e in audit_events(api, "contoso", "alice") if e["target"] == approved_request["id"]
    ]
    times = [d[k] for d in details for k in ("access_expires_at", "expired_at") if k in d]
    assert len(times) == 2
    assert [parse_time(t) for t in times] == [parse_time(approved_request["access_expires_at"])] * 2


def test_an_expiry_event_is_stamped_when_recorded_and_says_when_it_came_due(api, approved_request, clock):
    # An auditor polling `since` its last seen time must not miss an expiry recorded
    # later than it came due, so the event's time is when it was recorded.
    clock.advance(hours=9)
    assert status_seen_by(api, approved_request, "alice") == "completed"

    (event,) = [
        e
        for e in audit_events(api, "contoso", "alice")
        if e["target"] == approved_request["id"] and e["activity"] == "access_request.completed"
    ]
    assert event["actor"] == "system"
    assert parse_time(event["time"]) == clock()
    assert parse_time(event["details"]["expired_at"]) == parse_time(approved_request["access_expires_at"])
    assert parse_time(event["time"]) > parse_time(event["details"]["expired_at"])


def test_approval_order_does_not_matter(api, access_request):
    assert approve(api, access_request, "bob", "fabrikam").get_json()["status"] == "pending"
    assert approve(api, access_request, "alice2", "contoso").get_json()["status"] == "approved"
    assert decide(api)["allowed"] is True


def test_one_admin_of_both_tenants_may_approve_for_both_parties(api, access_request):
    first = approve(api, access_request, "dana", "contoso")
    assert first.status_code == 200 and first.get_json()["status"] == "pending"

    second = approve(api, access_request, "dana", "fabrikam")

    assert second.status_code == 200
    assert second.get_json()["status"] == "approved"
    assert {a["approver"] for a in second.get_json()["approvals"]} == {"dana"}
    assert decide(api)["allowed"] is True


def test_same_tenant_request_is_approved_by_one_admin(api, same_tenant_ticket):
    request = new_request(api, same_tenant_ticket)

    answer = approve(api, request, "bob", "fabrikam")

    assert answer.status_code == 200
    assert answer.get_json()["status"] == "approved"
    assert decide(api, tenant_id="fabrikam")["reason"] == "granted"
    assert decide(api, tenant_id="contoso")["allowed"] is False


@pytest.mark.parametrize("who", ["carol", "nina", "frank"])
def test_approve_by_someone_who_cannot_see_the_request_is_404(api, access_request, who):
    answer = approve(api, access_request, who, "contoso")

    assert answer.status_code == 404
    error_of(answer)
    assert api.get(url(access_request), "alice").get_json()["approvals"] == []


def test_approve_for_a_tenant_without_a_qualifying_role_is_forbidden(api, access_request):
    # alice can see the request (contoso admin) but holds no role in fabrikam.
    answer = approve(api, access_request, "alice", "fabrikam")

    assert answer.status_code == 403
    assert api.get(url(access_request), "alice").get_json()["approvals"] == []


def test_operator_sees_but_cannot_approve(api, access_request):
    assert approve(api, access_request, "ops", "contoso").status_code == 403
    assert approve(api, access_request, "ops", "fabrikam").status_code == 403
    assert status_seen_by(api, access_request, "ops") == "pending"


def test_a_caller_without_a_role_in_the_tenant_is_refused_before_the_state_or_party_is_looked_at(
    api, approved_request
):
    """API.md: 403 when the caller holds no qualifying role in the tenant it acts for;
    that comes first, so a caller cannot learn the request's state (409) or which
    tenants are its parties (400) from a tenant it does not administer."""
    for who, tenant_id in (("ops", "contoso"), ("alice", "northwind"), ("alice", "fabrikam")):
        answer = approve(api, approved_request, who, tenant_id)
        assert answer.status_code == 403, (who, tenant_id, answer.get_json())
        assert error_of(answer)["code"] == "not_tenant_admin"


def test_requesting_engineer_cannot_approve_its_own_request(api, access_request, eve_is_contoso_admin):
    answer = approve(api, access_request, "eve", "contoso")

    assert answer.status_code == 403
    error_of(answer)
    assert approve(api, access_request, "bob", "fabrikam").get_json()["status"] == "pending"
    assert api.get(url(access_request), "alice").get_json()["approvals"][0]["approver"] == "bob"
    assert decide(api)["allowed"] is False


@pytest.mark.parametrize("look_alike", ["Eve", "EVE", "\uff45ve"])  # "ｅve": a full-width e
def test_a_look_alike_of_the_requesting_engineer_cannot_approve_or_reject(api, access_request, look_alike):
    """Two ids that one person may hold (an identity provider's ids are often case-
    insensitive; NFKC reads full-width letters as plain ones) are one person where that
    only refuses more: a look-alike made an admin let eve's request be approved by eve."""
    assignment = {"principal": look_alike, "role": "Global Administrator"}
    assert api.put("/v1/tenants/contoso/role-assignments", "ops", assignment).status_code in (200, 201)
    for action in ("approve", "reject"):
        answer = api.post(url(access_request, action), look_alike, {"tenant_id": "contoso"})
        assert answer.status_code == 403 and error_of(answer)["code"] == "self_approval", answer.get_json()
    assert approve(api, access_request, "alice", "contoso").get_json()["approvals"][0]["approver"] == "alice"


def test_requesting_engineer_cannot_reject_its_own_request(api, access_request, eve_is_contoso_admin):
    answer = api.post(url(access_request, "reject"), "eve", {"tenant_id": "contoso"})

    assert answer.status_code == 403
    assert status_seen_by(api, access_request, "alice") == "pending"


def test_duplicate_approval_is_conflict(api, access_request):
    assert approve(api, access_request, "alice", "contoso").status_code == 200

    again = approve(api, access_request, "alice", "contoso")

    assert again.status_code == 409
    error_of(again)
    assert len(api.get(url(access_request), "alice").get_json()["approvals"]) == 1


def test_second_approver_for_an_already_approved_party_is_conflict(api, access_request):
    assert approve(api, access_request, "alice", "contoso").status_code == 200

    answer = approve(api, access_request, "alice2", "contoso")

    assert answer.status_code == 409
    body = api.get(url(access_request), "alice").get_json()
    assert [a["approver"] for a in body["approvals"]] == ["alice"]
    assert body["status"] == "pending"


def test_approving_an_approved_request_is_conflict(api, approved_request):
    assert approve(api, approved_request, "alice2", "contoso").status_code == 409
    assert approve(api, approved_request, "dana", "fabrikam").status_code == 409
    assert len(api.get(url(approved_request), "alice").get_json()["approvals"]) == 2


def test_approve_with_missing_or_unknown_field_is_bad_request(api, access_request):
    missing = api.post(url(access_request, "approve"), "alice", {})
    assert missing.status_code == 400
    assert "tenant_id" in error_of(missing)["message"]
    extra = api.post(url(access_request, "approve"), "alice", {"tenant_id": "contoso", "note": "ok"})
    assert extra.status_code == 400
    assert "note" in error_of(extra)["message"]
    assert api.get(url(access_request), "alice").get_json()["approvals"] == []


def test_approval_of_an_approver_who_lost_its_role_no_longer_counts(api, access_request):
    assert approve(api, access_request, "alice", "contoso").status_code == 200
    removed = api.delete("/v1/tenants/contoso/role-assignments/alice/Global%20Administrator", "ops")
    assert removed.status_code == 204
    # Listed approvals are those that count, before any approve call has looked.
    assert api.get(url(access_request), "alice2").get_json()["approvals"] == []
    listed = api.get("/v1/access-requests?tenant_id=fabrikam", "bob").get_json()["items"]
    assert [item["approvals"] for item in listed if item["id"] == access_request["id"]] == [[]]

    answer = approve(api, access_request, "bob", "fabrikam")

    assert answer.status_code == 200
    assert answer.get_json()["status"] == "pending"
    assert status_seen_by(api, access_request, "bob") == "pending"
    assert decide(api)["allowed"] is False
    assert "access_request.approved" not in activities_for(api, "fabrikam", "bob", access_request["id"])

    # A still-qualified contoso admin can supply the missing approval.
    replacement = approve(api, access_request, "alice2", "contoso")
    assert replacement.status_code == 200
    assert replacement.get_json()["status"] == "approved"
    assert decide(api)["allowed"] is True


def test_an_approval_lapses_when_its_approver_loses_the_role_in_that_tenant_though_it_admins_another(
    api, access_request
):
    """dana administers both tenants. Her approval for contoso counts only while she
    holds a qualifying role in contoso: her fabrikam role does not keep it alive."""
    assert approve(api, access_request, "dana", "contoso").status_code == 200
    removed = api.delete("/v1/tenants/contoso/role-assignments/dana/User%20Administrator", "ops")
    assert removed.status_code == 204

    answer = approve(api, access_request, "bob", "fabrikam")

    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["status"] == "pending"
    assert [a["approver"] for a in answer.get_json()["approvals"]] == ["bob"]
    assert decide(api)["allowed"] is False


@pytest.mark.parametrize("who", ["alice", "alice2"])
def test_an_approval_that_lapsed_stays_void_when_the_role_comes_back(api, access_request, who):
    """alice approves, loses her role, bob approves (still pending), alice gets her role
    back. Her approval stopped counting and stays void: contoso must approve again. Were
    it to count again, every party would be covered with no approval left to give, and
    the request stuck pending."""
    role = "/v1/tenants/contoso/role-assignments"
    assert approve(api, access_request, "alice", "contoso").status_code == 200
    assert api.delete(f"{role}/alice/Global%20Administrator", "ops").status_code == 204
    bobs = approve(api, access_request, "bob", "fabrikam").get_json()
    assert bobs["status"] == "pending"
    assert [(a["approver"], a["party"]) for a in bobs["approvals"]] == [("bob", "support_request")]
    restored = api.put(role, "ops", {"principal": "alice", "role": "Global Administrator"})
    assert restored.status_code in (200, 201)
    assert status_seen_by(api, access_request, "alice") == "pending"
    assert decide(api)["allowed"] is False
    assert approve(api, access_request, "bob", "fabrikam").status_code == 409  # bob has approved

    answer = approve(api, access_request, who, "contoso")

    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["status"] == "approved"
    assert decide(api)["allowed"] is True
    for tenant, reader in (("contoso", "alice"), ("fabrikam", "bob")):
        lapsed = audit_events(api, tenant, reader, "access_request.approval_lapsed")
        assert [(e["actor"], e["details"]["approver"], e["details"]["reason"]) for e in lapsed] == [
            ("system", "alice", "approver_role_lost")
        ]


@pytest.mark.parametrize("given_back", ["Global Administrator", "Helpdesk Administrator"])
def test_an_approval_lapses_when_the_role_goes_even_if_it_comes_back_before_anyone_approves(
    api, access_request, given_back
):
    """alice approves, loses her role and gets a qualifying role back before anyone else
    approves. Her approval lapsed when the role went (the request listed it as gone), so
    bob's approval leaves the request pending: contoso must approve again."""
    role = "/v1/tenants/contoso/role-assignments"
    assert approve(api, access_request, "alice", "contoso").status_code == 200
    assert api.delete(f"{role}/alice/Global%20Administrator", "ops").status_code == 204
    lapsed = audit_events(api, "contoso", "alice2", "access_request.approval_lapsed")
    assert [(e["actor"], e["details"]["approver"]) for e in lapsed] == [("system", "alice")]
    restored = api.put(role, "ops", {"principal": "alice", "role": given_back})
    assert restored.status_code in (200, 201)
    assert api.get(url(access_request), "alice").get_json()["approvals"] == []

    bobs = approve(api, access_request, "bob", "fabrikam")

    assert bobs.status_code == 200
    assert bobs.get_json()["status"] == "pending"
    assert [a["approver"] for a in bobs.get_json()["approvals"]] == ["bob"]
    assert decide(api)["allowed"] is False
    assert approve(api, access_request, "alice", "contoso").get_json()["status"] == "approved"
    assert len(audit_events(api, "contoso", "alice", "access_request.approval_lapsed")) == 1


def test_a_request_that_ran_out_before_its_approver_lost_the_role_ends_expired_not_lapsed(
    api, access_request, clock
):
    assert approve(api, access_request, "alice", "contoso").status_code == 200
    clock.advance(hours=25)  # past workflow.yaml timing.pending_ttl, with no call since

    assert (
        api.delete("/v1/tenants/contoso/role-assignments/alice/Global%20Administrator", "ops").status_code
        == 204
    )

    assert status_seen_by(api, access_request, "alice2") == "expired"
    assert audit_events(api, "contoso", "alice2", "access_request.approval_lapsed") == []
    assert [a["approver"] for a in api.get(url(access_request), "alice2").get_json()["approvals"]] == [
        "alice"
    ]


def test_a_decided_request_keeps_listing_the_approvals_it_was_decided_with(api, approved_request):
    role = "/v1/tenants/contoso/role-assignments/alice/Global%20Administrator"
    assert api.delete(role, "ops").status_code == 204

    body = api.get(url(approved_request), "alice2").get_json()

    assert body["status"] == "approved"
    assert sorted(a["approver"] for a in body["approvals"]) == ["alice", "bob"]


# --- reject ------------------------------------------------------------------------------


@pytest.mark.parametrize(("who", "tenant_id"), [("alice", "contoso"), ("bob", "fabrikam")])
def test_either_party_can_reject(api, access_request, who, tenant_id):
    body = {"tenant_id": tenant_id, "reason": "not now"}
    answer = api.post(url(access_request, "reject"), who, body)

    assert answer.status_code == 200
    assert answer.get_json()["status"] == "rejected"
    assert status_seen_by(api, access_request, "alice") == "rejected"
    assert status_seen_by(api, access_request, "bob") == "rejected"
    assert "access_request.rejected" in activities_for(api, "contoso", "alice", access_request["id"])
    assert "access_request.rejected" in activities_for(api, "fabrikam", "bob", access_request["id"])


def test_reject_after_one_party_approved_still_rejects(api, access_request):
    assert approve(api, access_request, "alice", "contoso").status_code == 200

    answer = api.post(url(access_request, "reject"), "bob", {"tenant_id": "fabrikam"})

    assert answer.status_code == 200
    assert answer.get_json()["status"] == "rejected"
    assert decide(api)["allowed"] is False


def test_a_party_that_approved_cannot_reject_afterwards(api, access_request):
    # API.md: reject has approve's rules, among them 409 when that party already approved.
    assert approve(api, access_request, "alice", "contoso").status_code == 200

    for who in ("alice", "alice2"):
        answer = api.post(url(access_request, "reject"), who, {"tenant_id": "contoso"})
        assert answer.status_code == 409
        assert error_of(answer)["code"] == "already_approved"
    assert status_seen_by(api, access_request, "alice") == "pending"
    assert "access_request.rejected" not in activities_for(api, "contoso", "alice", access_request["id"])
    assert approve(api, access_request, "bob", "fabrikam").get_json()["status"] == "approved"


def test_rejected_request_cannot_be_approved(api, access_request):
    assert api.post(url(access_request, "reject"), "alice", {"tenant_id": "contoso"}).status_code == 200

    assert approve(api, access_request, "bob", "fabrikam").status_code == 409
    assert approve(api, access_request, "alice2", "contoso").status_code == 409
    assert status_seen_by(api, access_request, "alice") == "rejected"
    assert decide(api)["allowed"] is False


def test_rejecting_an_approved_request_is_conflict(api, approved_request):
    answer = api.post(url(approved_request, "reject"), "alice", {"tenant_id": "contoso"})

    assert answer.status_code == 409
    assert decide(api)["allowed"] is True


@pytest.mark.parametrize("who", ["nina", "carol"])
def test_reject_by_someone_who_cannot_see_the_request_is_404(api, access_request, who):
    answer = api.post(url(access_request, "reject"), who, {"tenant_id": "contoso"})
    assert answer.status_code == 404
    assert status_seen_by(api, access_request, "alice") == "pending"


# --- revoke ---------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["alice", "alice2", "dana"])
def test_resource_tenant_admin_revokes_access(api, approved_request, who):
    assert decide(api)["allowed"] is True

    answer = api.post(url(approved_request, "revoke"), who)

    assert answer.status_code == 200
    assert answer.get_json()["status"] == "revoked"
    assert status_seen_by(api, approved_request, "alice") == "revoked"
    assert decide(api)["allowed"] is False
    assert decide(api, support_request_id=approved_request["support_request_id"])["allowed"] is False
    assert "access_request.revoked" in activities_for(api, "contoso", "alice", approved_request["id"])


def test_support_request_tenant_admin_cannot_revoke(api, approved_request):
    answer = api.post(url(approved_request, "revoke"), "bob")

    assert answer.status_code in (403, 404)
    assert status_seen_by(api, approved_request, "alice") == "approved"
    assert decide(api)["allowed"] is True


@pytest.mark.parametrize(("who", "status"), [("eve", 403), ("ops", 403), ("nina", 404), ("carol", 404)])
def test_others_cannot_revoke(api, approved_request, who, status):
    assert api.post(url(approved_request, "revoke"), who).status_code == status
    assert decide(api)["allowed"] is True


def test_revoking_a_pending_request_is_conflict(api, access_request):
    answer = api.post(url(access_request, "revoke"), "alice")

    assert answer.status_code == 409
    assert status_seen_by(api, access_request, "alice") == "pending"


def test_revoking_twice_is_conflict(api, revoked_request):
    assert api.post(url(revoked_request, "revoke"), "alice").status_code == 409


def test_revoked_request_cannot_be_approved_again(api, revoked_request):
    assert approve(api, revoked_request, "alice2", "contoso").status_code == 409
    assert decide(api)["allowed"] is False


def test_same_tenant_admin_may_revoke(api, same_tenant_ticket):
    request = new_request(api, same_tenant_ticket)
    assert approve(api, request, "bob", "fabrikam").get_json()["status"] == "approved"

    answer = api.post(url(request, "revoke"), "bob")

    assert answer.status_code == 200
    assert answer.get_json()["status"] == "revoked"
    assert decide(api, tenant_id="fabrikam")["allowed"] is False


def test_grants_running_out_unseen_complete_in_the_order_they_ran_out(api, clock):
    """Two of fabrikam's grants run out while nothing calls the service, the first one
    revoked by contoso. The sweep that finds both records their completions in the order
    the grants ran out, as it would without the revocation: listed after the later one,
    the earlier grant's completion told fabrikam it had been removed (SPEC §5)."""
    grants = []
    for _ in range(2):
        request = new_request(api, new_ticket(api))
        assert approve(api, request, "alice", "contoso").status_code == 200
        assert approve(api, request, "bob", "fabrikam").get_json()["status"] == "approved"
        grants.append(request["id"])
        clock.advance(hours=1)
    first, second = grants
    assert api.post(f"{REQUESTS}/{first}/revoke", "alice").status_code == 200

    clock.advance(hours=9)  # both grants (8 h) have run out; the next call sweeps them
    completed = audit_events(api, "fabrikam", "bob", "access_request.completed")
    assert [e["target"] for e in completed] == [first, second]
    assert [e["details"]["reason"] for e in completed] == ["grant_expired", "grant_expired"]


def test_a_revoked_request_blocks_a_new_one_while_another_tenant_sees_it_approved(
    api, revoked_request, ticket, clock
):
    answer = file_request(api, ticket)
    assert answer.status_code == 409
    assert error_of(answer)["code"] == "access_request_exists"
    # Told as eve sees the request (revoked, GET shows her so), with when she may file again.
    message = error_of(answer)["message"]
    assert "was revoked" in message and revoked_request["access_expires_at"] in message
    assert status_seen_by(api, revoked_request, "eve") == "revoked"
    assert listed(api, "bob", "?tenant_id=fabrikam") == {revoked_request["id"]: "approved"}

    clock.advance(hours=8)  # the revoked grant's time runs out: bob sees it completed
    assert file_request(api, ticket).status_code == 201


def test_a_same_tenant_revocation_frees_the_ticket_for_a_new_request(api, same_tenant_ticket, clock):
    request = new_request(api, same_tenant_ticket)
    assert approve(api, request, "bob", "fabrikam").get_json()["status"] == "approved"
    assert api.post(url(request, "revoke"), "bob").status_code == 200

    # No other tenant to keep the removal from: API.md's rule, no pending or approved one.
    assert file_request(api, same_tenant_ticket).status_code == 201
    assert status_seen_by(api, request, "bob") == "revoked"
    clock.advance(hours=9)
    trail = activities_for(api, "fabrikam", "bob", request["id"])
    assert trail[-1] == "access_request.revoked"  # and never "completed" after it


def test_a_same_tenant_revocation_recorded_hidden_does_not_block_either(app, api, same_tenant_ticket):
    """Before same-tenant revocations were shown to their own tenant, they were stored as
    still approved in the support request tenant's view."""
    request = new_request(api, same_tenant_ticket)
    assert approve(api, request, "bob", "fabrikam").get_json()["status"] == "approved"
    assert api.post(url(request, "revoke"), "bob").status_code == 200
    with app.app_context(), database.connection_context():
        query = AccessRequest.update(support_request_view_status="approved")
        assert query.where(AccessRequest.id == request["id"]).execute() == 1

    assert file_request(api, same_tenant_ticket).status_code == 201


def test_revocation_is_hidden_from_the_support_request_tenant(api, revoked_request):
    # bob's view still says approved.
    answer = api.get(url(revoked_request), "bob")
    assert answer.status_code == 200
    assert answer.get_json()["status"] == "approved"
    assert answer.get_json()["finished_at"] is None
    assert api.get(url(revoked_request) + "?tenant_id=fabrikam", "bob").get_json()["status"] == "approved"

    # bob's audit view has no trace of the removal.
    events = audit_events(api, "fabrikam", "bob")
    assert not [e for e in events if e["activity"] == "access_request.revoked"]
    assert "revok" not in json.dumps(events).lower()
    trail = [e["activity"] for e in events if e["target"] == revoked_request["id"]]
    assert trail[-1] == "access_request.approved"

    # bob's list views agree.
    assert listed(api, "bob", "?tenant_id=fabrikam&status=approved") == {revoked_request["id"]: "approved"}
    assert listed(api, "bob", "?tenant_id=fabrikam&status=revoked") == {}
    assert listed(api, "bob") == {revoked_request["id"]: "approved"}

    # the resource tenant sees what happened.
    assert status_seen_by(api, revoked_request, "alice") == "revoked"
    assert listed(api, "alice", "?tenant_id=contoso&status=revoked") == {revoked_request["id"]: "revoked"}
    assert listed(api, "alice", "?tenant_id=contoso&status=approved") == {}


@pytest.mark.parametrize("action", ["approve", "reject"])
def test_refusing_to_decide_a_revoked_request_does_not_reveal_the_revocation(
    api, revoked_request, ticket, clock, action
):
    def refusal(who: str, tenant_id: str) -> dict:
        answer = api.post(url(revoked_request, action), who, {"tenant_id": tenant_id})
        assert answer.status_code == 409
        return error_of(answer)

    bob_sees = refusal("bob", "fabrikam")
    assert bob_sees["code"] == "not_pending"
    assert "revok" not in bob_sees["message"].lower()
    assert "approved" in bob_sees["message"]
    assert "revoked" in refusal("alice2", "contoso")["message"]
    # dana administers both: acting for fabrikam, she gets fabrikam's view.
    assert "revok" not in refusal("dana", "fabrikam")["message"].lower()

    clock.advance(hours=1)
    assert api.post(f"{TICKETS}/{ticket['id']}/close", "bob").status_code == 200
    bob_sees = refusal("bob", "fabrikam")
    assert "completed" in bob_sees["message"]
    assert "revok" not in bob_sees["message"].lower()


def test_admin_of_both_tenants_gets_each_view_on_request(api, revoked_request):
    assert status_seen_by(api, revoked_request, "dana") == "revoked"
    assert status_seen_by(api, revoked_request, "dana", "?tenant_id=contoso") == "revoked"
    assert status_seen_by(api, revoked_request, "dana", "?tenant_id=fabrikam") == "approved"


def test_revoked_request_shows_completed_to_support_request_tenant_after_close(
    api, revoked_request, ticket, clock
):
    clock.advance(hours=1)
    assert api.post(f"{TICKETS}/{ticket['id']}/close", "bob").status_code == 200

    answer = api.get(url(revoked_request), "bob")
    assert answer.get_json()["status"] == "completed"
    assert parse_time(answer.get_json()["finished_at"]) == clock()
    trail = activities_for(api, "fabrikam", "bob", revoked_request["id"])
    assert trail[-1] == "access_request.completed"
    events = audit_events(api, "fabrikam", "bob")
    assert "revok" not in json.dumps(events).lower()
    assert listed(api, "bob", "?tenant_id=fabrikam&status=completed") == {revoked_request["id"]: "completed"}

    assert status_seen_by(api, revoked_request, "alice") == "revoked"
    assert decide(api)["allowed"] is False


def test_revoked_request_shows_completed_to_support_request_tenant_when_grant_time_ends(
    api, revoked_request, clock
):
    clock.advance(hours=6, minutes=59)  # approved 7h59 ago: the grant would still run
    assert status_seen_by(api, revoked_request, "bob") == "approved"

    clock.advance(minutes=2)

    assert status_seen_by(api, revoked_request, "bob") == "completed"
    assert status_seen_by(api, revoked_request, "alice") == "revoked"
    assert activities_for(api, "fabrikam", "bob", revoked_request["id"])[-1] == "access_request.completed"


def test_the_resource_tenant_still_sees_its_revocation_after_the_grant_would_have_run_out(
    api, approved_request, clock
):
    """The completion written for fabrikam at the grant's natural end is fabrikam's
    alone: contoso's request stays revoked, and its audit trail ends with the removal."""
    assert api.post(url(approved_request, "revoke"), "alice").status_code == 200
    clock.advance(hours=9)

    assert status_seen_by(api, approved_request, "bob") == "completed"
    assert status_seen_by(api, approved_request, "alice") == "revoked"
    assert activities_for(api, "contoso", "alice", approved_request["id"])[-1] == "access_request.revoked"


def test_revoked_request_stays_listed_for_support_request_tenant_like_an_unrevoked_one(
    api, approved_request, ticket, clock
):
    approved_at = parse_time(approved_request["approved_at"])
    clock.advance(hours=1)
    assert api.post(url(approved_request, "revoke"), "alice").status_code == 200
    clock.advance(hours=4)
    assert api.post(f"{TICKETS}/{ticket['id']}/close", "bob").status_code == 200
    # In fabrikam's view the request completed when the ticket closed (approved_at + 5h),
    # so 30 days later plus 3 hours it is still within retention.
    clock.current = approved_at + timedelta(days=30, hours=3)

    assert listed(api, "bob", "?tenant_id=fabrikam") == {approved_request["id"]: "completed"}


def _bob_sees(api, request) -> tuple[dict, list]:
    """fabrikam's view of `request` and of its audit trail, without its identity."""
    view = api.get(url(request), "bob").get_json()
    view = {k: v for k, v in view.items() if k not in ("id", "support_request_id")}
    trail = [
        (
            e["activity"],
            e["actor"],
            e["time"],
            e["result"],
            {k: v for k, v in e["details"].items() if k != "support_request_id"},
        )
        for e in audit_events(api, "fabrikam", "bob")
        if e["target"] == request["id"]
    ]
    return view, trail


@pytest.mark.parametrize(
    "ending",
    [
        "ticket_closed",
        "grant_time_ends",
        "ticket_closed_after_grant_time",
        "ticket_reassigned",
        "ticket_reassigned_then_closed",
    ],
)
def test_support_request_tenant_cannot_tell_a_revoked_request_from_an_unrevoked_one(api, clock, ending):
    tickets = [new_ticket(api, title="kept"), new_ticket(api, title="removed")]
    kept, removed = (new_request(api, t) for t in tickets)
    for request in (kept, removed):
        assert approve(api, request, "alice", "contoso").status_code == 200
        assert approve(api, request, "bob", "fabrikam").get_json()["status"] == "approved"
    clock.advance(hours=1)
    assert api.post(url(removed, "revoke"), "alice").status_code == 200
    assert _bob_sees(api, kept) == _bob_sees(api, removed)

    if ending == "grant_time_ends" or ending == "ticket_closed_after_grant_time":
        clock.advance(hours=8)
    else:
        clock.advance(hours=1)
    if ending.startswith("ticket_reassigned"):  # which ends the engineer's access too
        for ticket in tickets:
            answer = api.post(f"{TICKETS}/{ticket['id']}/assign", "ops", {"engineer": "frank"})
            assert answer.status_code == 200
        clock.advance(minutes=30)
    if ending.endswith("closed"):
        for ticket in tickets:
            assert api.post(f"{TICKETS}/{ticket['id']}/close", "bob").status_code == 200

    kept_view, removed_view = _bob_sees(api, kept), _bob_sees(api, removed)
    assert kept_view[0]["status"] == "completed"
    assert kept_view == removed_view
    assert parse_time(removed_view[0]["finished_at"]) <= clock()  # never in the future
    assert status_seen_by(api, removed, "alice") == "revoked"


# --- cancel ----------------------------------------------------------------------------------


def test_requesting_engineer_withdraws_a_pending_request(api, access_request):
    answer = api.post(url(access_request, "cancel"), "eve")

    assert answer.status_code == 200
    assert answer.get_json()["status"] == "cancelled"
    assert status_seen_by(api, access_request, "alice") == "cancelled"
    assert status_seen_by(api, access_request, "bob") == "cancelled"
    assert "access_request.cancelled" in activities_for(api, "contoso", "alice", access_request["id"])
    assert approve(api, access_request, "alice", "contoso").status_code == 409


@pytest.mark.parametrize(("who", "status"), [("alice", 403), ("bob", 403), ("ops", 403), ("frank", 404)])
def test_only_the_requesting_engineer_may_cancel(api, access_request, who, status):
    answer = api.post(url(access_request, "cancel"), who)

    assert answer.status_code == status
    assert status_seen_by(api, access_request, "alice") == "pending"


def test_cancelling_an_approved_request_is_conflict(api, approved_request):
    answer = api.post(url(approved_request, "cancel"), "eve")

    assert answer.status_code == 409
    assert status_seen_by(api, approved_request, "alice") == "approved"
    assert decide(api)["allowed"] is True


def test_cancelling_twice_is_conflict(api, access_request):
    assert api.post(url(access_request, "cancel"), "eve").status_code == 200
    assert api.post(url(access_request, "cancel"), "eve").status_code == 409


# --- time ----------------------------------------------------------------------------------


def test_pending_request_expires_after_24_hours(api, access_request, clock):
    clock.advance(hours=23, minutes=59)
    assert status_seen_by(api, access_request, "alice") == "pending"
    assert approve(api, access_request, "alice", "contoso").status_code == 200

    clock.advance(minutes=2)

    assert status_seen_by(api, access_request, "alice") == "expired"
    assert status_seen_by(api, access_request, "bob") == "expired"
    late = approve(api, access_request, "bob", "fabrikam")
    assert late.status_code == 409
    assert status_seen_by(api, access_request, "alice") == "expired"
    assert decide(api)["allowed"] is False
    expired = audit_events(api, "contoso", "alice", "access_request.expired")
    assert [e["target"] for e in expired] == [access_request["id"]]
    assert "access_request.expired" in activities_for(api, "fabrikam", "bob", access_request["id"])


def test_a_pending_request_cannot_be_approved_at_the_instant_it_expires(api, access_request, clock):
    clock.advance(hours=24)

    answer = approve(api, access_request, "alice", "contoso")

    assert answer.status_code == 409
    assert status_seen_by(api, access_request, "alice") == "expired"


def test_closing_a_ticket_after_expiry_leaves_the_request_expired(api, access_request, ticket, clock):
    clock.advance(hours=25)  # nothing reads the request in between

    assert api.post(f"{TICKETS}/{ticket['id']}/close", "bob").status_code == 200

    assert status_seen_by(api, access_request, "alice") == "expired"
    trail = activities_for(api, "contoso", "alice", access_request["id"])
    assert "access_request.expired" in trail
    assert "access_request.cancelled" not in trail


def test_expiry_applies_without_a_read_first(api, access_request, clock):
    clock.advance(hours=25)

    answer = approve(api, access_request, "alice", "contoso")

    assert answer.status_code == 409
    assert status_seen_by(api, access_request, "alice") == "expired"


def test_an_expired_request_frees_the_ticket_for_a_new_one(api, access_request, ticket, clock):
    clock.advance(hours=25)

    answer = file_request(api, ticket)

    assert answer.status_code == 201
    assert status_seen_by(api, access_request, "alice") == "expired"


def test_approved_grant_ends_after_8_hours(api, approved_request, clock):
    access_expires_at = parse_time(approved_request["access_expires_at"])
    clock.current = access_expires_at - timedelta(minutes=1)
    assert decide(api)["allowed"] is True

    clock.current = access_expires_at + timedelta(minutes=1)

    # Decisions check the time themselves, before anything else has run.
    answer = decide(api)
    assert answer["allowed"] is False and answer["reason"] == "grant_expired"
    with_ticket = decide(api, support_request_id=approved_request["support_request_id"])
    assert with_ticket["allowed"] is False and with_ticket["reason"] == "grant_expired"
    assert status_seen_by(api, approved_request, "alice") == "completed"
    assert status_seen_by(api, approved_request, "bob") == "completed"
    assert decide(api)["reason"] == "grant_expired"
    assert "access_request.completed" in activities_for(api, "contoso", "alice", approved_request["id"])


# --- list ----------------------------------------------------------------------------------


def test_list_by_tenant_and_status(api, access_request):
    assert listed(api, "alice", "?tenant_id=contoso") == {access_request["id"]: "pending"}
    assert listed(api, "bob", "?tenant_id=fabrikam") == {access_request["id"]: "pending"}
    assert listed(api, "alice", "?tenant_id=contoso&status=pending") == {access_request["id"]: "pending"}
    assert listed(api, "alice", "?tenant_id=contoso&status=approved") == {}

    assert approve(api, access_request, "alice", "contoso").status_code == 200
    assert approve(api, access_request, "bob", "fabrikam").status_code == 200

    assert listed(api, "alice", "?tenant_id=contoso&status=approved") == {access_request["id"]: "approved"}
    assert listed(api, "bob", "?tenant_id=fabrikam&status=approved") == {access_request["id"]: "approved"}
    assert listed(api, "alice", "?tenant_id=contoso&status=pending") == {}


def test_list_with_unknown_status_is_bad_request(api, access_request):
    answer = api.get(f"{REQUESTS}?tenant_id=contoso&status=granted", "alice")
    assert answer.status_code == 400
    assert "status" in error_of(answer)["message"]


def test_list_without_tenant_gives_an_engineer_its_own_requests(api, access_request):
    other_ticket = new_ticket(api, engineer="frank", title="frank's ticket")
    franks = new_request(api, other_ticket, who="frank")

    assert listed(api, "eve") == {access_request["id"]: "pending"}
    assert listed(api, "frank") == {franks["id"]: "pending"}
    assert listed(api, "frank", "?tenant_id=contoso") == {franks["id"]: "pending"}
    assert listed(api, "ops") == {access_request["id"]: "pending", franks["id"]: "pending"}


@pytest.mark.parametrize("who", ["nina", "carol"])
def test_list_gives_unrelated_callers_nothing(api, access_request, who):
    for query in ("", "?tenant_id=contoso", "?tenant_id=fabrikam", "?tenant_id=northwind"):
        assert listed(api, who, query) == {}


def test_list_with_other_tenant_shows_nothing_of_that_tenant(api, access_request):
    assert listed(api, "bob", "?tenant_id=contoso") == {}
    assert listed(api, "alice", "?tenant_id=fabrikam") == {}


def test_finished_requests_leave_the_list_after_30_days(api, access_request, clock):
    assert api.post(url(access_request, "reject"), "alice", {"tenant_id": "contoso"}).status_code == 200

    clock.advance(days=29, hours=23)
    assert listed(api, "alice", "?tenant_id=contoso") == {access_request["id"]: "rejected"}
    assert listed(api, "bob", "?tenant_id=fabrikam") == {access_request["id"]: "rejected"}

    clock.advance(hours=2)
    assert listed(api, "alice", "?tenant_id=contoso") == {}
    assert listed(api, "bob", "?tenant_id=fabrikam") == {}
    assert listed(api, "eve") == {}


def test_a_revoked_request_leaves_each_tenants_list_30_days_after_it_ended_in_that_view(
    api, approved_request, clock
):
    """contoso saw it end at the revocation; fabrikam, which never sees a revocation,
    saw it end when the grant would have run out (8 h later): each view keeps it listed
    for 30 days from its own end, so fabrikam cannot date the removal by the list either."""
    assert api.post(url(approved_request, "revoke"), "alice").status_code == 200

    clock.advance(days=29, hours=23)
    assert listed(api, "alice", "?tenant_id=contoso") == {approved_request["id"]: "revoked"}
    assert listed(api, "bob", "?tenant_id=fabrikam") == {approved_request["id"]: "completed"}

    clock.advance(hours=2)  # 30 days after the revocation, before 30 days after the grant's end
    assert listed(api, "alice", "?tenant_id=contoso") == {}
    assert listed(api, "bob", "?tenant_id=fabrikam") == {approved_request["id"]: "completed"}

    clock.advance(hours=7, minutes=1)
    assert listed(api, "bob", "?tenant_id=fabrikam") == {}


def test_a_list_shows_each_requests_own_approvals_in_a_few_queries(api, monkeypatch):
    """The list answers each request as GET by id does, approvals included, and the
    number of queries does not grow with the number of requests (it ran one per request:
    12 s for 20,000)."""

    def listed_with_queries(count: int) -> tuple[list[dict], int]:
        with counting_queries(monkeypatch) as queries:
            answer = api.get(REQUESTS, "ops")
        assert answer.status_code == 200, answer.get_json()
        items = answer.get_json()["items"]
        assert len(items) == count
        return items, len(queries)

    def add_requests(approvers: list[list[tuple[str, str]]]) -> None:
        for approvals in approvers:
            request = new_request(api, new_ticket(api))
            for who, tenant in approvals:
                assert approve(api, request, who, tenant).status_code == 200

    add_requests([[("alice", "contoso")], []])
    _, few = listed_with_queries(2)
    add_requests([[("bob", "fabrikam"), ("alice2", "contoso")], [("dana", "contoso")]])
    items, more = listed_with_queries(4)

    assert more == few
    for item in items:
        assert item == api.get(url(item), "ops").get_json()
    approvers = sorted(tuple(a["approver"] for a in item["approvals"]) for item in items)
    assert approvers == [(), ("alice",), ("bob", "alice2"), ("dana",)]


def test_live_requests_stay_listed_while_finished_ones_age_out(api, access_request, ticket, clock):
    assert api.post(url(access_request, "cancel"), "eve").status_code == 200
    clock.advance(days=31)
    fresh = new_request(api, ticket)

    assert listed(api, "alice", "?tenant_id=contoso") == {fresh["id"]: "pending"}


# --- concurrency ---------------------------------------------------------------------------


def _race(app, calls):
    """Run each (who, method, url, body) at once from its own thread and test client."""
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def run(index, call):
        who, method, target, body = call
        api = Api(app.test_client())
        barrier.wait()
        response = api.call(method, target, who, body)
        results[index] = (response.status_code, response.get_json())

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert all(not thread.is_alive() for thread in threads)
    return results


def test_concurrent_approvals_for_both_parties_end_approved_once(app, api):
    for round_number in range(10):
        ticket = new_ticket(api, title=f"race {round_number}")
        request = new_request(api, ticket)
        target = url(request, "approve")

        results = _race(
            app,
            [
                ("alice", "POST", target, {"tenant_id": "contoso"}),
                ("bob", "POST", target, {"tenant_id": "fabrikam"}),
            ],
        )

        assert [status for status, _ in results] == [200, 200], results
        assert "approved" in {body["status"] for _, body in results}
        final = api.get(url(request), "alice").get_json()
        assert final["status"] == "approved"
        assert by_party(final["approvals"]) == [("resource", "contoso"), ("support_request", "fabrikam")]
        trail = activities_for(api, "contoso", "alice", request["id"])
        assert trail.count("access_request.approved") == 1
        assert trail.count("access_request.approval_added") == 2
        assert decide(api, support_request_id=ticket["id"])["allowed"] is True


@pytest.mark.parametrize("ending", ["close", "reassign"])
def test_a_revoke_racing_the_tickets_end_is_never_overwritten(app, api, ending):
    """Both commit: the request ends revoked for the resource tenant (and completed for
    the support request tenant), never completed over a revoke that answered 200."""
    for round_number in range(10):
        ticket = new_ticket(api, title=f"race {round_number}")
        request = new_request(api, ticket)
        assert approve(api, request, "alice", "contoso").status_code == 200
        assert approve(api, request, "bob", "fabrikam").get_json()["status"] == "approved"
        end = (
            ("bob", "POST", f"{TICKETS}/{ticket['id']}/close", None)
            if ending == "close"
            else ("ops", "POST", f"{TICKETS}/{ticket['id']}/assign", {"engineer": "frank"})
        )

        results = _race(app, [("alice", "POST", url(request, "revoke"), None), end])

        (revoke_status, _), (end_status, _) = results
        assert end_status == 200, results
        assert revoke_status in (200, 409), results
        seen_by_resource = status_seen_by(api, request, "alice")
        assert seen_by_resource == ("revoked" if revoke_status == 200 else "completed"), results
        assert status_seen_by(api, request, "bob") == "completed"


def test_final_approval_racing_a_ticket_close_never_leaves_access(app, api):
    for round_number in range(10):
        ticket = new_ticket(api, title=f"race {round_number}")
        request = new_request(api, ticket)
        assert approve(api, request, "alice", "contoso").status_code == 200

        results = _race(
            app,
            [
                ("bob", "POST", url(request, "approve"), {"tenant_id": "fabrikam"}),
                ("eve", "POST", f"{TICKETS}/{ticket['id']}/close", None),
            ],
        )

        (approve_status, _), (close_status, _) = results
        assert close_status == 200, results
        assert approve_status in (200, 409), results
        final = api.get(url(request), "alice").get_json()["status"]
        assert final == ("completed" if approve_status == 200 else "cancelled")
        answer = decide(api, support_request_id=ticket["id"])
        assert answer["allowed"] is False and answer["reason"] == "support_request_closed"


@pytest.mark.parametrize("action", ["approve", "reject", "revoke"])
def test_an_admin_whose_role_is_removed_as_its_call_begins_may_no_longer_act(
    api, app, request, monkeypatch, action
):
    """SPEC §3, roles re-evaluated: alice's role is removed after her call read her roles
    and before its transaction (here: at the sweep it runs in between). The change must
    not be made by a principal who, when it was made, held no role that allows it."""
    from service import directory, workflow

    access = request.getfixturevalue("approved_request" if action == "revoke" else "access_request")
    before = status_seen_by(api, access, "ops")
    sweep = workflow.sweep

    def role_removed_meanwhile(now):
        monkeypatch.setattr(workflow, "sweep", sweep)
        policy = app.extensions["policy_store"].current
        assert directory.delete_role_assignment(
            policy, "provider", "contoso", "alice", "Global Administrator", "ops", now
        )
        return sweep(now)

    monkeypatch.setattr(workflow, "sweep", role_removed_meanwhile)
    body = {"approve": {"tenant_id": "contoso"}, "reject": {"tenant_id": "contoso", "reason": "no"}}
    body = body.get(action, {})
    answer = api.post(url(access, action), "alice", body)

    assert answer.status_code == 403, answer.get_json()
    assert status_seen_by(api, access, "ops") == before
