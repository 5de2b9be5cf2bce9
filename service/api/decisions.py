"""The decision API: single and batch checks (API.md "Decisions")."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from service import decisions
from service.api import json_body, now, policy, provider
from service.auth import Caller, current_caller
from service.decision_index import DecisionIndex
from service.errors import Forbidden

bp = Blueprint("decisions", __name__, url_prefix="/v1/decisions")


def _client(current_policy, index: DecisionIndex) -> Caller:
    """The caller, if it holds the decision-client role in the provider tenant (read from
    the index, like everything on this path: no database round trip)."""
    caller = current_caller()
    tenant = provider()
    roles = index.roles.get(caller.principal, ())
    if not any(t == tenant and current_policy.role_allows(role, "evaluate_decisions") for t, role in roles):
        raise Forbidden("only decision clients may ask for decisions", code="not_decision_client")
    return caller


def _evaluate(schema: str, many: bool):
    current_policy = policy()  # one policy for the whole call: one version stamped
    index = current_app.extensions["decision_index"]
    index.sync()
    caller = _client(current_policy, index)
    body = json_body(schema)
    at, tenant = now(), provider()
    checks = [decisions.Check(**item) for item in (body["checks"] if many else [body])]
    answers = [(check, decisions.decide(current_policy, index, check, at, tenant)) for check in checks]
    # Allowed reads are committed to the audit log before the answer leaves.
    current_app.extensions["read_recorder"].record(decisions.reads_to_record(answers, caller, at))
    current_app.extensions["decision_log"].write(decisions.log_entries(answers, at))
    return [decision.to_json(check.explain) for check, decision in answers]


@bp.post("")
def decide():
    return jsonify(_evaluate("DecisionRequest", many=False)[0])


@bp.post("/batch")
def decide_batch():
    return jsonify({"results": _evaluate("DecisionBatch", many=True)})
