"""Support Access: the Flask application factory."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from flask import Flask

from models import connect_database, database
from service import auth, cli, errors_http
from service.clock import system_now
from service.errors import ConfigError, PolicyError
from service.policy import REPO_POLICY_DIR
from service.policy_store import PolicyStore

ENV_PREFIX = "SUPPORT_ACCESS_"


def create_app(test_config: dict | None = None) -> Flask:
    app = Flask(__name__, instance_relative_config=True)
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    app.config.from_mapping(
        DATABASE_URL=f"sqlite:///{Path(app.instance_path) / 'support_access.db'}",
        JWT_SECRET=None,
        JWKS=None,
        POLICY_DIR=str(REPO_POLICY_DIR),
        PROVIDER_TENANT="provider",
        DECISION_LOG=str(Path(app.instance_path) / "decisions.log"),
        CLOCK=system_now,
        # Seconds between checks of the policy files for changes; 0 turns watching off
        # (SIGHUP and POST /v1/policy/reload still reload).
        POLICY_WATCH_INTERVAL=2.0,
        MAX_CONTENT_LENGTH=2 * 1024 * 1024,
    )
    if test_config is None:
        _load_environment(app)
    else:
        app.config.update(test_config)

    auth.init_app(app)
    _init_database(app)
    _init_policy(app)
    _init_decision_engine(app)
    _init_decision_log(app)
    errors_http.init_app(app)
    cli.init_app(app)

    from service.api import register_blueprints

    register_blueprints(app)
    return app


def _load_environment(app: Flask) -> None:
    """API.md "Configuration": SUPPORT_ACCESS_* environment variables."""
    keys = ("DATABASE_URL", "JWT_SECRET", "JWKS", "POLICY_DIR", "PROVIDER_TENANT", "DECISION_LOG")
    for key in (*keys, "POLICY_WATCH_INTERVAL"):
        value = os.environ.get(ENV_PREFIX + key)
        if value:
            app.config[key] = value


def _init_database(app: Flask) -> None:
    connect_database(app.config["DATABASE_URL"])

    @app.before_request
    def _open_connection() -> None:
        database.connect(reuse_if_open=True)

    @app.teardown_request
    def _close_connection(exc) -> None:
        if not database.is_closed():
            database.close()


def _init_policy(app: Flask) -> None:
    """Refuse to start without a good policy: a half-loaded policy is never served."""
    store = PolicyStore(app.config["POLICY_DIR"])
    try:
        store.reload(app.config["CLOCK"]())
    except PolicyError as exc:
        raise ConfigError(f"policy in {store.directory} does not load: {exc.message}") from exc
    app.extensions["policy_store"] = store
    if not app.config.get("TESTING"):
        from service.policy_reload import PolicyWatcher

        app.extensions["policy_watcher"] = PolicyWatcher(
            app, float(app.config["POLICY_WATCH_INTERVAL"])
        ).start()


def _init_decision_engine(app: Flask) -> None:
    """The in-memory index decisions read, and the group committer for allowed reads."""
    from service.decision_index import DecisionIndex
    from service.read_recorder import ReadRecorder
    from service.state_signal import counter_for

    signal = counter_for(app.config["DATABASE_URL"], app.instance_path)
    policy = app.extensions["policy_store"].current
    index = DecisionIndex(signal, policy.timing.retention)
    index.load(app.config["CLOCK"]())
    app.extensions["decision_index"] = index
    app.extensions["read_recorder"] = ReadRecorder(app)


def _init_decision_log(app: Flask) -> None:
    """Decisions go to a JSON-lines file (one line per decision), like OPA's decision log."""
    logger = logging.getLogger("support_access.decisions")
    path = app.config["DECISION_LOG"]
    if not path or any(
        getattr(h, "baseFilename", None) == str(Path(path).resolve()) for h in logger.handlers
    ):
        return
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
