"""The decision API (API.md "Decisions", SPEC §6): what the diagnostic tooling obeys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import read_check
from tests.helpers import copy_policies, edit

DECIDE = "/v1/decisions"
BATCH = "/v1/decisions/batch"
CLIENT = "diag-tool"


def decide(api, check: dict) -> dict:
    answer = api.post(DECIDE, CLIENT, check)
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json()


def batch(api, checks: list[dict]):
    return api.post(BATCH, CLIENT, {"checks": checks})


def new_ticket(api, admin: str, tenant: str, resource: str | None = None, advanced: bool = False) -> dict:
    body = {"tenant_id": tenant, "title": "needs diagnostics", "allow_advanced_diagnostics": advanced}
    if resource:
        body["resource_tenant_id"] = resource
    created = api.post("/v1/support-requests", admin, body)
    assert created.status_code == 201, created.get_json()
    return created.get_json()


def assign(api, ticket: dict, engineer: str = "eve") -> dict:
    answer = api.post(f"/v1/support-requests/{ticket['id']}/assign", engineer, {"engineer": engineer})
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json()


def audit_items(api, who: str, tenant: str, activity: str | None = None) -> list[dict]:
    url = f"/v1/audit-events?tenant_id={tenant}"
    if activity:
        url += f"&activity={activity}"
    answer = api.get(url, who)
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json()["items"]


def assert_error(answer, status: int, *fragments: str) -> dict:
    assert answer.status_code == status, answer.get_data(as_text=True)
    body = answer.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    for fragment in fragments:
        assert fragment in body["error"]["message"], body
    return body["error"]


@pytest.fixture
def advanced_ticket(api):
    """A contoso ticket filed by contoso (alice), advanced diagnostics on, assigned to eve."""
    return assign(api, new_ticket(api, "alice", "contoso", advanced=True))


# --- grants --------------------------------------------------------------------------


def test_approved_grant_allows_read(api, approved_request):
    body = decide(api, read_check())
    assert body["allowed"] is True
    assert body["reason"] == "granted"
    assert isinstance(body["decision_id"], str) and body["decision_id"]
    assert isinstance(body["policy_version"], str) and body["policy_version"]
    assert "explain" not in body


def test_pending_request_grants_nothing(api, access_request):
    body = decide(api, read_check())
    assert body == {**body, "allowed": False, "reason": "no_active_grant"}


def test_half_approved_request_grants_nothing(api, access_request):
    url = f"/v1/access-requests/{access_request['id']}/approve"
    assert api.post(url, "alice", {"tenant_id": "contoso"}).status_code == 200
    assert decide(api, read_check())["allowed"] is False


@pytest.mark.parametrize("category", ["signInLogs", "auditLogs", "directoryConfiguration"])
def test_grant_covers_every_listed_category(api, approved_request, category):
    body = decide(api, read_check(resource=f"diagnostics/{category}"))
    assert (body["allowed"], body["reason"]) == (True, "granted")


@pytest.mark.parametrize("action", ["write", "delete", "update", "read.all", "readwrite"])
def test_only_read_can_be_allowed_even_with_grant(api, approved_request, action):
    body = decide(api, read_check(action=action))
    assert body["allowed"] is False
    assert body["reason"] == "read_only"


def test_grant_is_scoped_to_its_resource_tenant(api, approved_request):
    body = decide(api, read_check(tenant_id="fabrikam"))
    assert body["allowed"] is False
    assert body["reason"] == "no_active_grant"


def test_grant_belongs_to_the_requesting_engineer_only(api, approved_request):
    body = decide(api, read_check(principal="frank"))
    assert body["allowed"] is False


def test_category_not_listed_is_denied(api, approved_request):
    body = decide(api, read_check(resource="diagnostics/unknownThing"))
    assert body["allowed"] is False
    assert body["reason"] == "category_not_allowed"


NOT_DIAGNOSTIC = [
    "signInLogs",
    "users/1",
    "logs/signInLogs",
    "Diagnostics/signInLogs",
    "xxxxxxxxxxxxsignInLogs",  # as long as "diagnostics/": not taken for the prefix
    "diagnostics/",
    "diagnostics/*",
    "diagnostics/signInLogs/123",
    "diagnostics/signInLogs ",
    "diagnostics/signInLogs\n",
    "diagnostics/../signInLogs",
]


@pytest.mark.parametrize("resource", NOT_DIAGNOSTIC)
def test_a_resource_not_diagnostics_category_is_denied_even_with_a_grant(api, approved_request, resource):
    """API.md gives no form for resources: any other string is well-formed input that no
    access covers (SPEC §4: only reads of diagnostic resources can be allowed)."""
    body = decide(api, read_check(resource=resource, explain=True))
    assert (body["allowed"], body["reason"]) == (False, "category_not_allowed")
    assert body["explain"][-1]["effect"] == "deny"


def test_a_batch_answers_each_check_whatever_its_resource(api, approved_request):
    checks = [read_check(), *(read_check(resource=resource) for resource in NOT_DIAGNOSTIC), read_check()]
    answer = api.post(BATCH, CLIENT, {"checks": checks})
    assert answer.status_code == 200, answer.get_json()
    allowed = [result["allowed"] for result in answer.get_json()["results"]]
    assert allowed == [True, *[False] * len(NOT_DIAGNOSTIC), True]


def test_unknown_tenant(api, approved_request):
    body = decide(api, read_check(tenant_id="nowhere"))
    assert (body["allowed"], body["reason"]) == (False, "unknown_tenant")


def test_unknown_principal(api, approved_request):
    body = decide(api, read_check(principal="mallory"))
    assert (body["allowed"], body["reason"]) == (False, "unknown_principal")


def test_tenant_admin_is_not_a_data_reader(api, approved_request):
    """alice is known (Global Administrator of contoso) but is no support engineer."""
    body = decide(api, read_check(principal="alice"))
    assert (body["allowed"], body["reason"]) == (False, "not_support_engineer")


def test_matching_support_request_id_counts(api, approved_request, ticket):
    body = decide(api, read_check(support_request_id=ticket["id"]))
    assert (body["allowed"], body["reason"]) == (True, "granted")


@pytest.mark.parametrize("other", ["sr-does-not-exist", "other-ticket"])
def test_non_matching_support_request_id_denies_not_errors(api, approved_request, other):
    if other == "other-ticket":
        other = assign(api, new_ticket(api, "alice", "contoso"))["id"]
    answer = api.post(DECIDE, CLIENT, read_check(support_request_id=other))
    assert answer.status_code == 200
    assert answer.get_json()["allowed"] is False


def test_grant_expires_after_max_grant_duration(api, approved_request, clock):
    clock.advance(hours=7, minutes=59)
    assert decide(api, read_check())["allowed"] is True
    clock.advance(minutes=1)
    body = decide(api, read_check())
    assert (body["allowed"], body["reason"]) == (False, "grant_expired")


def test_expired_grant_stays_denied_after_sweep(api, approved_request, clock):
    clock.advance(hours=9)
    # Listing runs the sweep, which moves the grant to `completed`.
    listed = api.get(f"/v1/access-requests/{approved_request['id']}", "alice").get_json()
    assert listed["status"] == "completed"
    body = decide(api, read_check())
    assert (body["allowed"], body["reason"]) == (False, "grant_expired")


@pytest.mark.parametrize("with_id", [False, True])
def test_closed_support_request_denies(api, approved_request, ticket, with_id):
    closed = api.post(f"/v1/support-requests/{ticket['id']}/close", "eve")
    assert closed.status_code == 200, closed.get_json()
    extra = {"support_request_id": ticket["id"]} if with_id else {}
    body = decide(api, read_check(**extra))
    assert (body["allowed"], body["reason"]) == (False, "support_request_closed")


def test_revoked_grant_denies(api, approved_request):
    assert decide(api, read_check())["allowed"] is True
    revoked = api.post(f"/v1/access-requests/{approved_request['id']}/revoke", "alice")
    assert revoked.status_code == 200, revoked.get_json()
    body = decide(api, read_check())
    assert body["allowed"] is False
    assert body["reason"] not in ("granted", "advanced_diagnostics")


def reassign_to_frank(api, ticket):
    answer = api.post(f"/v1/support-requests/{ticket['id']}/assign", "ops", {"engineer": "frank"})
    assert answer.status_code == 200, answer.get_json()


@pytest.mark.parametrize("ending", ["revoke", "reassign"])
def test_a_grant_ended_early_is_no_active_grant_even_after_it_would_have_run_out(
    api, approved_request, ticket, clock, ending
):
    """grant_expired says the approved time ran out; a grant an admin removed, or that
    ended when its ticket went to another engineer, did not run out, then or later."""
    if ending == "revoke":
        assert api.post(f"/v1/access-requests/{approved_request['id']}/revoke", "alice").status_code == 200
    else:
        reassign_to_frank(api, ticket)
    clock.advance(hours=9)  # past the 8 h the grant was approved for

    body = decide(api, read_check())

    assert (body["allowed"], body["reason"]) == (False, "no_active_grant")


def test_engineer_who_lost_its_role_is_denied(api, approved_request):
    """Roles are re-evaluated at decision time, not when the grant was made."""
    assert decide(api, read_check())["allowed"] is True
    url = "/v1/tenants/provider/role-assignments/eve/Support%20Engineer"
    assert api.delete(url, "ops").status_code == 204
    assert decide(api, read_check())["allowed"] is False


ENGINEER_ROLE = "/v1/tenants/provider/role-assignments"


def test_an_engineer_given_its_role_back_needs_a_new_approval(api, approved_request):
    """Removing the engineer's role ends its access (completed, in both tenants' views),
    so giving the role back does not give the access back."""
    assert api.delete(f"{ENGINEER_ROLE}/eve/Support%20Engineer", "ops").status_code == 204
    restored = api.put(ENGINEER_ROLE, "ops", {"principal": "eve", "role": "Support Engineer"})
    assert restored.status_code == 201, restored.get_json()

    body = decide(api, read_check())
    assert (body["allowed"], body["reason"]) == (False, "no_active_grant")
    for tenant_id, admin in (("contoso", "alice"), ("fabrikam", "bob")):
        seen = api.get(f"/v1/access-requests/{approved_request['id']}?tenant_id={tenant_id}", admin)
        assert seen.get_json()["status"] == "completed", (tenant_id, seen.get_json())
        events = api.get(f"/v1/audit-events?tenant_id={tenant_id}&activity=access_request.completed", admin)
        [completed] = events.get_json()["items"]
        assert completed["details"]["reason"] == "engineer_removed"
        assert completed["actor"] == "ops"


def test_an_engineer_removed_while_its_request_is_pending_finds_it_cancelled(api, access_request):
    assert api.delete(f"{ENGINEER_ROLE}/eve/Support%20Engineer", "ops").status_code == 204
    seen = api.get(f"/v1/access-requests/{access_request['id']}", "alice").get_json()
    assert seen["status"] == "cancelled"


def remove_eve(policy, ticket_id: str, now) -> None:
    from service import directory

    assert directory.delete_role_assignment(
        policy, "provider", "provider", "eve", "Support Engineer", "ops", now
    )


def move_the_ticket_to_frank(policy, ticket_id: str, now) -> None:
    from service import workflow
    from service.auth import Caller
    from service.viewer import viewer_for

    operator = viewer_for(policy, Caller("ops", None), "provider")
    assert workflow.assign_ticket(policy, operator, ticket_id, "frank", now, "provider")


@pytest.mark.parametrize("change", [remove_eve, move_the_ticket_to_frank])
def test_a_request_filed_as_its_engineer_is_removed_or_reassigned_is_refused(
    api, app, ticket, monkeypatch, change
):
    """The change commits after the filing call read eve's roles and the ticket, and before
    its transaction (here: at the sweep it runs in between). The request must not be
    filed: the change's end of eve's requests would miss it, and its approvals would
    grant access to an engineer that had left the ticket (or support) meanwhile."""
    from service import workflow

    sweep = workflow.sweep

    def changed_meanwhile(now):
        monkeypatch.setattr(workflow, "sweep", sweep)
        change(app.extensions["policy_store"].current, ticket["id"], now)
        return sweep(now)

    monkeypatch.setattr(workflow, "sweep", changed_meanwhile)
    body = {"support_request_id": ticket["id"], "justification": "read sign-in logs"}
    answer = api.post("/v1/access-requests", "eve", body)

    assert answer.status_code == 403, answer.get_json()
    assert api.get("/v1/access-requests", "ops").get_json()["items"] == []


def test_an_engineer_removed_gives_its_tickets_back_to_the_queue(api, advanced_ticket):
    """Advanced diagnostics follow the assignment: an engineer given its role back does
    not read the ticket's tenant again until it is assigned again."""
    assert decide(api, read_check())["reason"] == "advanced_diagnostics"
    assert api.delete(f"{ENGINEER_ROLE}/eve/Support%20Engineer", "ops").status_code == 204
    restored = api.put(ENGINEER_ROLE, "ops", {"principal": "eve", "role": "Support Engineer"})
    assert restored.status_code == 201, restored.get_json()

    body = decide(api, read_check())
    assert (body["allowed"], body["reason"]) == (False, "no_active_grant")
    assert (
        api.get(f"/v1/support-requests/{advanced_ticket['id']}", "alice").get_json()["assigned_engineer"]
        is None
    )
    events = api.get("/v1/audit-events?tenant_id=contoso&activity=support_request.assigned", "alice")
    unassigned = events.get_json()["items"][-1]
    assert unassigned["details"] == {
        "engineer": None,
        "previous_engineer": "eve",
        "reason": "engineer_removed",
    }
    claimed = api.post(f"/v1/support-requests/{advanced_ticket['id']}/assign", "frank", {"engineer": "frank"})
    assert claimed.status_code == 200, claimed.get_json()  # back in the queue


def test_an_engineer_still_holding_an_engineer_role_keeps_its_access(api, approved_request):
    """Only leaving support ends the access: removing another provider role (here the
    operator role) while eve keeps Support Engineer changes nothing."""
    given = api.put(ENGINEER_ROLE, "ops", {"principal": "eve", "role": "Support Access Operator"})
    assert given.status_code == 201, given.get_json()
    assert api.delete(f"{ENGINEER_ROLE}/eve/Support%20Access%20Operator", "ops").status_code == 204

    assert decide(api, read_check())["allowed"] is True
    assert (
        api.get(f"/v1/access-requests/{approved_request['id']}", "alice").get_json()["status"] == "approved"
    )


class TestRulesNarrowerThanTheShippedOnes:
    """access.yaml may let an access kind read only some categories."""

    @pytest.fixture
    def policy_dir(self, tmp_path):
        target = copy_policies(tmp_path)
        edit(
            target / "access.yaml",
            '  - [advanced_diagnostics, "diagnostics/*", read]',
            '  - [advanced_diagnostics, "diagnostics/signInLogs", read]',
        )
        return target

    def test_a_live_link_that_no_rule_lets_read_the_category_is_category_not_allowed(
        self, api, advanced_ticket
    ):
        assert decide(api, read_check())["reason"] == "advanced_diagnostics"  # signInLogs

        body = decide(api, read_check(resource="diagnostics/auditLogs"))

        assert (body["allowed"], body["reason"]) == (False, "category_not_allowed")


class TestProviderPermissionsHeldInACustomerTenant:
    """The provider's permissions count only when held in the provider tenant: a policy
    that lets a customer role carry one does not make its holders decision clients."""

    @pytest.fixture
    def policy_dir(self, tmp_path):
        target = copy_policies(tmp_path)
        edit(  # the first role carrying it: Global Administrator
            target / "roles.yaml",
            "      - microsoft.directory/auditLogs/allProperties/read\n",
            "      - microsoft.directory/auditLogs/allProperties/read\n"
            "      - supportAccess/decisions/evaluate\n",
        )
        return target

    def test_a_customer_admin_holding_the_evaluate_action_cannot_ask_for_decisions(
        self, api, approved_request
    ):
        answer = api.post(DECIDE, "alice", read_check())  # Global Administrator of contoso
        assert_error(answer, 403)
        assert answer.get_json()["error"]["code"] == "not_decision_client"


class TestEngineerPermissionsHeldThroughTwoRoles:
    """A security team may give an engineer's two permissions (workflow.yaml work_tickets
    and read_diagnostics) through two roles. Losing one of them is leaving support."""

    @pytest.fixture
    def policy_dir(self, tmp_path):
        target = copy_policies(tmp_path)
        edit(
            target / "roles.yaml",
            "      - supportAccess/tickets/work\n      - supportAccess/diagnostics/read\n",
            "      - supportAccess/tickets/work\n"
            "  - name: Diagnostics Reader\n"
            "    scope: provider\n"
            "    actions:\n"
            "      - supportAccess/diagnostics/read\n",
        )
        return target

    def test_losing_the_role_of_one_permission_ends_the_engineers_access(self, api, approved_request):
        given = api.put(ENGINEER_ROLE, "ops", {"principal": "eve", "role": "Diagnostics Reader"})
        assert given.status_code == 201, given.get_json()
        assert decide(api, read_check())["allowed"] is True

        assert api.delete(f"{ENGINEER_ROLE}/eve/Diagnostics%20Reader", "ops").status_code == 204
        assert (
            api.put(ENGINEER_ROLE, "ops", {"principal": "eve", "role": "Diagnostics Reader"}).status_code
            == 201
        )

        body = decide(api, read_check())
        assert (body["allowed"], body["reason"]) == (False, "no_active_grant")
        seen = api.get(f"/v1/access-requests/{approved_request['id']}", "alice").get_json()
        assert seen["status"] == "completed"


def test_reassigned_ticket_ends_the_old_engineers_grant(api, approved_request, ticket):
    assert decide(api, read_check())["allowed"] is True
    moved = api.post(f"/v1/support-requests/{ticket['id']}/assign", "ops", {"engineer": "frank"})
    assert moved.status_code == 200, moved.get_json()
    assert decide(api, read_check())["allowed"] is False
    assert decide(api, read_check(principal="frank"))["allowed"] is False


# --- advanced diagnostics ------------------------------------------------------------


def test_advanced_diagnostics_allows_assigned_engineer(api, advanced_ticket):
    body = decide(api, read_check())
    assert (body["allowed"], body["reason"]) == (True, "advanced_diagnostics")
    with_id = decide(api, read_check(support_request_id=advanced_ticket["id"]))
    assert (with_id["allowed"], with_id["reason"]) == (True, "advanced_diagnostics")


def test_advanced_diagnostics_covers_the_tickets_own_tenant_only(api, advanced_ticket):
    body = decide(api, read_check(tenant_id="fabrikam"))
    assert body["allowed"] is False


def test_advanced_diagnostics_of_cross_tenant_ticket_covers_filing_tenant_not_resource(api):
    """Filed by fabrikam about contoso: advanced diagnostics opens fabrikam's data only."""
    ticket = assign(api, new_ticket(api, "bob", "fabrikam", resource="contoso", advanced=True))
    assert decide(api, read_check(tenant_id="fabrikam"))["reason"] == "advanced_diagnostics"
    body = decide(api, read_check(tenant_id="contoso", support_request_id=ticket["id"]))
    assert body["allowed"] is False


def test_advanced_diagnostics_off_needs_a_grant(api):
    assign(api, new_ticket(api, "alice", "contoso", advanced=False))
    body = decide(api, read_check())
    assert (body["allowed"], body["reason"]) == (False, "no_active_grant")


def test_advanced_diagnostics_turned_off_stops_access(api, advanced_ticket):
    assert decide(api, read_check())["allowed"] is True
    patched = api.patch(
        f"/v1/support-requests/{advanced_ticket['id']}", "alice", {"allow_advanced_diagnostics": False}
    )
    assert patched.status_code == 200, patched.get_json()
    body = decide(api, read_check())
    assert (body["allowed"], body["reason"]) == (False, "no_active_grant")


def test_advanced_diagnostics_unassigned_engineer_denied(api, advanced_ticket):
    body = decide(api, read_check(principal="frank"))
    assert body["allowed"] is False


def test_other_engineers_ticket_id_does_not_open_access(api):
    franks = assign(api, new_ticket(api, "alice", "contoso", advanced=True), "frank")
    assert decide(api, read_check(principal="frank"))["reason"] == "advanced_diagnostics"
    body = decide(api, read_check(support_request_id=franks["id"]))
    assert body["allowed"] is False


def test_naming_a_ticket_without_advanced_diagnostics_is_not_opened_by_another_that_has_them(api):
    """With support_request_id only that ticket counts: eve's other contoso ticket that
    allows advanced diagnostics does not open the one that does not."""
    opened = assign(api, new_ticket(api, "alice", "contoso", advanced=True))
    closed_to_her = assign(api, new_ticket(api, "alice", "contoso"))

    body = decide(api, read_check(support_request_id=closed_to_her["id"]))

    assert (body["allowed"], body["reason"]) == (False, "no_active_grant")
    assert decide(api, read_check(support_request_id=opened["id"]))["reason"] == "advanced_diagnostics"


def test_advanced_diagnostics_unassigned_ticket_denies(api):
    new_ticket(api, "alice", "contoso", advanced=True)  # nobody assigned
    assert decide(api, read_check())["allowed"] is False


def test_advanced_diagnostics_ends_with_ticket_close(api, advanced_ticket):
    closed = api.post(f"/v1/support-requests/{advanced_ticket['id']}/close", "alice")
    assert closed.status_code == 200
    body = decide(api, read_check(support_request_id=advanced_ticket["id"]))
    assert (body["allowed"], body["reason"]) == (False, "support_request_closed")
    assert decide(api, read_check())["allowed"] is False


def test_advanced_diagnostics_is_still_read_only(api, advanced_ticket):
    body = decide(api, read_check(action="write"))
    assert (body["allowed"], body["reason"]) == (False, "read_only")


# --- the answer ----------------------------------------------------------------------


def test_explain_names_the_access_rule(api, approved_request):
    body = decide(api, read_check(explain=True))
    assert body["allowed"] is True
    assert isinstance(body["explain"], list) and body["explain"]
    assert any("access.yaml" in str(entry.get("rule", "")) for entry in body["explain"]), body["explain"]


def test_explain_on_deny_is_a_non_empty_list(api, approved_request):
    body = decide(api, read_check(action="write", explain=True))
    assert body["allowed"] is False
    assert isinstance(body["explain"], list) and body["explain"]


def test_explain_false_leaves_explain_out(api, approved_request):
    assert "explain" not in decide(api, read_check(explain=False))


def test_decision_ids_are_unique(api, approved_request):
    ids = [decide(api, read_check())["decision_id"] for _ in range(5)]
    results = batch(api, [read_check()] * 5 + [read_check(action="write")] * 5).get_json()["results"]
    ids += [r["decision_id"] for r in results]
    assert len(set(ids)) == len(ids) == 15


def test_policy_version_is_the_served_policy(api, approved_request):
    served = api.get("/v1/policy", "ops")
    assert served.status_code == 200
    version = served.get_json()["version"]
    assert decide(api, read_check())["policy_version"] == version
    assert decide(api, read_check(action="write"))["policy_version"] == version
    results = batch(api, [read_check(), read_check(tenant_id="nowhere")]).get_json()["results"]
    assert {r["policy_version"] for r in results} == {version}


# --- audit and decision log ---------------------------------------------------------------


def test_allowed_reads_show_in_resource_tenant_audit_only(api, approved_request):
    allowed = decide(api, read_check())
    decide(api, read_check(action="write"))  # a deny is not a data read
    contoso = audit_items(api, "alice", "contoso", "diagnostics.read")
    assert [e["details"]["decision_id"] for e in contoso] == [allowed["decision_id"]]
    assert contoso[0]["activity"] == "diagnostics.read"
    assert contoso[0]["tenant_id"] == "contoso"
    assert "signInLogs" in json.dumps(contoso[0])
    fabrikam = audit_items(api, "bob", "fabrikam")
    assert not [e for e in fabrikam if e["activity"] == "diagnostics.read"]


def test_batch_allowed_reads_are_all_audited(api, approved_request):
    results = batch(api, [read_check(), read_check(action="write"), read_check()]).get_json()["results"]
    expected = [r["decision_id"] for r in results if r["allowed"]]
    contoso = audit_items(api, "alice", "contoso", "diagnostics.read")
    assert [e["details"]["decision_id"] for e in contoso] == expected
    assert len(expected) == 2


def read_log(app) -> list[dict]:
    path = Path(app.config["DECISION_LOG"])
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_decision_log_gets_one_json_line_per_decision(app, api, approved_request):
    before = read_log(app)
    first = decide(api, read_check())
    second = decide(api, read_check(action="delete"))
    results = batch(api, [read_check(), read_check(tenant_id="nowhere"), read_check()]).get_json()
    lines = read_log(app)[len(before) :]
    expected = [first, second, *results["results"]]
    assert [line["decision_id"] for line in lines] == [d["decision_id"] for d in expected]
    assert [line["allowed"] for line in lines] == [True, False, True, False, True]
    assert lines[1]["reason"] == "read_only"


@pytest.mark.parametrize(
    ("value", "kept"), [("", ""), ("/var/log/decisions.jsonl", "/var/log/decisions.jsonl")]
)
def test_the_decision_log_variable_moves_the_log_or_empty_turns_it_off(monkeypatch, value, kept):
    """README "Configuration": SUPPORT_ACCESS_DECISION_LOG set but empty means no log."""
    from service import configured_app
    from service.decision_log import DecisionLog

    monkeypatch.setenv("SUPPORT_ACCESS_DECISION_LOG", value)
    configured = configured_app().config["DECISION_LOG"]
    assert configured == kept
    assert (DecisionLog(configured).path is None) is (value == "")


def test_rejected_batch_decides_and_logs_nothing(app, api, approved_request):
    before_log = len(read_log(app))
    before_audit = len(audit_items(api, "alice", "contoso", "diagnostics.read"))
    checks = [read_check(), read_check(), read_check(action="READ")]
    assert batch(api, checks).status_code == 400
    assert len(read_log(app)) == before_log
    assert len(audit_items(api, "alice", "contoso", "diagnostics.read")) == before_audit


# --- who may ask ---------------------------------------------------------------------


@pytest.mark.parametrize("who", ["eve", "alice", "ops"])
def test_only_decision_clients_may_ask(api, approved_request, who):
    assert_error(api.post(DECIDE, who, read_check()), 403)
    assert_error(api.post(BATCH, who, {"checks": [read_check()]}), 403)


def test_decisions_need_a_token(api):
    assert_error(api.post(DECIDE, None, read_check()), 401)


# --- batch ------------------------------------------------------------------------------


def test_batch_answers_in_order(api, approved_request):
    checks = [
        read_check(),
        read_check(action="write"),
        read_check(tenant_id="nowhere"),
        read_check(principal="mallory"),
        read_check(resource="diagnostics/unknownThing"),
        read_check(tenant_id="fabrikam"),
        read_check(resource="diagnostics/auditLogs"),
    ]
    answer = batch(api, checks)
    assert answer.status_code == 200
    results = answer.get_json()["results"]
    assert [r["reason"] for r in results] == [
        "granted",
        "read_only",
        "unknown_tenant",
        "unknown_principal",
        "category_not_allowed",
        "no_active_grant",
        "granted",
    ]
    assert [r["allowed"] for r in results] == [True, False, False, False, False, False, True]


def test_batch_explain_is_per_check(api, approved_request):
    results = batch(api, [read_check(explain=True), read_check()]).get_json()["results"]
    assert results[0]["explain"]
    assert "explain" not in results[1]


def test_batch_of_1000_checks_is_accepted(api, approved_request):
    checks = [read_check() if i % 10 == 0 else read_check(action="write") for i in range(1000)]
    answer = batch(api, checks)
    assert answer.status_code == 200
    results = answer.get_json()["results"]
    assert len(results) == 1000
    assert [r["allowed"] for r in results] == [i % 10 == 0 for i in range(1000)]


@pytest.mark.parametrize("count", [0, 1001])
def test_batch_size_limits(api, count):
    assert_error(batch(api, [read_check()] * count), 400, "checks")


def test_batch_names_the_bad_check(api):
    checks = [read_check() for _ in range(5)]
    checks[3]["action"] = "READ"
    assert_error(batch(api, checks), 400, "checks[3].action")


def test_batch_names_the_missing_field_of_a_check(api):
    checks = [read_check() for _ in range(3)]
    del checks[2]["principal"]
    assert_error(batch(api, checks), 400, "checks[2].principal")


def test_batch_without_checks_is_400(api):
    assert_error(api.post(BATCH, CLIENT, {}), 400, "checks")
    assert_error(api.post(BATCH, CLIENT, {"checks": "all"}), 400, "checks")


# --- malformed input ------------------------------------------------------------------------


def _without(field: str) -> dict:
    body = read_check()
    del body[field]
    return body


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (_without("principal"), "principal"),
        (_without("tenant_id"), "tenant_id"),
        (_without("action"), "action"),
        (_without("resource"), "resource"),
        (read_check(colour="blue"), "colour"),
        (read_check(principal=5), "principal"),
        (read_check(tenant_id=["contoso"]), "tenant_id"),
        (read_check(explain="yes"), "explain"),
        (read_check(support_request_id=7), "support_request_id"),
        (read_check(action="READ"), "action"),
        (read_check(action="Read"), "action"),
        (read_check(action=""), "action"),
        (read_check(resource=""), "resource"),
        (read_check(resource="diagnostics/" + "x" * 245), "resource"),
        (read_check(principal=""), "principal"),
    ],
)
def test_malformed_decision_is_400_naming_the_field(api, approved_request, body, field):
    error = assert_error(api.post(DECIDE, CLIENT, body), 400, field)
    assert error["code"]


def test_non_object_body_is_400(api):
    assert_error(api.post(DECIDE, CLIENT, [read_check()]), 400)
    assert_error(api.post(DECIDE, CLIENT, "read"), 400)


def test_read_records_are_the_audit_events_a_read_gets():
    """The decision path builds the journal records of allowed reads directly; they must
    be exactly what the audit module would build for the same events (the chain hashes
    them, and `audit verify` recomputes them from the stored columns)."""
    from datetime import UTC, datetime

    from service import audit, decisions
    from service.auth import Caller

    now = datetime(2026, 11, 28, 12, 30, 15, 123456, tzinfo=UTC)
    caller = Caller("diag-tool", "provider-tenant")
    granted = decisions.Decision(
        True, "granted", "v1", "d-1", access_request_id="ar-1", support_request_id="sr-1"
    )
    advanced = decisions.Decision(True, "advanced_diagnostics", "v1", "d-3", support_request_id="sr-2")
    denied = decisions.Decision(False, "no_active_grant", "v1", "d-2")
    answers = [
        (decisions.Check("eng-1", "contoso", "read", "diagnostics/signInLogs"), granted),
        (decisions.Check("eng-1", "fabrikam", "read", "diagnostics/auditLogs"), denied),
        (decisions.Check("eng-2", 'tenant "ü"', "read", "diagnostics/auditLogs"), advanced),
    ]
    # What the audit view shows of each read (API.md "Audit"), written out.
    reads = [
        ("contoso", "diagnostics/signInLogs", "d-1", "eng-1", "granted", "ar-1", "sr-1"),
        ('tenant "ü"', "diagnostics/auditLogs", "d-3", "eng-2", "advanced_diagnostics", None, "sr-2"),
    ]
    as_built = [
        audit.build(
            "diagnostics.read",
            caller,
            tenant,
            [tenant],
            resource,
            {
                "decision_id": decision_id,
                "engineer": engineer,
                "action": "read",
                "reason": reason,
                "access_request_id": access_request_id,
                "support_request_id": support_request_id,
                "policy_version": "v1",
            },
            now,
            event_id=decision_id,
        )
        for tenant, resource, decision_id, engineer, reason, access_request_id, support_request_id in reads
    ]
    # One allowed read: one event, the very record audit.build gives.
    assert decisions.reads_to_record(answers[:2], caller, now) == [audit.as_record(as_built[0])]
    # Several: one record, whose row each tenant sees as its own reads' events.
    [record] = decisions.reads_to_record(answers, caller, now)
    columns = dict(zip(audit.RECORD_FIELDS, record, strict=True))
    del columns["time_hashed"]
    row = audit.AuditEvent(seq=7, **{**columns, "time": now})
    assert audit.holds_reads(row.activity, row.tenant_id)
    assert json.loads(row.visible_to) == ["contoso", 'tenant "ü"']
    for built in as_built:
        assert [audit.to_json(e) for e in audit.expand(row, built.tenant_id)] == [audit.to_json(built)]
    assert audit.expand(row, "fabrikam") == []


def test_a_ticket_change_gives_every_worker_the_same_reason(app, api, approved_request, ticket, clock):
    """A worker whose index was loaded after a grant left the retention period answers
    as a fresh worker does, also after the grant's ticket changes (the index then reloads
    the ticket and the grants it holds under it)."""
    from service import create_app

    clock.advance(hours=9)  # the grant runs out; listing it sweeps it to `completed`
    assert (
        api.get(f"/v1/access-requests/{approved_request['id']}", "alice").get_json()["status"] == "completed"
    )
    clock.advance(days=31)  # past workflow.yaml timing.retention
    running = decide(api, read_check())  # this worker's index still holds the grant
    assert (running["allowed"], running["reason"]) == (False, "no_active_grant")
    keys = ("DATABASE_URL", "JWT_SECRET", "POLICY_DIR", "DECISION_LOG", "CLOCK")
    later_worker = type(api)(
        create_app({"TESTING": True, **{key: app.config[key] for key in keys}}).test_client()
    )
    before = later_worker.post(DECIDE, CLIENT, read_check()).get_json()
    assert (before["allowed"], before["reason"]) == (False, "no_active_grant")
    for allow in (True, False):  # two changes of the ticket, ending where it started
        changed = api.patch(
            f"/v1/support-requests/{ticket['id']}", "bob", {"allow_advanced_diagnostics": allow}
        )
        assert changed.status_code == 200, changed.get_json()
    after = later_worker.post(DECIDE, CLIENT, read_check()).get_json()
    assert (after["allowed"], after["reason"]) == (False, "no_active_grant")


def granted_ticket(api) -> tuple[dict, dict]:
    """A new cross-tenant ticket assigned to eve, and its access request approved by both."""
    ticket = assign(api, new_ticket(api, "bob", "fabrikam", resource="contoso"))
    body = {"support_request_id": ticket["id"], "justification": "read sign-in logs"}
    request = api.post("/v1/access-requests", "eve", body).get_json()
    for admin, tenant in (("alice", "contoso"), ("bob", "fabrikam")):
        approved = api.post(f"/v1/access-requests/{request['id']}/approve", admin, {"tenant_id": tenant})
        assert approved.status_code == 200, approved.get_json()
    assert decide(api, read_check(support_request_id=ticket["id"]))["reason"] == "granted"
    return ticket, approved.get_json()


def test_the_deny_reason_is_what_ended_last_not_an_older_ticket(api, clock):
    """Without support_request_id, the reason describes the engineer's latest ended access
    in the tenant: a grant revoked today is no_active_grant even if another of its tickets
    closed yesterday, and a grant that ran out is grant_expired."""
    first, _ = granted_ticket(api)
    assert api.post(f"/v1/support-requests/{first['id']}/close", "eve").status_code == 200
    assert decide(api, read_check())["reason"] == "support_request_closed"

    clock.advance(minutes=5)
    second, request = granted_ticket(api)
    assert api.post(f"/v1/access-requests/{request['id']}/revoke", "alice").status_code == 200
    reasons = [
        decide(api, read_check(**extra))["reason"] for extra in ({}, {"support_request_id": first["id"]})
    ]
    assert reasons == ["no_active_grant", "support_request_closed"]

    clock.advance(minutes=5)
    third, _ = granted_ticket(api)
    clock.advance(hours=9)  # its grant runs out (workflow.yaml timing.max_grant_duration: 8 h)
    assert decide(api, read_check())["reason"] == "grant_expired"

    assert api.post(f"/v1/support-requests/{second['id']}/close", "eve").status_code == 200
    assert decide(api, read_check())["reason"] == "support_request_closed"


def test_a_ticket_closed_before_the_retention_period_explains_nothing(api, approved_request, ticket, clock):
    """support_request_closed is reported for tickets closed within workflow.yaml
    timing.retention; after it, naming the ticket gets the plain deny a worker started
    later gives (its index does not hold the ticket)."""
    assert api.post(f"/v1/support-requests/{ticket['id']}/close", "eve").status_code == 200
    named = read_check(support_request_id=ticket["id"])
    assert decide(api, named)["reason"] == "support_request_closed"
    clock.advance(days=31)
    assert [decide(api, check)["reason"] for check in (named, read_check())] == ["no_active_grant"] * 2


def test_a_closed_ticket_explains_a_deny_only_to_its_engineer_in_its_tenants(api):
    """support_request_closed for a named ticket says the caller's own access ended with
    it. Named for another engineer, or for a tenant it never concerned, the closed
    ticket explains nothing (and tells nothing of that ticket)."""
    franks = assign(api, new_ticket(api, "alice", "contoso"), "frank")
    eves = assign(api, new_ticket(api, "alice", "contoso"))
    for ticket in (franks, eves):
        assert api.post(f"/v1/support-requests/{ticket['id']}/close", "alice").status_code == 200

    asked = {
        ("eve", "contoso", franks["id"]): "no_active_grant",
        ("eve", "contoso", eves["id"]): "support_request_closed",
        ("eve", "fabrikam", eves["id"]): "no_active_grant",
        ("frank", "contoso", franks["id"]): "support_request_closed",
    }
    for (principal, tenant_id, ticket_id), reason in asked.items():
        body = decide(api, read_check(principal=principal, tenant_id=tenant_id, support_request_id=ticket_id))
        assert (body["allowed"], body["reason"]) == (False, reason), (principal, tenant_id, ticket_id)


def test_a_grant_that_ran_out_before_the_retention_period_explains_nothing(api, approved_request, clock):
    """grant_expired is given for a grant that ran out within workflow.yaml
    timing.retention, whether or not anything has moved it to `completed` yet."""
    clock.advance(hours=9)
    assert decide(api, read_check())["reason"] == "grant_expired"
    clock.advance(days=31)  # and nothing has listed the request (which would complete it)
    assert decide(api, read_check())["reason"] == "no_active_grant"
