"""Tickets and support access requests: the state machine of SPEC §4.

Every transition runs in one write transaction that re-reads (and on PostgreSQL locks) the
row it starts from, re-checks its state, changes it and writes the audit event. Time-based
transitions (pending expiry, grant expiry) are applied lazily by `sweep`, and decisions
check the times themselves, so nothing depends on a background job having run.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime

from peewee import chunked, fn

from models import AccessRequest, Approval, SupportRequest, database, is_sqlite, transaction
from service import audit, directory
from service.clock import isoformat
from service.errors import BadRequest, Conflict, Forbidden, NotFound
from service.policy import Policy
from service.viewer import Viewer

PENDING, APPROVED, REJECTED, EXPIRED = "pending", "approved", "rejected", "expired"
CANCELLED, COMPLETED, REVOKED = "cancelled", "completed", "revoked"
LIVE = (PENDING, APPROVED)
SYSTEM = "system"


def _new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:20]}"


def _locking(query):
    """`query`, locking the rows it reads on PostgreSQL (SQLite's writers are serial)."""
    return query if is_sqlite(database.obj) else query.for_update()


def _locked(model, key: str):
    """Re-read a row inside the current transaction, locking it on PostgreSQL."""
    return _locking(model.select().where(model.id == key)).first()


def _parties(request: AccessRequest) -> list[str]:
    return sorted({request.resource_tenant_id, request.support_request_tenant_id})


# --- tickets ---------------------------------------------------------------------


def create_ticket(policy: Policy, viewer: Viewer, body: dict, now: datetime) -> SupportRequest:
    tenant_id = body["tenant_id"]
    resource_tenant_id = body.get("resource_tenant_id") or tenant_id
    if tenant_id not in viewer.admin_of:
        message = f"you hold no role in tenant {tenant_id!r} that may file support requests"
        raise Forbidden(message, code="not_tenant_admin")
    if not directory.tenant_exists(resource_tenant_id):
        raise BadRequest(f"resource_tenant_id: unknown tenant {resource_tenant_id!r}", code="unknown_tenant")
    with transaction():
        ticket = SupportRequest.create(
            id=_new_id("sr"),
            tenant_id=tenant_id,
            resource_tenant_id=resource_tenant_id,
            title=body["title"],
            status="open",
            allow_advanced_diagnostics=body.get("allow_advanced_diagnostics", False),
            assigned_engineer=None,
            created_by=viewer.principal,
            created_at=now,
        )
        details = {"title": ticket.title, "resource_tenant_id": resource_tenant_id}
        details["allow_advanced_diagnostics"] = ticket.allow_advanced_diagnostics
        _ticket_event("support_request.created", viewer, ticket, details, now)
    return ticket


def _ticket_event(activity: str, actor, ticket: SupportRequest, details: dict, now: datetime):
    # The resource tenant sees ticket events only once an access request concerns it.
    audit.record(activity, actor, ticket.tenant_id, [ticket.tenant_id], ticket.id, details, now)


def visible_ticket(viewer: Viewer, ticket_id: str) -> SupportRequest:
    ticket = SupportRequest.get_or_none(SupportRequest.id == ticket_id)
    if ticket is None or not viewer.sees_ticket(ticket):
        raise NotFound(f"support request {ticket_id!r} not found")
    return ticket


def list_tickets(viewer: Viewer, status: str | None, tenant_id: str | None = None) -> list[SupportRequest]:
    """The tickets the viewer's list shows: those it may read (Viewer.sees_ticket);
    `tenant_id`: only those concerning that tenant (filed by it or about it), as the
    access-request list filters."""
    query = SupportRequest.select().order_by(SupportRequest.created_at, SupportRequest.id)
    if not (viewer.is_engineer or viewer.is_operator):
        admin_of = sorted(viewer.admin_of) or [""]
        requested = AccessRequest.select().where(AccessRequest.support_request == SupportRequest.id)
        query = query.where(
            SupportRequest.tenant_id.in_(admin_of)
            | (SupportRequest.resource_tenant_id.in_(admin_of) & fn.EXISTS(requested))
        )
    if tenant_id is not None:
        query = query.where(
            (SupportRequest.tenant_id == tenant_id) | (SupportRequest.resource_tenant_id == tenant_id)
        )
    if status:
        query = query.where(SupportRequest.status == status)
    return list(query)


def assign_ticket(policy: Policy, viewer: Viewer, ticket_id: str, engineer: str, now, provider):
    sweep(now)
    ticket = visible_ticket(viewer, ticket_id)
    if not (viewer.is_operator or viewer.is_engineer):
        raise Forbidden("only support engineers and operators assign tickets", code="not_allowed")
    if not viewer.is_operator and engineer != viewer.principal:
        raise Forbidden("a support engineer may assign only itself", code="not_allowed")
    with transaction():
        # Inside the transaction: an engineer removed meanwhile must not be assigned after
        # its removal unassigned its tickets (end_access_of_former_engineers).
        if not directory.has_permission(policy, engineer, provider, "work_tickets"):
            raise BadRequest(f"engineer: {engineer!r} is not a support engineer", code="not_an_engineer")
        ticket = _locked(SupportRequest, ticket.id)
        if ticket.status != "open":
            raise Conflict("the support request is closed", code="support_request_closed")
        previous = ticket.assigned_engineer
        if previous == engineer:
            return ticket
        # An operator may move a ticket to another engineer, but not take it over for
        # itself: operators never gain data access by their power (SPEC §5).
        if previous and (not viewer.is_operator or engineer == viewer.principal):
            raise Conflict(f"the support request is assigned to {previous!r}", code="already_assigned")
        ticket.assigned_engineer = engineer
        ticket.save()
        if previous:  # the old engineer's access ends with its assignment
            for request in _locked_requests(ticket, AccessRequest.engineer == previous):
                _finish_for_ticket_end(request, viewer, now, "reassigned")
        details = {"engineer": engineer, "previous_engineer": previous}
        _ticket_event("support_request.assigned", viewer, ticket, details, now)
    return ticket


def update_ticket(viewer: Viewer, ticket_id: str, allow: bool, now: datetime) -> SupportRequest:
    ticket = visible_ticket(viewer, ticket_id)
    if not viewer.may_manage_ticket(ticket):
        raise Forbidden("only the ticket tenant's admins may change it", code="not_tenant_admin")
    with transaction():
        ticket = _locked(SupportRequest, ticket.id)
        if ticket.status != "open":
            raise Conflict("the support request is closed", code="support_request_closed")
        if ticket.allow_advanced_diagnostics != allow:
            ticket.allow_advanced_diagnostics = allow
            ticket.save()
            details = {"allow_advanced_diagnostics": allow}
            _ticket_event("support_request.updated", viewer, ticket, details, now)
    return ticket


def close_ticket(viewer: Viewer, ticket_id: str, now: datetime) -> SupportRequest:
    sweep(now)  # expiries already due happen before the close, as they would have
    ticket = visible_ticket(viewer, ticket_id)
    is_assignee = viewer.is_engineer and ticket.assigned_engineer == viewer.principal
    if not (is_assignee or viewer.may_manage_ticket(ticket)):
        message = "only the assigned engineer or the ticket tenant's admins may close it"
        raise Forbidden(message, code="not_allowed")
    with transaction():
        ticket = _locked(SupportRequest, ticket.id)
        if ticket.status != "open":
            raise Conflict("the support request is already closed", code="support_request_closed")
        ticket.status, ticket.closed_at = "closed", now
        ticket.save()
        for request in _locked_requests(ticket):
            _finish_for_ticket_end(request, viewer, now, "support_request_closed")
        tenants = {ticket.tenant_id}
        if ticket.access_requests.exists():
            tenants.add(ticket.resource_tenant_id)
        audit.record("support_request.closed", viewer.caller, ticket.tenant_id, tenants, ticket.id, {}, now)
    return ticket


def _locked_requests(ticket: SupportRequest, *conditions) -> list[AccessRequest]:
    """The ticket's access requests, locked (PostgreSQL) like every other transition's
    row: a revoke or expiry committed meanwhile is then seen, not overwritten."""
    query = AccessRequest.select().where(AccessRequest.support_request == ticket.id, *conditions)
    if not is_sqlite(database.obj):
        query = query.order_by(AccessRequest.id)  # rows locked in one order
    return list(_locking(query))


def _finish_for_ticket_end(request: AccessRequest, actor, now: datetime, why: str) -> None:
    """Pending -> cancelled, approved -> completed; a revocation becomes visible to the
    support request tenant as completion."""
    if request.status == PENDING:
        _transition(request, CANCELLED, actor, now, "access_request.cancelled", {"reason": why})
    elif request.status == APPROVED:
        _transition(request, COMPLETED, actor, now, "access_request.completed", {"reason": why})
    elif request.status == REVOKED and request.support_request_view_status == APPROVED:
        _close_requester_view(request, actor, now, {"reason": why}, ended_at=now)


# Permissions (workflow.yaml) a support engineer's access rests on: working the ticket
# and being the subject of data-access decisions.
ENGINEER_PERMISSIONS = ("work_tickets", "read_diagnostics")


def end_access_of_former_engineers(policy: Policy, principals, provider: str, actor, now: datetime) -> None:
    """After a directory change removed roles of `principals` in the provider tenant (inside
    its transaction): one that no longer holds every permission an engineer's access rests
    on has left support, and its access ends as when its ticket is reassigned (pending
    requests cancelled, approved ones completed), and its open tickets go back to the
    queue (unassigned: advanced diagnostics follow the assignment). Its decisions denied
    at once anyway; without this, giving the role back gave the access back without a
    new approval or assignment."""
    sweep(now)  # what ran out before ends as having run out
    for principal in sorted(set(principals)):
        if all(directory.has_permission(policy, principal, provider, p) for p in ENGINEER_PERMISSIONS):
            continue
        tickets = SupportRequest.select().where(
            (SupportRequest.assigned_engineer == principal) & (SupportRequest.status == "open")
        )
        for ticket in _locking(tickets.order_by(SupportRequest.id)):
            ticket.assigned_engineer = None
            ticket.save()
            details = {"engineer": None, "previous_engineer": principal, "reason": "engineer_removed"}
            _ticket_event("support_request.assigned", actor, ticket, details, now)
        query = AccessRequest.select().where(
            (AccessRequest.engineer == principal)
            & (
                AccessRequest.status.in_(LIVE)
                | (
                    (AccessRequest.status == REVOKED)
                    & (AccessRequest.support_request_view_status == APPROVED)
                )
            )
        )
        for request in _locking(query.order_by(AccessRequest.created_at, AccessRequest.id)):
            _finish_for_ticket_end(request, actor, now, "engineer_removed")


def drop_lapsed_approvals_of(policy: Policy, removed: list[tuple[str, str]], now: datetime) -> None:
    """After a directory change removed roles (inside its transaction; `removed` holds
    (tenant, principal) pairs): the approvals those principals gave on behalf of those
    tenants to pending requests lapse now, if they no longer hold a qualifying role
    there. Left to the next approve or reject, a role given back in between made the
    approval count again, though the request had listed it as gone (SPEC §3)."""
    pairs = set(removed)
    if not pairs:
        return
    sweep(now)  # a request that ran out meanwhile ends as having run out, not with a lapse
    ids: set[str] = set()
    # One query per 500 principals, not one per pair: a prune may remove thousands.
    for batch in chunked(sorted({principal for _, principal in pairs}), 500):
        query = (
            Approval.select(Approval.access_request, Approval.tenant_id, Approval.approver)
            .join(AccessRequest)
            .where(Approval.approver.in_(batch) & (AccessRequest.status == PENDING))
        )
        ids.update(a.access_request_id for a in query if (a.tenant_id, a.approver) in pairs)
    for request_id in sorted(ids):  # rows locked in one order
        request = _locked(AccessRequest, request_id)
        if request is not None and request.status == PENDING:
            _drop_lapsed_approvals(policy, request, now)


# --- access requests -------------------------------------------------------------


def _exists_message(live: AccessRequest) -> str:
    """Why a new request is refused, told as the filing engineer sees the live one (its
    true status: the engineer is the one party that saw the revocation happen)."""
    if live.status in LIVE:
        return f"access request {live.id} is already {live.status} for this support request"
    ends = isoformat(live.access_expires_at)
    return (
        f"access request {live.id} was revoked, but the support request's tenant still sees it "
        f"approved: a new one can be filed once that access ends ({ends}) or the ticket closes"
    )


def create_access_request(
    policy: Policy, viewer: Viewer, body: dict, now: datetime, provider: str
) -> AccessRequest:
    ticket = visible_ticket(viewer, body["support_request_id"])
    message = "only the engineer assigned to the support request may file an access request"
    if not (viewer.is_engineer and ticket.assigned_engineer == viewer.principal):
        raise Forbidden(message, code="not_assigned")
    sweep(now)
    with transaction():
        ticket = _locked(SupportRequest, ticket.id)
        if ticket.status != "open":
            raise Conflict("the support request is closed", code="support_request_closed")
        # The viewer and the ticket were read before this transaction: a reassignment or a
        # directory change committed since may have ended this engineer's requests
        # (end_access_of_former_engineers), and one filed after it would outlive that end.
        if ticket.assigned_engineer != viewer.principal or not directory.has_permission(
            policy, viewer.principal, provider, "work_tickets"
        ):
            raise Forbidden(message, code="not_assigned")
        # A revoked request still shows as approved to another support request tenant; a
        # new request beside it would reveal the removal, so it counts as live until then.
        # (The tenant check covers same-tenant revocations recorded before they were shown.)
        hidden_revocation = (AccessRequest.support_request_view_status == APPROVED) & (
            AccessRequest.support_request_tenant_id != AccessRequest.resource_tenant_id
        )
        live = ticket.access_requests.where(AccessRequest.status.in_(LIVE) | hidden_revocation).first()
        if live:
            raise Conflict(_exists_message(live), code="access_request_exists")
        cross = ticket.tenant_id != ticket.resource_tenant_id
        # Kept with the request: one filed under a rule is approved under that rule.
        distinct = policy.distinct_approvers_across_parties
        requirements = [
            {
                "party": r.party,
                "approvals": r.approvals,
                "approver_roles": list(r.approver_roles),
                "distinct_approvers_across_parties": distinct,
            }
            for r in policy.requirements(cross)
        ]
        request = AccessRequest.create(
            id=_new_id("ar"),
            support_request=ticket,
            engineer=viewer.principal,
            resource_tenant_id=ticket.resource_tenant_id,
            support_request_tenant_id=ticket.tenant_id,
            justification=body["justification"],
            status=PENDING,
            requirements=json.dumps(requirements),
            policy_version=policy.version,
            created_at=now,
            expires_at=now + _timing(policy, "pending_ttl"),
            support_request_view_status=PENDING,
        )
        details = {"support_request_id": ticket.id, "required_approvals": requirements}
        details["justification"] = request.justification
        _event("access_request.created", viewer.caller, request, _parties(request), details, now)
    return request


def visible_request(viewer: Viewer, request_id: str, tenant_id: str | None = None):
    """(request, view) or 404."""
    request = AccessRequest.get_or_none(AccessRequest.id == request_id)
    view = viewer.view_of(request, tenant_id) if request else None
    if view is None:
        raise NotFound(f"access request {request_id!r} not found")
    return request, view


def list_access_requests(viewer: Viewer, policy: Policy, tenant_id, status, now) -> list:
    """(request, view) pairs, newest first, finished ones only within retention."""
    query = AccessRequest.select().order_by(AccessRequest.created_at.desc(), AccessRequest.id)
    if tenant_id is not None:
        query = query.where(
            (AccessRequest.resource_tenant_id == tenant_id)
            | (AccessRequest.support_request_tenant_id == tenant_id)
        )
    elif not viewer.is_operator:
        mine = AccessRequest.engineer == viewer.principal
        tenants = sorted(viewer.admin_of) or [""]
        query = query.where(
            mine
            | AccessRequest.resource_tenant_id.in_(tenants)
            | AccessRequest.support_request_tenant_id.in_(tenants)
        )
    cutoff = now - _timing(policy, "retention")
    query = query.where(
        AccessRequest.finished_at.is_null()
        | (AccessRequest.finished_at >= cutoff)
        | (AccessRequest.status == REVOKED)  # its end differs per view: filtered below
    )
    items = []
    for request in query:
        view = viewer.view_of(request, tenant_id)
        if not view or (status is not None and view_status(request, view) != status):
            continue
        finished = finished_at_in_view(request, view)
        if finished is None or finished >= cutoff:
            items.append((request, view))
    return items


def finished_at_in_view(request: AccessRequest, view: str) -> datetime | None:
    """When the request ended as `view` sees it. The support request tenant never sees a
    revocation: for it the request ends when it would have ended without one."""
    if view == "support_request" and request.status == REVOKED:
        if request.support_request_view_status != COMPLETED:
            return None
        if request.support_request_view_finished_at is not None:
            return request.support_request_view_finished_at
        # Rows completed before that column existed: the close or the expiry.
        ends = [t for t in (request.support_request.closed_at, request.access_expires_at) if t]
        return min(ends)
    return request.finished_at


def approve(policy: Policy, viewer: Viewer, request_id: str, tenant_id: str, now: datetime):
    return _decide_party(policy, viewer, request_id, tenant_id, now, reject_reason=None)


def reject(policy: Policy, viewer: Viewer, request_id: str, tenant_id: str, reason: str | None, now):
    return _decide_party(policy, viewer, request_id, tenant_id, now, reject_reason=reason or "")


def _decide_party(policy, viewer: Viewer, request_id, tenant_id, now, reject_reason):
    sweep(now)
    request, _ = visible_request(viewer, request_id)
    policy.hit("approval:allow_self_approval")
    if directory.person_key(request.engineer) == directory.person_key(viewer.principal):
        raise Forbidden(
            "the requesting engineer cannot approve or reject its own request", code="self_approval"
        )
    if tenant_id not in viewer.admin_of:
        message = f"you hold no role in tenant {tenant_id!r} that may approve support access"
        raise Forbidden(message, code="not_tenant_admin")
    party = _party_of(request, tenant_id)
    with transaction():
        request = _locked(AccessRequest, request.id)
        if request.status != PENDING:
            # In the acting tenant's view: the support request tenant must not learn of a
            # revocation from a refusal either (SPEC §5).
            seen = view_status(request, party)
            raise Conflict(f"the access request is {seen}", code="not_pending")
        _drop_lapsed_approvals(policy, request, now)
        if reject_reason is not None:
            # API.md: reject follows approve's rules, so a party that has approved in full
            # cannot take it back by rejecting (one of several approvers still may refuse).
            if party_has_approved(policy, request, party):
                raise Conflict(f"the {party} party has already approved", code="already_approved")
            _check_eligible(policy, viewer, request, tenant_id, party)
            details = {"tenant_id": tenant_id, "party": party, "reason": reject_reason}
            request.rejection_reason = reject_reason
            _transition(request, REJECTED, viewer.caller, now, "access_request.rejected", details)
            return request
        _add_approval(policy, viewer, request, tenant_id, party, now)
        if not any(_missing(policy, request).values()):
            request.approved_at = now
            request.access_expires_at = now + _timing(policy, "max_grant_duration")
            details = {"access_expires_at": isoformat(request.access_expires_at)}
            _transition(request, APPROVED, viewer.caller, now, "access_request.approved", details)
    return request


def _timing(policy: Policy, name: str):
    policy.hit(f"timing:{name}")
    return getattr(policy.timing, name)


def _party_of(request: AccessRequest, tenant_id: str) -> str:
    if tenant_id == request.resource_tenant_id:
        return "resource"
    if tenant_id == request.support_request_tenant_id:
        return "support_request"
    raise BadRequest(f"tenant_id: {tenant_id!r} is not a party to this request", code="not_a_party")


def _add_approval(policy, viewer: Viewer, request, tenant_id: str, party: str, now) -> None:
    approvals = list(request.approvals)
    me, people = directory.person_key(viewer.principal), [directory.person_key(a.approver) for a in approvals]
    if any(a.party == party and person == me for a, person in zip(approvals, people, strict=True)):
        raise Conflict(f"you already approved for the {party} party", code="already_approved")
    if party_has_approved(policy, request, party):
        raise Conflict(f"the {party} party has already approved", code="already_approved")
    _check_eligible(policy, viewer, request, tenant_id, party)
    policy.hit("approval:distinct_approvers_across_parties")
    if _distinct_across_parties(policy, request) and me in people:
        message = "the policy requires a different approver for each party"
        raise Forbidden(message, code="distinct_approvers_required")
    Approval.create(
        access_request=request, tenant_id=tenant_id, party=party, approver=viewer.principal, at=now
    )
    details = {"tenant_id": tenant_id, "party": party}
    _event("access_request.approval_added", viewer.caller, request, _parties(request), details, now)


def _drop_lapsed_approvals(policy: Policy, request: AccessRequest, now: datetime) -> None:
    """An approval whose approver no longer holds a qualifying role no longer counts
    (SPEC §3), and it stays void if the role comes back: the party must approve again.
    Kept, it would count again then, with every party covered and yet no approval left
    to give that would move the request on. Audited like the approval it undoes. Run
    when a directory change removes a role (drop_lapsed_approvals_of) and before each
    approve or reject (a policy reload can take a role's qualifying action away)."""
    for approval in list(request.approvals):
        if _counts(policy, request, approval):
            continue
        approval.delete_instance()
        tenant = _tenant_of(request, approval.party)
        details = {"tenant_id": tenant, "party": approval.party, "approver": approval.approver}
        details["reason"] = "approver_role_lost"
        _event("access_request.approval_lapsed", SYSTEM, request, _parties(request), details, now)


def _distinct_across_parties(policy: Policy, request: AccessRequest) -> bool:
    """The rule the request was filed under; for one filed before requests kept it, the
    policy's."""
    kept = {r.get("distinct_approvers_across_parties") for r in json.loads(request.requirements)}
    return policy.distinct_approvers_across_parties if None in kept else any(kept)


def _approver_roles(request: AccessRequest, party: str) -> list[str]:
    requirement = next(r for r in json.loads(request.requirements) if r["party"] == party)
    return requirement.get("approver_roles") or []


def _check_eligible(policy, viewer: Viewer, request, tenant_id: str, party: str) -> None:
    """Approve's and reject's role check, read again inside their transaction: a role
    removed since the call began no longer counts (SPEC §3)."""
    roles = _approver_roles(request, party)
    if _eligible(policy, viewer.principal, tenant_id, roles):
        return
    if not roles or not _eligible(policy, viewer.principal, tenant_id, []):
        message = f"you hold no role in tenant {tenant_id!r} that may approve support access"
        raise Forbidden(message, code="not_tenant_admin")
    message = f"the policy lets only {', '.join(roles)} approve or reject for the {party} party"
    raise Forbidden(message, code="not_eligible_approver")


def party_has_approved(policy: Policy, request: AccessRequest, party: str) -> bool:
    """Whether `party` has given every approval it owes: it may then neither approve nor reject."""
    return _missing(policy, request).get(party, 0) == 0


def _missing(policy: Policy, request: AccessRequest) -> dict[str, int]:
    """Approvals still needed per party. An approval counts only while its approver still
    holds a qualifying role in the party's tenant (SPEC §3: roles re-evaluated)."""
    missing = {}
    for requirement in json.loads(request.requirements):
        party = requirement["party"]
        valid = {
            directory.person_key(a.approver)
            for a in request.approvals
            if a.party == party and _counts(policy, request, a)
        }
        missing[party] = max(0, requirement["approvals"] - len(valid))
    return missing


def _tenant_of(request: AccessRequest, party: str) -> str:
    return request.resource_tenant_id if party == "resource" else request.support_request_tenant_id


def _eligible(
    policy: Policy, principal: str, tenant: str, approver_roles: list[str], roles_of=directory.roles_of
) -> bool:
    """Holds, in `tenant`, a role that may manage support access (and, if the policy lists
    approver roles for the party, one of those)."""
    return any(
        held_in == tenant
        and policy.role_allows(role, "manage_support_access")
        and (not approver_roles or role in approver_roles)
        for held_in, role in roles_of(principal)
    )


def revoke(policy: Policy, viewer: Viewer, request_id: str, now: datetime) -> AccessRequest:
    sweep(now)
    request, view = visible_request(viewer, request_id)
    if view != "resource" or request.resource_tenant_id not in viewer.admin_of:
        if view == "support_request":  # do not even confirm there is access to remove
            raise NotFound(f"access request {request_id!r} not found")
        raise _not_resource_admin()
    with transaction():
        # Read again inside the transaction: a role removed since the call began no
        # longer counts (SPEC §3), as for approve and reject.
        if not _eligible(policy, viewer.principal, request.resource_tenant_id, []):
            raise _not_resource_admin()
        request = _locked(AccessRequest, request.id)
        if request.status != APPROVED:
            raise Conflict(f"the access request is {request.status}", code="not_approved")
        # Another tenant's ticket: that tenant keeps seeing "approved" (SPEC §5). A tenant's
        # own ticket has no other tenant to keep it from.
        own_ticket = request.support_request_tenant_id == request.resource_tenant_id
        _transition(
            request, REVOKED, viewer.caller, now, "access_request.revoked", {}, requester_view=own_ticket
        )
    return request


def _not_resource_admin() -> Forbidden:
    return Forbidden("only admins of the resource tenant may remove access", code="not_resource_admin")


def cancel(viewer: Viewer, request_id: str, now: datetime) -> AccessRequest:
    sweep(now)
    request, _ = visible_request(viewer, request_id)
    if request.engineer != viewer.principal:
        raise Forbidden("only the requesting engineer may withdraw a request", code="not_requester")
    with transaction():
        request = _locked(AccessRequest, request.id)
        if request.status != PENDING:
            raise Conflict(f"the access request is {request.status}", code="not_pending")
        details = {"reason": "withdrawn"}
        _transition(request, CANCELLED, viewer.caller, now, "access_request.cancelled", details)
    return request


# --- transitions and time ------------------------------------------------------------


def _transition(
    request, status, actor, now, activity, details, requester_view=True, finished_at=None
) -> None:
    """Move `request` to `status` and audit it (inside the caller's transaction).

    requester_view=False hides the change from the support request tenant (a revocation).
    """
    request.status = status
    if status not in LIVE:
        request.finished_at = finished_at or now
        request.finished_by = actor if isinstance(actor, str) else actor.principal
    tenants = _parties(request)
    if requester_view:
        request.support_request_view_status = status
    else:
        tenants = [request.resource_tenant_id]
    request.save()
    _event(activity, actor, request, tenants, details, now)


def _close_requester_view(request: AccessRequest, actor, now: datetime, details: dict, ended_at) -> None:
    """A revoked request reaches its natural end (`ended_at`): the support request tenant
    now sees it as completed then, with the same event an unrevoked request would have
    produced."""
    request.support_request_view_status = COMPLETED
    request.support_request_view_finished_at = ended_at
    request.save()
    tenants = [request.support_request_tenant_id]
    _event("access_request.completed", actor, request, tenants, details, now)


def _event(activity, actor, request: AccessRequest, tenants, details, now) -> None:
    details = {"support_request_id": request.support_request_id, "engineer": request.engineer, **details}
    audit.record(activity, actor, request.resource_tenant_id, tenants, request.id, details, now)


def sweep(now: datetime) -> int:
    """Apply every time-based transition that is due; returns how many were applied."""
    due = (
        # One query per condition, so each uses its (status, time) index.
        (AccessRequest.status == PENDING) & (AccessRequest.expires_at <= now),
        (AccessRequest.status == APPROVED) & (AccessRequest.access_expires_at <= now),
        (AccessRequest.status == REVOKED)
        & (AccessRequest.access_expires_at <= now)
        & (AccessRequest.support_request_view_status == APPROVED),
    )
    times = (AccessRequest.expires_at, AccessRequest.access_expires_at, AccessRequest.access_expires_at)
    # Applied in the order they fell due, whichever query found them: a revoked grant's
    # end (found by the third) must not come after a later unrevoked one's (the second),
    # or the support request tenant's audit view would show that it had been removed.
    found = sorted(
        (getattr(row, column.name), row.id)
        for condition, column in zip(due, times, strict=True)
        for row in AccessRequest.select(AccessRequest.id, column).where(condition)
    )
    ids = [request_id for _, request_id in found]
    for request_id in ids:
        with transaction():
            request = _locked(AccessRequest, request_id)
            if request.status == PENDING and request.expires_at <= now:
                at = request.expires_at
                details = {"expired_at": isoformat(at)}
                _transition(request, EXPIRED, SYSTEM, now, "access_request.expired", details, finished_at=at)
            elif request.status == APPROVED and request.access_expires_at <= now:
                at = request.access_expires_at
                details = {"reason": "grant_expired", "expired_at": isoformat(at)}
                _transition(
                    request, COMPLETED, SYSTEM, now, "access_request.completed", details, finished_at=at
                )
            elif request.status == REVOKED and request.support_request_view_status == APPROVED:
                at = request.access_expires_at
                details = {"reason": "grant_expired", "expired_at": isoformat(at)}
                _close_requester_view(request, SYSTEM, now, details, ended_at=at)
    return len(ids)


def view_status(request: AccessRequest, view: str) -> str:
    return request.support_request_view_status if view == "support_request" else request.status


def required_approvals(request: AccessRequest) -> list[dict[str, str]]:
    entries = []
    for requirement in json.loads(request.requirements):
        party = requirement["party"]
        entries += [{"tenant_id": _tenant_of(request, party), "party": party}] * requirement["approvals"]
    return entries


def approvals_of(policy: Policy, request: AccessRequest) -> list[Approval]:
    return approvals_by_request(policy, [request])[request.id]


def approvals_by_request(policy: Policy, requests: list[AccessRequest]) -> dict[str, list[Approval]]:
    """The approvals listed with each request, a few hundred requests a query (a list of
    20,000 requests spent 12 s on a query each). While a request is pending only those
    that count are listed: an approver who lost its qualifying role no longer counts
    (SPEC §3), and a client compares `approvals` with `required_approvals`. A request no
    longer pending lists every approval kept for it: an approve or reject call dropped
    the lapsed ones first, so an approved or rejected one lists those it was decided with."""
    found: dict[str, list[Approval]] = {request.id: [] for request in requests}
    for batch in chunked(list(found), 500):
        query = Approval.select().where(Approval.access_request.in_(batch))
        for approval in query.order_by(Approval.at, Approval.id):
            found[approval.access_request_id].append(approval)
    pending = [request for request in requests if request.status == PENDING]
    roles = directory.roles_by_principal({a.approver for r in pending for a in found[r.id]})
    for request in pending:
        found[request.id] = [a for a in found[request.id] if _counts(policy, request, a, roles.__getitem__)]
    return found


def _counts(policy: Policy, request: AccessRequest, approval: Approval, roles_of=directory.roles_of) -> bool:
    """Whether the approver still holds, in the party's tenant, a role that may approve for it."""
    tenant = _tenant_of(request, approval.party)
    roles = _approver_roles(request, approval.party)
    return _eligible(policy, approval.approver, tenant, roles, roles_of)
