"""A tenant's view of the audit log."""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from service import audit, workflow
from service.api import now, policy, query_int, query_parsed, query_time, viewer
from service.errors import BadRequest, NotFound

bp = Blueprint("audit", __name__, url_prefix="/v1/audit-events")


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
    limit = query_int("limit", 1000, 1, 10000)
    after = query_parsed("after", audit.parse_position, "an event's position")
    workflow.sweep(now())
    only = None
    if tenant_id not in current.log_reader_of and not current.is_operator:
        # A support-ticket admin who is no log reader: the support trail only (workflow.yaml).
        current_policy = policy()
        current_policy.hit("audit:support_trail")
        only = current_policy.support_trail
    events = audit.view(tenant_id, since, request.args.get("activity") or None, limit, only, after)
    return jsonify({"items": [{**audit.to_json(e), "position": audit.position(e)} for e in events]})
