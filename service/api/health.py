"""Liveness, readiness, metrics and the OpenAPI document."""

from __future__ import annotations

import os

from flask import Blueprint, Response, current_app, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess

from models import database
from service.serve import forget_exited_workers
from service.validation import OPENAPI_PATH, openapi_document

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    # The worker's process id tells operators (and tests) which worker answered.
    return jsonify({"status": "ok", "pid": os.getpid()})


@bp.get("/readyz")
def readyz():
    problems = []
    try:
        database.execute_sql("SELECT 1")
    except Exception:  # any store failure means not ready
        problems.append("store unreachable")
    if not current_app.extensions["policy_store"].loaded:
        problems.append("no policy loaded")
    if not current_app.extensions["token_verifier"].keys_reachable():
        problems.append("signing keys (SUPPORT_ACCESS_JWKS) cannot be fetched")
    if problems:
        body = {"error": {"code": "not_ready", "message": "; ".join(problems)}}
        return jsonify(body), 503
    return jsonify({"status": "ready"})


@bp.get("/metrics")
def metrics():
    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Served by several workers (service/serve.py): the sums over all of them, not the
        # counts of whichever worker answers this scrape.
        forget_exited_workers(os.environ["PROMETHEUS_MULTIPROC_DIR"])
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    # content_type, not mimetype: Flask would append a second charset to it.
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


# The contract lives at /v1/openapi.json. Clients and tools look for it in other usual
# places too (/openapi.json, and as YAML), so it is served there as well: the same
# document, parsed from the same file.
@bp.get("/v1/openapi.json")
@bp.get("/openapi.json")
def openapi():
    return jsonify(openapi_document())


@bp.get("/v1/openapi.yaml")
@bp.get("/openapi.yaml")
def openapi_yaml():
    return Response(OPENAPI_PATH.read_text(encoding="utf-8"), content_type="application/yaml; charset=utf-8")
