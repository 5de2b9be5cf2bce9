"""The decision API: single and batch checks (API.md "Decisions")."""

from __future__ import annotations

from flask import Blueprint, jsonify

from service import decisions
from service.api import json_body, now, policy, provider, viewer
from service.errors import Forbidden

bp = Blueprint("decisions", __name__, url_prefix="/v1/decisions")


def _client():
    current = viewer()
    if not current.is_decision_client:
        raise Forbidden("only decision clients may ask for decisions", code="not_decision_client")
    return current


def _evaluate(bodies: list[dict]) -> list[dict]:
    current_policy, at, tenant = policy(), now(), provider()
    checks = [decisions.Check(**body) for body in bodies]
    answers = [(check, decisions.decide(current_policy, check, at, tenant)) for check in checks]
    decisions.record(answers, _client().caller, at)
    return [decision.to_json(check.explain) for check, decision in answers]


@bp.post("")
def decide():
    _client()
    body = json_body("DecisionRequest")
    return jsonify(_evaluate([body])[0])


@bp.post("/batch")
def decide_batch():
    _client()
    body = json_body("DecisionBatch")
    return jsonify({"results": _evaluate(body["checks"])})
