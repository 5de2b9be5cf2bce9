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

Entries are compact (slots, interned strings, times as POSIX seconds) and are replaced,
never changed in place, so a decision on another thread never sees one half-written.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from models import AccessRequest, AuditEvent, RoleAssignment, SupportRequest, Tenant, database
from service.audit import NOT_STATE_CHANGES

# Access requests that can explain a decision: live ones, and finished ones whose end
# (expiry, close) is reported as a reason.
INDEXED_STATUSES = ("approved", "completed", "revoked")
_intern = sys.intern


@dataclass(slots=True, frozen=True)
class Ticket:
    id: str
    tenant_id: str
    resource_tenant_id: str
    status: str
    allow_advanced_diagnostics: bool
    engineer: str | None
    closed_at: float | None  # POSIX seconds


@dataclass(slots=True, frozen=True)
class Grant:
    id: str
    ticket_id: str
    status: str
    access_expires_at: float
    finished_at: float | None


def seconds(value) -> float | None:
    """A stored time as POSIX seconds (SQLite gives text, PostgreSQL naive datetimes)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


class DecisionIndex:
    def __init__(self, signal, retention: timedelta):
        self.signal = signal
        self.retention = retention
        self._lock = threading.Lock()
        self._applied_signal = -1
        self._applied_seq = 0
        self.tenants: frozenset[str] = frozenset()
        self.roles: dict[str, tuple[tuple[str, str], ...]] = {}
        self.tickets: dict[str, Ticket] = {}
        # engineer -> tenant -> grants; engineer -> tenant -> advanced-diagnostics tickets
        self.grants: dict[str, dict[str, tuple[Grant, ...]]] = {}
        self.advanced: dict[str, dict[str, tuple[str, ...]]] = {}

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
        """(Re)build everything from the database, with plain queries: model objects for
        200,000 rows would cost seconds of start-up."""
        with self._lock:
            seen = self.signal.value()
            head = AuditEvent.select(AuditEvent.seq).order_by(AuditEvent.seq.desc()).first()
            recent = now - self.retention
            self._load_directory()
            self.tickets, self.grants, self.advanced = {}, {}, {}
            ticket_columns = [
                SupportRequest.id,
                SupportRequest.tenant_id,
                SupportRequest.resource_tenant_id,
                SupportRequest.status,
                SupportRequest.allow_advanced_diagnostics,
                SupportRequest.assigned_engineer,
                SupportRequest.closed_at,
            ]
            tickets = SupportRequest.select(*ticket_columns).where(
                (SupportRequest.status == "open") | (SupportRequest.closed_at >= recent)
            )
            for row in database.execute(tickets):
                self._put_ticket(*row)
            grant_columns = [
                AccessRequest.id,
                AccessRequest.support_request,
                AccessRequest.engineer,
                AccessRequest.resource_tenant_id,
                AccessRequest.status,
                AccessRequest.access_expires_at,
                AccessRequest.finished_at,
            ]
            grants = AccessRequest.select(*grant_columns).where(
                (AccessRequest.status == "approved")
                | (AccessRequest.status.in_(INDEXED_STATUSES) & (AccessRequest.finished_at >= recent))
            )
            for row in database.execute(grants):
                self._put_grant(*row)
            self._applied_seq = head.seq if head else 0
            self._applied_signal = seen

    def _load_directory(self) -> None:
        self.tenants = frozenset(_intern(t) for (t,) in Tenant.select(Tenant.id).tuples())
        roles: dict[str, list[tuple[str, str]]] = {}
        query = RoleAssignment.select(RoleAssignment.principal, RoleAssignment.tenant_id, RoleAssignment.role)
        for principal, tenant_id, role in query.tuples():
            roles.setdefault(_intern(principal), []).append((_intern(tenant_id), _intern(role)))
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
                self.tenants = self.tenants | {_intern(event.target)}
            else:  # a directory import
                return True
        return False

    def _reload_principal(self, principal: str) -> None:
        query = RoleAssignment.select(RoleAssignment.tenant_id, RoleAssignment.role)
        links = tuple(query.where(RoleAssignment.principal == principal).tuples())
        if links:
            self.roles[_intern(principal)] = links
        else:
            self.roles.pop(principal, None)

    def _reload_ticket(self, ticket_id: str) -> None:
        row = SupportRequest.get_or_none(SupportRequest.id == ticket_id)
        if row is not None:
            self._put_ticket(
                row.id,
                row.tenant_id,
                row.resource_tenant_id,
                row.status,
                row.allow_advanced_diagnostics,
                row.assigned_engineer,
                row.closed_at,
            )

    def _reload_grant(self, request_id: str) -> None:
        row = AccessRequest.get_or_none(AccessRequest.id == request_id)
        if row is None:
            return
        self._drop_grant(row.engineer, row.resource_tenant_id, request_id)
        if row.status in INDEXED_STATUSES:
            if row.support_request_id not in self.tickets:
                self._reload_ticket(row.support_request_id)
            self._put_grant(
                row.id,
                row.support_request_id,
                row.engineer,
                row.resource_tenant_id,
                row.status,
                row.access_expires_at,
                row.finished_at,
            )

    # --- entries ---------------------------------------------------------------------

    def _put_ticket(self, ticket_id, tenant_id, resource_tenant_id, status, advanced, engineer, closed_at):
        old = self.tickets.get(ticket_id)
        if old is not None and old.engineer:
            self._set_advanced(old, present=False)
        ticket = Ticket(
            _intern(ticket_id),
            _intern(tenant_id),
            _intern(resource_tenant_id),
            _intern(status),
            bool(advanced),
            _intern(engineer) if engineer else None,
            seconds(closed_at),
        )
        self.tickets[ticket.id] = ticket
        if ticket.allow_advanced_diagnostics and ticket.engineer:
            self._set_advanced(ticket, present=True)

    def _set_advanced(self, ticket: Ticket, present: bool) -> None:
        by_tenant = dict(self.advanced.get(ticket.engineer, {}))
        ids = tuple(i for i in by_tenant.get(ticket.tenant_id, ()) if i != ticket.id)
        ids += (ticket.id,) if present else ()
        if ids:
            by_tenant[ticket.tenant_id] = ids
        else:
            by_tenant.pop(ticket.tenant_id, None)
        self.advanced[ticket.engineer] = by_tenant

    def _put_grant(self, request_id, ticket_id, engineer, tenant_id, status, expires_at, finished_at):
        grant = Grant(
            _intern(request_id),
            _intern(ticket_id),
            _intern(status),
            seconds(expires_at),
            seconds(finished_at),
        )
        engineer, tenant_id = _intern(engineer), _intern(tenant_id)
        by_tenant = self.grants.get(engineer)
        if by_tenant is None:
            by_tenant = self.grants[engineer] = {}
        by_tenant[tenant_id] = (*by_tenant.get(tenant_id, ()), grant)

    def _drop_grant(self, engineer: str, tenant_id: str, request_id: str) -> None:
        by_tenant = self.grants.get(engineer, {})
        kept = tuple(g for g in by_tenant.get(tenant_id, ()) if g.id != request_id)
        if kept:
            by_tenant[tenant_id] = kept
        else:
            by_tenant.pop(tenant_id, None)
