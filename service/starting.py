"""Up but not ready: the app served while a worker cannot start for want of its store or
of a good policy.

API.md: `/healthz` answers 200 once the process is up, `/readyz` 200 only when the store
is reachable and a policy is loaded. A worker whose database cannot be opened when it
starts (PostgreSQL still booting, a network partition), or that finds the policy files
broken with no last good copy, therefore serves this small app instead of exiting:
`/healthz` 200, `/readyz` 503, every other call 503 (`store_unavailable` or
`policy_unavailable`: a policy that does not load is never served, not even in part).
Calls (at most one a second) try to build the real app again; once that works, the
real app answers every call from then on.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from flask import Flask, jsonify, render_template_string

from service.api import health
from service.errors import PolicyNotLoaded, store_failed
from service.errors_http import error_response

log = logging.getLogger("support_access")
RETRY_INTERVAL = 1.0  # seconds between attempts to build the real app
# The admin page's error page while not ready (its own templates need the real app).
ADMIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>503 Service Unavailable &middot; Support Access admin</title></head>
<body><h2>503 Service Unavailable</h2>
<p role="alert">The service is not ready: {{ problem }}. Try again shortly.</p></body></html>
"""


def is_not_ready(exc: BaseException) -> bool:
    """Is `exc` a reason to wait up but not ready (rather than a bug that stops the start)?"""
    return store_failed(exc) or isinstance(exc, PolicyNotLoaded)


def waiting_app(config: dict, build: Callable[[], Flask], first_error: Exception) -> Flask:
    app = Flask(__name__)
    app.config.update(config)
    app.extensions["start_error"] = first_error  # what CLI commands report (service/cli.py)
    state = {"tried_at": time.monotonic(), "error": first_error}
    lock = threading.Lock()
    log.error("not ready, retrying: %s", first_error)

    def real_app() -> Flask | None:
        """The real app if it can be built now (one attempt a second, one at a time)."""
        with lock:
            if "app" not in state and time.monotonic() - state["tried_at"] >= RETRY_INTERVAL:
                state["tried_at"] = time.monotonic()
                try:
                    state["app"] = build()
                    log.warning("ready: serving")
                except Exception as exc:  # fail closed: still not ready, never a 500 page
                    state["error"] = exc
                    log.error("still not ready: %s", exc, exc_info=not is_not_ready(exc))
            return state.get("app")

    def wsgi(environ, start_response):
        ready = real_app()
        if ready is not None:
            return ready.wsgi_app(environ, start_response)
        return waiting_wsgi(environ, start_response)

    @app.get("/healthz")
    def healthz():
        return jsonify({"status": "ok", "pid": os.getpid()})

    # Scraped as when ready: a monitor must not lose the figures when they matter most.
    app.add_url_rule("/metrics", view_func=health.metrics)

    @app.route("/", defaults={"path": ""}, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    @app.route("/<path:path>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    def not_ready(path: str):
        # The causes stay in the service log: a caller learns no host, path or policy text.
        if isinstance(state["error"], PolicyNotLoaded):
            code, problem = "policy_unavailable", "no policy is loaded"
        elif store_failed(state["error"]):
            code, problem = "store_unavailable", "the data store cannot be opened"
        else:
            code, problem = "unavailable", "the service cannot start"
        code = "not_ready" if path == "readyz" else code
        if path == "admin" or path.startswith("admin/"):  # the admin page's errors are pages
            return render_template_string(ADMIN_PAGE, problem=problem), 503
        return error_response(503, code, f"{problem}; see the service log")

    waiting_wsgi = app.wsgi_app
    app.wsgi_app = wsgi
    return app
