"""HTTP API blueprints (API.md) and the helpers they share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, Response, current_app, g, request

from service import clock
from service.auth import current_caller
from service.directory import provider_tenant
from service.errors import BadRequest, Forbidden
from service.policy import Policy
from service.validation import (
    json_object,
    read_body,
    refuse_nul_characters,
    refuse_undecodable_url,
    refuse_unless_json,
    validate,
)
from service.viewer import Viewer, viewer_for

T = TypeVar("T")

PUBLIC_ENDPOINTS = {"health.openapi", "health.openapi_yaml"}  # the API description itself needs no token


def register_blueprints(app: Flask) -> None:
    from service import admin
    from service.api import (
        access_requests,
        audit,
        decisions,
        health,
        policy_admin,
        support_requests,
        tenants,
    )

    modules = (health, tenants, support_requests, access_requests, decisions, audit, policy_admin, admin)
    for module in modules:
        app.register_blueprint(module.bp)

    flask_options = app.make_default_options_response

    def options_without_a_body() -> Response:
        """OPTIONS answers which methods a path takes (Allow) and nothing else: 204, not
        Flask's 200 with an empty text/html body on an API whose bodies are JSON."""
        response = flask_options()
        response.status_code = 204
        del response.headers["Content-Type"]
        return response

    app.make_default_options_response = options_without_a_body

    @app.before_request
    def _authenticate() -> None:
        """Every /v1 call is authenticated before anything else is looked at, so a
        caller without a valid token learns nothing (401) from a bad body or query."""
        if request.path.startswith("/v1/") and request.endpoint not in PUBLIC_ENDPOINTS:
            current_caller()
            refuse_undecodable_url(request.environ)
            refuse_nul_characters(request.path, request.args.items(multi=True))


def json_body(schema: str) -> dict[str, Any]:
    """The request's JSON object, validated against an OpenAPI schema (400/413/415 if not)."""
    refuse_unless_json(request.environ)
    return validate(schema, json_object(_raw_body()))


def optional_body(schema: str) -> dict[str, Any]:
    """For actions whose body may be left out entirely."""
    raw = _raw_body()
    if not raw:
        return {}
    refuse_unless_json(request.environ)
    return validate(schema, json_object(raw))


def _raw_body() -> bytes:
    return read_body(request.environ, current_app.config["MAX_CONTENT_LENGTH"])


def policy() -> Policy:
    return current_app.extensions["policy_store"].current


def provider() -> str:
    """The provider tenant, read once per request: a directory import may change it."""
    if "provider" not in g:
        g.provider = provider_tenant(current_app.config["PROVIDER_TENANT"])
    return g.provider


def now():
    return clock.now()


def viewer() -> Viewer:
    if "viewer" not in g:
        g.viewer = viewer_for(policy(), current_caller(), provider())
    return g.viewer


def require_operator() -> Viewer:
    current = viewer()
    if not current.is_operator:
        raise Forbidden("only support access operators may do this", code="not_operator")
    return current


def query_parsed(name: str, parse: Callable[[str], T], expected: str) -> T | None:
    """Query parameter `name` through `parse` (None if absent); a 400 naming what was
    expected if `parse` raises ValueError."""
    value = request.args.get(name)
    if value is None:
        return None
    try:
        return parse(value)
    except ValueError as exc:
        raise BadRequest(f"{name}: not {expected} ({exc})", code="invalid_query") from exc


def query_time(name: str):
    return query_parsed(name, clock.parse_iso, "an ISO 8601 UTC time")


def query_choice(name: str, choices: tuple[str, ...]) -> str | None:
    value = request.args.get(name)
    if value is not None and value not in choices:
        raise BadRequest(f"{name}: must be one of {', '.join(choices)}", code="invalid_query")
    return value


def query_values(name: str, most: int) -> tuple[str, ...] | None:
    """A repeatable query parameter (`name=a&name=b`): its distinct non-empty values in
    order, None if there are none; more than `most` is a 400 (each value costs the
    query a parameter)."""
    values = tuple(dict.fromkeys(v for v in request.args.getlist(name) if v))
    if len(values) > most:
        raise BadRequest(f"{name}: at most {most} different values", code="invalid_query")
    return values or None


def query_int(name: str, default: int, low: int, high: int) -> int:
    value = request.args.get(name)
    if value is None:
        return default
    if not (value.isascii() and value.isdigit()) or not low <= int(value) <= high:
        raise BadRequest(f"{name}: must be an integer from {low} to {high}", code="invalid_query")
    return int(value)
