"""Support access requests, shown with the view of the tenant that asks (SPEC §5)."""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from models import AccessRequest, Approval
from service import workflow
from service.api import json_body, now, optional_body, policy, provider, query_choice, viewer
from service.clock import isoformat

bp = Blueprint("access_requests", __name__, url_prefix="/v1/access-requests")

STATUSES = ("pending", "approved", "rejected", "expired", "cancelled", "completed", "revoked")


def access_request_json(item: AccessRequest, view: str, approvals: list[Approval] | None = None) -> dict:
    """`approvals`: the item's, when the caller fetched them already (a list does)."""
    status = workflow.view_status(item, view)
    finished_at = workflow.finished_at_in_view(item, view)
    return {
        "id": item.id,
        "support_request_id": item.support_request_id,
        "engineer": item.engineer,
        "resource_tenant_id": item.resource_tenant_id,
        "support_request_tenant_id": item.support_request_tenant_id,
        "justification": item.justification,
        "status": status,
        "required_approvals": workflow.required_approvals(item),
        "approvals": [
            {"tenant_id": a.tenant_id, "party": a.party, "approver": a.approver, "at": isoformat(a.at)}
            for a in (workflow.approvals_of(policy(), item) if approvals is None else approvals)
        ],
        "created_at": isoformat(item.created_at),
        "expires_at": isoformat(item.expires_at),
        "approved_at": isoformat(item.approved_at),
        "access_expires_at": isoformat(item.access_expires_at),
        "finished_at": isoformat(finished_at),
        "rejection_reason": item.rejection_reason,
        "policy_version": item.policy_version,
        "view": view,
    }


@bp.post("")
def create():
    body = json_body("AccessRequestCreate")
    item = workflow.create_access_request(policy(), viewer(), body, now(), provider())
    return jsonify(access_request_json(item, "resource")), 201


@bp.get("")
def list_requests():
    tenant_id = request.args.get("tenant_id") or None
    status = query_choice("status", STATUSES)
    current = viewer()
    workflow.sweep(now())
    items = workflow.list_access_requests(current, policy(), tenant_id, status, now())
    approvals = workflow.approvals_by_request(policy(), [item for item, _ in items])
    return jsonify({"items": [access_request_json(item, view, approvals[item.id]) for item, view in items]})


@bp.get("/<request_id>")
def get(request_id: str):
    workflow.sweep(now())
    item, view = workflow.visible_request(viewer(), request_id, request.args.get("tenant_id") or None)
    return jsonify(access_request_json(item, view))


def _answer(item: AccessRequest):
    item, view = workflow.visible_request(viewer(), item.id)
    return jsonify(access_request_json(item, view))


@bp.post("/<request_id>/approve")
def approve(request_id: str):
    body = json_body("Approve")
    return _answer(workflow.approve(policy(), viewer(), request_id, body["tenant_id"], now()))


@bp.post("/<request_id>/reject")
def reject(request_id: str):
    body = json_body("Reject")
    item = workflow.reject(policy(), viewer(), request_id, body["tenant_id"], body.get("reason"), now())
    return _answer(item)


@bp.post("/<request_id>/revoke")
def revoke(request_id: str):
    optional_body("Empty")
    return _answer(workflow.revoke(policy(), viewer(), request_id, now()))


@bp.post("/<request_id>/cancel")
def cancel(request_id: str):
    optional_body("Empty")
    return _answer(workflow.cancel(viewer(), request_id, now()))
