"""The policy in force (operators)."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from service.api import require_operator
from service.clock import isoformat

bp = Blueprint("policy", __name__, url_prefix="/v1/policy")


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
        }
    )
