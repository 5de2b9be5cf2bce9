"""Every error leaves the service as `{"error": {"code", "message"}}` with its status."""

from __future__ import annotations

import logging

import peewee
from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from service.errors import SupportAccessError

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
    return response


def init_app(app: Flask) -> None:
    @app.errorhandler(SupportAccessError)
    def _our_error(exc: SupportAccessError):
        return error_response(exc.status, exc.code, exc.message)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        status = exc.code or 500
        code = HTTP_CODES.get(status, "http_error")
        response = error_response(status, code, exc.description or exc.name)
        if status == 405 and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(peewee.OperationalError)
    @app.errorhandler(peewee.InterfaceError)
    def _store_error(exc: Exception):
        log.error("store unavailable: %s", exc)
        return error_response(503, "store_unavailable", "the data store is unavailable")

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal error; see the service log")
