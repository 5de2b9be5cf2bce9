"""The policy in force (operators)."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from service.api import optional_body, provider, require_operator
from service.clock import isoformat
from service.errors import Conflict, PolicyError
from service.policy_reload import reload_policy

bp = Blueprint("policy", __name__, url_prefix="/v1/policy")


@bp.post("/reload")
def reload():
    """Build the policy from its files and switch to it; 409 (and the old policy stays
    in force) if the files do not load."""
    operator = require_operator()
    optional_body("Empty")
    try:
        reload_policy(current_app._get_current_object(), "api", operator.caller)
    except PolicyError as exc:
        raise Conflict(
            f"policy reload failed, previous policy kept: {exc.message}", code="policy_invalid"
        ) from exc
    return show()


@bp.get("")
def show():
    require_operator()
    store = current_app.extensions["policy_store"]
    current = store.current
    return jsonify(
        {
            "version": current.version,
            "loaded_at": isoformat(current.loaded_at),
            "last_reload_error": store.last_reload_error,
            "directory": str(store.directory),
            "provider_tenant": provider(),
        }
    )
