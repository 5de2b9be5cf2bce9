"""A tenant's view of the audit log."""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from service import audit, workflow
from service.api import now, query_int, query_time, viewer
from service.errors import BadRequest, NotFound

SUPPORT_TRAIL = ("support_request.", "access_request.", "diagnostics.")

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
    workflow.sweep(now())
    # Support-ticket admins who are not log readers see the support access trail only
    # (SPEC §1: "the support-ticket roles, for their own requests").
    full = tenant_id in current.log_reader_of or current.is_operator
    events = audit.view(tenant_id, since, request.args.get("activity") or None, limit)
    items = [audit.to_json(e) for e in events if full or e.activity.startswith(SUPPORT_TRAIL)]
    return jsonify({"items": items})
