"""Support requests (tickets) through HTTP: SPEC §2–§5, API.md "Support requests".

The directory is tests/directory.yaml: bob administers fabrikam (the ticket tenant of the
`ticket` fixture), alice administers contoso (its resource tenant), dana both, nina only
northwind; carol (Global Reader) and sam (Security Reader) hold no support-ticket role;
eve and frank are support engineers, ops the operator, diag-tool the decision client.
"""

from __future__ import annotations

import json
import re
import unicodedata

import pytest

from tests.conftest import START, read_check
from tests.helpers import error_of, parse_time

TICKETS = "/v1/support-requests"


def new_ticket(api, who="bob", **fields) -> dict:
    body = {"tenant_id": "fabrikam", "title": "something is broken", **fields}
    created = api.post(TICKETS, who, body)
    assert created.status_code == 201, created.get_json()
    return created.get_json()


def file_access_request(api, ticket, who="eve") -> dict:
    body = {"support_request_id": ticket["id"], "justification": "read sign-in logs"}
    created = api.post("/v1/access-requests", who, body)
    assert created.status_code == 201, created.get_json()
    return created.get_json()


def audit_activities(api, tenant_id: str, who: str) -> list[str]:
    answer = api.get(f"/v1/audit-events?tenant_id={tenant_id}", who)
    assert answer.status_code == 200, answer.get_json()
    return [event["activity"] for event in answer.get_json()["items"]]


def decide(api, **check) -> dict:
    answer = api.post("/v1/decisions", "diag-tool", read_check(**check))
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json()


# --- create ------------------------------------------------------------------------


def test_create_returns_the_ticket_with_every_field(api):
    body = {
        "tenant_id": "fabrikam",
        "resource_tenant_id": "contoso",
        "title": "sign-ins fail",
        "allow_advanced_diagnostics": True,
    }
    created = api.post(TICKETS, "bob", body)

    assert created.status_code == 201
    ticket = created.get_json()
    assert ticket["id"]
    assert ticket["tenant_id"] == "fabrikam"
    assert ticket["resource_tenant_id"] == "contoso"
    assert ticket["title"] == "sign-ins fail"
    assert ticket["status"] == "open"
    assert ticket["allow_advanced_diagnostics"] is True
    assert ticket["assigned_engineer"] is None
    assert parse_time(ticket["created_at"]) == START


def test_create_defaults_resource_tenant_and_advanced_diagnostics(api):
    ticket = new_ticket(api)

    assert ticket["resource_tenant_id"] == "fabrikam"
    assert ticket["allow_advanced_diagnostics"] is False
    assert ticket["assigned_engineer"] is None
    assert ticket["status"] == "open"


def test_create_gives_distinct_ids_and_is_readable_back(api):
    first, second = new_ticket(api, title="one"), new_ticket(api, title="two")

    assert first["id"] != second["id"]
    fetched = api.get(f"{TICKETS}/{first['id']}", "bob")
    assert fetched.status_code == 200
    assert fetched.get_json() == first


def test_create_accepts_a_role_held_by_template_id(api):
    # dana holds Helpdesk Administrator in fabrikam by its template id.
    ticket = new_ticket(api, who="dana")
    assert ticket["tenant_id"] == "fabrikam"


def test_create_is_audited_for_the_ticket_tenant(api):
    ticket = new_ticket(api)

    events = api.get("/v1/audit-events?tenant_id=fabrikam&activity=support_request.created", "bob")
    items = events.get_json()["items"]
    assert [(e["target"], e["actor"]) for e in items] == [(ticket["id"], "bob")]


@pytest.mark.parametrize(
    ("who", "tenant_id"),
    [
        ("carol", "contoso"),  # Global Reader: no support-ticket action
        ("sam", "contoso"),  # Security Reader: log reader only
        ("bob", "contoso"),  # admin, but of another tenant
        ("eve", "fabrikam"),  # support engineer
        ("ops", "fabrikam"),  # operator
    ],
)
def test_create_by_a_non_admin_of_the_tenant_is_forbidden(api, who, tenant_id):
    answer = api.post(TICKETS, who, {"tenant_id": tenant_id, "title": "help"})

    assert answer.status_code == 403
    error_of(answer)
    assert api.get(TICKETS, "ops").get_json()["items"] == []


def test_create_with_unknown_resource_tenant_is_bad_request(api):
    body = {"tenant_id": "fabrikam", "resource_tenant_id": "nowhere", "title": "help"}
    answer = api.post(TICKETS, "bob", body)

    assert answer.status_code == 400
    assert "resource_tenant_id" in error_of(answer)["message"]
    assert api.get(TICKETS, "ops").get_json()["items"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"tenant_id": "fabrikam"}, "title"),
        ({"title": "help"}, "tenant_id"),
        ({"tenant_id": "fabrikam", "title": "help", "priority": "high"}, "priority"),
        ({"tenant_id": "fabrikam", "title": "help", "allow_advanced_diagnostics": "yes"}, "allow_advanced"),
        ({"tenant_id": "fabrikam", "title": ""}, "title"),
        ({"tenant_id": "fabrikam", "title": "  "}, "title: must not be blank"),
    ],
)
def test_create_with_bad_body_names_the_field(api, body, field):
    answer = api.post(TICKETS, "bob", body)

    assert answer.status_code == 400
    assert field in error_of(answer)["message"]


# ECMA-262's white space and line terminators (TAB, VT, FF, ZWNBSP, every Zs code point;
# LF, CR, LS, PS): `\s` in a JSON Schema pattern, so "blank" for a client that checks a
# body against the OpenAPI document.
ECMA_WHITE_SPACE = "\t\v\f\ufeff\n\r\u2028\u2029" + "".join(
    chr(code) for code in range(0x110000) if unicodedata.category(chr(code)) == "Zs"
)


@pytest.mark.parametrize("title", ["\u00a0", "\u3000 ", "\ufeff", "\u2028\u2029\u2003"])
def test_a_title_of_white_space_alone_is_blank(api, title):
    answer = api.post(TICKETS, "bob", {"tenant_id": "fabrikam", "title": title})

    assert answer.status_code == 400
    assert error_of(answer) == {"code": "invalid_field", "message": "title: must not be blank"}


@pytest.mark.parametrize("title", ["\x1d", "\x85", "\x1c\x1f"])
def test_a_title_the_document_calls_not_blank_is_taken(api, title):
    """Python counts these as white space; the document's pattern (ECMA-262) does not."""
    answer = api.post(TICKETS, "bob", {"tenant_id": "fabrikam", "title": title})

    assert answer.status_code == 201
    assert answer.get_json()["title"] == title


def test_the_not_blank_pattern_means_what_ecma_262_means():
    """The service reads the document's pattern with Python's `re`; spelled out, it
    refuses exactly ECMA-262's white space, as a client's validator would."""
    from service.validation import NOT_BLANK, openapi_document

    schemas = openapi_document()["components"]["schemas"]
    assert schemas["SupportRequestCreate"]["properties"]["title"]["pattern"] == NOT_BLANK
    assert schemas["AccessRequestCreate"]["properties"]["justification"]["pattern"] == NOT_BLANK
    blank = {chr(code) for code in range(0x110000) if not re.search(NOT_BLANK, chr(code))}
    assert blank == set(ECMA_WHITE_SPACE)


def test_create_without_token_is_unauthorized(api):
    answer = api.post(TICKETS, None, {"tenant_id": "fabrikam", "title": "help"})
    assert answer.status_code == 401


# --- read ----------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["bob", "dana", "eve", "frank", "ops"])
def test_get_visible_to_ticket_admins_engineers_and_operators(api, ticket, who):
    answer = api.get(f"{TICKETS}/{ticket['id']}", who)

    assert answer.status_code == 200
    assert answer.get_json()["id"] == ticket["id"]
    assert answer.get_json()["assigned_engineer"] == "eve"


@pytest.mark.parametrize("who", ["nina", "carol", "sam", "diag-tool", "alice", "alice2"])
def test_get_hidden_from_everyone_else_with_404(api, ticket, who):
    # alice and alice2 administer the resource tenant, but no access request exists yet.
    answer = api.get(f"{TICKETS}/{ticket['id']}", who)

    assert answer.status_code == 404
    error_of(answer)


def test_resource_tenant_admin_sees_ticket_once_an_access_request_exists(api, ticket):
    url = f"{TICKETS}/{ticket['id']}"
    assert api.get(url, "alice").status_code == 404

    file_access_request(api, ticket)

    answer = api.get(url, "alice")
    assert answer.status_code == 200
    assert answer.get_json()["resource_tenant_id"] == "contoso"
    assert api.get(url, "nina").status_code == 404


def test_the_resource_tenant_sees_the_ticket_as_long_as_the_request_about_it(api, ticket, clock):
    """API.md: "only while an access request of it concerns them". A request about
    contoso concerns it for good: alice can GET the request by id after it ended and
    after it left her list (30 days), so she can GET its ticket too."""
    request = file_access_request(api, ticket)
    rejected = api.post(f"/v1/access-requests/{request['id']}/reject", "alice", {"tenant_id": "contoso"})
    assert rejected.status_code == 200, rejected.get_json()
    clock.advance(days=31)

    assert api.get("/v1/access-requests?tenant_id=contoso", "alice").get_json()["items"] == []
    assert api.get(f"/v1/access-requests/{request['id']}", "alice").status_code == 200
    assert api.get(f"{TICKETS}/{ticket['id']}", "alice").status_code == 200
    assert api.get(f"{TICKETS}/{ticket['id']}", "nina").status_code == 404


def test_get_unknown_ticket_is_404(api):
    assert api.get(f"{TICKETS}/sr-does-not-exist", "ops").status_code == 404


def test_list_filters_by_status(api):
    open_one = new_ticket(api, title="still open")
    closed_one = new_ticket(api, title="done")
    assert api.post(f"{TICKETS}/{closed_one['id']}/close", "bob").status_code == 200

    def ids(query):
        answer = api.get(f"{TICKETS}{query}", "bob")
        assert answer.status_code == 200
        return {t["id"] for t in answer.get_json()["items"]}

    assert ids("?status=open") == {open_one["id"]}
    assert ids("?status=closed") == {closed_one["id"]}
    assert ids("") == {open_one["id"], closed_one["id"]}
    items = api.get(f"{TICKETS}?status=open", "bob").get_json()["items"]
    assert all(t["status"] == "open" for t in items)


def test_list_filters_by_tenant_among_what_the_caller_sees(api):
    """tenant_id keeps the tickets filed by that tenant or about it (as the access-request
    list filters); it never widens what the caller sees."""
    fabrikam_only = new_ticket(api, who="bob", title="fabrikam itself")
    about_contoso = new_ticket(api, who="bob", resource_tenant_id="contoso", title="contoso's sign-ins")
    contoso_only = new_ticket(api, who="alice", tenant_id="contoso", title="contoso itself")
    northwind_only = new_ticket(api, who="nina", tenant_id="northwind", title="northwind itself")

    def ids(who, tenant_id):
        answer = api.get(f"{TICKETS}?tenant_id={tenant_id}", who)
        assert answer.status_code == 200, answer.get_json()
        return {t["id"] for t in answer.get_json()["items"]}

    assert ids("dana", "contoso") == {about_contoso["id"], contoso_only["id"]}
    assert ids("dana", "fabrikam") == {fabrikam_only["id"], about_contoso["id"]}
    assert ids("eve", "northwind") == {northwind_only["id"]}
    assert ids("bob", "northwind") == set()  # not bob's tenant
    assert ids("bob", "contoso") == {about_contoso["id"]}  # bob's ticket about contoso
    assert ids("alice", "fabrikam") == set()  # only its own tenant's tickets are listed to alice


def test_list_shows_the_resource_tenant_the_tickets_it_may_read(api):
    """A tenant admin's list is what it may GET: the tickets filed by its tenants, and
    those about its tenants once an access request concerns them (API.md)."""
    about_contoso = new_ticket(api, who="bob", resource_tenant_id="contoso", title="contoso's sign-ins")
    not_requested = new_ticket(api, who="bob", resource_tenant_id="contoso", title="no request yet")

    def ids(who, query=""):
        answer = api.get(f"{TICKETS}{query}", who)
        assert answer.status_code == 200, answer.get_json()
        return {t["id"] for t in answer.get_json()["items"]}

    assert about_contoso["id"] not in ids("alice")
    assign = api.post(f"{TICKETS}/{about_contoso['id']}/assign", "eve", {"engineer": "eve"})
    assert assign.status_code == 200, assign.get_json()
    file_access_request(api, about_contoso)

    assert api.get(f"{TICKETS}/{about_contoso['id']}", "alice").status_code == 200
    assert about_contoso["id"] in ids("alice")
    assert about_contoso["id"] in ids("alice", "?tenant_id=contoso&status=open")
    assert ids("alice", "?tenant_id=fabrikam") == {about_contoso["id"]}
    assert not_requested["id"] not in ids("alice")  # each ticket's own access requests count
    assert api.get(f"{TICKETS}/{not_requested['id']}", "alice").status_code == 404
    assert about_contoso["id"] not in ids("alice", "?status=closed")
    assert about_contoso["id"] not in ids("nina")


def test_list_with_unknown_status_is_bad_request(api):
    answer = api.get(f"{TICKETS}?status=whatever", "bob")
    assert answer.status_code == 400
    assert "status" in error_of(answer)["message"]


def test_engineers_see_the_whole_queue_admins_only_their_tenants(api):
    fabrikam = new_ticket(api, who="bob", title="fabrikam problem")
    contoso = new_ticket(api, who="alice", tenant_id="contoso", title="contoso problem")

    def ids(who):
        answer = api.get(f"{TICKETS}?status=open", who)
        assert answer.status_code == 200
        return {t["id"] for t in answer.get_json()["items"]}

    assert ids("eve") == {fabrikam["id"], contoso["id"]}
    assert ids("frank") == {fabrikam["id"], contoso["id"]}
    assert ids("ops") == {fabrikam["id"], contoso["id"]}
    assert ids("bob") == {fabrikam["id"]}
    assert ids("alice") == {contoso["id"]}
    assert ids("dana") == {fabrikam["id"], contoso["id"]}
    assert ids("nina") == set()
    assert ids("carol") == set()


# --- assign --------------------------------------------------------------------------


def test_engineer_assigns_itself(api):
    ticket = new_ticket(api)

    answer = api.post(f"{TICKETS}/{ticket['id']}/assign", "eve", {"engineer": "eve"})

    assert answer.status_code == 200
    assert answer.get_json()["assigned_engineer"] == "eve"
    assert api.get(f"{TICKETS}/{ticket['id']}", "bob").get_json()["assigned_engineer"] == "eve"
    assert "support_request.assigned" in audit_activities(api, "fabrikam", "bob")


def test_assigning_the_assigned_engineer_again_is_200_and_changes_nothing(api, ticket):
    """A retried assign (by the engineer, or by an operator) answers as the first did."""
    url = f"{TICKETS}/{ticket['id']}/assign"
    for who in ("eve", "ops"):
        again = api.post(url, who, {"engineer": "eve"})
        assert again.status_code == 200, (who, again.get_json())
        assert again.get_json()["assigned_engineer"] == "eve"
    assert audit_activities(api, "fabrikam", "bob").count("support_request.assigned") == 1


def test_engineer_may_not_assign_someone_else(api):
    ticket = new_ticket(api)

    answer = api.post(f"{TICKETS}/{ticket['id']}/assign", "eve", {"engineer": "frank"})

    assert answer.status_code == 403
    assert error_of(answer)["message"] == "a support engineer may assign only itself"
    assert api.get(f"{TICKETS}/{ticket['id']}", "bob").get_json()["assigned_engineer"] is None


def test_operator_assigns_any_engineer(api):
    ticket = new_ticket(api)
    url = f"{TICKETS}/{ticket['id']}/assign"

    first = api.post(url, "ops", {"engineer": "frank"})
    assert first.status_code == 200
    assert first.get_json()["assigned_engineer"] == "frank"

    second = api.post(url, "ops", {"engineer": "eve"})
    assert second.status_code == 200
    assert second.get_json()["assigned_engineer"] == "eve"


def test_operator_who_is_also_an_engineer_cannot_take_over_a_ticket(api):
    """Operators never gain data access by their power (SPEC §5): the override that moves
    a ticket between engineers does not move it to the operator itself."""
    body = {"principal": "ops", "role": "Support Engineer"}
    assert api.put("/v1/tenants/provider/role-assignments", "ops", body).status_code == 201
    ticket = new_ticket(api)
    url = f"{TICKETS}/{ticket['id']}/assign"
    assert api.post(url, "eve", {"engineer": "eve"}).status_code == 200

    answer = api.post(url, "ops", {"engineer": "ops"})

    assert answer.status_code == 409, answer.get_json()
    assert error_of(answer)["code"] == "already_assigned"
    assert api.get(f"{TICKETS}/{ticket['id']}", "bob").get_json()["assigned_engineer"] == "eve"
    # As an engineer it still takes an unassigned ticket, and as an operator it still
    # moves one to another engineer.
    other = new_ticket(api)
    assert api.post(f"{TICKETS}/{other['id']}/assign", "ops", {"engineer": "ops"}).status_code == 200
    assert api.post(url, "ops", {"engineer": "frank"}).get_json()["assigned_engineer"] == "frank"


@pytest.mark.parametrize("who", ["bob", "dana"])
def test_ticket_admin_cannot_assign_engineers(api, who):
    ticket = new_ticket(api)
    answer = api.post(f"{TICKETS}/{ticket['id']}/assign", who, {"engineer": "eve"})
    assert answer.status_code == 403
    assert error_of(answer) == {
        "code": "not_allowed",
        "message": "only support engineers and operators assign tickets",
    }


def test_assign_by_someone_who_cannot_see_the_ticket_is_404(api):
    ticket = new_ticket(api)
    answer = api.post(f"{TICKETS}/{ticket['id']}/assign", "nina", {"engineer": "eve"})
    assert answer.status_code == 404


@pytest.mark.parametrize("engineer", ["alice", "ops", "diag-tool", "nobody"])
def test_assigning_a_non_engineer_is_bad_request(api, engineer):
    ticket = new_ticket(api)

    answer = api.post(f"{TICKETS}/{ticket['id']}/assign", "ops", {"engineer": engineer})

    assert answer.status_code == 400
    assert "engineer" in error_of(answer)["message"]
    assert api.get(f"{TICKETS}/{ticket['id']}", "bob").get_json()["assigned_engineer"] is None


def test_assigning_a_closed_ticket_is_conflict(api, ticket):
    assert api.post(f"{TICKETS}/{ticket['id']}/close", "bob").status_code == 200

    by_operator = api.post(f"{TICKETS}/{ticket['id']}/assign", "ops", {"engineer": "frank"})
    by_engineer = api.post(f"{TICKETS}/{ticket['id']}/assign", "frank", {"engineer": "frank"})

    assert by_operator.status_code == 409
    assert by_engineer.status_code == 409
    assert api.get(f"{TICKETS}/{ticket['id']}", "bob").get_json()["assigned_engineer"] == "eve"


def test_assign_unknown_field_is_bad_request(api):
    ticket = new_ticket(api)
    answer = api.post(f"{TICKETS}/{ticket['id']}/assign", "eve", {"engineer": "eve", "note": "x"})
    assert answer.status_code == 400
    assert "note" in error_of(answer)["message"]


def test_reassignment_ends_the_previous_engineers_access(api, approved_request, ticket):
    assert decide(api)["allowed"] is True

    answer = api.post(f"{TICKETS}/{ticket['id']}/assign", "ops", {"engineer": "frank"})

    assert answer.status_code == 200
    assert decide(api)["allowed"] is False
    assert decide(api, support_request_id=ticket["id"])["allowed"] is False


# --- update (advanced diagnostics) -----------------------------------------------------


def test_ticket_admin_turns_advanced_diagnostics_on_and_off(api, ticket):
    url = f"{TICKETS}/{ticket['id']}"

    on = api.patch(url, "bob", {"allow_advanced_diagnostics": True})
    assert on.status_code == 200
    assert on.get_json()["allow_advanced_diagnostics"] is True
    assert api.get(url, "eve").get_json()["allow_advanced_diagnostics"] is True
    assert "support_request.updated" in audit_activities(api, "fabrikam", "bob")

    off = api.patch(url, "bob", {"allow_advanced_diagnostics": False})
    assert off.status_code == 200
    assert off.get_json()["allow_advanced_diagnostics"] is False
    assert api.get(url, "eve").get_json()["allow_advanced_diagnostics"] is False


def test_advanced_diagnostics_lets_the_assigned_engineer_read_the_ticket_tenant(api, ticket):
    url = f"{TICKETS}/{ticket['id']}"
    assert decide(api, tenant_id="fabrikam")["allowed"] is False

    assert api.patch(url, "bob", {"allow_advanced_diagnostics": True}).status_code == 200

    answer = decide(api, tenant_id="fabrikam")
    assert answer["allowed"] is True and answer["reason"] == "advanced_diagnostics"
    # Only the ticket's own tenant, only the assigned engineer, only reads.
    assert decide(api, tenant_id="contoso")["allowed"] is False
    assert decide(api, principal="frank", tenant_id="fabrikam")["allowed"] is False
    write = api.post("/v1/decisions", "diag-tool", {**read_check(tenant_id="fabrikam"), "action": "write"})
    assert write.get_json()["allowed"] is False

    assert api.patch(url, "bob", {"allow_advanced_diagnostics": False}).status_code == 200
    assert decide(api, tenant_id="fabrikam")["allowed"] is False


def test_advanced_diagnostics_set_at_creation_applies(api):
    ticket = new_ticket(api, allow_advanced_diagnostics=True)
    assert api.post(f"{TICKETS}/{ticket['id']}/assign", "eve", {"engineer": "eve"}).status_code == 200

    answer = decide(api, tenant_id="fabrikam")
    assert answer["allowed"] is True and answer["reason"] == "advanced_diagnostics"


@pytest.mark.parametrize("who", ["eve", "frank", "ops"])
def test_update_by_someone_who_sees_but_does_not_administer_is_forbidden(api, ticket, who):
    answer = api.patch(f"{TICKETS}/{ticket['id']}", who, {"allow_advanced_diagnostics": True})

    assert answer.status_code == 403
    assert api.get(f"{TICKETS}/{ticket['id']}", "bob").get_json()["allow_advanced_diagnostics"] is False


def test_update_by_resource_tenant_admin_is_refused(api, ticket):
    url = f"{TICKETS}/{ticket['id']}"
    assert api.patch(url, "alice", {"allow_advanced_diagnostics": True}).status_code == 404

    file_access_request(api, ticket)

    assert api.patch(url, "alice", {"allow_advanced_diagnostics": True}).status_code == 403
    assert api.get(url, "bob").get_json()["allow_advanced_diagnostics"] is False


@pytest.mark.parametrize("who", ["nina", "carol"])
def test_update_by_someone_who_cannot_see_the_ticket_is_404(api, ticket, who):
    answer = api.patch(f"{TICKETS}/{ticket['id']}", who, {"allow_advanced_diagnostics": True})
    assert answer.status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"allow_advanced_diagnostics": True, "title": "new"}, "title"),
        ({"assigned_engineer": "frank"}, "assigned_engineer"),
        ({"allow_advanced_diagnostics": "true"}, "allow_advanced_diagnostics"),
    ],
)
def test_update_with_bad_field_is_bad_request(api, ticket, body, field):
    answer = api.patch(f"{TICKETS}/{ticket['id']}", "bob", body)

    assert answer.status_code == 400
    assert field in error_of(answer)["message"]
    after = api.get(f"{TICKETS}/{ticket['id']}", "bob").get_json()
    assert after["allow_advanced_diagnostics"] is False
    assert after["title"] == ticket["title"] and after["assigned_engineer"] == "eve"


# --- close ---------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["eve", "bob", "dana"])
def test_close_by_assigned_engineer_or_ticket_admin(api, ticket, clock, who):
    clock.advance(hours=2)

    answer = api.post(f"{TICKETS}/{ticket['id']}/close", who)

    assert answer.status_code == 200
    assert answer.get_json()["status"] == "closed"
    assert api.get(f"{TICKETS}/{ticket['id']}", "bob").get_json()["status"] == "closed"
    assert "support_request.closed" in audit_activities(api, "fabrikam", "bob")


@pytest.mark.parametrize("who", ["frank", "ops"])
def test_close_by_others_who_see_the_ticket_is_forbidden(api, ticket, who):
    answer = api.post(f"{TICKETS}/{ticket['id']}/close", who)

    assert answer.status_code == 403
    assert api.get(f"{TICKETS}/{ticket['id']}", "bob").get_json()["status"] == "open"


def test_close_by_resource_tenant_admin_is_forbidden(api, access_request, ticket):
    answer = api.post(f"{TICKETS}/{ticket['id']}/close", "alice")

    assert answer.status_code == 403
    assert api.get(f"{TICKETS}/{ticket['id']}", "bob").get_json()["status"] == "open"


@pytest.mark.parametrize("who", ["nina", "carol"])
def test_close_by_someone_who_cannot_see_the_ticket_is_404(api, ticket, who):
    assert api.post(f"{TICKETS}/{ticket['id']}/close", who).status_code == 404
    assert api.get(f"{TICKETS}/{ticket['id']}", "bob").get_json()["status"] == "open"


def test_closing_twice_is_conflict(api, ticket):
    assert api.post(f"{TICKETS}/{ticket['id']}/close", "eve").status_code == 200

    again = api.post(f"{TICKETS}/{ticket['id']}/close", "bob")

    assert again.status_code == 409
    error_of(again)


def test_close_cancels_a_pending_access_request(api, access_request, ticket):
    assert api.post(f"{TICKETS}/{ticket['id']}/close", "bob").status_code == 200

    url = f"/v1/access-requests/{access_request['id']}"
    assert api.get(url, "alice").get_json()["status"] == "cancelled"
    assert api.get(url, "bob").get_json()["status"] == "cancelled"
    assert api.get(url, "eve").get_json()["status"] == "cancelled"
    assert "access_request.cancelled" in audit_activities(api, "contoso", "alice")
    assert "access_request.cancelled" in audit_activities(api, "fabrikam", "bob")
    approve = api.post(f"{url}/approve", "alice", {"tenant_id": "contoso"})
    assert approve.status_code == 409


def test_the_resource_tenant_sees_no_event_of_a_ticket_before_it_asks_it_for_access(api, ticket):
    """SPEC §5: contoso sees fabrikam's ticket about it only once an access request of it
    concerns contoso; until then its audit view shows none of the ticket's events."""
    patched = api.patch(f"{TICKETS}/{ticket['id']}", "bob", {"allow_advanced_diagnostics": True})
    assert patched.status_code == 200

    events = api.get("/v1/audit-events?tenant_id=contoso", "alice").get_json()["items"]

    assert [event for event in events if ticket["id"] in json.dumps(event)] == []
    fabrikam = set(audit_activities(api, "fabrikam", "bob"))
    assert {"support_request.created", "support_request.assigned", "support_request.updated"} <= fabrikam


def test_the_resource_tenant_sees_the_close_only_of_a_ticket_that_asked_it_for_access(api, ticket):
    """contoso sees a ticket filed about it only once an access request of it concerns
    contoso; so it sees that ticket's close, and not the close of one that never asked."""
    unasked = new_ticket(api, resource_tenant_id="contoso")
    assert api.post(f"{TICKETS}/{unasked['id']}/close", "bob").status_code == 200
    file_access_request(api, ticket)
    assert api.post(f"{TICKETS}/{ticket['id']}/close", "bob").status_code == 200

    answer = api.get("/v1/audit-events?tenant_id=contoso&activity=support_request.closed", "alice")

    assert answer.status_code == 200, answer.get_json()
    assert [event["target"] for event in answer.get_json()["items"]] == [ticket["id"]]


def test_close_completes_an_approved_request_and_decisions_deny(api, approved_request, ticket):
    assert decide(api)["allowed"] is True

    assert api.post(f"{TICKETS}/{ticket['id']}/close", "eve").status_code == 200

    url = f"/v1/access-requests/{approved_request['id']}"
    assert api.get(url, "alice").get_json()["status"] == "completed"
    assert api.get(url, "bob").get_json()["status"] == "completed"
    assert "access_request.completed" in audit_activities(api, "contoso", "alice")
    assert "access_request.completed" in audit_activities(api, "fabrikam", "bob")
    for answer in (decide(api), decide(api, support_request_id=ticket["id"])):
        assert answer["allowed"] is False
        assert answer["reason"] == "support_request_closed"


def test_close_ends_advanced_diagnostics_access(api, ticket):
    url = f"{TICKETS}/{ticket['id']}"
    assert api.patch(url, "bob", {"allow_advanced_diagnostics": True}).status_code == 200
    assert decide(api, tenant_id="fabrikam")["allowed"] is True

    assert api.post(f"{url}/close", "bob").status_code == 200

    answer = decide(api, tenant_id="fabrikam", support_request_id=ticket["id"])
    assert answer["allowed"] is False and answer["reason"] == "support_request_closed"
    assert decide(api, tenant_id="fabrikam")["allowed"] is False


def test_closed_ticket_cannot_be_updated(api, ticket):
    assert api.post(f"{TICKETS}/{ticket['id']}/close", "bob").status_code == 200

    answer = api.patch(f"{TICKETS}/{ticket['id']}", "bob", {"allow_advanced_diagnostics": True})

    assert answer.status_code == 409
    assert decide(api, tenant_id="fabrikam")["allowed"] is False


def test_close_with_unknown_body_field_is_bad_request(api, ticket):
    answer = api.post(f"{TICKETS}/{ticket['id']}/close", "bob", {"reason": "done"})
    assert answer.status_code == 400
    assert api.get(f"{TICKETS}/{ticket['id']}", "bob").get_json()["status"] == "open"
