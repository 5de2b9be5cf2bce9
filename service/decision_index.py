"""The data decisions read, held in memory and kept exact.

Decisions need the directory's tenants, each principal's role links, each engineer's
grants and the tickets behind them. This index holds them in dictionaries keyed the way
decisions ask, so a decision costs the same at 500 or 100,000 grants and never touches
the database.

It stays exact this way: every state change writes an audit event in its own
transaction, and after the commit publishes the event's sequence number on a shared
counter (service/state_signal.py). Before each decision the index compares the counter
with what it has applied; if it moved, it reads the new events and reloads exactly the
ticket, access request, principal or tenant each one names. So a revocation, close or
role removal committed by any worker is in force here before the next decision.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from models import AccessRequest, AuditEvent, RoleAssignment, SupportRequest, Tenant
from service.audit import NOT_STATE_CHANGES

# Access requests that can explain a decision: live ones, and finished ones whose end
# (expiry, close) is reported as a reason.
INDEXED_STATUSES = ("approved", "completed", "revoked")


@dataclass(slots=True)
class Ticket:
    id: str
    tenant_id: str
    resource_tenant_id: str
    status: str
    allow_advanced_diagnostics: bool
    engineer: str | None
    closed_at: datetime | None


@dataclass(slots=True)
class Grant:
    id: str
    ticket_id: str
    status: str
    access_expires_at: datetime | None
    finished_at: datetime | None


class DecisionIndex:
    def __init__(self, signal, retention: timedelta):
        self.signal = signal
        self.retention = retention
        self._lock = threading.Lock()
        self._applied_signal = -1
        self._applied_seq = 0
        self.tenants: set[str] = set()
        self.roles: dict[str, tuple[tuple[str, str], ...]] = {}
        self.tickets: dict[str, Ticket] = {}
        self.grants: dict[tuple[str, str], dict[str, Grant]] = {}
        # Entries are replaced, never changed in place (copy on write), so a decision
        # reading them on another thread never sees a collection change under it.
        self.advanced: dict[tuple[str, str], frozenset[str]] = {}
        self._grant_keys: dict[str, tuple[str, str]] = {}  # access request id -> grants key
        self._ticket_grants: dict[str, set[str]] = {}  # ticket id -> access request ids

    # --- keeping current ------------------------------------------------------------

    def sync(self) -> None:
        """Apply every change committed since the last call (cheap when there is none)."""
        if self.signal.value() == self._applied_signal:
            return
        with self._lock:
            seen = self.signal.value()
            if seen == self._applied_signal:
                return
            self._apply_changes()
            self._applied_signal = seen

    def load(self, now: datetime) -> None:
        """(Re)build everything from the database."""
        with self._lock:
            seen = self.signal.value()
            head = AuditEvent.select(AuditEvent.seq).order_by(AuditEvent.seq.desc()).first()
            self._reset()
            self._load_directory()
            recent = now - self.retention
            tickets = SupportRequest.select().where(
                (SupportRequest.status == "open") | (SupportRequest.closed_at >= recent)
            )
            for ticket in tickets:
                self._put_ticket(ticket)
            grants = AccessRequest.select().where(
                (AccessRequest.status == "approved")
                | (AccessRequest.status.in_(INDEXED_STATUSES) & (AccessRequest.finished_at >= recent))
            )
            for request in grants:
                self._put_grant(request)
            self._applied_seq = head.seq if head else 0
            self._applied_signal = seen

    def _reset(self) -> None:
        self.tenants, self.roles, self.tickets = set(), {}, {}
        self.grants, self.advanced, self._grant_keys, self._ticket_grants = {}, {}, {}, {}

    def _load_directory(self) -> None:
        self.tenants = {tenant_id for (tenant_id,) in Tenant.select(Tenant.id).tuples()}
        roles: dict[str, list[tuple[str, str]]] = {}
        query = RoleAssignment.select(RoleAssignment.principal, RoleAssignment.tenant_id, RoleAssignment.role)
        for principal, tenant_id, role in query.tuples():
            roles.setdefault(principal, []).append((tenant_id, role))
        self.roles = {principal: tuple(links) for principal, links in roles.items()}

    def _apply_changes(self) -> None:
        events = (
            AuditEvent.select(AuditEvent.seq, AuditEvent.activity, AuditEvent.target, AuditEvent.details)
            .where((AuditEvent.seq > self._applied_seq) & AuditEvent.activity.not_in(NOT_STATE_CHANGES))
            .order_by(AuditEvent.seq)
        )
        whole_directory = False
        for event in events:
            whole_directory = self._apply(event) or whole_directory
            self._applied_seq = event.seq
        if whole_directory:  # once, however many tenants an import touched
            self._load_directory()
        last = AuditEvent.select(AuditEvent.seq).order_by(AuditEvent.seq.desc()).first()
        self._applied_seq = max(self._applied_seq, last.seq if last else 0)

    def _apply(self, event: AuditEvent) -> bool:
        """Reload what the event names; True if the whole directory must be re-read."""
        kind = event.activity.split(".", 1)[0]
        if kind == "access_request":
            self._reload_grant(event.target)
        elif kind == "support_request":
            self._reload_ticket(event.target)
        elif kind == "directory":
            if event.target and '"role_assignment.' in event.details:
                self._reload_principal(event.target)
            elif event.target and '"tenant.' in event.details:
                self.tenants.add(event.target)
            else:  # a directory import
                return True
        return False

    def _reload_principal(self, principal: str) -> None:
        query = RoleAssignment.select(RoleAssignment.tenant_id, RoleAssignment.role)
        links = tuple(query.where(RoleAssignment.principal == principal).tuples())
        if links:
            self.roles[principal] = links
        else:
            self.roles.pop(principal, None)

    def _reload_ticket(self, ticket_id: str) -> None:
        ticket = SupportRequest.get_or_none(SupportRequest.id == ticket_id)
        if ticket is not None:
            self._put_ticket(ticket)
        for request_id in list(self._ticket_grants.get(ticket_id, ())):
            self._reload_grant(request_id)

    def _reload_grant(self, request_id: str) -> None:
        request = AccessRequest.get_or_none(AccessRequest.id == request_id)
        self._drop_grant(request_id)
        if request is not None and request.status in INDEXED_STATUSES:
            if request.support_request_id not in self.tickets:
                self._put_ticket(request.support_request)
            self._put_grant(request)

    # --- entries ---------------------------------------------------------------------

    def _put_ticket(self, row: SupportRequest) -> None:
        old = self.tickets.get(row.id)
        if old is not None and old.engineer:
            self._discard_advanced(old)
        ticket = Ticket(
            row.id,
            row.tenant_id,
            row.resource_tenant_id,
            row.status,
            row.allow_advanced_diagnostics,
            row.assigned_engineer,
            row.closed_at,
        )
        self.tickets[row.id] = ticket
        if ticket.allow_advanced_diagnostics and ticket.engineer:
            key = (ticket.engineer, ticket.tenant_id)
            self.advanced[key] = self.advanced.get(key, frozenset()) | {ticket.id}

    def _discard_advanced(self, ticket: Ticket) -> None:
        key = (ticket.engineer, ticket.tenant_id)
        members = self.advanced.get(key, frozenset()) - {ticket.id}
        if members:
            self.advanced[key] = members
        else:
            self.advanced.pop(key, None)

    def _put_grant(self, row: AccessRequest) -> None:
        key = (row.engineer, row.resource_tenant_id)
        grant = Grant(row.id, row.support_request_id, row.status, row.access_expires_at, row.finished_at)
        self.grants[key] = {**self.grants.get(key, {}), row.id: grant}
        self._grant_keys[row.id] = key
        self._ticket_grants.setdefault(row.support_request_id, set()).add(row.id)

    def _drop_grant(self, request_id: str) -> None:
        key = self._grant_keys.pop(request_id, None)
        if key is None:
            return
        members = dict(self.grants.get(key, {}))
        grant = members.pop(request_id, None)
        if members:
            self.grants[key] = members
        else:
            self.grants.pop(key, None)
        if grant is not None:
            self._ticket_grants.get(grant.ticket_id, set()).discard(request_id)
