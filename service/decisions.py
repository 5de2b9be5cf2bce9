"""Data-access decisions (SPEC §6): may engineer E read diagnostic resource R of tenant T now?

The rules come from the policy (access.yaml through access.conf, roles and permissions
through permissions.conf). This module only resolves the principal's role links — its
live grants and advanced-diagnostics tickets — from the in-memory DecisionIndex, then
asks the policy (Casbin, cached per policy version) which link permits the request.
Every path that is not an explicit allow is a deny.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from service import audit
from service.clock import isoformat
from service.decision_index import DecisionIndex, Grant
from service.ids import new_id
from service.policy import RESOURCE_PREFIX, Policy

GRANT, ADVANCED = "grant", "advanced_diagnostics"
EMPTY: dict = {}
# What ended explains a deny when nothing is live: the latest ending of a grant or a close of
# a ticket counts, and at the same time the higher rank (a close ends its grants then too).
# An advanced-diagnostics link that drops out (reassigned, turned off) keeps no time: no end.
OTHER_END, GRANT_EXPIRED, TICKET_CLOSED = 0, 1, 2
NOTHING_ENDED = (float("-inf"), OTHER_END)


@dataclass
class Check:
    principal: str
    tenant_id: str
    action: str
    resource: str
    support_request_id: str | None = None
    explain: bool = False


@dataclass(slots=True)
class Decision:
    allowed: bool
    reason: str
    policy_version: str
    decision_id: str = field(default_factory=new_id)
    trail: list[dict[str, Any]] | None = None  # the explain trail, when asked for
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


def decide(policy: Policy, index: DecisionIndex, check: Check, now: datetime, provider: str) -> Decision:
    """Decide one check from the policy and the in-memory index (no database access; while
    the index warms at start-up, its caller has loaded what `check` needs: warm_for)."""
    decision = Decision(False, "", policy.version)
    trail = decision.trail = [] if check.explain else None

    def deny(reason: str, rule: str, detail: str) -> Decision:
        if trail is not None:
            trail.append({"rule": rule, "effect": "deny", "detail": detail})
        decision.reason = reason
        return decision

    policy.hit("read_only")
    if check.action not in policy.allowed_actions:
        allowed = ", ".join(sorted(policy.allowed_actions))
        return deny("read_only", "access.yaml allowed_actions", f"only {allowed} can be allowed")
    # The grant is looked up before the tenant check, which then finds the tenant's
    # string in cache (the grant dictionary's key is the same object): at 100,000 grants
    # one cache miss less per decision (README "Performance", decision time flat).
    first_grant = index.grants.get(check.principal, EMPTY).get(check.tenant_id)
    if check.tenant_id not in index.tenants:
        return deny("unknown_tenant", "directory", f"no tenant {check.tenant_id!r}")
    roles = index.roles.get(check.principal)
    if not roles:
        return deny("unknown_principal", "directory", f"{check.principal!r} holds no role")
    policy.hit("categories")
    if check.resource not in policy.diagnostic_resources:
        return deny("category_not_allowed", "access.yaml categories", _not_a_category(check.resource))
    if not policy.any_role_allows(roles, provider, "read_diagnostics"):
        detail = f"{check.principal!r} holds no role carrying workflow.yaml permissions.read_diagnostics"
        return deny("not_support_engineer", "workflow.yaml permissions.read_diagnostics", detail)

    links, last_end = _links(
        index, check, first_grant, now.timestamp(), (now - policy.timing.retention).timestamp()
    )
    for link in links:
        rule = policy.access_allows(link.kind, check.resource, check.action)
        if rule is None:
            continue
        decision.allowed = True
        decision.reason = "granted" if link.kind == GRANT else ADVANCED
        decision.access_request_id = link.access_request_id
        decision.support_request_id = link.support_request_id
        if trail is not None:
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
    if links:
        kinds = ", ".join(sorted({link.kind for link in links}))
        detail = f"no rule lets {kinds} {check.action} {check.resource}"
        return deny("category_not_allowed", "access.yaml rules", detail)
    if last_end[1] == TICKET_CLOSED:
        return deny("support_request_closed", "workflow", "the support request is closed")
    if last_end[1] == GRANT_EXPIRED:
        detail = "the approved access ran out (workflow.yaml timing.max_grant_duration)"
        return deny("grant_expired", "workflow.yaml timing.max_grant_duration", detail)
    return deny("no_active_grant", "access.conf", "no live grant or advanced-diagnostics ticket")


def _not_a_category(resource: str) -> str:
    if resource.startswith(RESOURCE_PREFIX):
        return f"unknown category {resource[len(RESOURCE_PREFIX) :]!r}"
    return f"{resource!r} is not a diagnostic resource ({RESOURCE_PREFIX}<category>)"


def _links(
    index: DecisionIndex, check: Check, grant: Grant | None, now: float, recent: float
) -> tuple[list[Link], tuple[float, int]]:
    """The principal's live role links in the tenant (access.conf's g), and what ended
    last since `recent`, as (when, TICKET_CLOSED | GRANT_EXPIRED | OTHER_END): it explains
    their absence. A grant revoked after another ticket closed is denied as no_active_grant,
    not support_request_closed. `grant` is the first of the principal's grants in the
    tenant (a chain: Grant.next_grant). Times are POSIX seconds, as the index keeps them."""
    links: list[Link] = []
    last_end = NOTHING_ENDED
    wanted = check.support_request_id
    principal = check.principal
    while grant is not None:
        # A Grant is its expiry time, read from the grant itself (see Grant). float() makes
        # it a plain float, whose comparisons are a C call: a Grant's go through Python.
        expires_at = float(grant)
        if wanted is not None and grant.ticket_id != wanted:
            pass  # another ticket's grant
        elif (grant.finished_at or expires_at) < recent:
            pass  # ended before the retention period: explains nothing (as if not indexed)
        elif grant.ticket_status != "open":
            if grant.ticket_closed_at >= recent:
                last_end = max(last_end, (grant.ticket_closed_at, TICKET_CLOSED))
        elif expires_at <= (grant.finished_at or now):
            last_end = max(last_end, (expires_at, GRANT_EXPIRED))
        elif grant.status == "approved" and grant.ticket_engineer == principal:
            links.append(Link(GRANT, grant.id, grant.ticket_id))
        elif grant.finished_at is not None:  # revoked, or completed by a reassignment
            last_end = max(last_end, (grant.finished_at, OTHER_END))
        grant = grant.next_grant
    for ticket_id in index.advanced.get(principal, EMPTY).get(check.tenant_id, ()):
        if wanted is not None and ticket_id != wanted:
            continue
        ticket = index.tickets.get(ticket_id)
        if ticket is None:  # a thread mid-swap of a whole reload: old links, new tickets
            continue
        if ticket.status == "open":
            links.append(Link(ADVANCED, None, ticket_id))
        elif ticket.closed_at >= recent:
            last_end = max(last_end, (ticket.closed_at, TICKET_CLOSED))
    if wanted is not None and not links and last_end[1] != TICKET_CLOSED:
        ticket = index.tickets.get(wanted)
        if (
            ticket
            and ticket.status != "open"
            and ticket.closed_at >= recent
            and ticket.engineer == principal
            and check.tenant_id in (ticket.tenant_id, ticket.resource_tenant_id)
        ):
            last_end = max(last_end, (ticket.closed_at, TICKET_CLOSED))
    return links, last_end


def reads_to_record(decisions: list[tuple[Check, Decision]], caller, now: datetime) -> list[list]:
    """The `diagnostics.read` audit events of the allowed decisions, as journal records
    (audit.RECORD_FIELDS order): one event per allowed decision, carrying its decision's
    id. A request's several allowed reads are one record per audit.READS_PER_EVENT of them
    (one chain row and hash: audit.reads_record)."""
    reads = [
        (
            decision.decision_id,
            check.tenant_id,
            check.resource,
            {
                "decision_id": decision.decision_id,
                "engineer": check.principal,
                "action": check.action,
                "reason": decision.reason,
                "access_request_id": decision.access_request_id,
                "support_request_id": decision.support_request_id,
                "policy_version": decision.policy_version,
            },
        )
        for check, decision in decisions
        if decision.allowed
    ]
    if not reads:
        return []
    actor, times = audit.actor_fields(caller), audit.time_forms(now)
    records = []
    for start in range(0, len(reads), audit.READS_PER_EVENT):
        chunk = reads[start : start + audit.READS_PER_EVENT]
        if len(chunk) == 1:
            event_id, tenant_id, target, details = chunk[0]
            records.append(audit.read_record(event_id, times, actor, tenant_id, target, details))
        else:
            records.append(audit.reads_record(new_id(), times, actor, chunk))
    return records


def log_entries(decisions: list[tuple[Check, Decision]], now: datetime) -> list[dict[str, Any]]:
    time = isoformat(now)  # one call shares one time
    return [log_entry(check, decision, time) for check, decision in decisions]


def log_entry(check: Check, decision: Decision, time: str) -> dict[str, Any]:
    return {
        "time": time,
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
