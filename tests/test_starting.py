"""A store that cannot be opened at start (API.md: /healthz is up, /readyz is not)."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from pathlib import Path

import peewee
import pytest
from click.testing import CliRunner
from flask.cli import FlaskGroup

from models import connect_database, database
from service import create_app, read_importer, starting
from service.errors import ConfigError
from service.policy import REPO_POLICY_DIR
from tests.conftest import DIRECTORY_FILE, SECRET, auth, read_check
from tests.helpers import FakeMonotonic, app_config, corrupt_sqlite_file
from tests.postgres import fresh_database


@pytest.fixture
def unopenable(tmp_path, monkeypatch):
    """An app whose SQLite file lies in a folder that does not exist yet; retries at once."""
    monkeypatch.setattr(starting, "RETRY_INTERVAL", 0.0)
    folder = tmp_path / "not-yet"
    config = app_config(
        tmp_path, f"sqlite:///{folder / 'store.db'}", SECRET, READ_JOURNAL_DIR=str(tmp_path / "journal")
    )
    return create_app(config), folder, config


def assert_up_but_not_ready(client, get_path: str, who: str) -> list:
    """/healthz 200, /readyz 503, and a GET and a decision 503 store_unavailable (the
    answers are returned, for more checks)."""
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["error"]["code"] == "not_ready"
    answers = [
        client.get(get_path, headers=auth(who)),
        client.post("/v1/decisions", json=read_check(), headers=auth("diag-tool")),
    ]
    for answer in answers:
        assert answer.status_code == 503, answer.get_data(as_text=True)
        assert answer.get_json()["error"]["code"] == "store_unavailable"
    return answers


def test_the_process_is_up_but_not_ready_while_the_store_cannot_be_opened(unopenable):
    app, _, _ = unopenable
    client = app.test_client()

    for answer in assert_up_but_not_ready(client, "/v1/support-requests", "bob"):
        assert "not-yet" not in answer.get_json()["error"]["message"]  # no paths or hosts


def test_the_service_log_says_why_it_is_not_ready(tmp_path, caplog):
    """The answers name no path or host (above); the operator finds the cause in the log."""
    folder = tmp_path / "not-yet"
    create_app(app_config(tmp_path, f"sqlite:///{folder / 'store.db'}", SECRET))
    assert f"not ready, retrying: no directory {folder}" in caplog.text, caplog.text


def test_the_admin_page_answers_an_html_page_while_the_store_cannot_be_opened(unopenable):
    app, _, _ = unopenable
    answer = app.test_client().get("/admin/login")
    assert answer.status_code == 503 and answer.mimetype == "text/html"
    page = answer.get_data(as_text=True)
    assert "Service Unavailable" in page and "the data store cannot be opened" in page
    assert "not-yet" not in page  # no paths or hosts


def test_metrics_are_served_while_the_store_cannot_be_opened(unopenable):
    app, _, _ = unopenable
    answer = app.test_client().get("/metrics")
    assert answer.status_code == 200 and answer.mimetype == "text/plain"
    assert "# TYPE python_gc_objects_collected_total counter" in answer.get_data(as_text=True)


def test_once_the_store_can_be_opened_the_service_answers(unopenable, caplog):
    app, folder, config = unopenable
    client = app.test_client()
    assert client.get("/readyz").status_code == 503

    folder.mkdir()

    assert client.get("/readyz").status_code == 200
    assert "ready: serving" in caplog.text  # the log says when it is over
    importer = create_app(config).test_cli_runner()  # as an operator's command would
    assert importer.invoke(args=["directory", "import", str(DIRECTORY_FILE)]).exit_code == 0
    assert client.get("/v1/support-requests", headers=auth("bob")).status_code == 200
    decision = client.post("/v1/decisions", json=read_check(), headers=auth("diag-tool"))
    assert decision.status_code == 200 and decision.get_json()["allowed"] is False


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["audit", "verify"], "cannot read the audit log"),
        (["directory", "import", str(DIRECTORY_FILE)], "cannot import the directory"),
        (["sweep"], "cannot sweep"),
        (["policy", "diff", str(REPO_POLICY_DIR), str(REPO_POLICY_DIR)], "cannot replay the decisions"),
    ],
)
def test_commands_on_the_store_say_it_cannot_be_opened(unopenable, args, says):
    """A line and exit 2 (as audit verify's "cannot read"), never a traceback. It names
    the missing folder (SQLite's own "unable to open database file" names nothing), which
    is not created: a typo in the path would otherwise make a new folder."""
    app, folder, _ = unopenable
    result = app.test_cli_runner().invoke(args=args)
    assert result.exit_code == 2, result.output
    assert f"{says}: no directory {folder} for {folder / 'store.db'}" in result.output, result.output
    assert not folder.exists()
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.fixture
def corrupt(tmp_path, monkeypatch):
    """An app started on a SQLite file whose header was overwritten (sqlite3's bare
    DatabaseError "file is not a database"); retries at once. Also the header, to put back."""
    monkeypatch.setattr(starting, "RETRY_INTERVAL", 0.0)
    path = tmp_path / "store.db"
    connect_database(f"sqlite:///{path}")
    database.close()
    header = path.read_bytes()[:100]
    corrupt_sqlite_file(path)
    config = app_config(tmp_path, f"sqlite:///{path}", SECRET)
    return create_app(config), path, header


def test_a_corrupt_store_at_start_is_up_but_not_ready(corrupt):
    app, path, header = corrupt
    client = app.test_client()

    assert_up_but_not_ready(client, "/v1/audit-events?tenant_id=contoso", "alice")
    verify = app.test_cli_runner().invoke(args=["audit", "verify"])
    assert verify.exit_code == 2, verify.output
    assert verify.output.splitlines() == ["cannot read the audit log: file is not a database"]

    with path.open("r+b") as file:  # repaired
        file.write(header)
    assert client.get("/readyz").status_code == 200


@pytest.fixture
def paced(tmp_path, monkeypatch):
    """As `unopenable`, with its retry interval (1 s) on a clock the test moves."""
    clock = FakeMonotonic()
    monkeypatch.setattr(starting, "time", clock)
    folder = tmp_path / "not-yet"
    config = app_config(
        tmp_path, f"sqlite:///{folder / 'store.db'}", SECRET, READ_JOURNAL_DIR=str(tmp_path / "journal")
    )
    return create_app(config), folder, clock


def test_the_real_app_is_tried_again_only_a_second_after_the_start(paced):
    app, folder, clock = paced
    client = app.test_client()
    folder.mkdir()  # the store could be opened from now on

    clock.now += 0.5
    assert client.get("/readyz").status_code == 503  # not tried again yet
    clock.now += 0.6
    assert client.get("/readyz").status_code == 200


def test_after_a_failed_attempt_the_next_waits_another_second(paced):
    app, folder, clock = paced
    client = app.test_client()
    clock.now += 1.1
    assert client.get("/readyz").status_code == 503  # tried, and failed: no folder yet
    folder.mkdir()

    clock.now += 0.5
    assert client.get("/readyz").status_code == 503
    clock.now += 0.6
    assert client.get("/readyz").status_code == 200


def test_once_built_the_real_app_is_not_built_again(paced, monkeypatch):
    import service

    app, folder, clock = paced
    built = []
    build = service.build_app

    def counting(*args, **kwargs):
        built.append(build(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(service, "build_app", counting)
    client = app.test_client()
    folder.mkdir()
    for _ in range(3):
        clock.now += 1.1
        assert client.get("/readyz").status_code == 200
    assert len(built) == 1


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE"])
def test_every_method_answers_503_json_while_the_store_cannot_be_opened(unopenable, method):
    """Not a 405 page for a method the stand-in forgot: a client retries a 503."""
    app, _, _ = unopenable
    url = "/v1/tenants/contoso/role-assignments/bob/Global%20Administrator"
    body = None if method == "GET" else {}
    answer = app.test_client().open(url, method=method, json=body, headers=auth("ops"))
    assert answer.status_code == 503 and answer.mimetype == "application/json", answer.get_data(as_text=True)
    assert answer.get_json()["error"]["code"] == "store_unavailable"


@pytest.mark.parametrize(("path", "page"), [("/admin", True), ("/admin/requests", True), ("/admins", False)])
def test_only_the_admin_pages_answer_html_while_the_store_cannot_be_opened(unopenable, path, page):
    app, _, _ = unopenable
    answer = app.test_client().get(path)
    assert answer.status_code == 503
    assert answer.mimetype == ("text/html" if page else "application/json"), answer.get_data(as_text=True)


def test_the_read_importer_waits_for_a_store_that_is_not_a_database(monkeypatch):
    """As the workers do: it tries again instead of ending, which would leave the reads
    in the journal until a worker or a reader imports them."""

    class Opened(Exception):
        pass

    attempts = []

    def connect(url: str, background_checkpoints: bool):
        attempts.append(url)
        if len(attempts) == 1:
            raise peewee.DatabaseError("file is not a database")
        raise Opened  # the second attempt: stop here

    monkeypatch.setattr(read_importer, "connect_database", connect)
    monkeypatch.setattr(read_importer, "RETRY_INTERVAL", 0.0)
    monkeypatch.setattr(read_importer.signal, "signal", lambda *_: None)  # keep pytest's handlers
    monkeypatch.setenv("SUPPORT_ACCESS_SERVER_PID", str(os.getppid()))

    with pytest.raises(Opened):
        read_importer.main()
    assert len(attempts) == 2


def test_directory_import_refuses_while_no_policy_loads(tmp_path, monkeypatch):
    """Role names are checked against the policy: with none loaded nothing is imported,
    and the message names the broken file. Commands that need no policy still run."""
    monkeypatch.setattr(starting, "RETRY_INTERVAL", 0.0)
    policies = tmp_path / "policies"
    shutil.copytree(REPO_POLICY_DIR, policies)
    with (policies / "access.yaml").open("a", encoding="utf-8") as file:
        file.write("rules: [[\n")
    config = app_config(tmp_path, f"sqlite:///{tmp_path / 'store.db'}", SECRET, POLICY_DIR=str(policies))
    runner = create_app(config).test_cli_runner()

    refused = runner.invoke(args=["directory", "import", str(DIRECTORY_FILE)])
    assert refused.exit_code == 2, refused.output
    assert "cannot import the directory" in refused.output and "access.yaml" in refused.output
    assert runner.invoke(args=["sweep"]).exit_code == 0
    assert runner.invoke(args=["audit", "verify"]).exit_code == 0

    shutil.copy(REPO_POLICY_DIR / "access.yaml", policies / "access.yaml")
    imported = create_app(config).test_cli_runner().invoke(args=["directory", "import", str(DIRECTORY_FILE)])
    assert imported.exit_code == 0, imported.output


def test_an_unexpected_error_while_building_the_app_again_stays_a_503(unopenable, monkeypatch):
    import service

    app, folder, _ = unopenable
    folder.mkdir()

    def broken(*_args):
        raise RuntimeError("a bug while building the app")

    monkeypatch.setattr(service, "build_app", broken)

    answer = app.test_client().get("/v1/support-requests", headers=auth("bob"))

    assert answer.status_code == 503 and answer.get_json()["error"]["code"] == "unavailable"
    assert "bug" not in answer.get_data(as_text=True)
    assert app.test_client().get("/healthz").status_code == 200


def test_a_bug_while_building_the_app_again_is_logged_with_its_traceback(unopenable, monkeypatch, caplog):
    """A store still down is logged in a line; an unexpected error, for a developer, whole."""
    import service

    app, folder, _ = unopenable
    client = app.test_client()

    def retries() -> list:
        return [r for r in caplog.records if r.getMessage().startswith("still not ready: ")]

    assert client.get("/readyz").status_code == 503
    assert [bool(r.exc_info) for r in retries()] == [False]

    folder.mkdir()
    monkeypatch.setattr(service, "build_app", lambda *_: 1 / 0)
    assert client.get("/readyz").status_code == 503
    assert retries()[-1].exc_info and retries()[-1].exc_info[0] is ZeroDivisionError


def _open_new_database(url: str, barrier) -> None:
    barrier.wait(timeout=30)
    connect_database(url, background_checkpoints=True)  # an exception ends the process with 1


def test_workers_starting_together_on_a_new_sqlite_database_both_open_it(tmp_path):
    """`make serve` starts its workers at once. On a new database one of them used to fail
    with "database is locked" half the time (switching to WAL does not wait) and start
    not ready; ten starts of two processes each now all open it."""
    processes = multiprocessing.get_context("fork")
    for start in range(10):
        barrier = processes.Barrier(2)
        url = f"sqlite:///{tmp_path}/new-{start}.db"
        workers = [processes.Process(target=_open_new_database, args=(url, barrier)) for _ in range(2)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)
        assert [worker.exitcode for worker in workers] == [0, 0], f"start {start}"


@pytest.mark.skipif(not os.environ.get("SUPPORT_ACCESS_TEST_POSTGRES"), reason="PostgreSQL pass only")
def test_workers_starting_together_on_a_new_postgresql_database_all_open_it():
    """CREATE TABLE IF NOT EXISTS is not safe against itself on PostgreSQL: two workers
    creating the schema side by side collided table after table, and one retry was not
    enough (a served test's server crashed so in `make test`). Five starts of four
    processes each on a new database now all open it."""
    processes = multiprocessing.get_context("fork")
    for start in range(5):
        with fresh_database(os.environ["SUPPORT_ACCESS_TEST_POSTGRES"]) as url:
            barrier = processes.Barrier(4)
            workers = [processes.Process(target=_open_new_database, args=(url, barrier)) for _ in range(4)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join(timeout=60)
            assert [worker.exitcode for worker in workers] == [0, 0, 0, 0], f"start {start}"


# --- a database URL that names no store ------------------------------------------------------

BAD_DATABASE_URLS = ["mysql://x", "notaurl", "sqlite://relative.db", "sqlite:///", "postgresql://"]


def assert_says_what_to_set(error: ConfigError) -> None:
    assert error.message.startswith("SUPPORT_ACCESS_DATABASE_URL: "), error.message
    assert "sqlite:////abs/path.db" in error.message and "postgresql://" in error.message


@pytest.mark.parametrize("url", BAD_DATABASE_URLS)
def test_a_bad_database_url_refuses_the_start(tmp_path, url):
    config = app_config(tmp_path, url, SECRET)
    with pytest.raises(ConfigError) as refused:
        create_app(config)
    assert_says_what_to_set(refused.value)


def test_a_bad_database_url_does_not_repeat_a_password(tmp_path):
    config = {"TESTING": True, "DATABASE_URL": "postgresql://app:s3cret@db:port/x", "JWT_SECRET": SECRET}
    with pytest.raises(ConfigError) as refused:
        create_app(config)
    assert_says_what_to_set(refused.value)
    assert "s3cret" not in refused.value.message


@pytest.mark.parametrize("url", ["mysql://x", "notaurl"])
@pytest.mark.parametrize("command", [["audit", "verify"], ["token", "--sub", "ops", "--tenant", "provider"]])
def test_a_bad_database_url_refuses_every_command(tmp_path, monkeypatch, url, command):
    """`flask --app service COMMAND` with the setting in the environment."""
    monkeypatch.setenv("SUPPORT_ACCESS_DATABASE_URL", url)
    monkeypatch.setenv("SUPPORT_ACCESS_JWT_SECRET", SECRET)
    monkeypatch.setenv("SUPPORT_ACCESS_POLICY_SNAPSHOT_DIR", str(tmp_path / "snapshot"))
    flask = FlaskGroup(load_dotenv=False)

    result = CliRunner().invoke(flask, ["--app", "service", *command])

    assert_refused_in_one_line(result, "Error: SUPPORT_ACCESS_DATABASE_URL: ")
    assert "sqlite:////abs/path.db" in result.output and "postgresql://" in result.output


STORE_COMMANDS = [
    ["audit", "verify"],
    ["sweep"],
    ["directory", "import", str(DIRECTORY_FILE)],
    ["policy", "diff", str(REPO_POLICY_DIR), str(REPO_POLICY_DIR)],
]


@pytest.mark.parametrize("secret", [None, "  "])
@pytest.mark.parametrize("command", STORE_COMMANDS, ids=lambda command: " ".join(command[:2]))
def test_a_store_command_without_token_keys_says_what_to_set(tmp_path, monkeypatch, secret, command):
    """As the service refuses to start without them; and it opens (creates) no store."""
    without_token_keys(monkeypatch, tmp_path, secret)
    flask = FlaskGroup(load_dotenv=False)

    result = CliRunner().invoke(flask, ["--app", "service", *command])

    assert_refused_in_one_line(result, "Error: ")
    assert "SUPPORT_ACCESS_JWT_SECRET" in result.output
    assert not (tmp_path / "x.db").exists()


def without_token_keys(monkeypatch, tmp_path, secret: str | None = None) -> None:
    monkeypatch.delenv("SUPPORT_ACCESS_JWKS", raising=False)
    monkeypatch.delenv("SUPPORT_ACCESS_JWT_SECRET", raising=False)
    if secret is not None:
        monkeypatch.setenv("SUPPORT_ACCESS_JWT_SECRET", secret)
    monkeypatch.setenv("SUPPORT_ACCESS_DATABASE_URL", f"sqlite:///{tmp_path / 'x.db'}")
    monkeypatch.setenv("SUPPORT_ACCESS_POLICY_SNAPSHOT_DIR", str(tmp_path / "snapshot"))


@pytest.mark.parametrize("secret", [None, "  "])
def test_policy_commands_run_without_the_services_token_keys(tmp_path, monkeypatch, secret):
    """A security team checks and tests policies (in CI, on a laptop) without the service's
    secrets: these commands sign and verify nothing, and open no store."""
    without_token_keys(monkeypatch, tmp_path, secret)
    flask = FlaskGroup(load_dotenv=False)

    checked = CliRunner().invoke(flask, ["--app", "service", "policy", "check"])
    tested = CliRunner().invoke(flask, ["--app", "service", "policy", "test", "--filter", "same-tenant"])

    assert checked.exit_code == 0 and checked.output.startswith("ok: "), checked.output
    assert tested.exit_code == 0 and " passed, 0 failed" in tested.output, tested.output
    assert not (tmp_path / "x.db").exists()


@pytest.mark.parametrize("secret", [None, "  "])
def test_token_is_refused_without_a_secret_in_one_line(tmp_path, monkeypatch, secret):
    without_token_keys(monkeypatch, tmp_path, secret)
    flask = FlaskGroup(load_dotenv=False)

    result = CliRunner().invoke(flask, ["--app", "service", "token", "--sub", "eve", "--tenant", "provider"])

    assert_refused_in_one_line(result, "Error: SUPPORT_ACCESS_JWT_SECRET is not set")


def assert_refused_in_one_line(result, starts: str) -> None:
    """A ConfigError under the Flask CLI: one line and exit 2, not a traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert [line for line in result.output.splitlines() if line.strip()] == [
        next(line for line in result.output.splitlines() if line.startswith(starts))
    ], result.output


# --- configuration from the environment --------------------------------------------------------


def environment_without_settings(monkeypatch) -> None:
    """No SUPPORT_ACCESS_* variable but the secret (README "Configuration": the only one required)."""
    for name in list(os.environ):
        if name.startswith("SUPPORT_ACCESS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SUPPORT_ACCESS_JWT_SECRET", SECRET)


def test_unset_settings_take_the_defaults_the_readme_names(monkeypatch):
    """The README's "Configuration" table. Read without building the app: that would open
    (create) the repository's own database."""
    from service import configured_app

    environment_without_settings(monkeypatch)

    app = configured_app()

    instance = Path(app.instance_path)
    assert app.config["DATABASE_URL"] == f"sqlite:///{instance / 'support_access.db'}"
    assert app.config["POLICY_DIR"] == str(REPO_POLICY_DIR)
    assert app.config["DECISION_LOG"] == str(instance / "decisions.log")
    assert app.config["POLICY_WATCH_INTERVAL"] == 2
    assert app.config["POLICY_SNAPSHOT_DIR"] == str(instance / "last-good-policy")
    assert app.config["PROVIDER_TENANT"] is None
    assert app.config["JWKS"] is None


@pytest.mark.parametrize(("setting", "seconds"), [("0", 0), ("0.1", 0.1), ("2", 2)])
def test_a_watch_interval_of_0_or_at_least_a_tenth_of_a_second_is_taken(monkeypatch, setting, seconds):
    """README: "at least 0.1"; "0 turns watching off"."""
    from service import configured_app

    environment_without_settings(monkeypatch)
    monkeypatch.setenv("SUPPORT_ACCESS_POLICY_WATCH_INTERVAL", setting)

    assert configured_app().config["POLICY_WATCH_INTERVAL"] == seconds


def test_the_session_key_is_the_one_set_else_derived_from_the_jwt_secret(monkeypatch):
    """SUPPORT_ACCESS_SECRET_KEY, for several machines; unset, a key derived from (and not
    the same as) the token secret, the same in every process given that secret."""
    from service import configured_app

    environment_without_settings(monkeypatch)
    derived = configured_app().secret_key
    assert derived and derived != SECRET and configured_app().secret_key == derived

    monkeypatch.setenv("SUPPORT_ACCESS_SECRET_KEY", "a-key-shared-by-every-machine")

    assert configured_app().secret_key == "a-key-shared-by-every-machine"


# --- the decision log ---------------------------------------------------------------------------


def decide_once(config: dict) -> None:
    """Build the app on `config`, import the directory and ask for one decision."""
    app = create_app(config)
    assert app.test_cli_runner().invoke(args=["directory", "import", str(DIRECTORY_FILE)]).exit_code == 0
    answer = app.test_client().post("/v1/decisions", json=read_check(), headers=auth("diag-tool"))
    assert answer.status_code == 200, answer.get_data(as_text=True)


def logged(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_a_restarted_app_appends_to_the_decision_log(tmp_path):
    config = app_config(tmp_path, f"sqlite:///{tmp_path / 'store.db'}", SECRET)
    decide_once(config)
    decide_once(config)  # a restart: another process, the same log

    lines = logged(Path(config["DECISION_LOG"]))

    assert len(lines) == 2 and lines[0]["decision_id"] != lines[1]["decision_id"]


def test_the_decision_logs_folder_is_made_when_it_does_not_exist(tmp_path):
    path = tmp_path / "logs" / "support-access" / "decisions.log"
    decide_once(app_config(tmp_path, f"sqlite:///{tmp_path / 'store.db'}", SECRET, DECISION_LOG=str(path)))
    assert len(logged(path)) == 1


def test_an_empty_decision_log_setting_logs_nothing_and_decides(tmp_path):
    decide_once(app_config(tmp_path, f"sqlite:///{tmp_path / 'store.db'}", SECRET, DECISION_LOG=""))
    assert not [p for p in tmp_path.rglob("*") if "decision" in p.name]
