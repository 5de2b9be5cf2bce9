"""Support requests (tickets)."""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from models import SupportRequest
from service import workflow
from service.api import json_body, now, optional_body, policy, provider, query_choice, viewer
from service.clock import isoformat

bp = Blueprint("support_requests", __name__, url_prefix="/v1/support-requests")


def ticket_json(ticket: SupportRequest) -> dict:
    return {
        "id": ticket.id,
        "tenant_id": ticket.tenant_id,
        "resource_tenant_id": ticket.resource_tenant_id,
        "title": ticket.title,
        "status": ticket.status,
        "allow_advanced_diagnostics": ticket.allow_advanced_diagnostics,
        "assigned_engineer": ticket.assigned_engineer,
        "created_at": isoformat(ticket.created_at),
        "closed_at": isoformat(ticket.closed_at),
    }


@bp.post("")
def create():
    body = json_body("SupportRequestCreate")
    ticket = workflow.create_ticket(policy(), viewer(), body, now())
    return jsonify(ticket_json(ticket)), 201


@bp.get("")
def list_tickets():
    status = query_choice("status", ("open", "closed"))
    tickets = workflow.list_tickets(viewer(), status, request.args.get("tenant_id") or None)
    return jsonify({"items": [ticket_json(t) for t in tickets]})


@bp.get("/<ticket_id>")
def get(ticket_id: str):
    return jsonify(ticket_json(workflow.visible_ticket(viewer(), ticket_id)))


@bp.post("/<ticket_id>/assign")
def assign(ticket_id: str):
    body = json_body("Assign")
    ticket = workflow.assign_ticket(policy(), viewer(), ticket_id, body["engineer"], now(), provider())
    return jsonify(ticket_json(ticket))


@bp.patch("/<ticket_id>")
def update(ticket_id: str):
    body = json_body("SupportRequestPatch")
    ticket = workflow.update_ticket(viewer(), ticket_id, body["allow_advanced_diagnostics"], now())
    return jsonify(ticket_json(ticket))


@bp.post("/<ticket_id>/close")
def close(ticket_id: str):
    optional_body("Empty")
    return jsonify(ticket_json(workflow.close_ticket(viewer(), ticket_id, now())))
