"""A stateful, model-based test of the support-access workflow and decisions.

Hypothesis drives the public HTTP API (Flask's test client) through random sequences of
workflow calls: tickets filed (same- and cross-tenant, with and without advanced
diagnostics), assigned, patched and closed; access requests filed, approved and rejected
on behalf of each party (by the right and by wrong callers), cancelled and revoked; the
clock moved past a pending request's expiry and a grant's end; engineers' and approvers'
role assignments removed and given back through the operator endpoints.

Beside it runs a small reference model written from SPEC.md, API.md and the README's
"Decisions we made where SPEC/API were silent" (not from the service's code). After every
step the machine checks against the model:

1. decisions (`/v1/decisions` and `/v1/decisions/batch`, with and without
   `support_request_id`) allow exactly when the model does, with the reason the model
   expects where the documents pin it;
2. every workflow call answers the status the model expects (201/200/204/400/403/404/409);
3. what each party sees (SPEC §5): each tenant's list of access requests with its view
   (status, `finished_at`, approvals); the support request tenant never sees a removal
   (`revoked` shows `approved`, later `completed`: in the list, filtered by status, in the
   request itself, also for an admin of both tenants picking that view), the resource
   tenant does; tenant admins' ticket lists and engineers' own request lists;
4. at the end of each run, the audit log's hash chain verifies (`flask audit verify`), and
   each tenant's audit view ends each request with the event its view of it shows (the
   support request tenant's has no `access_request.revoked`).

The world is tests/directory.yaml's (three customer tenants with admins, an admin of two
tenants, a Global Reader, two engineers, the decision client, the operator) plus a second
fabrikam admin and two admins whose ids may name an engineer (`EVE`, a full-width `ｆrank`).

One rule, `act`, drives the run: from the steps the model's state makes possible (assign
an unassigned ticket, file on a ticket that allows it, approve for a party still missing,
remove a live grant, move the clock, take a role away or give it back, or a blind call on
any object by any caller) it takes the one the drawn number picks, so that runs reach
grants, removals and closes (see `act`). Each call is noted with its answer for the
failure report.

Where the documents leave the order of two refusals open (e.g. a wrong caller on a
request that is no longer pending: 403 or 409), the model accepts either, and checks that
nothing changed.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import quote

from hypothesis import HealthCheck, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from models import database
from service import create_app
from service.clock import FakeClock
from service.policy import REPO_POLICY_DIR
from tests.conftest import SECRET, START, Api, read_check
from tests.helpers import DIRECTORY_FILE, app_config

TICKETS = "/v1/support-requests"
REQUESTS = "/v1/access-requests"

# The world: tests/directory.yaml, plus (EXTRA_ROLES) bob2, a second fabrikam admin that
# keeps its role, so that each customer tenant has one admin the machine never removes (its
# viewer), and two admins whose ids may name an engineer (README: "Principal ids that may
# name one person count as one approver"; compared NFKC-normalised and case-folded).
CUSTOMERS = ["contoso", "fabrikam", "northwind"]
ENGINEERS = ["eve", "frank"]
OPERATOR = "ops"
CLIENT = "diag-tool"
VIEWER = {"contoso": "alice2", "fabrikam": "bob2", "northwind": "nina"}
# Roles carrying microsoft.azure.supportTickets/allEntities/allTasks (policies/roles.yaml).
ADMIN_ROLES = {
    "Global Administrator",
    "Service Support Administrator",
    "User Administrator",
    "Helpdesk Administrator",
}
INITIAL_ROLES = {
    ("contoso", "alice", "Global Administrator"),
    ("contoso", "alice2", "Service Support Administrator"),
    ("fabrikam", "bob", "Service Support Administrator"),
    ("contoso", "carol", "Global Reader"),
    ("contoso", "sam", "Security Reader"),
    ("northwind", "nina", "Helpdesk Administrator"),
    ("contoso", "dana", "User Administrator"),
    ("fabrikam", "dana", "Helpdesk Administrator"),
    ("provider", "eve", "Support Engineer"),
    ("provider", "frank", "Support Engineer"),
    ("provider", "diag-tool", "Decision Client"),
    ("provider", "ops", "Support Access Operator"),
}
EXTRA_ROLES = {
    ("fabrikam", "bob2", "Service Support Administrator"),
    ("northwind", "EVE", "Helpdesk Administrator"),  # eve's look-alike
    ("contoso", "\uff46rank", "User Administrator"),  # frank with a full-width f
}
# What the operator takes away and gives back: both engineers, and approvers.
REMOVABLE = [
    ("provider", "eve", "Support Engineer"),
    ("provider", "frank", "Support Engineer"),
    ("contoso", "alice", "Global Administrator"),
    ("fabrikam", "bob", "Service Support Administrator"),
    ("contoso", "dana", "User Administrator"),
    ("fabrikam", "dana", "Helpdesk Administrator"),
]
# Everyone who may call a workflow endpoint, right or wrong.
PEOPLE = [
    "alice",
    "alice2",
    "bob",
    "bob2",
    "dana",
    "nina",
    "carol",
    "eve",
    "frank",
    "ops",
    "EVE",
    "\uff46rank",
]

# workflow.yaml timing.
PENDING_TTL = timedelta(hours=24)
MAX_GRANT = timedelta(hours=8)
RETENTION = timedelta(days=30)
# Clock steps are multiples of 7 minutes, and 8 h, 24 h and 30 d are not, so no sum of
# steps lands exactly on a deadline (the documents do not say which side a tie falls on).
STEPS = [35, 189, 483, 1442]  # minutes: a while, ~3 h, past a grant, past a pending expiry
PAST_RETENTION = 43204  # 30 d 4 min
assert all(step % 7 == 0 for step in [*STEPS, PAST_RETENTION])

CATEGORIES = ["signInLogs", "auditLogs"]
LOOSE = {"no_active_grant", "grant_expired", "support_request_closed"}
# The audit event that ends a request in a given status (API.md "Audit").
FINAL_EVENTS = {
    status: f"access_request.{status}"
    for status in ("rejected", "expired", "cancelled", "completed", "revoked")
}


def same_person(one: str, other: str) -> bool:
    """README: where taking two ids as one only refuses more (self-approval), ids are
    compared NFKC-normalised and case-folded."""
    return unicodedata.normalize("NFKC", one).casefold() == unicodedata.normalize("NFKC", other).casefold()


def stamp(moment: datetime | None) -> str | None:
    """API.md: ISO 8601 in UTC with a Z suffix (milliseconds, as the service answers)."""
    if moment is None:
        return None
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass
class Ticket:
    id: str
    tenant: str
    resource: str
    adv: bool
    assigned: str | None = None
    closed_at: datetime | None = None
    has_request: bool = False  # its resource tenant's admins may see it from then on

    @property
    def open(self) -> bool:
        return self.closed_at is None


@dataclass
class Request:
    id: str
    ticket: Ticket
    engineer: str
    parties: dict[str, str]  # tenant -> party ("resource" / "support_request")
    created_at: datetime
    status: str = "pending"
    approvals: dict[str, str] = field(default_factory=dict)  # party tenant -> approver (counting)
    access_expires_at: datetime | None = None
    finished_at: datetime | None = None
    # A revoked cross-tenant request, as the support request tenant sees it: `approved`
    # until its natural end (ticket closed, engineer reassigned or removed, grant ran out).
    natural_end: datetime | None = None

    @property
    def resource(self) -> str:
        return self.ticket.resource

    @property
    def sr_tenant(self) -> str:
        return self.ticket.tenant

    @property
    def cross(self) -> bool:
        return self.resource != self.sr_tenant

    @property
    def expires_at(self) -> datetime:
        return self.created_at + PENDING_TTL

    def view(self, tenant: str) -> tuple[str, str | None]:
        """(status, finished_at) as `tenant`'s view shows it (SPEC §5)."""
        if self.status == "revoked" and self.cross and tenant == self.sr_tenant:
            if self.natural_end is None:
                return "approved", None
            return "completed", stamp(self.natural_end)
        return self.status, stamp(self.finished_at)

    def view_finished(self, tenant: str) -> datetime | None:
        if self.status == "revoked" and self.cross and tenant == self.sr_tenant:
            return self.natural_end
        return self.finished_at


class WorkflowMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="workflow-model-"))
        self.clock = FakeClock(START)
        database_url = f"sqlite:///{self.directory / 'model.db'}"
        self.app = create_app(
            app_config(
                self.directory,
                database_url,
                SECRET,
                POLICY_DIR=str(REPO_POLICY_DIR),
                DECISION_LOG="",
                READ_JOURNAL_DIR=str(self.directory / "journal"),
                CLOCK=self.clock,
            )
        )
        runner = self.app.test_cli_runner()
        imported = runner.invoke(args=["directory", "import", str(DIRECTORY_FILE)])
        assert imported.exit_code == 0, imported.output
        self.api = Api(self.app.test_client())
        for tenant, principal, role in EXTRA_ROLES:
            body = {"principal": principal, "role": role}
            added = self.api.put(f"/v1/tenants/{tenant}/role-assignments", OPERATOR, body)
            assert added.status_code == 201, added.get_json()
        self.roles: set[tuple[str, str, str]] = INITIAL_ROLES | EXTRA_ROLES
        self.tickets: list[Ticket] = []
        self.requests: list[Request] = []
        # Access that ended, for the deny reason (README: "the one that ended last gives the
        # reason"): (engineer, tenant, ticket id, time, reason, pinned). reason None: the
        # documents do not pin which. pinned: "always"; "named" for a ticket closed while its
        # engineer held no access in that tenant through it (it explains a deny only to a
        # check naming it, README); "never" for the close of a ticket whose grant had ended
        # before (revoked, or the engineer reassigned or removed): it may count or not.
        self.ends: list[tuple[str, str, str, datetime, str | None, str]] = []
        self.steps = 0

    # ------------------------------------------------------------------ the model

    @property
    def now(self) -> datetime:
        return self.clock.current

    def has_role(self, principal: str) -> bool:
        return any(p == principal for _, p, _ in self.roles)

    def is_engineer(self, principal: str) -> bool:
        return ("provider", principal, "Support Engineer") in self.roles

    def is_admin(self, principal: str, tenant: str) -> bool:
        return any(t == tenant and p == principal and r in ADMIN_ROLES for t, p, r in self.roles)

    def admins_of(self, tenant: str) -> list[str]:
        return sorted({p for t, p, r in self.roles if t == tenant and r in ADMIN_ROLES})

    def sees_ticket(self, who: str, ticket: Ticket) -> bool:
        return (
            who == OPERATOR
            or self.is_engineer(who)
            or self.is_admin(who, ticket.tenant)
            or (ticket.has_request and self.is_admin(who, ticket.resource))
        )

    def sees_request(self, who: str, request: Request) -> bool:
        return (
            who == OPERATOR
            or (who == request.engineer and self.is_engineer(who))
            or self.is_admin(who, request.resource)
            or self.is_admin(who, request.sr_tenant)
        )

    def default_view(self, who: str, request: Request) -> str:
        if who in (OPERATOR, request.engineer) or self.is_admin(who, request.resource):
            return request.resource
        return request.sr_tenant

    def settle(self) -> None:
        """Time-based transitions that are due (the service applies them lazily, and its
        decisions compare the times themselves)."""
        for request in self.requests:
            if request.status == "pending" and self.now > request.expires_at:
                request.status, request.finished_at = "expired", request.expires_at
            elif request.status == "approved" and self.now > request.access_expires_at:
                request.status, request.finished_at = "completed", request.access_expires_at
                self.ended(request, request.access_expires_at, "grant_expired")
            elif request.status == "revoked" and request.natural_end is None:
                if self.now > request.access_expires_at:
                    request.natural_end = request.access_expires_at

    def ended(self, request: Request, moment: datetime, reason: str | None) -> None:
        self.ends.append((request.engineer, request.resource, request.ticket.id, moment, reason, "always"))

    def finish_requests(self, requests: list[Request], reason: str | None) -> None:
        """Their ticket closed, or their engineer was reassigned or left support (API.md,
        README): pending → cancelled, approved → completed (a deny's `reason` from then on;
        None: not pinned), a revoked one's natural end is now."""
        for request in requests:
            if request.status == "pending":
                request.status, request.finished_at = "cancelled", self.now
            elif request.status == "approved":
                request.status, request.finished_at = "completed", self.now
                self.ended(request, self.now, reason)
            elif request.status == "revoked" and request.natural_end is None:
                request.natural_end = self.now

    def expected_decision(self, principal, tenant, action, category, ticket_id) -> tuple[bool, set[str]]:
        if action != "read":
            return False, {"read_only"}
        if tenant not in [*CUSTOMERS, "provider"]:
            return False, {"unknown_tenant"}
        if not self.has_role(principal):
            return False, {"unknown_principal"}
        if category not in CATEGORIES:
            return False, {"category_not_allowed"}
        if not self.is_engineer(principal):
            return False, {"not_support_engineer"}
        reasons = set()
        for request in self.requests:
            ticket = request.ticket
            if (
                request.status == "approved"
                and request.engineer == principal
                and request.resource == tenant
                and ticket.open
                and ticket.assigned == principal
                and self.now < request.access_expires_at
                and ticket_id in (None, ticket.id)
            ):
                reasons.add("granted")
        for ticket in self.tickets:
            if (
                ticket.open
                and ticket.adv
                and ticket.assigned == principal
                and ticket.tenant == tenant
                and ticket_id in (None, ticket.id)
            ):
                reasons.add("advanced_diagnostics")
        if reasons:
            return True, reasons
        horizon = self.now - RETENTION
        ends = [
            (moment, reason, pinned == "never" or (pinned == "named" and ticket_id is None))
            for engineer, where, ticket, moment, reason, pinned in self.ends
            if engineer == principal and where == tenant and ticket_id in (None, ticket) and moment > horizon
        ]
        if not ends:
            return False, {"no_active_grant"}
        latest = max(moment for moment, _, _ in ends)
        if any(uncertain for moment, _, uncertain in ends if moment == latest):
            # The latest may not count: any reason of one that ended will do.
            return False, {"no_active_grant"} | {reason for _, reason, _ in ends if reason}
        expected: set[str] = set()
        for moment, reason, _ in ends:
            if moment == latest:
                expected |= {reason} if reason else LOOSE
        return False, expected

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def choose(items: list, index: int, focus: bool, wanted) -> object:
        """One of `items`, counted from the newest; with `focus`, one that is `wanted` if any."""
        pool = [item for item in items if wanted(item)] if focus else []
        pool = pool or items
        return pool[-1 - index % len(pool)]

    def pick_admin(self, tenant: str, pick: int, exclude: str | None = None) -> str:
        admins = [p for p in self.admins_of(tenant) if exclude is None or not same_person(p, exclude)]
        return admins[pick % len(admins)] if admins else "carol"

    def check_status(self, answer, expected: int | set[int], what: str) -> int:
        codes = {expected} if isinstance(expected, int) else expected
        note(f"{self.now:%m-%d %H:%M} {what}: {answer.status_code}")
        assert answer.status_code in codes, (what, sorted(codes), answer.status_code, answer.get_json())
        return answer.status_code

    def check_request_answer(self, answer, request: Request, who: str) -> None:
        body = answer.get_json()
        tenant = self.default_view(who, request)
        status, finished = request.view(tenant)
        view = "resource" if tenant == request.resource else "support_request"
        assert (body["status"], body["finished_at"], body["view"]) == (status, finished, view), (
            who,
            body,
        )

    # ------------------------------------------------------------------ the steps
    # Each step makes one call and checks its answer against the model. `index` picks an
    # object, counted from the newest; with `focus` one on which the call can succeed (an
    # open ticket, a pending request), else any. `who` is a principal or a role relative to
    # the object ("tenant", "resource", "support_request", "assigned", "engineer", ...).
    # `act` below chooses the steps.

    @initialize(
        cross=st.sampled_from([("fabrikam", "contoso"), ("contoso", "fabrikam"), ("northwind", "contoso")]),
        same=st.sampled_from(CUSTOMERS),
        adv=st.tuples(st.booleans(), st.booleans()),
    )
    def two_tickets(self, cross, same, adv):
        """Every run starts with a cross-tenant and a same-tenant ticket, filed by admins."""
        self.file_ticket(cross[0], cross[1], adv[0], "admin", 0, False)
        self.file_ticket(same, same, adv[1], "admin", 0, True)
        assert len(self.tickets) == 2

    def file_ticket(self, tenant, resource, adv, who, pick, defaults):
        self.settle()
        if who == "admin":
            who = self.pick_admin(tenant, pick)
        body = {"tenant_id": tenant, "title": "sign-ins fail"}
        if not (defaults and resource == tenant):  # resource_tenant_id defaults to tenant_id
            body["resource_tenant_id"] = resource
        if adv or not defaults:  # allow_advanced_diagnostics defaults to false
            body["allow_advanced_diagnostics"] = adv
        answer = self.api.post(TICKETS, who, body)
        if (
            self.check_status(answer, 201 if self.is_admin(who, tenant) else 403, f"file ticket by {who}")
            != 201
        ):
            return
        created = answer.get_json()
        assert (created["tenant_id"], created["resource_tenant_id"], created["status"]) == (
            tenant,
            resource,
            "open",
        )
        assert (created["allow_advanced_diagnostics"], created["assigned_engineer"]) == (adv, None)
        self.tickets.append(Ticket(created["id"], tenant, resource, adv))

    def reassign(self, c: int) -> None:
        """The operator moves a ticket, preferably one with a live request, to the other
        engineer (README: the previous engineer's requests of the ticket end)."""
        live = {r.ticket.id for r in self.requests if r.status in ("pending", "approved", "revoked")}
        # (Ids are random: order by creation, or a replayed run would pick another ticket.)
        moved = sorted((t for t in self.tickets if t.open and t.assigned), key=lambda t: t.id in live)
        moved = moved[-1 - c % 2 :]
        ticket = moved[0]
        self.assign(0, False, "ops", next(e for e in ENGINEERS if e != ticket.assigned), c, ticket)

    def assign(self, index, focus, mode, engineer, pick, ticket=None):
        self.settle()
        if ticket is None:
            ticket = self.choose(self.tickets, index, focus, lambda t: t.open and t.assigned is None)
        target = engineer
        if mode == "self":
            caller = engineer
        elif mode == "ops":
            caller = OPERATOR
        elif mode == "other":
            caller = engineer
            target = next(e for e in ENGINEERS if e != engineer)
        else:
            caller = self.pick_admin(ticket.tenant, pick)
        taken = ticket.assigned not in (None, target)
        if caller == OPERATOR:
            if not self.is_engineer(target):
                expected = {400} | ({409} if not ticket.open else set())
            else:
                expected = 409 if not ticket.open else 200
        elif caller in ENGINEERS and not self.is_engineer(caller):
            expected = {400, 403, 404}  # a former engineer: no longer in the queue
        elif self.is_engineer(caller):
            if target != caller:
                expected = {403} | ({409} if not ticket.open or taken else set())
            else:
                expected = 409 if not ticket.open or taken else 200
        else:
            expected = 403 if self.sees_ticket(caller, ticket) else 404
        answer = self.api.post(f"{TICKETS}/{ticket.id}/assign", caller, {"engineer": target})
        if self.check_status(answer, expected, f"assign {target} by {caller}") != 200:
            return
        assert answer.get_json()["assigned_engineer"] == target
        if ticket.assigned not in (None, target):  # an operator moved it: the old engineer's access ends
            previous = ticket.assigned
            previous_requests = [r for r in self.requests if r.ticket is ticket and r.engineer == previous]
            self.finish_requests(previous_requests, None)
        ticket.assigned = target

    def patch_advanced_diagnostics(self, index, focus, who, value, pick):
        self.settle()
        ticket = self.choose(self.tickets, index, focus, lambda t: t.open)
        if who in ("tenant", "resource"):
            who = self.pick_admin(ticket.tenant if who == "tenant" else ticket.resource, pick)
        if self.is_admin(who, ticket.tenant):
            expected = 200 if ticket.open else 409
        elif self.sees_ticket(who, ticket):
            expected = {403} | ({409} if not ticket.open else set())
        else:
            expected = 404
        answer = self.api.patch(f"{TICKETS}/{ticket.id}", who, {"allow_advanced_diagnostics": value})
        if self.check_status(answer, expected, f"patch by {who}") != 200:
            return
        assert answer.get_json()["allow_advanced_diagnostics"] == value
        ticket.adv = value

    def close_ticket(self, index, focus, who, pick):
        self.settle()
        ticket = self.choose(self.tickets, index, focus, lambda t: t.open)
        if who in ("tenant", "resource"):
            who = self.pick_admin(ticket.tenant if who == "tenant" else ticket.resource, pick)
        elif who == "assigned":
            who = ticket.assigned or "eve"
        elif who == "other":
            who = next(e for e in ENGINEERS if e != ticket.assigned)
        allowed = self.is_admin(who, ticket.tenant) or (who == ticket.assigned and self.is_engineer(who))
        if allowed:
            expected = 200 if ticket.open else 409
        elif self.sees_ticket(who, ticket):
            expected = {403} | ({409} if not ticket.open else set())
        else:
            expected = 404
        answer = self.api.post(f"{TICKETS}/{ticket.id}/close", who)
        if self.check_status(answer, expected, f"close by {who}") != 200:
            return
        assert answer.get_json()["status"] == "closed"
        ticket.closed_at = self.now
        requests = [r for r in self.requests if r.ticket is ticket]
        for request in requests:
            if request.access_expires_at is not None and request.status != "approved":
                # Revoked, or completed before (ran out, engineer reassigned or removed).
                closed = (request.engineer, request.resource, ticket.id, self.now, "support_request_closed")
                self.ends.append((*closed, "never"))
        self.finish_requests(requests, "support_request_closed")
        if ticket.assigned:  # the engineer's access through this ticket ended with it
            engineer = ticket.assigned
            for tenant in {ticket.tenant, ticket.resource}:
                held = any(
                    e[:4] == (engineer, tenant, ticket.id, self.now) and e[5] == "always" for e in self.ends
                )
                held = held or (ticket.adv and tenant == ticket.tenant)
                pinned = "always" if held else "named"
                self.ends.append((engineer, tenant, ticket.id, self.now, "support_request_closed", pinned))

    # ------------------------------------------------------------------ access requests

    def blocked(self, ticket: Ticket) -> bool:
        """A pending or approved request of the ticket, as the ticket's tenant sees it,
        blocks a new one (API.md; README: a revoked one too while that tenant sees it
        approved)."""
        return any(
            r.ticket is ticket and r.view(ticket.tenant)[0] in ("pending", "approved") for r in self.requests
        )

    def fileable(self, ticket: Ticket) -> bool:
        return ticket.open and ticket.assigned is not None and not self.blocked(ticket)

    def file_request(self, index, focus, who):
        self.settle()
        ticket = self.choose(self.tickets, index, focus, self.fileable)
        if who == "assigned":
            who = ticket.assigned or "eve"
        closed = {409} if not ticket.open else set()
        if not self.is_engineer(who):
            expected = {403, 404} | closed
        elif who != ticket.assigned:
            expected = {403} | closed
        elif not ticket.open or self.blocked(ticket):
            expected = 409
        else:
            expected = 201
        body = {"support_request_id": ticket.id, "justification": "read the sign-in logs"}
        answer = self.api.post(REQUESTS, who, body)
        if self.check_status(answer, expected, f"file request by {who}") != 201:
            return
        created = answer.get_json()
        parties = {ticket.resource: "resource"}
        if ticket.tenant != ticket.resource:
            parties[ticket.tenant] = "support_request"
        request = Request(created["id"], ticket, who, parties, self.now)
        required = sorted((item["tenant_id"], item["party"]) for item in created["required_approvals"])
        assert required == sorted(parties.items()), created
        assert (created["status"], created["engineer"], created["approvals"]) == ("pending", who, [])
        assert (created["resource_tenant_id"], created["support_request_tenant_id"]) == (
            ticket.resource,
            ticket.tenant,
        )
        assert created["expires_at"] == stamp(request.expires_at), created
        ticket.has_request = True
        self.requests.append(request)

    def decide_on_request(self, request: Request, who: str, tenant: str) -> int | set[int]:
        """The status approve/reject should answer (API.md; README: reject follows approve's
        rules, and a party that approved in full can no longer reject)."""
        if not self.sees_request(who, request):
            return 404
        errors: set[int] = set()
        if tenant not in request.parties:
            errors.add(400)
        if same_person(who, request.engineer) or not self.is_admin(who, tenant):
            errors.add(403)
        if request.status != "pending" or tenant in request.approvals:
            errors.add(409)
        # The documents do not order the refusals: any that applies will do.
        return errors or 200

    def party_tenant(self, request: Request, party: str) -> str:
        if party == "resource":
            return request.resource
        if party == "support_request":
            return request.sr_tenant
        if party in request.parties:  # a tenant given by name
            return party
        if party == "missing":
            return next((t for t in request.parties if t not in request.approvals), request.resource)
        return next(t for t in CUSTOMERS if t not in request.parties)

    def pending(self, request: Request) -> bool:
        return request.status == "pending"

    def lookalikes(self, request: Request) -> list[tuple[str, str]]:
        """(admin, party tenant): admins of a party whose id may name the engineer."""
        return [
            (admin, tenant)
            for tenant in request.parties
            for admin in self.admins_of(tenant)
            if admin != request.engineer and same_person(admin, request.engineer)
        ]

    def approve_as_lookalike(self, pick: int, reject: bool) -> None:
        """An admin whose id names the requesting engineer approves or rejects: 403."""
        pairs = [(r, pair) for r in self.requests if r.status == "pending" for pair in self.lookalikes(r)]
        request, (who, tenant) = pairs[pick % len(pairs)]
        index = len(self.requests) - 1 - self.requests.index(request)
        if reject:
            self.reject(index, False, tenant, who, pick)
        else:
            self.approve(index, False, tenant, who, pick)

    def call_for_party(self, verb, index, focus, party, who, pick, **body):
        """Approve or reject for a party; (request, tenant, caller, answer) if it is a 200."""
        self.settle()
        request = self.choose(self.requests, index, focus, self.pending)
        tenant = self.party_tenant(request, party)
        if who == "admin":
            who = self.pick_admin(tenant, pick, exclude=request.engineer)
        expected = self.decide_on_request(request, who, tenant)
        answer = self.api.post(f"{REQUESTS}/{request.id}/{verb}", who, {"tenant_id": tenant, **body})
        if self.check_status(answer, expected, f"{verb} for {tenant} by {who}") != 200:
            return None
        return request, tenant, who, answer

    def approve(self, index, focus, party, who, pick):
        done = self.call_for_party("approve", index, focus, party, who, pick)
        if done is None:
            return
        request, tenant, who, answer = done
        request.approvals[tenant] = who
        if set(request.approvals) == set(request.parties):
            request.status = "approved"
            request.access_expires_at = self.now + MAX_GRANT
        self.check_request_answer(answer, request, who)
        if request.status == "approved":
            assert answer.get_json()["access_expires_at"] == stamp(request.access_expires_at)

    def reject(self, index, focus, party, who, pick):
        done = self.call_for_party("reject", index, focus, party, who, pick, reason="not now")
        if done is None:
            return
        request, _, who, answer = done
        request.status, request.finished_at = "rejected", self.now
        self.check_request_answer(answer, request, who)

    def cancel(self, index, focus, who, pick):
        self.settle()
        request = self.choose(self.requests, index, focus, self.pending)
        if who == "engineer":
            who = request.engineer
        elif who == "other":
            who = next(e for e in ENGINEERS if e != request.engineer)
        elif who == "resource":
            who = self.pick_admin(request.resource, pick)
        if who == request.engineer and not self.is_engineer(who):
            # A former engineer: its pending requests were cancelled when it left.
            expected = {404, 409}
        elif not self.sees_request(who, request):
            expected = 404
        elif who != request.engineer:
            expected = {403} | ({409} if request.status != "pending" else set())
        else:
            expected = 200 if request.status == "pending" else 409
        answer = self.api.post(f"{REQUESTS}/{request.id}/cancel", who)
        if self.check_status(answer, expected, f"cancel by {who}") != 200:
            return
        request.status, request.finished_at = "cancelled", self.now
        self.check_request_answer(answer, request, who)

    def revoke(self, index, focus, who, pick):
        self.settle()
        request = self.choose(self.requests, index, focus, lambda r: r.status == "approved")
        if who in ("resource", "support_request"):
            who = self.pick_admin(request.resource if who == "resource" else request.sr_tenant, pick)
        elif who == "engineer":
            who = request.engineer
        if self.is_admin(who, request.resource):
            expected = 200 if request.status == "approved" else 409
        elif self.is_admin(who, request.sr_tenant):
            expected = 404  # README: the removal is never confirmed to that tenant
        elif who == OPERATOR or (who == request.engineer and self.is_engineer(who)):
            expected = 403
        elif who == request.engineer:
            expected = {403, 404}
        else:
            expected = 404
        answer = self.api.post(f"{REQUESTS}/{request.id}/revoke", who)
        if self.check_status(answer, expected, f"revoke by {who}") != 200:
            return
        request.status, request.finished_at = "revoked", self.now
        self.ended(request, self.now, "no_active_grant")
        body = answer.get_json()
        assert (body["status"], body["view"]) == ("revoked", "resource"), body

    # ------------------------------------------------------------------ time and directory

    def advance_clock(self, minutes):
        note(f"clock + {minutes} min")
        self.clock.advance(minutes=minutes)
        self.settle()

    def toggle_role(self, index, again):
        """Remove a role assignment, or give it back; `again` repeats the last change
        (a DELETE of an absent assignment is a 404, a PUT of a present one a 200)."""
        self.settle()
        tenant, principal, role = REMOVABLE[index]
        present = (tenant, principal, role) in self.roles
        if present != again:
            url = f"/v1/tenants/{tenant}/role-assignments/{principal}/{quote(role)}"
            answer = self.api.delete(url, OPERATOR)
            if self.check_status(answer, 204 if present else 404, f"remove {principal}") == 204:
                self.removed(tenant, principal, role)
        else:
            body = {"principal": principal, "role": role}
            answer = self.api.put(f"/v1/tenants/{tenant}/role-assignments", OPERATOR, body)
            self.check_status(answer, 200 if present else 201, f"add {principal}")
            self.roles.add((tenant, principal, role))

    def removed(self, tenant: str, principal: str, role: str) -> None:
        self.roles.discard((tenant, principal, role))
        if role == "Support Engineer":
            # README: an engineer that leaves support loses its access for good.
            self.finish_requests([r for r in self.requests if r.engineer == principal], None)
            for ticket in self.tickets:
                if ticket.open and ticket.assigned == principal:
                    ticket.assigned = None
        elif not self.is_admin(principal, tenant):
            # README: an approval that stopped counting stays void.
            for request in self.requests:
                if request.status == "pending" and request.approvals.get(tenant) == principal:
                    del request.approvals[tenant]

    # ------------------------------------------------------------------ a state-aware step

    @rule(choice=st.integers(0, 2**32 - 1))
    def act(self, choice):
        """One step among those the current state makes possible, picked by the drawn
        number. (Swarm testing turns each rule of a machine off in about half the runs,
        and a grant needs assign, file and approve on at once: so there is one rule, and
        the state decides what it may do. Each step is noted for the failure report.)"""
        self.settle()
        # Hypothesis draws small and repeated numbers most: spread them over the steps (a
        # bijection, so that a shrunk number still names one fixed step; 0 stays 0).
        choice = choice * 2654435761 % 2**32
        steps = self.possible_steps(choice)
        steps[choice % len(steps)](choice // len(steps))

    def possible_steps(self, choice: int) -> list:
        open_tickets = [t for t in self.tickets if t.open]
        pending = [r for r in self.requests if r.status == "pending"]
        approved = [r for r in self.requests if r.status == "approved"]
        engineer = ENGINEERS[choice >> 7 & 1]
        steps = [
            lambda c: self.advance_clock(STEPS[c % len(STEPS)]),
            lambda c: self.toggle_role(c % len(REMOVABLE), False),
        ]
        if self.steps > 25 and choice % 5 == 0:
            steps.append(lambda c: self.advance_clock(PAST_RETENTION))
        if len(self.tickets) < 5:
            steps.append(
                lambda c: self.file_ticket(
                    CUSTOMERS[c % 3], CUSTOMERS[c // 3 % 3], c % 2 == 0, "admin", c, True
                )
            )
        if any(t.assigned is None for t in open_tickets):
            steps.append(lambda c: self.assign(c, True, ["self", "ops"][c % 2], engineer, c))
        if any(t.assigned for t in open_tickets):
            steps.append(self.reassign)
        if any(self.fileable(t) for t in self.tickets):
            steps += [lambda c: self.file_request(c, True, "assigned")] * 2
        if pending:
            # An admin of a party that has not approved yet approves (the usual case).
            steps += [lambda c: self.approve(c, True, "missing", "admin", c)] * 4
            steps.append(lambda c: self.cancel(c, True, "engineer", c))
            steps.append(lambda c: self.reject(c, True, ["resource", "support_request"][c % 2], "admin", c))
        if any(self.lookalikes(r) for r in pending):
            steps.append(lambda c: self.approve_as_lookalike(c, c % 3 == 0))
        bounced = [
            index
            for index, (tenant, principal, _) in enumerate(REMOVABLE)
            if any(r.approvals.get(tenant) == principal for r in pending)
        ]
        if bounced:
            steps += [lambda c: self.bounce_role(bounced[c % len(bounced)])] * 3
        if approved:
            # An admin of the resource tenant removes a live grant; or one of the support
            # request tenant tries to (and must not learn that there is one).
            steps.append(
                lambda c: self.revoke(c, True, ["resource", "resource", "support_request"][c % 3], c)
            )
            steps.append(lambda c: self.revoke(c, True, "resource", c))
        if open_tickets:
            steps.append(lambda c: self.close_ticket(c, True, ["tenant", "assigned"][c % 2], c))
            steps.append(lambda c: self.patch_advanced_diagnostics(c, True, "tenant", c % 2 == 0, c))
        steps += [self.blind_step] * 3
        return steps

    def blind_step(self, c: int) -> None:
        """A call on any object by any caller, mostly a wrong one (the refusals)."""
        who = PEOPLE[c // 7 % len(PEOPLE)]
        calls = [
            lambda: self.file_ticket(CUSTOMERS[c % 3], CUSTOMERS[c // 3 % 3], False, who, 0, False),
            lambda: self.assign(c, False, ["self", "ops", "other", "admin"][c // 7 % 4], ENGINEERS[c % 2], c),
            lambda: self.patch_advanced_diagnostics(c, False, who, c % 2 == 0, c),
            lambda: self.close_ticket(c, False, who, c),
            lambda: self.file_request(c, False, ENGINEERS[c // 7 % 2]),
            lambda: self.toggle_role(c // 7 % len(REMOVABLE), True),
        ]
        if self.requests:
            party = ["resource", "support_request", "other"][c // 11 % 3]
            calls += [
                lambda: self.approve(c, False, party, who, c),
                lambda: self.approve(c, True, party, who, c),
                lambda: self.reject(c, False, party, who, c),
                lambda: self.cancel(c, False, who, c),
                lambda: self.revoke(c, False, who, c),
                lambda: self.revoke(c, True, who, c),
            ]
        calls[c % len(calls)]()

    def bounce_role(self, index: int) -> None:
        """An approver of a pending request loses its role and gets it back: its approval
        stays void (README), the party must approve again."""
        tenant, principal, role = REMOVABLE[index]
        self.toggle_role(index, False)
        self.check_invariants_now()
        if (tenant, principal, role) not in self.roles:
            self.toggle_role(index, False)

    def check_invariants_now(self) -> None:
        self.decisions_follow_the_model()
        self.each_tenant_sees_its_view()
        self.a_removal_stays_hidden()
        self.tickets_and_own_requests_as_listed()

    # ------------------------------------------------------------------ invariants

    def checks(self) -> list[dict]:
        checks = []
        for engineer in ENGINEERS:
            for tenant in CUSTOMERS:
                for category in CATEGORIES:
                    checks.append((engineer, tenant, "read", category, None))
        for ticket in self.tickets:
            for engineer in ENGINEERS:
                for tenant in sorted({ticket.tenant, ticket.resource}):
                    checks.append((engineer, tenant, "read", "signInLogs", ticket.id))
        checks += [
            ("eve", "contoso", "write", "signInLogs", None),
            ("frank", "fabrikam", "write", "auditLogs", self.tickets[0].id if self.tickets else None),
            ("eve", "fabrikam", "read", "notACategory", None),
            ("eve", "atlantis", "read", "signInLogs", None),
            ("nobody", "contoso", "read", "signInLogs", None),
            ("alice", "contoso", "read", "signInLogs", None),
            ("frank", "contoso", "read", "signInLogs", "sr-no-such-ticket"),
        ]
        return checks

    @invariant()
    def decisions_follow_the_model(self):
        self.steps += 1
        self.settle()
        checks = self.checks()
        bodies = []
        for principal, tenant, action, category, ticket_id in checks:
            body = read_check(principal, tenant, action=action, resource=f"diagnostics/{category}")
            if ticket_id is not None:
                body["support_request_id"] = ticket_id
            bodies.append(body)
        answer = self.api.post("/v1/decisions/batch", CLIENT, {"checks": bodies})
        assert answer.status_code == 200, answer.get_json()
        results = answer.get_json()["results"]
        assert len(results) == len(checks)
        # One check a step also goes through the single-decision endpoint.
        single = self.steps % len(checks)
        one = self.api.post("/v1/decisions", CLIENT, bodies[single])
        assert one.status_code == 200, one.get_json()
        assert (one.get_json()["allowed"], one.get_json()["reason"]) == (
            results[single]["allowed"],
            results[single]["reason"],
        ), bodies[single]
        for check, result in zip(checks, results, strict=True):
            allowed, reasons = self.expected_decision(*check)
            assert (result["allowed"], result["reason"] in reasons) == (allowed, True), (
                check,
                result,
                sorted(reasons),
            )

    @invariant()
    def each_tenant_sees_its_view(self):
        horizon = self.now - RETENTION
        for tenant in CUSTOMERS:
            answer = self.api.get(f"{REQUESTS}?tenant_id={tenant}", VIEWER[tenant])
            assert answer.status_code == 200, answer.get_json()
            items = {item["id"]: item for item in answer.get_json()["items"]}
            expected = {
                r.id: r
                for r in self.requests
                if tenant in r.parties
                and (r.view_finished(tenant) is None or r.view_finished(tenant) > horizon)
            }
            assert set(items) == set(expected), (tenant, sorted(items), sorted(expected))
            for request_id, item in items.items():
                request = expected[request_id]
                status, finished = request.view(tenant)
                view = "resource" if tenant == request.resource else "support_request"
                assert (item["status"], item["finished_at"], item["view"]) == (status, finished, view), (
                    tenant,
                    item,
                )
                # README: a pending request lists the approvals that count; one no longer
                # pending those it was decided with (here, where lapsed approvals are
                # dropped when the role is removed, the same ones).
                approvals = {(a["tenant_id"], a["approver"]) for a in item["approvals"]}
                assert approvals == set(request.approvals.items()), (tenant, item)
                assert item["access_expires_at"] == stamp(request.access_expires_at), (tenant, item)

    @invariant()
    def tickets_and_own_requests_as_listed(self):
        """A tenant admin lists its tenant's tickets, and those about it once an access
        request concerns it (API.md); an engineer lists the requests it filed, with the
        resource tenant's view (README). One tenant and one engineer a step, in turn."""
        tenant = CUSTOMERS[self.steps % len(CUSTOMERS)]
        answer = self.api.get(TICKETS, VIEWER[tenant])
        assert answer.status_code == 200, answer.get_json()
        items = {item["id"]: item for item in answer.get_json()["items"]}
        expected = {
            t.id: t for t in self.tickets if tenant == t.tenant or (tenant == t.resource and t.has_request)
        }
        assert set(items) == set(expected), (tenant, sorted(items), sorted(expected))
        for ticket_id, item in items.items():
            ticket = expected[ticket_id]
            shown = (item["status"], item["assigned_engineer"], item["allow_advanced_diagnostics"])
            status = "open" if ticket.open else "closed"
            assert shown == (status, ticket.assigned, ticket.adv), (tenant, item)
        horizon = self.now - RETENTION
        engineer = ENGINEERS[self.steps % len(ENGINEERS)]
        if self.is_engineer(engineer):
            answer = self.api.get(REQUESTS, engineer)
            assert answer.status_code == 200, answer.get_json()
            listed = {item["id"]: (item["status"], item["view"]) for item in answer.get_json()["items"]}
            own = {
                r.id: (r.status, "resource")
                for r in self.requests
                if r.engineer == engineer and (r.finished_at is None or r.finished_at > horizon)
            }
            assert listed == own, (engineer, listed, own)

    @invariant()
    def a_removal_stays_hidden(self):
        """SPEC §5 on each way the support request tenant can ask about a revoked request:
        the request itself (as its own admin, and as an admin of both tenants picking that
        view), and the list filtered on `revoked` or on the status its view shows."""
        horizon = self.now - RETENTION
        for request in self.requests:
            if request.status != "revoked" or not request.cross:
                continue
            tenant = request.sr_tenant
            status, finished = request.view(tenant)
            askers = [(VIEWER[tenant], "")]
            if self.is_admin("dana", request.resource) and self.is_admin("dana", tenant):
                askers.append(("dana", f"?tenant_id={tenant}"))
            for who, query in askers:
                answer = self.api.get(f"{REQUESTS}/{request.id}{query}", who)
                assert answer.status_code == 200, (who, answer.get_json())
                body = answer.get_json()
                assert (body["status"], body["finished_at"], body["view"]) == (
                    status,
                    finished,
                    "support_request",
                ), (who, body)
            if request.view_finished(tenant) is not None and request.view_finished(tenant) <= horizon:
                continue
            for shown in ("revoked", status):
                answer = self.api.get(f"{REQUESTS}?tenant_id={tenant}&status={shown}", VIEWER[tenant])
                assert answer.status_code == 200, answer.get_json()
                listed = request.id in {item["id"] for item in answer.get_json()["items"]}
                assert listed == (shown == status), (tenant, shown, request.id)
            answer = self.api.get(f"{REQUESTS}/{request.id}", VIEWER[request.resource])
            assert answer.get_json()["status"] == "revoked", answer.get_json()

    def teardown(self):
        try:
            if self.steps and sys.exc_info()[0] is None:  # not over a failure already reported
                self.audit_checks()
        finally:
            if not database.is_closed():
                database.close()
            shutil.rmtree(self.directory, ignore_errors=True)

    def audit_checks(self):
        """The chain verifies, and each tenant's audit view ends each request as its view
        of the request does: the support request tenant's view of a removed grant has no
        `access_request.revoked`, and an `access_request.completed` once the request
        shows completed there (README, "Privacy and views"); the resource tenant's has the
        removal."""
        verified = self.app.test_cli_runner().invoke(args=["audit", "verify"])
        assert verified.exit_code == 0, verified.output
        self.settle()
        for tenant in CUSTOMERS:
            answer = self.api.get(f"/v1/audit-events?tenant_id={tenant}", VIEWER[tenant])
            assert answer.status_code == 200, answer.get_json()
            events: dict[str, list[str]] = {}
            for event in answer.get_json()["items"]:
                events.setdefault(event["target"], []).append(event["activity"])
            for request in self.requests:
                if tenant not in request.parties:
                    continue
                status, _ = request.view(tenant)
                ends = [a for a in events.get(request.id, []) if a in FINAL_EVENTS.values()]
                expected = [FINAL_EVENTS[status]] if status in FINAL_EVENTS else []
                assert ends == expected, (tenant, request.id, status, events.get(request.id))


WorkflowMachine.TestCase.settings = settings(
    max_examples=50,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestWorkflowModel = WorkflowMachine.TestCase
