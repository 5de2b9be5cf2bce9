"""Up but not ready: the app served while the store cannot be opened at start.

API.md: `/healthz` answers 200 once the process is up, `/readyz` 200 only when the store
is reachable. A worker whose database is down when it starts (PostgreSQL still booting,
a network partition) therefore serves this small app instead of exiting: `/healthz` 200,
`/readyz` 503, every other call 503 `store_unavailable`. Each such call (at most one a
second) tries to build the real app again; once that works, the real app answers every
call from then on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import peewee
from flask import Flask, jsonify

from service.errors_http import error_response

log = logging.getLogger("support_access")
RETRY_INTERVAL = 1.0  # seconds between attempts to build the real app
STORE_ERRORS = (peewee.OperationalError, peewee.InterfaceError)


def waiting_app(config: dict, build: Callable[[], Flask], first_error: Exception) -> Flask:
    app = Flask(__name__)
    app.config.update(config)
    state = {"tried_at": time.monotonic()}
    lock = threading.Lock()
    log.error("the data store cannot be opened; not ready, retrying: %s", first_error)

    def real_app() -> Flask | None:
        """The real app if it can be built now (one attempt a second, one at a time)."""
        with lock:
            if "app" not in state and time.monotonic() - state["tried_at"] >= RETRY_INTERVAL:
                state["tried_at"] = time.monotonic()
                try:
                    state["app"] = build()
                    log.warning("the store is reachable: serving")
                except STORE_ERRORS as exc:
                    log.error("the data store still cannot be opened: %s", exc)
            return state.get("app")

    def wsgi(environ, start_response):
        ready = real_app()
        if ready is not None:
            return ready.wsgi_app(environ, start_response)
        return waiting_wsgi(environ, start_response)

    @app.get("/healthz")
    def healthz():
        return jsonify({"status": "ok"})

    @app.route("/", defaults={"path": ""}, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    @app.route("/<path:path>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    def not_ready(path: str):
        code = "not_ready" if path == "readyz" else "store_unavailable"
        return error_response(503, code, "the data store cannot be opened; see the service log")

    waiting_wsgi = app.wsgi_app
    app.wsgi_app = wsgi
    return app
