"""Data-access decisions (SPEC §6): may engineer E read diagnostic resource R of tenant T now?

The rules come from the policy (access.yaml through access.conf, roles and permissions
through permissions.conf). This module only resolves the principal's role links — its
live grants and advanced-diagnostics tickets — from indexed tables, then asks the policy
which link permits the request. Every path that is not an explicit allow is a deny.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from models import AccessRequest, SupportRequest, Tenant, transaction
from service import audit, directory
from service.clock import isoformat
from service.policy import Policy

decision_log = logging.getLogger("support_access.decisions")

GRANT, ADVANCED = "grant", "advanced_diagnostics"
RESOURCE_PREFIX = "diagnostics/"


@dataclass
class Check:
    principal: str
    tenant_id: str
    action: str
    resource: str
    support_request_id: str | None = None
    explain: bool = False


@dataclass
class Decision:
    allowed: bool
    reason: str
    policy_version: str
    decision_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    trail: list[dict[str, Any]] = field(default_factory=list)
    access_request_id: str | None = None
    support_request_id: str | None = None

    def to_json(self, explain: bool) -> dict[str, Any]:
        body = {
            "allowed": self.allowed,
            "reason": self.reason,
            "decision_id": self.decision_id,
            "policy_version": self.policy_version,
        }
        if explain:
            body["explain"] = self.trail
        return body


@dataclass(frozen=True)
class Link:
    """One g link of access.conf: (principal, kind, tenant), and what it came from."""

    kind: str
    access_request_id: str | None
    support_request_id: str


def decide(policy: Policy, check: Check, now: datetime, provider: str) -> Decision:
    decision = Decision(False, "", policy.version)
    trail = decision.trail

    def deny(reason: str, rule: str, detail: str) -> Decision:
        trail.append({"rule": rule, "effect": "deny", "detail": detail})
        decision.reason = reason
        return decision

    policy.hit("read_only")
    if check.action not in policy.allowed_actions:
        allowed = ", ".join(sorted(policy.allowed_actions))
        return deny("read_only", "access.yaml allowed_actions", f"only {allowed} can be allowed")
    if Tenant.get_or_none(Tenant.id == check.tenant_id) is None:
        return deny("unknown_tenant", "directory", f"no tenant {check.tenant_id!r}")
    if not directory.is_known(check.principal):
        return deny("unknown_principal", "directory", f"{check.principal!r} holds no role")
    category = check.resource[len(RESOURCE_PREFIX) :]
    policy.hit("categories")
    if category not in policy.categories:
        return deny("category_not_allowed", "access.yaml categories", f"unknown category {category!r}")
    if not directory.has_permission(policy, check.principal, provider, "read_diagnostics"):
        detail = f"{check.principal!r} holds no role carrying workflow.yaml permissions.read_diagnostics"
        return deny("not_support_engineer", "workflow.yaml permissions.read_diagnostics", detail)

    links, closed, expired = _links(check, now, now - policy.timing.retention)
    matched_category = False
    for link in links:
        rule = policy.access_allows(link.kind, check.resource, check.action)
        if rule is None:
            continue
        matched_category = True
        decision.allowed = True
        decision.reason = "granted" if link.kind == GRANT else ADVANCED
        decision.access_request_id = link.access_request_id
        decision.support_request_id = link.support_request_id
        trail.append(
            {
                "rule": rule.source,
                "effect": "allow",
                "policy": "p, " + ", ".join(rule.values),
                "link": f"g, {check.principal}, {link.kind}, {check.tenant_id}",
                "access_request_id": link.access_request_id,
                "support_request_id": link.support_request_id,
            }
        )
        return decision
    if links and not matched_category:
        kinds = ", ".join(sorted({link.kind for link in links}))
        detail = f"no rule lets {kinds} {check.action} {check.resource}"
        return deny("category_not_allowed", "access.yaml rules", detail)
    if closed:
        return deny("support_request_closed", "workflow", "the support request is closed")
    if expired:
        detail = "the approved access ran out (workflow.yaml timing.max_grant_duration)"
        return deny("grant_expired", "workflow.yaml timing.max_grant_duration", detail)
    return deny("no_active_grant", "access.conf", "no live grant or advanced-diagnostics ticket")


def _links(check: Check, now: datetime, recent: datetime) -> tuple[list[Link], bool, bool]:
    """The principal's live access in the tenant, and whether a ticket closed since
    `recent` or an expired grant explains its absence."""
    links: list[Link] = []
    closed = expired = False
    grants = (
        AccessRequest.select(AccessRequest, SupportRequest)
        .join(SupportRequest)
        .where(
            (AccessRequest.engineer == check.principal)
            & (AccessRequest.resource_tenant_id == check.tenant_id)
            & (AccessRequest.status.in_(("approved", "completed")))
        )
        .order_by(AccessRequest.approved_at.desc())
        .limit(50)
    )
    if check.support_request_id is not None:
        grants = grants.where(AccessRequest.support_request == check.support_request_id)
    for grant in grants:
        ticket = grant.support_request
        if ticket.status != "open":
            closed = closed or ticket.closed_at >= recent
        elif grant.access_expires_at <= (grant.finished_at or now):
            expired = True
        elif grant.status == "approved" and ticket.assigned_engineer == check.principal:
            links.append(Link(GRANT, grant.id, ticket.id))
    tickets = SupportRequest.select().where(
        (SupportRequest.assigned_engineer == check.principal)
        & (SupportRequest.tenant_id == check.tenant_id)
        & (SupportRequest.allow_advanced_diagnostics == True)  # noqa: E712 (peewee expression)
    )
    if check.support_request_id is not None:
        tickets = tickets.where(SupportRequest.id == check.support_request_id)
    for ticket in tickets:
        if ticket.status == "open":
            links.append(Link(ADVANCED, None, ticket.id))
        else:
            closed = closed or ticket.closed_at >= recent
    if check.support_request_id is not None and not links:
        ticket = SupportRequest.get_or_none(SupportRequest.id == check.support_request_id)
        closed = closed or bool(ticket and ticket.status != "open" and _concerns(ticket, check))
    return links, closed, expired


def _concerns(ticket: SupportRequest, check: Check) -> bool:
    return check.tenant_id in (ticket.tenant_id, ticket.resource_tenant_id) and (
        ticket.assigned_engineer == check.principal
    )


def record(decisions: list[tuple[Check, Decision]], caller, now: datetime) -> None:
    """Write allowed reads to the audit log (one transaction for the whole batch) and
    every decision to the decision log. Runs before the answer is sent."""
    allowed = [(c, d) for c, d in decisions if d.allowed]
    if allowed:
        with transaction():
            for check, decision in allowed:
                details = {
                    "decision_id": decision.decision_id,
                    "engineer": check.principal,
                    "action": check.action,
                    "reason": decision.reason,
                    "access_request_id": decision.access_request_id,
                    "support_request_id": decision.support_request_id,
                    "policy_version": decision.policy_version,
                }
                tenants = [check.tenant_id]
                audit.record(
                    "diagnostics.read", caller, check.tenant_id, tenants, check.resource, details, now
                )
    if decision_log.isEnabledFor(logging.INFO):
        for check, decision in decisions:
            decision_log.info(json.dumps(log_entry(check, decision, now), separators=(",", ":")))


def log_entry(check: Check, decision: Decision, now: datetime) -> dict[str, Any]:
    return {
        "time": isoformat(now),
        "decision_id": decision.decision_id,
        "input": {
            "principal": check.principal,
            "tenant_id": check.tenant_id,
            "action": check.action,
            "resource": check.resource,
            "support_request_id": check.support_request_id,
        },
        "allowed": decision.allowed,
        "reason": decision.reason,
        "policy_version": decision.policy_version,
    }
