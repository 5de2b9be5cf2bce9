"""The audit log: an append-only, hash-chained list of events.

Each event stores the hash of the one before it; `verify_chain` recomputes every hash and
link, so an edited, deleted or reordered event is found. Events are written inside the
caller's transaction, so a state change and its audit event commit together or not at all.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import json
import logging
import operator
import threading
import uuid
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache, reduce
from pathlib import Path
from typing import Any

import orjson
import psycopg2.extras

from models import (
    NOT_STATE_CHANGES,
    AuditEvent,
    AuditHead,
    AuditReadIndex,
    AuditVisibility,
    as_peewee_errors,
    database,
    is_sqlite,
    snapshot,
    write_transaction_number,
)
from service.clock import isoformat
from service.errors import Unavailable

GENESIS = "0" * 64
CHANGES_CHANNEL = "support_access_changes"  # PostgreSQL NOTIFY (service/change_listener.py)


def record(
    activity: str,
    actor,
    tenant_id: str | None,
    visible_to: Iterable[str],
    target: str | None,
    details: dict[str, Any],
    now: datetime,
    result: str = "success",
) -> NewEvent:
    """Append one event. Must run inside a write transaction (models.transaction())."""
    event = build(activity, actor, tenant_id, visible_to, target, details, now, result)
    record_all([event])
    return event


def record_all(events: list[NewEvent]) -> None:
    """Append events made by `build`, in order, as `record` appends one (one append for
    all: a directory import writes an event per tenant it changed). Must run inside a
    write transaction."""
    if not events:
        return
    journal = _read_journal()
    # Reads decided before this change come before it in the chain: imported once per
    # transaction (a ticket's close records an event for each request it ends).
    if journal is not None and _journal_imported.number != write_transaction_number():
        from service import read_journal

        _journal_imported.number = write_transaction_number()
        read_journal.import_within(journal)
    append(events)


class _JournalImported(threading.local):
    number = -1  # the write transaction (models.write_transaction_number) that imported


_journal_imported = _JournalImported()


def _read_journal() -> Path | None:
    """The app's read-journal directory (service/read_journal.py), if it has one."""
    from flask import current_app, has_app_context

    if has_app_context() and "read_journal" in current_app.extensions:
        return current_app.extensions["read_journal"].directory
    return None


def flush_reads() -> None:
    """Import every journalled read, so what follows reads the whole log."""
    journal = _read_journal()
    if journal is not None:
        from service import read_journal

        try:
            read_journal.flush(journal)
        except OSError as exc:  # its directory cannot be listed or a file read (permissions)
            # A 503 (exit 2 from `audit verify`), as for a store that cannot be reached:
            # the log cannot be read whole. It was a 500, and tampering to `audit verify`.
            logging.getLogger("support_access").error("the read journal cannot be read: %s", exc)
            message = "the read journal cannot be read; see the service log"  # not the server's paths
            raise Unavailable(message, code="store_unavailable") from exc


@dataclass(slots=True)
class NewEvent:
    """An event on its way into the chain: the columns of models.AuditEvent, without the
    cost of a model object (one is built for every allowed read)."""

    id: str
    time: datetime
    activity: str
    actor: str
    actor_tenant_id: str | None
    tenant_id: str | None
    visible_to: str  # JSON list
    target: str | None
    result: str
    details: str  # JSON object


def build(
    activity: str,
    actor,
    tenant_id: str | None,
    visible_to: Iterable[str],
    target: str | None,
    details: dict[str, Any],
    now: datetime,
    result: str = "success",
    event_id: str | None = None,
) -> NewEvent:
    """An event not yet in the chain (no seq, no hashes)."""
    if activity not in ACTIVITIES:
        raise ValueError(f"unknown audit activity {activity!r}: add it to audit.ACTIVITIES")
    principal, actor_tenant = actor_fields(actor)
    return NewEvent(
        id=event_id or str(uuid.uuid4()),
        time=now,
        activity=activity,
        actor=principal,
        actor_tenant_id=actor_tenant,
        tenant_id=tenant_id,
        visible_to=json_text(sorted(set(visible_to))),
        target=target,
        result=result,
        details=json_text(details),
    )


def json_text(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=str).decode()


def append(events: list[NewEvent]) -> None:
    """Chain and insert events in order. Must run inside a write transaction."""
    last_seq = append_records([as_record(event) for event in events])
    if any(event.activity not in NOT_STATE_CHANGES for event in events):
        _announce_after_commit()
        if not is_sqlite(database.obj):  # other instances (service/change_listener.py), at commit
            database.execute_sql(_statements()["notify"], (str(last_seq),))


# An event on its way into the chain as a plain list (what the read journal stores): the
# columns of models.AuditEvent but the chain's, with the time twice - as stored, and as
# hashed - so that importing a journalled read converts nothing.
RECORD_FIELDS = (
    "id",
    "time",  # database form: naive UTC, datetime.isoformat(" ")
    "time_hashed",  # service.clock.isoformat (what the API shows)
    "activity",
    "actor",
    "actor_tenant_id",
    "tenant_id",
    "visible_to",
    "target",
    "result",
    "details",
)
_COLUMNS = ("seq", "id", "time", "activity", "actor", "actor_tenant_id", "tenant_id", "visible_to")
_COLUMNS += ("target", "result", "details", "prev_hash", "hash", "read_bucket")

READ = "diagnostics.read"
# Every activity the service writes (API.md "Audit"). `build` refuses any other, so this
# list stays whole; `policy check` warns of a support_trail pattern that names none.
ACTIVITIES = frozenset(
    {
        *(f"support_request.{a}" for a in ("created", "assigned", "updated", "closed")),
        *(
            f"access_request.{a}"
            for a in (
                "created",
                "approval_added",
                "approval_lapsed",
                "approved",
                "rejected",
                "expired",
                "cancelled",
                "revoked",
                "completed",
            )
        ),
        READ,
        "directory.changed",
        "policy.reloaded",
    }
)
# An event of several reads holds at most this many (reads_record): to show a tenant its
# reads in one, the view parses the whole event, so its size is bounded.
READS_PER_EVENT = 50
READ_BUCKETS = 256  # changing it needs every read's read_bucket recomputed


def _bucket_of(activity: str, tenant_id: str | None, visible_to: str) -> int | None:
    """An event's read_bucket: set for reads seen by their own tenant only (not for an
    event of several reads: each of its tenants has an AuditReadIndex row instead)."""
    if activity != READ or tenant_id is None:
        return None
    return _own_read_bucket(tenant_id, visible_to)


@lru_cache(maxsize=65536)  # a tenant's reads all have the same two values
def _own_read_bucket(tenant_id: str, visible_to: str) -> int | None:
    return read_bucket(tenant_id) if orjson.loads(visible_to) == [tenant_id] else None


def read_bucket(tenant_id: str) -> int:
    """The bucket a tenant's reads are indexed under (models.AuditEvent.read_bucket)."""
    return zlib.crc32(tenant_id.encode()) % READ_BUCKETS


def as_record(event: NewEvent) -> list:
    """`event` in RECORD_FIELDS order."""
    stored, hashed = time_forms(event.time)
    fields = _hashed_fields(event, hashed)
    return [fields[0], stored, *fields[1:]]


def read_record(
    event_id: str,
    times: tuple[str, str],
    actor: tuple[str, str | None],
    tenant_id: str,
    target: str,
    details: dict,
) -> list:
    """A `diagnostics.read` event seen by its own tenant, as a record: what
    as_record(build(READ, ...)) gives, without building the event first (this runs for
    every allowed read). `times` and `actor` as time_forms and actor_fields give them."""
    return _read_event(event_id, times, actor, tenant_id, [tenant_id], target, details)


def reads_record(
    event_id: str,
    times: tuple[str, str],
    actor: tuple[str, str | None],
    reads: list[tuple[str, str, str, dict]],
) -> list:
    """Several `diagnostics.read` events of one decision request, (id, tenant_id, target,
    details) each, as one record: one row and one hash in the chain for all of them.

    Its tenant_id and target are empty; visible_to lists the reads' tenants, each of which
    finds the row through an AuditReadIndex row, and sees only its own reads (`expand`).
    The reads share the request's time, actor and result. A read is recorded this way or
    as one event (read_record) - both are shown alike: the chain's cost per read is what
    keeps up with batch decisions."""
    tenants = sorted({tenant for _, tenant, _, _ in reads})
    entries = [{"id": id_, "tenant_id": t, "target": r, "details": d} for id_, t, r, d in reads]
    return _read_event(event_id, times, actor, None, tenants, None, {"reads": entries})


def _read_event(event_id, times, actor, tenant_id, visible_to: list, target, details: dict) -> list:
    """A `diagnostics.read` record (RECORD_FIELDS order) from its parts."""
    (stored, hashed), (principal, actor_tenant) = times, actor
    return [
        event_id,
        stored,
        hashed,
        READ,
        principal,
        actor_tenant,
        tenant_id,
        json_text(visible_to),
        target,
        "success",
        json_text(details),
    ]


def holds_reads(activity: str, tenant_id: str | None) -> bool:
    """An event of several reads (reads_record): a read without a tenant of its own."""
    return activity == READ and tenant_id is None


def expand(event: AuditEvent, tenant_id: str) -> list[AuditEvent]:
    """The reads of `tenant_id` an event of several reads holds, each as its own event
    (`part` numbers them within it, for their `position`)."""
    reads = [
        AuditEvent(
            seq=event.seq,
            id=entry["id"],
            time=event.time,
            activity=READ,
            actor=event.actor,
            actor_tenant_id=event.actor_tenant_id,
            tenant_id=tenant_id,
            target=entry["target"],
            result=event.result,
            details=json_text(entry["details"]),
        )
        for entry in orjson.loads(event.details)["reads"]
        if entry["tenant_id"] == tenant_id
    ]
    for part, read in enumerate(reads):
        read.part = part
    return reads


def position(event: AuditEvent) -> tuple[int, int]:
    """Where an event stands in the log: its chain row, and which of the tenant's reads in
    that row it is (several share one row, and one time)."""
    return event.seq, getattr(event, "part", 0)


def time_forms(time: datetime) -> tuple[str, str]:
    """A time as a record holds it twice: as stored, and as hashed (and shown)."""
    return time.astimezone(UTC).replace(tzinfo=None).isoformat(" "), isoformat(time)


def _hashed_fields(event: NewEvent | AuditEvent, hashed_time: str) -> tuple:
    """What the chain hashes of an event, in order (RECORD_FIELDS without the stored time)."""
    return (
        event.id,
        hashed_time,
        event.activity,
        event.actor,
        event.actor_tenant_id,
        event.tenant_id,
        event.visible_to,
        event.target,
        event.result,
        event.details,
    )


def lock_chain() -> None:
    """Lock the chain's head for this write transaction (SQLite: BEGIN IMMEDIATE already
    has; PostgreSQL: FOR UPDATE), before reading anything the append depends on."""
    with as_peewee_errors:
        cursor = database.cursor()
        cursor.execute(_statements()["head"])
        cursor.fetchone()


def append_records(records: list[list]) -> int:
    """Chain and insert records (RECORD_FIELDS order) in order, with four statements
    whatever their number; returns the last sequence number. Must run inside a write
    transaction: the locked head makes appends serial.

    Plain parameterised SQL rather than peewee queries: this runs for every allowed read,
    and building the query objects cost more than the database work.
    """
    with as_peewee_errors:
        return _append(records)


def _append(records: list[list]) -> int:
    statements = _statements()
    cursor = database.cursor()
    cursor.execute(statements["head"])
    seq, prev_hash = cursor.fetchone()
    rows, visibility, read_index = [], [], []
    for record in records:
        seq += 1
        id_, stored, hashed, activity, actor, actor_tenant, tenant, visible_to, target, result, details = (
            record
        )
        fields = (id_, hashed, activity, actor, actor_tenant, tenant, visible_to, target, result, details)
        digest = chain_hash(prev_hash, seq, fields)
        bucket = _bucket_of(activity, tenant, visible_to)
        if holds_reads(activity, tenant):  # found by its tenants' buckets
            read_index += [(read_bucket(viewer), seq, viewer) for viewer in orjson.loads(visible_to)]
        elif bucket is None:  # a read is found by its bucket instead of visibility rows
            visibility += [(viewer, seq) for viewer in orjson.loads(visible_to)]
        row = (seq, id_, stored, activity, actor, actor_tenant, tenant, visible_to, target, result, details)
        rows.append((*row, prev_hash, digest, bucket))
        prev_hash = digest
    insert_all = _insert_all_sqlite if is_sqlite(database.obj) else _insert_all_postgres
    insert_all(cursor, statements["event"], rows)
    if visibility:
        insert_all(cursor, statements["visibility"], visibility)
    if read_index:
        insert_all(cursor, statements["read_index"], read_index)
    cursor.execute(statements["move_head"], (seq, prev_hash))
    return seq


def _insert_all_sqlite(cursor, statement: str, rows: list[tuple]) -> None:
    cursor.executemany(statement, rows)  # in-process: no round trips


def _insert_all_postgres(cursor, statement: str, rows: list[tuple]) -> None:
    """One multi-row INSERT per INSERT_PAGE rows. psycopg2's executemany sends one
    statement per row: an import of 5,000 reads was 5,000-15,000 round trips, and under load,
    with its process waiting for the CPU between them, it held the writers' lock for
    seconds while revocations queued behind it (README "Known limits")."""
    psycopg2.extras.execute_values(cursor, statement, rows, page_size=INSERT_PAGE)


def chain_hash(prev_hash: str, seq: int, fields: tuple) -> str:
    """sha256 over the previous event's hash, the sequence number and the event's fields
    (RECORD_FIELDS order without the stored time), as one canonical JSON array."""
    return hashlib.sha256(prev_hash.encode() + orjson.dumps([seq, *fields])).hexdigest()


def _statements() -> dict[str, str]:
    """SQL for `append_records`, in the current database's parameter style (built once per database)."""
    db = database.obj
    if _STATEMENTS.get("for") is not db:
        _STATEMENTS.clear()
        _STATEMENTS.update(_build_statements(db), **{"for": db})
    return _STATEMENTS


_STATEMENTS: dict = {}
INSERT_PAGE = 1000  # PostgreSQL: rows per multi-row INSERT of append_records


def _build_statements(db) -> dict[str, str]:
    param = db.param
    lock = "" if is_sqlite(db) else " FOR UPDATE"  # SQLite: BEGIN IMMEDIATE locks
    columns = ", ".join(getattr(AuditEvent, name).column_name for name in _COLUMNS)
    events, visibility = AuditEvent._meta.table_name, AuditVisibility._meta.table_name
    head, read_index = AuditHead._meta.table_name, AuditReadIndex._meta.table_name

    def rows_of(width: int) -> str:
        """An insert's VALUES: one row's parameters for SQLite's executemany; for
        PostgreSQL the %s that execute_values expands into many rows."""
        return f"({', '.join([param] * width)})" if is_sqlite(db) else "%s"

    return {
        "head": f"SELECT last_seq, last_hash FROM {head} WHERE id = 1{lock}",
        "event": f"INSERT INTO {events} ({columns}) VALUES {rows_of(len(_COLUMNS))}",
        "visibility": f"INSERT INTO {visibility} (tenant_id, event_seq) VALUES {rows_of(2)}",
        "read_index": f"INSERT INTO {read_index} (read_bucket, event_seq, tenant_id) VALUES {rows_of(3)}",
        "move_head": f"UPDATE {head} SET last_seq = {param}, last_hash = {param} WHERE id = 1",
        "notify": f"SELECT pg_notify('{CHANGES_CHANNEL}', {param})",
    }


def _announce_after_commit() -> None:
    """Tell every worker's decision index that state changed, once this commits."""
    from flask import current_app, has_app_context

    if has_app_context() and "decision_index" in current_app.extensions:
        database.after_commit(current_app.extensions["decision_index"].signal.publish)


def actor_fields(actor) -> tuple[str, str | None]:
    if isinstance(actor, str):  # "system" or a CLI command
        return actor, None
    caller = getattr(actor, "caller", actor)  # a Viewer or a Caller
    return caller.principal, caller.token_tenant_id


def event_hash(event: AuditEvent) -> str:
    """The chain hash of a stored event (what `append_records` computed for it)."""
    return chain_hash(event.prev_hash, event.seq, _hashed_fields(event, isoformat(event.time)))


@dataclass
class ChainReport:
    ok: bool
    checked: int
    problem: str | None = None
    bad_event: str | None = None  # id (seq) of the first bad event
    head: str | None = None  # "<seq>:<hash>" of the last event, when the chain is intact


def verify_chain(batch: int = 1000, anchors: tuple[str, ...] = ()) -> ChainReport:
    """Walk the chain in order; report the first event whose hash or link is wrong.
    `anchors` are heads ("<seq>:<hash>") printed by earlier runs and kept outside the
    database: each must still be in the chain. Without one, whoever can rewrite the
    database can drop the newest events and rewrite the head row to match."""
    flush_reads()
    with snapshot():  # the events, the read index and the head as of one moment
        report = _walk_chain(batch)
        return _check_anchors(report, anchors) if report.ok else report


def parse_anchor(text: str) -> tuple[int, str]:
    """An anchor's event seq and hash; ValueError if it is not "<seq>:<64 hex digits>"."""
    seq, _, digest = text.partition(":")
    digest = digest.lower()
    # Events count from 1; a seq past SQL's 64-bit integers cannot be in the log.
    well_formed = seq.isascii() and seq.isdigit() and len(seq) <= 19 and 0 < int(seq) < 2**63
    if not (well_formed and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)):
        raise ValueError(f"{text!r} is not <seq>:<hash> as `audit verify` prints it")
    return int(seq), digest


def _check_anchors(report: ChainReport, anchors: tuple[str, ...]) -> ChainReport:
    for anchor in anchors:
        seq, digest = parse_anchor(anchor)
        event = AuditEvent.get_or_none(AuditEvent.seq == seq)
        if event is None:
            problem = f"anchor {anchor} is gone: there is no event {seq} in the log (events were removed)"
            return ChainReport(False, report.checked, problem)
        if event.hash != digest:
            where = f"event {event.seq} ({event.id}, {event.activity})"
            problem = (
                f"anchor {anchor} does not match: the chain was rewritten from this event or"
                " before, or cut short and added to"
            )
            return ChainReport(False, report.checked, problem, where)
    return report


def _walk_chain(batch: int) -> ChainReport:
    """The chain, and the two index tables derived from its events' visible_to (which
    the hash covers): a row added or removed there would show an event to a tenant it
    does not concern, or hide one from a tenant it does."""
    prev_hash, checked, last_seq = GENESIS, 0, 0
    read_index = _RowsByEvent(AuditReadIndex, "read_bucket, tenant_id")
    visibility = _RowsByEvent(AuditVisibility, "tenant_id")
    query = AuditEvent.select().order_by(AuditEvent.seq)
    for event in query.iterator() if batch else query:
        try:
            problem = _event_problem(event, prev_hash, read_index, visibility)
        except (AttributeError, TypeError, ValueError) as exc:  # e.g. a time that is no time
            problem = f"contents altered: a stored value cannot be read ({type(exc).__name__}: {exc})"
        if problem:
            return ChainReport(False, checked, problem, f"event {event.seq} ({event.id}, {event.activity})")
        prev_hash, last_seq, checked = event.hash, event.seq, checked + 1
    for rows, table in ((read_index, "the read index"), (visibility, "the visibility rows")):
        stray = rows.first_left()
        if stray is not None:  # e.g. the last event was deleted, and its rows were not
            problem = f"visibility altered: {table} name event {stray}, which is not in the log"
            return ChainReport(False, checked, problem, f"event {stray}")
    head = AuditHead.get_or_none(AuditHead.id == 1)
    if head and head.last_seq > last_seq:
        problem = f"the log ends at event {last_seq} but the chain head records {head.last_seq}"
        return ChainReport(False, checked, f"{problem}: events were removed from the end", None)
    if head and head.last_seq < last_seq:
        problem = f"the log goes on to event {last_seq} past its chain head ({head.last_seq})"
        return ChainReport(False, checked, f"{problem}: the head was altered, or events added past it")
    if head and head.last_hash != prev_hash:
        problem = f"the chain head's hash is not that of the last event ({last_seq})"
        return ChainReport(False, checked, f"{problem}: the head or the last event was altered")
    return ChainReport(True, checked, head=f"{last_seq}:{prev_hash}" if checked else None)


def _event_problem(event: AuditEvent, prev_hash: str, read_index: _RowsByEvent, visibility: _RowsByEvent):
    """What is wrong with one event of the chain, or None."""
    if event.prev_hash != prev_hash:
        return "link broken: an event before it was removed, inserted or reordered"
    if event_hash(event) != event.hash:
        return "contents altered: hash does not match"
    if event.read_bucket != _bucket_of(event.activity, event.tenant_id, event.visible_to):
        return "visibility altered: read_bucket does not match"
    viewers, reads = orjson.loads(event.visible_to), holds_reads(event.activity, event.tenant_id)
    if read_index.take(event.seq) != sorted((read_bucket(t), t) for t in (viewers if reads else [])):
        return "visibility altered: the read index does not match"
    by_rows = not reads and event.read_bucket is None  # as append() writes them
    if visibility.take(event.seq) != sorted((t,) for t in (viewers if by_rows else [])):
        return "visibility altered: the visibility rows do not match"
    return None


class _RowsByEvent:
    """An index table's rows event by event, walked beside the chain (verify_chain)."""

    def __init__(self, model, columns: str):
        table = model._meta.table_name
        query = f"SELECT event_seq, {columns} FROM {table} ORDER BY event_seq"
        self._by_event = itertools.groupby(database.execute_sql(query), key=operator.itemgetter(0))
        self._next = self._advance()

    def _advance(self) -> tuple[int, list] | None:
        found = next(self._by_event, None)
        return None if found is None else (found[0], sorted(row[1:] for row in found[1]))

    def take(self, seq: int) -> list[tuple] | None:
        """Event `seq`'s rows, sorted, without event_seq; None if rows of an event before
        it were never taken (they name an event that is not in the log)."""
        stray = False
        while self._next is not None and self._next[0] <= seq:
            (event_seq, rows), self._next = self._next, self._advance()
            if event_seq == seq:
                return None if stray else rows
            stray = True
        return None if stray else []

    def first_left(self) -> int | None:
        """The first event named by rows not taken (past the last event), or None."""
        return None if self._next is None else self._next[0]


def to_json(event: AuditEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "time": isoformat(event.time),
        "activity": event.activity,
        "actor": event.actor,
        "actor_tenant_id": event.actor_tenant_id,
        "tenant_id": event.tenant_id,
        "target": event.target,
        "result": event.result,
        "details": json.loads(event.details),
    }


def view(
    tenant_id: str,
    since: datetime | None,
    activities: tuple[str, ...] | None,
    limit: int,
    only: tuple[str, ...] | None = None,
    after: tuple[int, int] | None = None,
) -> list:
    """Events tenant `tenant_id` may see, oldest first; with `activities`, just events of
    one of them (exact names); with `only`, just the activities
    those patterns name (`x.y`, or `x.*` for a family); with `after` (a `position`), just
    those after that event."""
    flush_reads()
    shown = (
        AuditEvent.select()
        .join(AuditVisibility, on=(AuditVisibility.event_seq == AuditEvent.seq))
        .where(AuditVisibility.tenant_id == tenant_id)
    )
    bucket = read_bucket(tenant_id)
    reads = AuditEvent.select().where(
        (AuditEvent.read_bucket == bucket) & (AuditEvent.tenant_id == tenant_id)
    )
    several_reads = (
        AuditEvent.select()
        .join(AuditReadIndex, on=(AuditReadIndex.event_seq == AuditEvent.seq))
        .where(
            (AuditReadIndex.read_bucket == bucket)
            & (AuditReadIndex.tenant_id == tenant_id)
            # only an event of several reads holds others' reads (holds_reads)
            & (AuditEvent.activity == READ)
            & AuditEvent.tenant_id.is_null()
        )
    )
    parts = []
    for query in (shown, reads, several_reads):
        if since is not None:
            query = query.where(AuditEvent.time >= since)
        if after is not None:
            query = query.where(AuditEvent.seq >= after[0])
        if activities:
            query = query.where(AuditEvent.activity.in_(activities))
        if only is not None:
            matches = [
                AuditEvent.activity.startswith(p[:-1]) if p.endswith("*") else AuditEvent.activity == p
                for p in only
            ]
            query = query.where(reduce(operator.or_, matches)) if matches else query.where(False)
        # One row more than `limit`: the row `after` names may yield nothing new.
        parts.append(query.order_by(AuditEvent.seq).limit(limit + 1))
    # Each row of several reads holds one or more of the tenant's: `limit` + 1 rows are enough.
    parts[2] = (read for event in parts[2].iterator() for read in expand(event, tenant_id))
    events = heapq.merge(*parts, key=lambda event: event.seq)
    if after is not None:
        events = (e for e in events if position(e) > after)
    return list(itertools.islice(events, limit))
