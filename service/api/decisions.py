"""The decision API through Flask (API.md "Decisions").

In service these routes are normally answered by the WSGI fast path in
service/decision_endpoint.py, which does the same work without Flask; these are the
reference it is tested against, and serve when FAST_DECISIONS is off.
"""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from service.api import json_body
from service.auth import current_caller
from service.decision_endpoint import checks_of

bp = Blueprint("decisions", __name__, url_prefix="/v1/decisions")


def _decide(schema: str, many: bool):
    service = current_app.extensions["decision_service"]
    caller = current_caller()
    service.begin(caller)
    checks = checks_of(json_body(schema), many)
    return jsonify(service.answer(caller, checks, many))


@bp.post("")
def decide():
    return _decide("DecisionRequest", many=False)


@bp.post("/batch")
def decide_batch():
    return _decide("DecisionBatch", many=True)
