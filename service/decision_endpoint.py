"""The decision endpoints: their work, and a WSGI fast path that serves them ahead of Flask.

`POST /v1/decisions` and `POST /v1/decisions/batch` are the calls other services put on
their hot path. Flask's request machinery (context push, routing, hooks, response object)
costs about 40 µs per request, more than the decision itself, so `FastDecisions` answers
these two routes directly from the WSGI environ, in the same order of checks and with the
same answers and errors as the Flask routes in service/api/decisions.py, which remain the
reference (`FAST_DECISIONS=False` serves everything through Flask; a test compares both).
Every other request goes to Flask untouched.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from http import HTTPStatus
from typing import Any

import msgspec
import orjson
from flask import Flask
from prometheus_client import Counter
from werkzeug.exceptions import RequestEntityTooLarge

from service import decisions, fast_bodies
from service.auth import AUTHENTICATED, Caller, caller_from_header
from service.errors import ApiError, Forbidden, Unavailable
from service.errors_http import challenge_headers, error_for
from service.policy import Policy
from service.validation import json_object, prepare, read_body, refuse_unless_json, validate

# JSON writes U+0000 only as this escape; `validate` refuses it (service/validation.py),
# and the fast decoder does not check for it.
NUL_ESCAPE = b"\\u0000"
ROUTES = {"/v1/decisions": ("DecisionRequest", False), "/v1/decisions/batch": ("DecisionBatch", True)}
# A sync that took longer than this and missed a change made meanwhile is done again (a
# stalled store connection); a change during a quicker one is concurrent with the decision.
SLOW_SYNC = 0.01  # seconds
SYNC_ATTEMPTS = 5  # then 503: the index cannot catch up with the store
DECISIONS = Counter("support_access_decisions", "Decisions answered", ["allowed", "reason"])


class DecisionService:
    """What both decision routes do once the caller is known and the body is parsed."""

    def __init__(self, app: Flask):
        self.app = app
        self.store = app.extensions["policy_store"]
        self.index = app.extensions["decision_index"]
        self.listener = app.extensions.get("change_listener")
        self.journal = app.extensions["read_journal"]
        self.decision_log = app.extensions["decision_log"]
        self.verifier = app.extensions["token_verifier"]
        self.watcher = app.extensions.get("policy_watcher")

    def begin(self, caller: Caller) -> None:
        """The caller checked to be a decision client (403 if not), with the index current."""
        self._current()
        self._check_caller(caller, self.store.current)
        # Its store query may stall (a hung connection): here, before `answer` reads the
        # state it decides from, never between deciding and answering.
        self.journal.keep_up()

    def _check_caller(self, caller: Caller, policy: Policy) -> None:
        roles = self.index.roles.get(caller.principal, ())
        if not policy.any_role_allows(roles, self.index.provider, "evaluate_decisions"):
            raise Forbidden("only decision clients may ask for decisions", code="not_decision_client")

    def _current(self) -> None:
        """Every change committed by this process, another worker or another instance
        (503 if another instance's cannot be heard), and another worker's new policy, is
        in force. A sync that stalls (its store queries) is done again if a change came
        meanwhile: one answered during the stall must be in force in this decision."""
        for _ in range(SYNC_ATTEMPTS):
            if self.watcher is not None:
                self.watcher.keep_current()
            if self.listener is not None:
                self.listener.check_fresh()
            started = time.monotonic()
            self.index.sync()
            if self.index.is_current() or time.monotonic() - started < SLOW_SYNC:
                return
        raise Unavailable("the decision index cannot catch up with the store", code="store_unavailable")

    def answer(self, caller: Caller, checks: list[decisions.Check], many: bool) -> Any:
        self.index.warm_for(checks)  # at start-up only: what these checks need of the index
        # Again, right before deciding: reading the body (a slow client) or warming (its
        # queries) may have taken seconds since begin, and a revocation or a new policy
        # answered meanwhile must be in force. From here to the answer nothing waits on
        # the store or on a client.
        self._current()
        policy = self.store.current  # one version stamps every answer of the call
        self._check_caller(caller, policy)  # its role may have been removed meanwhile too
        at = self.app.config["CLOCK"]()
        provider = self.index.provider
        answers = [(check, decisions.decide(policy, self.index, check, at, provider)) for check in checks]
        # Allowed reads are committed to the audit journal before the answer leaves.
        self.journal.append(decisions.reads_to_record(answers, caller, at))
        self.decision_log.write(decisions.log_entries(answers, at))
        # Tallied first: one increment per outcome, not per decision, for a batch of 1,000.
        for (allowed, reason), count in Tally((d.allowed, d.reason) for _, d in answers).items():
            DECISIONS.labels(allowed="true" if allowed else "false", reason=reason).inc(count)
        results = [decision.to_json(check.explain) for check, decision in answers]
        return {"results": results} if many else results[0]


class FastDecisions:
    """WSGI middleware: the two decision routes without Flask, everything else to Flask."""

    def __init__(self, service: DecisionService, flask_wsgi_app):
        self.service = service
        self.next = flask_wsgi_app
        self.max_body = service.app.config["MAX_CONTENT_LENGTH"]

    def __call__(self, environ, start_response):
        route = ROUTES.get(environ.get("PATH_INFO", "")) if environ.get("REQUEST_METHOD") == "POST" else None
        # A query string (the decision routes take none) goes to Flask too, which refuses one
        # it cannot decode or that holds a NUL, as for every other route.
        if route is None or environ.get("QUERY_STRING"):
            return self.next(environ, start_response)
        for hook in self.service.app.extensions["before_every_request"]:
            hook()
        extra_headers = []
        try:
            status, payload = 200, self._handle(environ, *route)
        except Exception as exc:  # fail closed: an error status, never an allow
            status, code, message = error_for(exc)
            payload = {"error": {"code": code, "message": message}}
            extra_headers = challenge_headers(status, code)
        body = orjson.dumps(payload)
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *extra_headers]
        start_response(f"{status} {HTTPStatus(status).phrase}", headers)
        return [body]

    def _handle(self, environ, schema: str, many: bool) -> Any:
        service = self.service
        caller = caller_from_header(service.verifier, environ.get("HTTP_AUTHORIZATION", ""))
        environ[AUTHENTICATED] = True  # service/unread_body.py
        service.begin(caller)
        raw = self._raw_json(environ)
        try:
            if NUL_ESCAPE in raw:
                raise ValueError("a NUL character")
            body = fast_bodies.decode(schema, raw)
            checks = [_check(item) for item in (body.checks if many else [body])]
        except Exception:  # not a valid body, or a NUL: the reference path names the problem
            checks = checks_of(validate(schema, json_object(raw)), many)
        return service.answer(caller, checks, many)

    def _raw_json(self, environ) -> bytes:
        refuse_unless_json(environ)
        length = environ.get("CONTENT_LENGTH", "")
        if length.isascii() and length.isdigit() and "HTTP_TRANSFER_ENCODING" not in environ:
            # The usual request, read directly: Werkzeug's stream wrapper would cost
            # ~2.5 µs, a quarter of this path's own time.
            if int(length) > self.max_body:
                raise ApiError(RequestEntityTooLarge.description, code="body_too_large", status=413)
            return environ["wsgi.input"].read(int(length))
        try:
            # Anything else as Flask reads it: to the end of a chunked body when the
            # server terminates the stream, nothing when it cannot; past the limit, a 413.
            return read_body(environ, self.max_body)
        except RequestEntityTooLarge:
            raise ApiError(RequestEntityTooLarge.description, code="body_too_large", status=413) from None


def checks_of(body: dict, many: bool) -> list[decisions.Check]:
    """The checks of a validated body (plain JSON)."""
    return [decisions.Check(**item) for item in (body["checks"] if many else [body])]


def _check(item) -> decisions.Check:
    """A check from a fast-decoded body (service/fast_bodies.py)."""
    ticket, explain = item.support_request_id, item.explain
    return decisions.Check(
        item.principal,
        item.tenant_id,
        item.action,
        item.resource,
        None if ticket is msgspec.UNSET else ticket,
        explain is True,
    )


def init_app(app: Flask) -> None:
    # Built now, not by a worker's first decision: that one took ~265 ms on a slow host
    # (the OpenAPI document parsed, the body types and validators built), which showed as
    # a 1-connection p99 of 168 ms in `make bench` when wrk's connection met a cold worker.
    for schema, _ in ROUTES.values():
        fast_bodies.decoder(schema)
        prepare(schema)
    service = DecisionService(app)
    app.extensions["decision_service"] = service
    app.extensions.setdefault("before_every_request", [])
    if app.config.get("FAST_DECISIONS", True):
        app.wsgi_app = FastDecisions(service, app.wsgi_app)
