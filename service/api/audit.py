"""A tenant's view of the audit log."""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken
from flask import Blueprint, current_app, jsonify, request

from service import audit, workflow
from service.api import now, policy, query_int, query_parsed, query_time, query_values, viewer
from service.errors import BadRequest, NotFound

bp = Blueprint("audit", __name__, url_prefix="/v1/audit-events")
MAX_ACTIVITIES = 50  # far more than there are activities; bounds the query's parameters
# Also the most a page may hold: a caller that does not page still sees a tenant's whole
# view up to this size, e.g. a batch of 1,000 reads and the workflow around it.
DEFAULT_LIMIT = 10_000


@bp.get("")
def list_events():
    tenant_id = request.args.get("tenant_id")
    if not tenant_id:
        raise BadRequest("tenant_id: query parameter required", code="invalid_query")
    current = viewer()
    readers = current.admin_of | current.log_reader_of
    if tenant_id not in readers and not current.is_operator:
        raise NotFound(f"tenant {tenant_id!r} not found")
    since = query_time("since")
    limit = query_int("limit", DEFAULT_LIMIT, 1, DEFAULT_LIMIT)
    after = query_parsed("after", read_cursor, "a next_after value this endpoint gave")
    workflow.sweep(now())
    only = None
    if tenant_id not in current.log_reader_of and not current.is_operator:
        # A support-ticket admin who is no log reader: the support trail only (workflow.yaml).
        current_policy = policy()
        current_policy.hit("audit:support_trail")
        only = current_policy.support_trail
    activities = query_values("activity", MAX_ACTIVITIES)  # events of any of them
    events = audit.view(tenant_id, since, activities, limit, only, after)
    # Where to go on from: after the last event, or where this page started if it is empty.
    next_after = cursor(audit.position(events[-1])) if events else request.args.get("after")
    return jsonify({"items": [audit.to_json(e) for e in events], "next_after": next_after})


def _fernet() -> Fernet:
    key = hashlib.sha256(b"audit-cursor:" + str(current_app.secret_key).encode()).digest()
    return Fernet(base64.urlsafe_b64encode(key))


def cursor(position: tuple[int, int]) -> str:
    """A position in the log as an opaque token: in the clear it would show a tenant how
    many events the whole log gained in between, other tenants' included (SPEC §5)."""
    return _fernet().encrypt(b"%d.%d" % position).decode()


def read_cursor(text: str) -> tuple[int, int]:
    try:
        seq, part = _fernet().decrypt(text.encode()).split(b".")
        return int(seq), int(part)
    except (InvalidToken, ValueError) as exc:
        raise ValueError("unknown or damaged") from exc
