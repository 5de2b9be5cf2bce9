"""Every error leaves the service as `{"error": {"code", "message"}}` with its status (the
admin page's, as an HTML page: service/admin.py)."""

from __future__ import annotations

import logging

from flask import Flask, jsonify, make_response, request
from werkzeug.exceptions import HTTPException

from service.errors import SupportAccessError, store_failed

log = logging.getLogger("support_access")

HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "body_too_large",
    415: "unsupported_media_type",
    503: "unavailable",
}


def error_response(status: int, code: str, message: str):
    response = jsonify({"error": {"code": code, "message": message}})
    response.status_code = status
    response.headers.extend(challenge_headers(status, code))
    return response


def challenge_headers(status: int, code: str) -> list[tuple[str, str]]:
    """A 401's `WWW-Authenticate` (RFC 9110 §11.6.1; its Bearer form, RFC 6750 §3): what
    to sign in with, and whether the token sent was refused or there was none."""
    if status != 401:
        return []
    if code == "missing_token":
        return [("WWW-Authenticate", 'Bearer realm="support-access"')]
    return [("WWW-Authenticate", 'Bearer realm="support-access", error="invalid_token"')]


def error_for(exc: Exception) -> tuple[int, str, str]:
    """(status, code, message) for an error on the way to an answer, logged. The JSON
    error handlers and the decision fast path answer with it alike: never an allow."""
    if isinstance(exc, SupportAccessError):
        return exc.status, exc.code, exc.message
    if isinstance(exc, HTTPException):  # Werkzeug's, e.g. a malformed chunked body (400)
        status = exc.code or 500
        return status, HTTP_CODES.get(status, "http_error"), exc.description or exc.name
    if store_failed(exc):
        log.error("store unavailable: %s", exc)
        return 503, "store_unavailable", "the data store is unavailable"
    log.error("unhandled error", exc_info=exc)
    return 500, "internal_error", "internal error; see the service log"


def _a_path_of_the_admin_page() -> bool:
    """A path under the admin page that no route takes (or not with this method): it never
    reaches the page's own error handlers, and a person in a browser gets the page's HTML."""
    from service.admin import bp

    return request.blueprint is None and (request.path + "/").startswith(bp.url_prefix + "/")


def init_app(app: Flask) -> None:
    @app.errorhandler(Exception)  # HTTPException has its own, more specific, handler below
    def _error(exc: Exception):
        return error_response(*error_for(exc))

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        if _a_path_of_the_admin_page():
            from service.admin import error_page_for

            response = make_response(error_page_for(exc))
        else:
            response = error_response(*error_for(exc))
        if exc.code == 405 and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response
