"""Support Access: the Flask application factory."""

from __future__ import annotations

import hashlib
import logging
import math
import os
import secrets
from pathlib import Path

import click
from flask import Flask

from models import DATABASE_URL_FORMS, connect_database, database, database_url_problem, is_sqlite
from service import auth, cli, errors_http
from service.clock import system_now
from service.directory import check_tenant_id
from service.errors import BadRequest, ConfigError, PolicyError, PolicyNotLoaded
from service.json_provider import OrjsonProvider
from service.policy import REPO_POLICY_DIR
from service.policy_store import PolicyStore

ENV_PREFIX = "SUPPORT_ACCESS_"


def create_app(test_config: dict | None = None) -> Flask:
    """The app; while the store cannot be opened or no policy loads, a stand-in that is up
    but not ready and builds the app once it can (service/starting.py). When the Flask CLI
    loads it to find a command, an app that has not opened the store yet (command_app)."""
    try:
        if _finding_a_cli_command():
            return command_app(test_config)
        return app_or_stand_in(test_config)
    except ConfigError as exc:
        if click.get_current_context(silent=True) is None:
            raise
        # Under the Flask CLI: "Error: <what to set>", exit 2, as `make serve` says it,
        # instead of a traceback ending in that line.
        raise CommandConfigError(exc.message) from None


class CommandConfigError(click.ClickException):
    """A setting a `flask --app service` command cannot run with (a ConfigError)."""

    exit_code = 2


def app_or_stand_in(test_config: dict | None = None, create_database: bool = True) -> Flask:
    """The app, or the stand-in while the store cannot be opened or no policy loads."""
    from service.starting import is_not_ready, waiting_app
    from service.unread_body import ReadUnreadBody

    try:
        app = build_app(test_config, create_database)
    except Exception as exc:
        if not is_not_ready(exc):
            raise
        config = configured_app(test_config).config
        app = waiting_app(config, lambda: build_app(test_config, create_database), exc)
        cli.init_app(app)  # audit verify then says the store cannot be read (exit 2)
    # Outermost, round the decision fast path too (and the stand-in, round the app it builds).
    app.wsgi_app = ReadUnreadBody(app.wsgi_app)
    return app


def command_app(test_config: dict | None = None) -> Flask:
    """What `flask --app service COMMAND` runs in: configured, but with the store not
    opened and the token keys not checked. The Flask CLI builds the app before it knows
    the command, and opening a SQLite file that does not exist creates it: `audit verify`
    on a mistyped path used to report an empty, intact log. A command that works on the
    store opens it itself, creating it only if it is meant to, and refuses, as the service
    does, without token keys (service/cli.py, _needs_store). `policy check` and `policy
    test` need neither, so a security team runs them without the service's secrets."""
    app = configured_app(test_config)
    cli.init_app(app)
    app.extensions["open_store"] = lambda create: app_or_stand_in(test_config, create)
    return app


def _finding_a_cli_command() -> bool:
    """Is the Flask CLI loading the app to look a command up in it? Its own commands
    (`flask run`, `flask shell`) load the app from inside themselves, and get all of it."""
    from flask.cli import FlaskGroup

    context = click.get_current_context(silent=True)
    return context is not None and isinstance(context.command, FlaskGroup)


def build_app(test_config: dict | None = None, create_database: bool = True) -> Flask:
    """The app, or the error that stops it: for tools that build one in process (policy
    test suites, the benchmark), where a stand-in would only hide why. create_database:
    a SQLite file that does not exist is created (start, directory import), else refused."""
    app = configured_app(test_config)
    app.json = OrjsonProvider(app)
    auth.init_app(app)
    _init_database(app, create_database)
    _init_policy(app)
    _init_decision_engine(app)
    _init_decision_log(app)
    errors_http.init_app(app)
    cli.init_app(app)

    from service import decision_endpoint
    from service.api import register_blueprints

    register_blueprints(app)
    decision_endpoint.init_app(app)
    return app


def configured_app(test_config: dict | None = None) -> Flask:
    """The Flask object with its configuration (defaults, then the environment or
    `test_config`), nothing initialised yet."""
    app = Flask(__name__, instance_relative_config=True)
    # `//` or `%2F` in a path is a JSON 404, not Werkzeug's HTML redirect to a merged path,
    # which a client following it would send to another resource (PUT /v1/tenants/%2F/...).
    app.url_map.merge_slashes = False
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    app.config.from_mapping(
        DATABASE_URL=f"sqlite:///{Path(app.instance_path) / 'support_access.db'}",
        JWT_SECRET=None,
        JWKS=None,
        POLICY_DIR=str(REPO_POLICY_DIR),
        # SUPPORT_ACCESS_PROVIDER_TENANT; unset, the directory decides (directory.provider_tenant).
        PROVIDER_TENANT=None,
        DECISION_LOG=str(Path(app.instance_path) / "decisions.log"),
        CLOCK=system_now,
        # Seconds between checks of the policy files for changes; 0 turns watching off
        # (SIGHUP and POST /v1/policy/reload still reload).
        POLICY_WATCH_INTERVAL=2.0,
        # Where the last good policy is copied (see PolicyStore); None: no snapshot.
        POLICY_SNAPSHOT_DIR=None,
        # Where allowed reads are journalled before they are imported into the audit log
        # (service/read_journal.py); None: beside the SQLite file, else in the instance folder.
        READ_JOURNAL_DIR=None,
        MAX_CONTENT_LENGTH=2 * 1024 * 1024,
        # Answer the two decision routes with the WSGI fast path (service/decision_endpoint.py).
        FAST_DECISIONS=True,
        # Signs the admin page's session cookie; see _session_secret.
        SECRET_KEY=None,
    )
    if test_config is None:
        _load_environment(app)
    else:
        app.config.update(test_config)
    _check_database_url(app.config["DATABASE_URL"])
    _check_policy_dir(str(app.config["POLICY_DIR"]))
    app.config["SECRET_KEY"] = _session_secret(app)
    return app


def _check_database_url(url: str) -> None:
    """Said plainly at start and by every command, not as a traceback from within peewee
    (or psycopg2, or a MySQL driver that is not installed)."""
    problem = database_url_problem(url)
    if problem:
        raise ConfigError(f"SUPPORT_ACCESS_DATABASE_URL: {problem}; use {DATABASE_URL_FORMS}")


def _check_policy_dir(path: str) -> None:
    """The folder is named in the audit log and in GET /v1/policy, both UTF-8 text: a
    path that is not (bytes read from the environment) failed every reload after the
    policy had been swapped in, its audit event lost."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(path).decode("utf-8", "backslashreplace")
        raise ConfigError(f"{ENV_PREFIX}POLICY_DIR: {shown} is not a UTF-8 path") from None


def read_journal_directory(app: Flask) -> Path:
    from service.read_journal import directory_for

    configured = app.config["READ_JOURNAL_DIR"]
    return Path(configured) if configured else directory_for(app.config["DATABASE_URL"], app.instance_path)


def _before_every_request(app: Flask, hook) -> None:
    """Run `hook` before every request, through Flask or through the decision fast path.
    A thread a hook starts (once) then lives in the serving process, not in CLI commands."""
    app.extensions.setdefault("before_every_request", []).append(hook)
    app.before_request(hook)


def _load_environment(app: Flask) -> None:
    """API.md "Configuration": SUPPORT_ACCESS_* environment variables."""
    app.config["POLICY_SNAPSHOT_DIR"] = str(Path(app.instance_path) / "last-good-policy")
    keys = ("DATABASE_URL", "JWT_SECRET", "JWKS", "POLICY_DIR", "PROVIDER_TENANT", "DECISION_LOG")
    for key in (*keys, "POLICY_WATCH_INTERVAL", "POLICY_SNAPSHOT_DIR", "SECRET_KEY", "READ_JOURNAL_DIR"):
        value = os.environ.get(ENV_PREFIX + key)
        if value or (value == "" and key == "DECISION_LOG"):  # set but empty: no decision log
            app.config[key] = value
    if app.config.get("PROVIDER_TENANT"):  # refused as a directory file's provider_tenant would be
        try:
            check_tenant_id(app.config["PROVIDER_TENANT"], ENV_PREFIX + "PROVIDER_TENANT")
        except BadRequest as exc:
            raise ConfigError(exc.message) from None
    interval = app.config.get("POLICY_WATCH_INTERVAL")
    if isinstance(interval, str):  # from the environment: refused here, not by a worker's traceback
        app.config["POLICY_WATCH_INTERVAL"] = _watch_interval(interval, ENV_PREFIX + "POLICY_WATCH_INTERVAL")
    # Behind a proxy that ends TLS the page sees plain HTTP: this keeps the cookie Secure.
    secure = os.environ.get(ENV_PREFIX + "SECURE_COOKIE", "").strip().lower()
    if secure:
        if secure not in ("true", "false"):
            raise ConfigError(f"{ENV_PREFIX}SECURE_COOKIE: {secure!r} is neither true nor false")
        app.config["SESSION_COOKIE_SECURE"] = secure == "true"


MIN_WATCH_INTERVAL = 0.1  # seconds; less would have the watcher read the files without pause


def _watch_interval(value: str, setting: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (seconds == 0 or MIN_WATCH_INTERVAL <= seconds < math.inf):
        example = f"such as 2 or 0.5, at least {MIN_WATCH_INTERVAL}; 0 turns watching off"
        raise ConfigError(f"{setting}: {value!r} is not a number of seconds ({example})")
    return seconds


def _session_secret(app: Flask) -> str | bytes | None:
    """The key that signs the admin page's session cookie (and keys the audit view's paging
    token): SUPPORT_ACCESS_SECRET_KEY if set, else derived from the JWT secret, else (a JWKS
    only) one drawn at random once and kept in the instance folder. Every worker of the
    machine and every restart then share it; several machines need the setting."""
    if app.config.get("SECRET_KEY"):
        return app.config["SECRET_KEY"]
    secret = app.config.get("JWT_SECRET")
    if secret:
        return hashlib.sha256(b"admin-session:" + str(secret).encode()).hexdigest()
    if not app.config.get("JWKS"):
        return None  # no token keys: the service refuses to start, and commands sign nothing
    try:
        return _kept_random_key(Path(app.instance_path) / "session-key")
    except OSError as exc:  # a read-only instance folder: sign-ins then stay on one worker
        logging.getLogger("support_access").warning("no shared session key (%s); set SECRET_KEY", exc)
        return os.urandom(32)


def _kept_random_key(path: Path) -> str:
    """The key in `path`, drawn and written first if there is none. Workers starting
    together agree: a key is written whole to a file of its own, then linked into place,
    which fails for all but the first."""
    if not path.exists():
        drawn = path.with_name(f"{path.name}.{os.getpid()}")
        with os.fdopen(os.open(drawn, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
            handle.write(secrets.token_urlsafe(32))
        try:
            os.link(drawn, path)
        except FileExistsError:
            pass  # another worker's is in place: use that one
        finally:
            drawn.unlink()
    return path.read_text(encoding="utf-8").strip()


def _init_database(app: Flask, create: bool = True) -> None:
    # peewee opens a connection per thread on its first query and keeps it: no request
    # pays for a connect, and requests that need no database (health, most decisions)
    # never touch it.
    serving = not app.config.get("TESTING")
    # Under `make serve`, the read journal's importer checkpoints (service/read_importer.py).
    connect_database(app.config["DATABASE_URL"], background_checkpoints=serving, create=create)


def _init_policy(app: Flask) -> None:
    """No start without a good policy (a half-loaded one is never served): without one,
    and without a last good copy, the worker waits up but not ready (service/starting.py)."""
    store = PolicyStore(app.config["POLICY_DIR"], app.config["POLICY_SNAPSHOT_DIR"])
    generation = None
    if not app.config.get("TESTING"):
        from service.state_signal import POLICY_SUFFIX, counter_for

        generation = counter_for(app.config["DATABASE_URL"], read_journal_directory(app), POLICY_SUFFIX)
    # Read before the load: another worker's load that lands after this one read the
    # files is then heard before this worker's first answer.
    followed = generation.value() if generation else 0
    try:
        store.reload(app.config["CLOCK"]())
    except PolicyError as exc:
        if not store.start_from_snapshot(app.config["CLOCK"](), exc):
            raise PolicyNotLoaded(f"policy in {store.directory} does not load: {exc.message}") from exc
        # Said as a failed reload is (SPEC §3): the log (the store), the API
        # (last_reload_error), and this metric.
        from service.policy_reload import RELOADS

        RELOADS.labels(result="failure", trigger="start").inc()
    app.extensions["policy_store"] = store
    if generation is None:
        return
    from service.policy_reload import PolicyWatcher

    app.extensions["policy_generation"] = generation
    # SIGHUP is caught from now on; the watching thread starts with the first request, so
    # it runs in the serving process (after the server's fork), not in CLI commands.
    interval = float(app.config["POLICY_WATCH_INTERVAL"])
    watcher = PolicyWatcher(app, interval, generation, followed).install_signal_handler()
    app.extensions["policy_watcher"] = watcher
    _before_every_request(app, watcher.start_once)
    # Another worker's new policy, before every answer (the decision fast path too).
    _before_every_request(app, watcher.keep_current)


def _init_decision_engine(app: Flask) -> None:
    """The in-memory index decisions read, and the journal allowed reads are committed to."""
    from service import read_journal
    from service.decision_index import DecisionIndex
    from service.state_signal import counter_for

    journal_directory = read_journal_directory(app)
    signal = counter_for(app.config["DATABASE_URL"], journal_directory)
    policy = app.extensions["policy_store"].current
    serving = not app.config.get("TESTING")
    index = DecisionIndex(
        signal, policy.timing.retention, app.config["CLOCK"], serving, app.config["PROVIDER_TENANT"]
    )
    if app.config.get("DECISION_INDEX_WARM_START", serving):
        # Ready once the directory is loaded; the rest per engineer until it is whole.
        index.start(app.config["CLOCK"]())
        _before_every_request(app, index.finish_warming_in_background)
    else:
        index.load(app.config["CLOCK"]())
    app.extensions["decision_index"] = index
    app.extensions["read_journal"] = read_journal.ReadJournal(journal_directory)
    if not is_sqlite(database.obj) and not app.config.get("TESTING"):
        # Other instances' changes (SPEC §8); started in the serving process, not in CLI commands.
        from service.change_listener import ChangeListener

        listener = ChangeListener(app.config["DATABASE_URL"], signal)
        app.extensions["change_listener"] = listener
        _before_every_request(app, listener.start_once)


def _init_decision_log(app: Flask) -> None:
    from service.decision_log import DecisionLog

    app.extensions["decision_log"] = DecisionLog(app.config["DECISION_LOG"])
