"""The data decisions read, held in memory and kept exact.

Decisions need the directory's tenants, each principal's role links, each engineer's
grants and the tickets behind them. This index holds them in dictionaries keyed the way
decisions ask, so a decision costs the same at 500 or 100,000 grants and never touches
the database.

It stays exact this way: every state change writes an audit event in its own
transaction, and after the commit moves a shared change counter on
(service/state_signal.py; other machines' changes move it through
service/change_listener.py). Before each decision the index compares the counter with
what it has applied; if it moved, it reads the events after the last one it applied and
reloads exactly the ticket, access request, principal or tenant each one names. So a
revocation, close or role removal committed by any worker is in force here before the
next decision.

Entries are compact (slots, interned strings, times as POSIX seconds) and are replaced,
never changed in place, so a decision on another thread never sees one half-written.

A serving worker does not wait for the whole index to start answering (`start`): it
loads the directory, then an engineer's grants and tickets the first time a decision
asks about them (`warm_for`), while a thread builds the whole index aside
(`finish_warming`). Loading 100,000 grants takes a worker 1.3 s or more; the directory,
a tenth of that. Both ways read the same rows, and the events change both alike.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from prometheus_client import Gauge

from models import (
    NOT_STATE_CHANGES,
    AccessRequest,
    AuditEvent,
    RoleAssignment,
    SupportRequest,
    Tenant,
    database,
)
from service.directory import DEFAULT_PROVIDER, provider_tenant

# Access requests that can explain a decision: live ones, and finished ones whose end
# (expiry, close) is reported as a reason.
INDEXED_STATUSES = ("approved", "completed", "revoked")
# A sync that finds more state-change events than this plus the number of tickets indexed
# loads the whole index again instead of re-reading, one by one, every row they name: a
# worker's first decision after 20,000 grants were made through another worker took 3.4 s
# one by one, against 0.85 s for a whole load (README "Performance"). Below it, re-reading
# the named rows costs about what a whole load would, or less.
RELOAD_ALL_AFTER = 1000
LOADED = ("provider", "tenants", "roles", "_role_sets", "tickets", "grants", "advanced")  # what `load` builds
# What a new index (`load`, `start`, `finish_warming`) replaces, one attribute at a time.
REPLACED = (*LOADED, "_applied_seq", "_applied_signal", "_sql", "warming", "_warm_engineers", "_warm_tickets")
FINISH_RETRY_SECONDS = 1.0  # before a second attempt to load the whole index while warming,
FINISH_RETRY_MAX_SECONDS = 60.0  # doubled after each failure up to this
_intern = sys.intern
log = logging.getLogger("support_access")
# Summed over a server's live workers under `make serve` (prometheus_client multiprocess).
WHOLE = Gauge(
    "support_access_decision_index_whole",
    "Workers whose decision index is whole (1 each); a worker warming still reads the database",
    multiprocess_mode="livesum",
)
# Columns in the order _put_ticket / _put_grant take them.
TICKET_COLUMNS = [
    SupportRequest.id,
    SupportRequest.tenant_id,
    SupportRequest.resource_tenant_id,
    SupportRequest.status,
    SupportRequest.allow_advanced_diagnostics,
    SupportRequest.assigned_engineer,
    SupportRequest.closed_at,
]
GRANT_COLUMNS = [
    AccessRequest.id,
    AccessRequest.support_request,
    AccessRequest.engineer,
    AccessRequest.resource_tenant_id,
    AccessRequest.status,
    AccessRequest.access_expires_at,
    AccessRequest.finished_at,
]


def _live_tickets(recent: datetime):
    """The tickets the index holds: open ones, and those closed since `recent`."""
    return (SupportRequest.status == "open") | (SupportRequest.closed_at >= recent)


def _live_grants(recent: datetime):
    """The access requests the index holds: approved ones, and those ended since `recent`."""
    return (AccessRequest.status == "approved") | (
        AccessRequest.status.in_(INDEXED_STATUSES) & (AccessRequest.finished_at >= recent)
    )


def _directory_change(details: str) -> str:
    """The `change` of a directory.changed event's details ("" if unreadable, which reloads
    the whole directory). Read from the parsed object: a principal or tenant named in an
    import's details may look like a change ("tenant.x")."""
    try:
        change = json.loads(details).get("change")
    except (ValueError, AttributeError):
        return ""
    return change if isinstance(change, str) else ""


def _sql_text(query) -> str:
    """A one-parameter peewee query as SQL text (in the database's own parameter style)."""
    return query.sql()[0]


class Ticket(NamedTuple):  # a tuple, not a frozen dataclass: three times as fast to build
    id: str
    tenant_id: str
    resource_tenant_id: str
    status: str
    allow_advanced_diagnostics: bool
    engineer: str | None
    closed_at: float | None  # POSIX seconds


class Grant(float):
    """An access request as decisions read it, with what they need of its ticket copied
    in (the copy is replaced whenever the ticket is: `_reload_ticket`).

    Laid out for the CPU cache. At 100,000 grants each object a decision reads is likely
    a cache miss, and those misses are what make a decision slower on a large directory
    than on a small one (README "Performance"). So a grant is one object to read:
    - its float value *is* its access expiry (POSIX seconds), compared without reading a
      second object (a float attribute would be one);
    - `next_grant` chains the other grants of the same engineer and tenant (rarely any),
      where a tuple would be one more object to read.
    A Grant is never changed, and compares equal only to itself, never as a number."""

    __slots__ = GRANT_FIELDS = (
        "id",
        "ticket_id",
        "status",
        "finished_at",
        "ticket_status",
        "ticket_engineer",
        "ticket_closed_at",
        "next_grant",
    )
    id: str
    ticket_id: str
    status: str
    finished_at: float | None  # POSIX seconds
    ticket_status: str
    ticket_engineer: str | None
    ticket_closed_at: float | None  # POSIX seconds
    next_grant: Grant | None

    def __new__(
        cls,
        id: str,
        ticket_id: str,
        status: str,
        access_expires_at: float,
        finished_at: float | None,
        ticket_status: str,
        ticket_engineer: str | None,
        ticket_closed_at: float | None,
        next_grant: Grant | None = None,
    ) -> Grant:
        grant = super().__new__(cls, access_expires_at)
        # Each slot set through its own descriptor, past our __setattr__ (which refuses):
        # a loop over object.__setattr__ made building 100,000 grants at start-up take
        # ~2.6 times as long.
        _set_id(grant, id)
        _set_ticket_id(grant, ticket_id)
        _set_status(grant, status)
        _set_finished_at(grant, finished_at)
        _set_ticket_status(grant, ticket_status)
        _set_ticket_engineer(grant, ticket_engineer)
        _set_ticket_closed_at(grant, ticket_closed_at)
        _set_next_grant(grant, next_grant)
        return grant

    @property
    def access_expires_at(self) -> float:
        return float(self)

    def followed_by(self, next_grant: Grant | None) -> Grant:
        """This grant, chained to `next_grant`."""
        return Grant(
            self.id,
            self.ticket_id,
            self.status,
            float(self),
            self.finished_at,
            self.ticket_status,
            self.ticket_engineer,
            self.ticket_closed_at,
            next_grant,
        )

    def __setattr__(self, name, value):
        raise AttributeError("a Grant is never changed: the index replaces it")

    def __eq__(self, other) -> bool:
        return self is other

    def __ne__(self, other) -> bool:
        return self is not other

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return f"Grant({self.id!r}, status={self.status!r}, access_expires_at={float(self)!r})"


(
    _set_id,
    _set_ticket_id,
    _set_status,
    _set_finished_at,
    _set_ticket_status,
    _set_ticket_engineer,
    _set_ticket_closed_at,
    _set_next_grant,
) = (getattr(Grant, name).__set__ for name in Grant.GRANT_FIELDS)


def chain(grants: list[Grant]) -> Grant | None:
    """The grants as one chain, in their order: the first of them, or None."""
    first = None
    for grant in reversed(grants):
        first = grant if grant.next_grant is first else grant.followed_by(first)
    return first


def chained(first: Grant | None) -> list[Grant]:
    """The grants of a chain, in order."""
    grants = []
    while first is not None:
        grants.append(first)
        first = first.next_grant
    return grants


_NAIVE_EPOCH = datetime(1970, 1, 1)


def seconds(value) -> float | None:
    """A stored time as POSIX seconds (SQLite gives text, PostgreSQL naive datetimes);
    a naive time is UTC."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        # The same float as value.replace(tzinfo=UTC).timestamp(), which computes this
        # very difference, in a fifth of the time. A load converts three times per
        # grant (its expiry and end, its ticket's close).
        return (value - _NAIVE_EPOCH).total_seconds()
    return value.timestamp()


_pauses = {"count": 0, "was_enabled": False}  # the loads pausing the collector now
_pauses_lock = threading.Lock()


@contextmanager
def _collector_paused():
    """The cyclic garbage collector off for a while. A load makes a few hundred thousand
    objects, none of them garbage, and the collector's scans over them were an eighth of
    start-up; reference counting goes on freeing what is not kept. Loads on two threads
    (a warming worker's whole load, and a request's) share one pause: the collector is
    back on when the last ends, never left off."""
    with _pauses_lock:
        if _pauses["count"] == 0:
            _pauses["was_enabled"] = gc.isenabled()
            gc.disable()
        _pauses["count"] += 1
    try:
        yield
    finally:
        with _pauses_lock:
            _pauses["count"] -= 1
            if _pauses["count"] == 0 and _pauses["was_enabled"]:
                gc.enable()


class DecisionIndex:
    def __init__(
        self,
        signal,
        retention: timedelta,
        clock: Callable[[], datetime] | None = None,
        serving: bool = False,
        configured_provider: str | None = None,
    ):
        self.signal = signal
        self.retention = retention
        self.configured_provider = configured_provider  # SUPPORT_ACCESS_PROVIDER_TENANT
        self.clock = clock or (lambda: datetime.now(UTC))  # for a whole reload in `sync`
        # A serving worker's index (not a CLI command's, a test's or a policy replay's).
        # It is a few hundred thousand long-lived objects; a full garbage collection
        # walking them all takes ~50 ms and lands on some request. Freezing them after a
        # load keeps them out of the collector's scans (reference counting still frees
        # them). And /metrics counts it whole or not (WHOLE).
        self.serving = serving
        self._lock = threading.Lock()
        self._applied_signal = -1
        self._applied_seq = 0
        self.provider = DEFAULT_PROVIDER  # the provider tenant (directory.provider_tenant)
        self.tenants: frozenset[str] = frozenset()
        self.roles: dict[str, tuple[tuple[str, str], ...]] = {}
        self._role_sets: dict[tuple, tuple[tuple[str, str], ...]] = {}  # see _shared
        self.tickets: dict[str, Ticket] = {}
        # engineer -> tenant -> the first of its grants there (a chain: Grant.next_grant);
        # engineer -> tenant -> advanced-diagnostics tickets
        self.grants: dict[str, dict[str, Grant]] = {}
        self.advanced: dict[str, dict[str, tuple[str, ...]]] = {}
        # While warming (`start`): the engineers and tickets loaded so far.
        self.warming = False
        self._warm_engineers: set[str] = set()
        self._warm_tickets: set[str] = set()
        self._finisher_pid: int | None = None

    # --- keeping current ------------------------------------------------------------

    def is_current(self) -> bool:
        """No change committed since the last `sync` began."""
        return self.signal.value() == self._applied_signal

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
            self._load(now)

    def _load(self, now: datetime) -> None:
        """`load`, built aside and then put in place: a decision on another thread never
        reads a half-built index (for a moment there are two)."""
        self._take(self._built(now))

    def _empty(self) -> DecisionIndex:
        """A new index on the same change counter and settings, nothing loaded."""
        return DecisionIndex(self.signal, self.retention, self.clock, False, self.configured_provider)

    def _built(self, now: datetime) -> DecisionIndex:
        """A whole index, built aside."""
        fresh = self._empty()
        with _collector_paused():
            fresh._build(now)
        return fresh

    def _take(self, fresh: DecisionIndex) -> None:
        """Put `fresh`'s contents in place of this index's. REPLACED's order matters:
        the data before `_applied_signal`, or a thread whose `sync` saw the new signal
        could decide from the old data, missing a change (a revocation) applied since."""
        with _collector_paused():
            for name in REPLACED:
                setattr(self, name, getattr(fresh, name))
            if self.serving and not self.warming:
                gc.freeze()
        if self.serving:
            WHOLE.set(0 if self.warming else 1)

    def _build(self, now: datetime, whole: bool = True) -> None:
        seen = self.signal.value()
        head = AuditEvent.select(AuditEvent.seq).order_by(AuditEvent.seq.desc()).first()
        recent = now - self.retention
        self._load_directory()
        self.tickets, self.grants, self.advanced = {}, {}, {}
        if whole:
            for row in database.execute(SupportRequest.select(*TICKET_COLUMNS).where(_live_tickets(recent))):
                self._put_ticket(*row)
            for row in database.execute(AccessRequest.select(*GRANT_COLUMNS).where(_live_grants(recent))):
                self._put_grant(*row)
        self.warming = not whole
        self._applied_seq = head.seq if head else 0
        self._applied_signal = seen
        self._sql = self._statements()  # now, not on the first change

    # --- starting without the whole index -------------------------------------------

    def start(self, now: datetime) -> None:
        """Load the directory only, and warm: until `finish_warming` has put the whole
        index in place, `warm_for` loads what each decision needs first."""
        fresh = self._empty()
        with self._lock:
            fresh._build(now, whole=False)
            self._take(fresh)

    def warm_for(self, checks) -> None:
        """While warming: load the grants and tickets of each check's engineer, and the
        ticket it names, unless loaded already. Call it after `sync`, before deciding."""
        if not self.warming:
            return
        with self._lock:
            if not self.warming:  # the whole index was put in place while this waited
                return
            recent = self.clock() - self.retention
            for check in checks:
                # Even one holding no role now: another thread may give it one before
                # this decision reads its grants.
                if check.principal not in self._warm_engineers:
                    self._warm_engineer(check.principal, recent)
                wanted = check.support_request_id
                if wanted is not None and wanted not in self._warm_tickets:
                    self._warm_ticket(wanted, recent)

    def _warm_engineer(self, engineer: str, recent: datetime) -> None:
        """The engineer's rows, as a whole load reads them. Put over what changes have
        put already: every entry is replaced by id, so none is doubled."""
        engineers_grants = (AccessRequest.engineer == engineer) & _live_grants(recent)
        grant_rows = list(database.execute(AccessRequest.select(*GRANT_COLUMNS).where(engineers_grants)))
        their_tickets = AccessRequest.select(AccessRequest.support_request).where(engineers_grants)
        advanced = (SupportRequest.assigned_engineer == engineer) & (
            SupportRequest.allow_advanced_diagnostics == True  # noqa: E712 (SQL, not Python)
        )
        # Two queries, not one with an OR: each then uses its index on PostgreSQL too.
        for tickets in (SupportRequest.id.in_(their_tickets), advanced):
            for row in database.execute(
                SupportRequest.select(*TICKET_COLUMNS).where(_live_tickets(recent) & tickets)
            ):
                self._put_ticket(*row)
                self._warm_tickets.add(row[0])
        for row in grant_rows:
            self._replace_grant(row)
        self._warm_engineers.add(engineer)

    def _warm_ticket(self, ticket_id: str, recent: datetime) -> None:
        query = SupportRequest.select(*TICKET_COLUMNS).where(
            (SupportRequest.id == ticket_id) & _live_tickets(recent)
        )
        for row in database.execute(query):
            self._put_ticket(*row)
        self._warm_tickets.add(ticket_id)

    def finish_warming(self) -> None:
        """Build the whole index aside, decisions going on meanwhile, and put it in place
        once it has caught up with every change committed while it was built."""
        if self.warming:
            self._put_in_place(self._built(self.clock()))

    def finish_warming_in_background(self) -> None:
        """Start, once in this process, a thread that runs `finish_warming` (again after
        a failure, e.g. the database gone for a while, waiting longer each time). A hook
        run before every request: it starts in the serving process, after the fork."""
        if not self.warming or self._finisher_pid == os.getpid():
            return
        with self._lock:
            if self._finisher_pid != os.getpid():
                self._finisher_pid = os.getpid()
                finisher = threading.Thread(target=self._finish_warming_until_done, name="index-warming")
                finisher.daemon = True
                finisher.start()

    def _finish_warming_until_done(self) -> None:
        started = time.monotonic()
        wait = FINISH_RETRY_SECONDS
        try:
            while self.warming:
                try:
                    self.finish_warming()
                except Exception as exc:  # still warming, so still exact: try again, later each time
                    log.warning("decision index: loading it whole failed (%s); again in %.0f s", exc, wait)
                    time.sleep(wait)
                    wait = min(wait * 2, FINISH_RETRY_MAX_SECONDS)
        finally:
            database.close()  # this thread's connection
        log.info("decision index: whole after %.2f s", time.monotonic() - started)

    def _put_in_place(self, fresh: DecisionIndex) -> None:
        with self._lock:
            if not self.warming:
                return
            # First brought current: a decision that already saw a revocation in this
            # index must not then read a grant the fresh one read before it.
            seen = self.signal.value()
            fresh._apply_changes()
            fresh._applied_signal = seen
            self._take(fresh)

    def _load_directory(self) -> None:
        self.provider = provider_tenant(self.configured_provider)
        self.tenants = frozenset(_intern(t) for (t,) in Tenant.select(Tenant.id).tuples())
        roles: dict[str, list[tuple[str, str]]] = {}
        query = RoleAssignment.select(RoleAssignment.principal, RoleAssignment.tenant_id, RoleAssignment.role)
        for principal, tenant_id, role in query.tuples():
            roles.setdefault(_intern(principal), []).append((tenant_id, role))
        self._role_sets = {}
        self.roles = {principal: self._shared(links) for principal, links in roles.items()}

    def _apply_changes(self) -> None:
        """Reload each ticket, access request and principal the new events name, once:
        granting access alone writes five events about two rows."""
        most = len(self.tickets) + RELOAD_ALL_AFTER
        events = database.execute_sql(self._sql["events"], (self._applied_seq, most + 1)).fetchall()
        if len(events) > most:
            del events  # not kept while the new index is built
            # Whole, warming or not: restarting the warm-up instead would drop what another
            # thread has just warmed for the decision it is about to make.
            self._load(self.clock())
            return
        tickets, grants, principals, tenants = {}, {}, {}, set()
        whole_directory = False
        last_seq = self._applied_seq
        for seq, activity, target, details in events:
            last_seq = seq
            kind = activity.split(".", 1)[0]
            if kind == "support_request":
                tickets[target] = None
            elif kind == "access_request":
                grants[target] = None
            elif kind != "directory":
                continue
            elif (change := _directory_change(details)).startswith("role_assignment.") and target:
                principals[target] = None
            elif change.startswith("tenant.") and target:
                tenants.add(target)
            else:  # an import or the provider moved: re-read it once, whatever its size
                whole_directory = True
        for ticket_id in tickets:
            self._reload_ticket(ticket_id)
        for request_id in grants:
            self._reload_grant(request_id)
        if whole_directory:
            self._load_directory()
        else:
            for principal in principals:
                self._reload_principal(principal)
            if tenants:  # a copy of 10,000 tenants is not free: only when one was added or renamed
                self.tenants = self.tenants | {_intern(t) for t in tenants}
        # Only now: had a reload failed (the database went away), the next sync must read
        # these events again, or the change they name would never reach this worker.
        self._applied_seq = last_seq

    def _reload_principal(self, principal: str) -> None:
        query = RoleAssignment.select(RoleAssignment.tenant_id, RoleAssignment.role)
        links = list(query.where(RoleAssignment.principal == principal).tuples())
        if links:
            self.roles[_intern(principal)] = self._shared(links)
        else:
            self.roles.pop(principal, None)

    def _shared(self, links: list[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
        """A principal's (tenant, role) links as one tuple shared by every principal
        holding the same ones: two thousand engineers then share one object, which stays
        in the CPU cache, instead of each decision reading one of their own."""
        key = tuple(sorted((_intern(tenant_id), _intern(role)) for tenant_id, role in links))
        return self._role_sets.setdefault(key, key)

    def _reload_ticket(self, ticket_id: str) -> None:
        row = database.execute_sql(self._sql["ticket"], (ticket_id,)).fetchone()
        if row is None:
            return
        self._put_ticket(*row)
        # The grants indexed under it carry a copy of it: replace those. (Others enter
        # through their own events; a grant that ended before the retention period stays
        # out, as it is out of a freshly loaded index.)
        for grant_row in database.execute_sql(self._sql["ticket_grants"], (ticket_id,)):
            request_id, _, engineer, tenant_id = grant_row[:4]
            if any(g.id == request_id for g in chained(self.grants.get(engineer, {}).get(tenant_id))):
                self._replace_grant(grant_row)

    def _reload_grant(self, request_id: str) -> None:
        row = database.execute_sql(self._sql["grant"], (request_id,)).fetchone()
        if row is None:
            return
        if row[1] not in self.tickets:
            self._reload_ticket(row[1])
        self._replace_grant(row)

    def _replace_grant(self, row) -> None:
        request_id, _, engineer, tenant_id, status = row[:5]
        self._drop_grant(engineer, tenant_id, request_id)
        if status in INDEXED_STATUSES:
            self._put_grant(*row)

    def _statements(self) -> dict[str, str]:
        """Plain SQL for the per-change reloads: a change must be in force within a
        millisecond, and building peewee queries alone would take much of that."""
        param = database.obj.param
        tickets = SupportRequest.select(*TICKET_COLUMNS).where(SupportRequest.id == "?")
        grants = AccessRequest.select(*GRANT_COLUMNS).where(AccessRequest.id == "?")
        ticket_grants = AccessRequest.select(*GRANT_COLUMNS).where(AccessRequest.support_request == "?")
        # The activities as literals, as in the partial index (models.NOT_STATE_CHANGES),
        # so the database can use it: it skips the reads instead of scanning them.
        neutral = ", ".join(f"'{activity}'" for activity in NOT_STATE_CHANGES)
        return {
            "ticket": _sql_text(tickets),
            "grant": _sql_text(grants),
            "ticket_grants": _sql_text(ticket_grants),
            "events": (
                f"SELECT seq, activity, target, details FROM {AuditEvent._meta.table_name} "
                f"WHERE seq > {param} AND activity NOT IN ({neutral}) ORDER BY seq LIMIT {param}"
            ),
        }

    # --- entries ---------------------------------------------------------------------

    def _put_ticket(self, ticket_id, tenant_id, resource_tenant_id, status, advanced, engineer, closed_at):
        old = self.tickets.get(ticket_id)
        if old is not None and old.engineer:
            self._set_advanced(old, present=False)
        # Tenant, engineer and status strings are interned: each is one object however
        # many rows name it. Ticket and request ids are unique, so interning them would
        # only fill the interpreter's intern table (200,000 entries at start-up).
        ticket = Ticket(
            ticket_id,
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
        ticket = self.tickets.get(ticket_id)
        if ticket is None:  # a ticket closed before retention: the grant explains nothing
            return
        expires = seconds(expires_at)
        if expires is None:
            # Approval always sets it. A row without one (edited by hand) must neither stop
            # the index loading nor ever allow: -inf ended before any retention period.
            expires = float("-inf")
        grant = Grant(
            request_id,
            ticket.id,
            _intern(status),
            expires,
            seconds(finished_at),
            ticket.status,
            ticket.engineer,
            ticket.closed_at,
        )
        engineer, tenant_id = _intern(engineer), _intern(tenant_id)
        by_tenant = self.grants.get(engineer)
        if by_tenant is None:
            by_tenant = self.grants[engineer] = {}
        by_tenant[tenant_id] = chain([*chained(by_tenant.get(tenant_id)), grant])

    def _drop_grant(self, engineer: str, tenant_id: str, request_id: str) -> None:
        by_tenant = self.grants.get(engineer, {})
        kept = chain([g for g in chained(by_tenant.get(tenant_id)) if g.id != request_id])
        if kept is not None:
            by_tenant[tenant_id] = kept
        else:
            by_tenant.pop(tenant_id, None)
