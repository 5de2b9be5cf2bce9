"""Directory over HTTP (operators): tenants and role assignments."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from models import Tenant
from service import directory
from service.api import json_body, now, policy, provider, require_operator
from service.clock import isoformat
from service.errors import NotFound

bp = Blueprint("tenants", __name__, url_prefix="/v1/tenants")


@bp.put("/<tenant_id>")
def put_tenant(tenant_id: str):
    operator = require_operator()
    directory.check_tenant_id(tenant_id, "tenant_id")
    body = json_body("TenantPut")
    directory.check_tenant_name(body["name"], "name")
    created = directory.put_tenant(tenant_id, body["name"], operator.caller, now(), provider())
    tenant = Tenant.get_by_id(tenant_id)
    answer = {"id": tenant.id, "name": tenant.name, "created_at": isoformat(tenant.created_at)}
    return jsonify(answer), 201 if created else 200


@bp.put("/<tenant_id>/role-assignments")
def put_role_assignment(tenant_id: str):
    operator = require_operator()
    body = json_body("RoleAssignmentPut")
    directory.check_principal(body["principal"], "principal")
    if not directory.tenant_exists(tenant_id):
        raise NotFound(f"tenant {tenant_id!r} not found")
    current = policy()
    role = directory.check_role(current, provider(), tenant_id, body["role"], "role")
    created = directory.put_role_assignment(
        current, provider(), tenant_id, body["principal"], role, operator.caller, now()
    )
    answer = {"tenant_id": tenant_id, "principal": body["principal"], "role": role}
    return jsonify(answer), 201 if created else 200


@bp.delete("/<tenant_id>/role-assignments/<path:principal>/<path:role>")
def delete_role_assignment(tenant_id: str, principal: str, role: str):
    """Werkzeug decodes `%2F` before routing, so a `/` inside the principal or the role
    cannot be told from the one between them: each split is tried, the shortest
    principal first, and the one naming an assignment that exists is removed."""
    operator = require_operator()
    current = policy()
    parts = f"{principal}/{role}".split("/")
    splits = [("/".join(parts[:i]), "/".join(parts[i:])) for i in range(1, len(parts))]
    held = [(p, r) for p, r in splits if directory.holds_role(current, tenant_id, p, r)]
    deleted = bool(held) and directory.delete_role_assignment(
        current, provider(), tenant_id, *held[0], operator.caller, now()
    )
    if not deleted:
        raise NotFound(f"no role assignment {'/'.join(parts)!r} (principal/role) in tenant {tenant_id!r}")
    return no_content()


def no_content() -> Response:
    response = Response(status=204)
    del response.headers["Content-Type"]  # there is no body to describe
    return response
