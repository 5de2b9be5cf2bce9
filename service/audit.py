"""The audit log: an append-only, hash-chained list of events.

Each event stores the hash of the one before it; `verify_chain` recomputes every hash and
link, so an edited, deleted or reordered event is found. Events are written inside the
caller's transaction, so a state change and its audit event commit together or not at all.
"""

from __future__ import annotations

import hashlib
import json
import operator
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import reduce
from typing import Any

import orjson

from models import AuditEvent, AuditHead, AuditVisibility, database, is_sqlite
from service.clock import isoformat

GENESIS = "0" * 64


# Activities that change no state a decision reads: they do not wake other workers.
NOT_STATE_CHANGES = frozenset({"diagnostics.read", "policy.reloaded"})


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
    append([event])
    return event


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
    seq: int | None = None
    prev_hash: str | None = None
    hash: str | None = None


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
    principal, actor_tenant = _actor_fields(actor)
    return NewEvent(
        id=event_id or str(uuid.uuid4()),
        time=now,
        activity=activity,
        actor=principal,
        actor_tenant_id=actor_tenant,
        tenant_id=tenant_id,
        visible_to=_json(sorted(set(visible_to))),
        target=target,
        result=result,
        details=_json(details),
    )


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=str).decode()


def append(events: list[NewEvent]) -> None:
    """Chain and insert events in order, with three statements whatever their number.
    Must run inside a write transaction: the locked head makes appends serial.

    Plain parameterised SQL rather than peewee queries: this runs for every allowed read,
    and building the query objects cost more than the database work.
    """
    statements = _statements()
    cursor = database.cursor()
    cursor.execute(statements["head"])
    seq, prev_hash = cursor.fetchone()
    rows, visibility, times = [], [], {}
    for event in events:
        seq += 1
        event.seq, event.prev_hash = seq, prev_hash
        event.hash = prev_hash = event_hash(event)
        rows.append(_row(event, times))
        visibility += [(tenant, seq) for tenant in orjson.loads(event.visible_to)]
    cursor.executemany(statements["event"], rows)
    if visibility:
        cursor.executemany(statements["visibility"], visibility)
    cursor.execute(statements["move_head"], (seq, prev_hash))
    if any(event.activity not in NOT_STATE_CHANGES for event in events):
        _announce_after_commit(seq)


_EVENT_FIELDS = list(AuditEvent._meta.sorted_fields)
_TIME_FIELD = AuditEvent.time


def _row(event: NewEvent, times: dict) -> tuple:
    """The event's column values in _EVENT_FIELDS order. All but the time are plain
    strings and numbers already; the time's database form is computed once per value
    (a batch shares one), since field conversion cost more than the insert."""
    if event.time not in times:
        times[event.time] = _TIME_FIELD.db_value(event.time)
    return tuple(
        times[event.time] if field is _TIME_FIELD else getattr(event, field.name) for field in _EVENT_FIELDS
    )


def _statements() -> dict[str, str]:
    """SQL for `append`, in the current database's parameter style (built once per database)."""
    db = database.obj
    if _STATEMENTS.get("for") is not db:
        _STATEMENTS.clear()
        _STATEMENTS.update(_build_statements(db), **{"for": db})
    return _STATEMENTS


_STATEMENTS: dict = {}


def _build_statements(db) -> dict[str, str]:
    param = db.param
    lock = "" if is_sqlite(db) else " FOR UPDATE"  # SQLite: BEGIN IMMEDIATE locks
    columns = ", ".join(field.column_name for field in _EVENT_FIELDS)
    values = ", ".join([param] * len(_EVENT_FIELDS))
    events, visibility = AuditEvent._meta.table_name, AuditVisibility._meta.table_name
    head = AuditHead._meta.table_name
    return {
        "head": f"SELECT last_seq, last_hash FROM {head} WHERE id = 1{lock}",
        "event": f"INSERT INTO {events} ({columns}) VALUES ({values})",
        "visibility": f"INSERT INTO {visibility} (tenant_id, event_seq) VALUES ({param}, {param})",
        "move_head": f"UPDATE {head} SET last_seq = {param}, last_hash = {param} WHERE id = 1",
    }


def _announce_after_commit(seq: int) -> None:
    """Tell every worker's decision index that state changed, once this commits."""
    from flask import current_app, has_app_context

    if has_app_context() and "decision_index" in current_app.extensions:
        signal = current_app.extensions["decision_index"].signal
        database.after_commit(lambda: signal.publish(seq))


def _actor_fields(actor) -> tuple[str, str | None]:
    if isinstance(actor, str):  # "system" or a CLI command
        return actor, None
    caller = getattr(actor, "caller", actor)  # a Viewer or a Caller
    return caller.principal, caller.token_tenant_id


def event_hash(event: AuditEvent | NewEvent) -> str:
    """sha256 over the previous hash and every field of the event, canonically encoded."""
    body = {
        "seq": event.seq,
        "id": event.id,
        "time": isoformat(event.time),
        "activity": event.activity,
        "actor": event.actor,
        "actor_tenant_id": event.actor_tenant_id,
        "tenant_id": event.tenant_id,
        "visible_to": event.visible_to,
        "target": event.target,
        "result": event.result,
        "details": event.details,
    }
    return hashlib.sha256(
        event.prev_hash.encode() + orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    ).hexdigest()


@dataclass
class ChainReport:
    ok: bool
    checked: int
    problem: str | None = None
    bad_event: str | None = None  # id (seq) of the first bad event


def verify_chain(batch: int = 1000) -> ChainReport:
    """Walk the chain in order; report the first event whose hash or link is wrong."""
    prev_hash, checked, last_seq = GENESIS, 0, 0
    query = AuditEvent.select().order_by(AuditEvent.seq)
    for event in query.iterator() if batch else query:
        where = f"event {event.seq} ({event.id}, {event.activity})"
        if event.prev_hash != prev_hash:
            problem = "link broken: an event before it was removed, inserted or reordered"
            return ChainReport(False, checked, problem, where)
        if event_hash(event) != event.hash:
            return ChainReport(False, checked, "contents altered: hash does not match", where)
        prev_hash, last_seq, checked = event.hash, event.seq, checked + 1
    head = AuditHead.get_or_none(AuditHead.id == 1)
    if head and (head.last_hash != prev_hash or head.last_seq != last_seq):
        problem = f"the log ends at event {last_seq} but the chain head records {head.last_seq}"
        return ChainReport(False, checked, f"{problem}: events were removed from the end", None)
    return ChainReport(True, checked)


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
    activity: str | None,
    limit: int,
    only: tuple[str, ...] | None = None,
) -> list:
    """Events tenant `tenant_id` may see, oldest first; with `only`, just the activities
    those patterns name (`x.y`, or `x.*` for a family)."""
    query = (
        AuditEvent.select()
        .join(AuditVisibility, on=(AuditVisibility.event_seq == AuditEvent.seq))
        .where(AuditVisibility.tenant_id == tenant_id)
    )
    if since is not None:
        query = query.where(AuditEvent.time >= since)
    if activity:
        query = query.where(AuditEvent.activity == activity)
    if only is not None:
        matches = [
            AuditEvent.activity.startswith(p[:-1]) if p.endswith("*") else AuditEvent.activity == p
            for p in only
        ]
        query = query.where(reduce(operator.or_, matches)) if matches else query.where(False)
    return list(query.order_by(AuditEvent.seq).limit(limit))
