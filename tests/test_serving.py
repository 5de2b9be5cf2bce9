"""The service as `make serve` runs it: several worker processes, each with its own
decision index, and allowed reads journalled before their answer leaves."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import jwt
import pytest
import yaml
from playhouse.db_url import connect

from service import serve as serve_module
from service.policy import MAX_POLICY_FILE_BYTES, REPO_POLICY_DIR, policy_version
from service.serve import WORKERS_KILL_TIMEOUT, relay_signals
from tests.conftest import auth, read_check
from tests.helpers import provider_directory, rsa_key, write_jwks
from tests.served import (
    ROOT,
    call,
    free_port,
    import_directory,
    kill_tree,
    production_environment,
    serve_command,
    served,
    served_environment,
    served_grant,
    wait_until_ready,
)

CONNECTIONS = 12


class Client:
    """One kept-alive connection, so it stays with the worker that accepted it."""

    def __init__(self, port: int):
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.headers = {"Content-Type": "application/json", **auth("diag-tool")}
        self.pid = self.get("/healthz")["pid"]

    def get(self, path: str) -> dict:
        self.connection.request("GET", path)
        return json.loads(self.connection.getresponse().read())

    def decide(self, check: dict) -> dict:
        self.connection.request("POST", "/v1/decisions", json.dumps(check), self.headers)
        answer = self.connection.getresponse()
        assert answer.status == 200
        return json.loads(answer.read())


def _clients_on_two_workers(port: int) -> list[Client]:
    """Kept-alive connections spread over at least two workers. The kernel hands new
    connections to whichever worker accepts first, so open more until two answer."""
    clients = [Client(port) for _ in range(CONNECTIONS)]
    for _ in range(200):
        if len({client.pid for client in clients}) >= 2:
            return clients
        time.sleep(0.01)
        clients.append(Client(port))
    raise AssertionError("the connections did not reach two workers")


def test_a_revocation_is_in_force_in_every_worker_before_its_answer_returns(tmp_path, database_url):
    with served(tmp_path, REPO_POLICY_DIR, database_url, workers=2) as (port, _):
        clients = _clients_on_two_workers(port)
        for _round in range(3):
            ticket_id, request_id = served_grant(port)
            check = read_check(support_request_id=ticket_id)
            assert all(client.decide(check)["allowed"] for client in clients)  # every worker allows
            stop, revoked_at, answers = threading.Event(), [], []

            def ask(client: Client, check=check, stop=stop, answers=answers) -> None:
                while not stop.is_set():
                    sent = time.monotonic()
                    answers.append((sent, client.pid, client.decide(check)["allowed"]))

            threads = [threading.Thread(target=ask, args=(client,)) for client in clients]
            started = time.monotonic()
            for thread in threads:
                thread.start()
            # Bounded waits on what the test needs, not fixed sleeps: a loaded machine
            # may take a while to let both workers answer.
            _wait_for_two_workers(answers, started)
            status, body = call(port, "POST", f"/v1/access-requests/{request_id}/revoke", "alice")
            revoked_at.append(time.monotonic())
            assert status == 200 and body["status"] == "revoked", body
            _wait_for_two_workers(answers, revoked_at[0])
            stop.set()
            for thread in threads:
                thread.join(timeout=10)
            assert not any(thread.is_alive() for thread in threads), "a client hung"
            after = [(pid, allowed) for sent, pid, allowed in answers if sent > revoked_at[0]]
            assert after and not any(allowed for _, allowed in after), "an allow after the revocation"
            assert any(allowed for sent, _, allowed in answers if sent < revoked_at[0])


def test_a_policy_reload_is_in_force_in_every_worker_before_its_answer_returns(
    tmp_path, database_url, monkeypatch
):
    """POST /v1/policy/reload is answered by one worker; the others, with the watching of
    files off, serve the new version from their next answer on."""
    monkeypatch.setenv("SUPPORT_ACCESS_POLICY_WATCH_INTERVAL", "0")
    policy_dir = tmp_path / "policies"
    shutil.copytree(REPO_POLICY_DIR, policy_dir)
    with served(tmp_path, policy_dir, database_url, workers=2) as (port, _):
        clients = _clients_on_two_workers(port)
        old = {client.decide(read_check())["policy_version"] for client in clients}
        workflow = policy_dir / "workflow.yaml"
        workflow.write_text(workflow.read_text().replace("max_grant_duration: 8h", "max_grant_duration: 4h"))

        status, body = call(port, "POST", "/v1/policy/reload", "ops")

        assert status == 200, body
        assert old == {policy_version(REPO_POLICY_DIR)} and body["version"] == policy_version(policy_dir)
        for client in clients:
            assert client.decide(read_check())["policy_version"] == body["version"], client.pid
            assert _policy_seen_by(client)["version"] == body["version"], client.pid

        # A reload that fails is reported by every worker, which keep the policy in force.
        access = policy_dir / "access.yaml"
        good = access.read_text()
        access.write_text("allowed_actions: [read\n")
        assert call(port, "POST", "/v1/policy/reload", "ops")[0] == 409
        for client in clients:
            seen = _policy_seen_by(client)
            assert seen["version"] == body["version"] and "access.yaml" in seen["last_reload_error"], seen
        access.write_text(good)
        assert call(port, "POST", "/v1/policy/reload", "ops")[0] == 200
        assert all(_policy_seen_by(client)["last_reload_error"] is None for client in clients)


def test_a_reloaded_policy_is_in_force_in_every_worker_even_if_the_files_break_at_once(
    tmp_path, database_url, monkeypatch
):
    """A stricter policy reloaded through one worker, then the files broken before the
    others answer again: they used to load the files themselves, fail, and keep the older
    policy (a reviewer saw 26 of 40 reads allowed under it). They take the reloaded one."""
    monkeypatch.setenv("SUPPORT_ACCESS_POLICY_WATCH_INTERVAL", "0")
    policy_dir = tmp_path / "policies"
    shutil.copytree(REPO_POLICY_DIR, policy_dir)
    with served(tmp_path, policy_dir, database_url, workers=2) as (port, _):
        ticket_id, _ = served_grant(port)
        check = read_check(support_request_id=ticket_id)
        clients = _clients_on_two_workers(port)
        assert all(client.decide(check)["allowed"] for client in clients)
        access = policy_dir / "access.yaml"
        access.write_text(access.read_text().replace("  - signInLogs\n", ""))

        status, body = call(port, "POST", "/v1/policy/reload", "ops")
        access.write_text("allowed_actions: [read\n")

        assert status == 200, body
        for client in clients:
            answer = client.decide(check)
            assert (answer["allowed"], answer["reason"]) == (False, "category_not_allowed"), client.pid
            assert answer["policy_version"] == body["version"], client.pid
            seen = _policy_seen_by(client)
            assert seen["version"] == body["version"] and "access.yaml" in seen["last_reload_error"], seen


def test_a_provider_tenant_imported_while_serving_is_the_providers_in_every_worker(tmp_path, database_url):
    """A directory file naming another provider tenant, imported by a CLI process while
    the server runs on a database with no directory yet: every worker takes it."""
    directory = tmp_path / "msft.yaml"
    directory.write_text(yaml.safe_dump(provider_directory("msft")), encoding="utf-8")
    with served(tmp_path, REPO_POLICY_DIR, database_url, workers=2, directory=None) as (port, _):
        clients = _clients_on_two_workers(port)
        assert wait_for_whole_indexes(clients)  # of no directory: the import reaches them as events
        import_directory(served_environment(tmp_path, REPO_POLICY_DIR, database_url), directory)
        ticket_id, _ = served_grant(port)  # eve works tickets as msft's Support Engineer
        check = read_check(support_request_id=ticket_id)
        assert all(client.decide(check)["allowed"] for client in clients)  # diag-tool: msft's client


def test_metrics_count_for_the_whole_server_whichever_worker_answers(tmp_path, database_url):
    """/metrics sums the workers' counts (prometheus_client's multiprocess mode): a
    scrape must not show only the reloads of the worker that answers it."""
    with served(tmp_path, REPO_POLICY_DIR, database_url, workers=2) as (port, _):
        clients = _clients_on_two_workers(port)
        clients[0].connection.request("POST", "/v1/policy/reload", headers=auth("ops"))
        answer = clients[0].connection.getresponse()
        assert answer.status == 200, answer.read()
        answer.read()
        line = 'support_access_policy_reloads_total{result="success",trigger="api"} 1.0'
        by_worker = {}
        for client in clients:
            client.connection.request("GET", "/metrics")
            by_worker[client.pid] = client.connection.getresponse().read().decode()
        assert len(by_worker) == 2
        for pid, text in by_worker.items():
            assert line in text.splitlines(), (pid, text)


def test_every_worker_asked_loads_its_whole_decision_index_and_metrics_show_it(tmp_path, database_url):
    """A worker answers before its whole decision index is loaded (service/decision_index.py,
    `start`); once asked, it loads it in a thread, and /metrics counts the workers done."""
    with served(tmp_path, REPO_POLICY_DIR, database_url, workers=2) as (port, _):
        ticket_id, _ = served_grant(port)
        clients = _clients_on_two_workers(port)
        check = read_check(support_request_id=ticket_id)
        assert wait_for_whole_indexes(clients, lambda: all(c.decide(check)["allowed"] for c in clients))


WHOLE_LINE = "support_access_decision_index_whole "


def wait_for_whole_indexes(clients: list[Client], holds=lambda: True) -> bool:
    """Until /metrics counts two workers with their whole decision index (up to 30 s),
    asserting `holds()` on the way. True if it did."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert holds()
        clients[0].connection.request("GET", "/metrics")
        text = clients[0].connection.getresponse().read().decode()
        if f"{WHOLE_LINE}2.0" in text.splitlines():
            return True
        time.sleep(0.05)
    return False


def test_metrics_directories_of_servers_no_longer_running_are_removed(tmp_path, monkeypatch):
    """Each start makes one; the next start removes those whose server is gone (killed,
    so it could not remove its own), and keeps a running one's."""
    from service import serve

    monkeypatch.setattr(serve.tempfile, "tempdir", str(tmp_path))
    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    gone = tmp_path / f"{serve.METRICS_PREFIX}{ended.stdout.strip()}-abc"
    running = tmp_path / f"{serve.METRICS_PREFIX}{os.getppid()}-def"
    for directory in (gone, running):
        directory.mkdir()
        (directory / "counter_1.db").write_bytes(b"")

    made = Path(serve.metrics_directory())

    assert not gone.exists() and running.exists()
    assert made.parent == tmp_path and made.name.startswith(f"{serve.METRICS_PREFIX}{os.getpid()}-")


def test_live_gauges_of_exited_workers_are_forgotten_and_counters_kept(tmp_path):
    """prometheus_client keeps an exited worker's live gauge files until told: a worker
    respawned after a crash or a SIGHUP would count twice in decision_index_whole."""
    from service import serve

    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    gone, alive = ended.stdout.strip(), str(os.getpid())
    names = [f"gauge_livesum_{gone}.db", f"counter_{gone}.db", f"gauge_livesum_{alive}.db"]
    for name in names:
        (tmp_path / name).write_bytes(b"")

    serve.forget_exited_workers(str(tmp_path))

    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(names[1:])


def test_a_live_gauge_file_another_scrape_removed_first_is_no_error(tmp_path, monkeypatch):
    """Two workers may scrape at once, and both find the same exited worker's file."""
    from prometheus_client import multiprocess

    from service import serve

    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    (tmp_path / f"gauge_livesum_{ended.stdout.strip()}.db").write_bytes(b"")

    def removed_meanwhile(pid, path=None):
        raise FileNotFoundError(f"{path}/gauge_livesum_{pid}.db")

    monkeypatch.setattr(multiprocess, "mark_process_dead", removed_meanwhile)
    serve.forget_exited_workers(str(tmp_path))  # no error: the file is gone, as wanted


def test_a_worker_respawned_after_a_crash_is_counted_once(tmp_path, database_url):
    """The whole-index gauge counts live workers: after one is killed and granian starts
    another, /metrics shows 2 once the new one is whole, and the dead one's file is gone."""
    from service.serve import METRICS_PREFIX

    with served(tmp_path, REPO_POLICY_DIR, database_url, workers=2) as (port, server):
        ticket_id, _ = served_grant(port)
        check = read_check(support_request_id=ticket_id)
        clients = _clients_on_two_workers(port)
        assert wait_for_whole_indexes(clients, lambda: all(c.decide(check)["allowed"] for c in clients))
        [metrics] = Path(tempfile.gettempdir()).glob(f"{METRICS_PREFIX}{server.pid}-*")
        killed = clients[0].pid
        os.kill(killed, signal.SIGKILL)  # respawn_failed_workers: granian starts another

        deadline = time.monotonic() + 30  # a bound for a loaded machine, not a speed test
        while True:  # until the new worker answers beside the survivor
            with contextlib.suppress(AssertionError, OSError):
                clients = _clients_on_two_workers(port)
                break
            assert time.monotonic() < deadline, "granian started no worker in the killed one's place"
        assert killed not in {client.pid for client in clients}
        assert wait_for_whole_indexes(clients, lambda: all(c.decide(check)["allowed"] for c in clients))
        assert not list(metrics.glob(f"gauge_live*_{killed}.db"))
        time.sleep(0.5)  # the new worker's index is whole: nothing more may be added
        clients[0].connection.request("GET", "/metrics")
        assert f"{WHOLE_LINE}2.0" in clients[0].connection.getresponse().read().decode().splitlines()


def test_a_stopped_server_removes_its_metrics_directory(tmp_path, database_url):
    from service.serve import METRICS_PREFIX

    with served(tmp_path, REPO_POLICY_DIR, database_url, workers=1) as (_, server):
        pattern = f"{METRICS_PREFIX}{server.pid}-*"
        assert list(Path(tempfile.gettempdir()).glob(pattern))
    assert server.returncode == 0
    assert not list(Path(tempfile.gettempdir()).glob(pattern))


def _policy_seen_by(client: Client) -> dict:
    """GET /v1/policy through this client's connection, so from its worker."""
    client.connection.request("GET", "/v1/policy", headers=auth("ops"))
    return json.loads(client.connection.getresponse().read())


def _wait_for_two_workers(answers: list[tuple], since: float) -> None:
    """Until answers sent after `since` came from two workers."""
    deadline = time.monotonic() + 30  # a bound for a loaded machine, not a speed test
    while len({pid for sent, pid, _ in list(answers) if sent > since}) < 2:
        assert time.monotonic() < deadline, "only one worker answered"
        time.sleep(0.01)


def _allowed_reads_through_two_workers(port: int) -> list[str]:
    """Allowed decisions answered by at least two workers; their decision ids."""
    ticket_id, _ = served_grant(port)
    check = read_check(support_request_id=ticket_id)
    ids = []
    for client in _clients_on_two_workers(port):
        for _ in range(5):
            answer = client.decide(check)
            assert answer["allowed"] is True
            ids.append(answer["decision_id"])
    return ids


def _ids_in_database(url: str) -> set[str]:
    """The read events in the database, seen from outside the server."""
    outside = connect(url)
    try:
        rows = outside.execute_sql("SELECT id FROM auditevent WHERE activity = 'diagnostics.read'").fetchall()
    finally:
        outside.close()
    return {event_id for (event_id,) in rows}


def test_every_allowed_read_shows_in_the_audit_view_as_soon_as_it_is_answered(tmp_path, database_url):
    with served(tmp_path, REPO_POLICY_DIR, database_url, workers=2) as (port, _):
        ids = _allowed_reads_through_two_workers(port)
        status, body = call(
            port, "GET", "/v1/audit-events?tenant_id=contoso&activity=diagnostics.read", "alice"
        )
        assert status == 200
        assert [item["id"] for item in body["items"]] == ids  # every worker's, in decision order


def test_the_background_importer_moves_reads_into_the_audit_log(tmp_path, database_url):
    with served(tmp_path, REPO_POLICY_DIR, database_url, workers=2) as (port, _):
        ids = set(_allowed_reads_through_two_workers(port))
        deadline = time.monotonic() + 20  # a bound for a loaded machine, not a speed test
        while not ids <= _ids_in_database(database_url):
            assert time.monotonic() < deadline, "the reads were not imported"
            time.sleep(0.05)


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"DATABASE_URL": "mysql://app@db/x", "JWT_SECRET": "s" * 32}, "SUPPORT_ACCESS_DATABASE_URL"),
        ({"JWT_SECRET": "   "}, "SUPPORT_ACCESS_JWT_SECRET"),
        ({}, "SUPPORT_ACCESS_JWT_SECRET"),  # neither a secret nor a JWKS
        ({"JWT_SECRET": "s" * 32, "POLICY_WATCH_INTERVAL": "2s"}, "SUPPORT_ACCESS_POLICY_WATCH_INTERVAL"),
        ({"JWT_SECRET": "s" * 32}, "PORT: '80a' is not a port number"),  # PORT=80a, no --port
    ],
)
def test_make_serve_refuses_settings_it_cannot_start_with_in_one_line(tmp_path, variables, named):
    """Said once, before any worker starts, and not as a traceback from each worker; and
    the metrics directory made for the server is removed."""
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    port = [] if named.startswith("PORT") else ["--port", "1"]
    started = subprocess.run(
        [sys.executable, "-m", "service.serve", "--host", "127.0.0.1", *port],
        cwd=ROOT,
        env={**production_environment(tmp_path, **variables), "TMPDIR": str(temporary), "PORT": "80a"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode == 2, started.stdout + started.stderr
    assert "Traceback" not in started.stderr and "serving on" not in started.stdout
    [line] = [line for line in started.stderr.splitlines() if line.startswith("cannot start: ")]
    assert named in line
    assert not list(temporary.iterdir())


@pytest.mark.parametrize("port", ["70000", "80a", "0"])
def test_serve_refuses_a_port_option_that_is_no_port(port):
    started = subprocess.run(
        [sys.executable, "-m", "service.serve", "--port", port],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode == 2, started.stdout + started.stderr
    assert f"argument --port: '{port}' is not a port number" in started.stderr
    assert "Traceback" not in started.stderr


def test_a_killed_server_loses_no_answered_read(tmp_path, database_url):
    with served(tmp_path, REPO_POLICY_DIR, database_url, workers=2) as (port, server):
        ids = set(_allowed_reads_through_two_workers(port))
        kill_tree(server)  # no clean shutdown: workers die wherever they are
    verified = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "service", "audit", "verify"],
        env=served_environment(tmp_path, REPO_POLICY_DIR, database_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert ids <= _ids_in_database(database_url)


def _children_of(pid: int) -> list[int]:
    """Processes `pid` started, from any of its threads (the importer is started by one)."""
    children = []
    for listed in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            children += [int(child) for child in listed.read_text().split()]
    return children


def _importers_of(pid: int) -> list[int]:
    return [child for child in _children_of(pid) if _is_running(child, b"read_importer")]


def _is_running(pid: int, program: bytes) -> bool:
    try:
        return program in Path(f"/proc/{pid}/cmdline").read_bytes()  # empty once it is a zombie
    except OSError:
        return False


def _runs_granian(pid: int) -> bool:
    """Is `pid` a live process of granian's (its server or a worker), not a zombie?"""
    try:
        return b"/granian/_granian" in Path(f"/proc/{pid}/maps").read_bytes()  # empty once a zombie
    except OSError:
        return False


def _parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_the_importer_ends_with_the_server_even_when_it_stops_at_once(tmp_path, database_url):
    """The importer starts 2 s after the workers, and ends with the server even when the
    server stops as soon as it is ready (most often before those 2 s are up)."""
    with served(tmp_path, REPO_POLICY_DIR, database_url, workers=1) as (_, server):
        importers = _importers_of(server.pid)
    assert len(importers) == 1
    deadline = time.monotonic() + 20
    while _is_running(importers[0], b"read_importer"):
        assert time.monotonic() < deadline, "the importer outlived its server"
        time.sleep(0.1)


def test_the_server_stops_even_when_a_worker_does_not(tmp_path, database_url):
    """SIGTERM stops the server within the kill timeout even if a worker does not react
    (stopped here; granian itself once missed a worker's signal), and no worker is left."""
    with served(tmp_path, REPO_POLICY_DIR, database_url, workers=2) as (port, server):
        stuck = Client(port).pid
        os.kill(stuck, signal.SIGSTOP)  # it cannot act on SIGTERM until it is killed
        try:
            server.terminate()
            server.wait(timeout=WORKERS_KILL_TIMEOUT + 30)  # a bound for a loaded machine
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(stuck, signal.SIGCONT)
    deadline = time.monotonic() + 10
    while _runs_granian(stuck):
        assert time.monotonic() < deadline, "the stuck worker outlived its server"
        time.sleep(0.1)


def test_the_server_stops_when_stop_signals_come_in_a_burst(tmp_path, database_url):
    """`make serve` stopped with killpg gets SIGTERM twice: from killpg, and from make
    passing it on. A signal that came while granian's handler ran for the one before
    hung the server for ever (1 to 2 of 4 runs of this burst before service.serve's
    relay_signals); a clean-clone CI run hung so on `make serve`."""
    with served(tmp_path, REPO_POLICY_DIR, database_url, workers=2) as (_, server):
        workers = _granian_workers_of(server.pid)
        end_of_burst, sent = time.monotonic() + 0.5, 0
        while time.monotonic() < end_of_burst:
            with contextlib.suppress(ProcessLookupError):  # as a zombie it is still there
                os.kill(server.pid, (signal.SIGINT, signal.SIGTERM)[sent % 2])
            sent += 1
            time.sleep(0.00005)
        stopped = server.wait(timeout=WORKERS_KILL_TIMEOUT + 30)  # a bound for a hang, not speed
    # A signal of the burst may end it as it exits: Python restores the default handlers
    # then. Its workers were stopped before that.
    assert stopped in (0, -signal.SIGINT, -signal.SIGTERM)
    assert workers and not any(_runs_granian(worker) for worker in workers)


def test_sighup_to_the_server_respawns_its_workers_through_the_relay(tmp_path, database_url):
    """SIGHUP reaches granian through relay_signals: new workers, the server still up."""
    with served(tmp_path, REPO_POLICY_DIR, database_url, workers=2) as (port, server):
        before = set(_granian_workers_of(server.pid))
        os.kill(server.pid, signal.SIGHUP)
        deadline = time.monotonic() + 60  # a bound for a loaded machine, not a speed test
        while not (len(now := set(_granian_workers_of(server.pid))) == 2 and not now & before):
            assert time.monotonic() < deadline and server.poll() is None, f"{before} then {now}"
            time.sleep(0.1)
        wait_until_ready(port, server, tmp_path / "server.log")
        assert server.poll() is None and not any(_runs_granian(worker) for worker in before)


class _Server:
    """granian's server as relay_signals sees it: handlers that take a lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stopping, self.reloading = threading.Event(), threading.Event()

    def signal_handler_interrupt(self, *_) -> None:
        with self.lock:
            self.stopping.set()

    def signal_handler_reload(self, *_) -> None:
        with self.lock:
            self.reloading.set()


def test_the_installed_signal_handlers_take_no_lock_and_the_relay_passes_them_on():
    """A second signal runs its handler in the thread that the first one's handler is
    in: the handler granian installs must not wait for a lock that thread may hold."""
    server = _Server()
    relay_signals(server)
    with server.lock:  # what a signal found while granian's handler held its Event's lock
        for handler in (server.signal_handler_interrupt, server.signal_handler_reload):
            called = threading.Thread(target=handler, args=(signal.SIGTERM, None), daemon=True)
            called.start()
            called.join(timeout=10)
            assert not called.is_alive(), "the handler waited for the lock"
        assert not server.stopping.is_set()
    assert server.stopping.wait(timeout=10) and server.reloading.wait(timeout=10)


def _granian_workers_of(pid: int) -> list[int]:
    return [child for child in _children_of(pid) if _runs_granian(child)]


def test_a_killed_importer_is_started_again(tmp_path, database_url):
    """Without an importer, reads reach the audit table only once 8 MB wait, or when the
    log is read or the state changes: the few-milliseconds bound silently stopped."""
    with served(tmp_path, REPO_POLICY_DIR, database_url, workers=2) as (port, server):
        deadline = time.monotonic() + 30  # bounds for a loaded machine, not speed tests
        while not (importers := _importers_of(server.pid)):
            assert time.monotonic() < deadline, "no importer"
            time.sleep(0.1)
        os.kill(importers[0], signal.SIGKILL)
        while not [pid for pid in _importers_of(server.pid) if pid != importers[0]]:
            assert time.monotonic() < deadline, "the killed importer was not started again"
            time.sleep(0.1)
        ids = set(_allowed_reads_through_two_workers(port))
        while not ids <= _ids_in_database(database_url):  # read from outside: nothing flushes
            assert time.monotonic() < deadline, "the reads were not imported"
            time.sleep(0.1)
        assert (
            "the read journal's importer ended (exit status -9): starting another"
            in (tmp_path / "server.log").read_text()
        )


def test_workers_stop_when_their_server_is_killed(tmp_path, database_url):
    """A server SIGKILLed alone cannot stop its workers: they served on for ever, beside
    the next server started on the same port, with no importer, and answered after that
    one was stopped."""
    with served(tmp_path, REPO_POLICY_DIR, database_url, workers=2) as (port, server):
        workers = _granian_workers_of(server.pid)
        assert len(workers) == 2
        server.kill()
        server.wait(timeout=10)
        deadline = time.monotonic() + 30  # a bound for a loaded machine, not a speed test
        while any(_runs_granian(worker) for worker in workers):
            assert time.monotonic() < deadline, "a worker outlived its server"
            time.sleep(0.1)
        assert call(port, "GET", "/healthz", timeout=5) == (None, None)  # nothing listens


def test_a_server_stopped_while_its_workers_build_their_apps_stops_them_at_once(tmp_path, database_url):
    """Every process of the server gets SIGTERM at once (systemd's default, or a terminal's
    Ctrl-C with SIGINT) while the workers are still building their apps. Each must stop:
    a worker that swallowed the signal served on until the kill timeout killed it, and
    the server once did not stop at all. The workers' policy files are padded so that
    building the app takes a while, and the signal comes while they do."""
    policies = tmp_path / "policies"
    shutil.copytree(REPO_POLICY_DIR, policies)
    workflow = policies / "workflow.yaml"
    # Just under the policy file size limit (service.policy.MAX_POLICY_FILE_BYTES): over
    # it, the load fails at once, and the workers would be past building when signalled.
    line = "# padding: a policy file that takes a while to load\n"
    room = MAX_POLICY_FILE_BYTES - len(workflow.read_bytes())
    workflow.write_text(line * (room // len(line)) + workflow.read_text())
    env = served_environment(tmp_path, policies, database_url)
    log_path = tmp_path / "server.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            serve_command(free_port(), 2),
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while len(_granian_workers_of(server.pid)) < 2:
            assert server.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.01)
        time.sleep(0.2)  # into the policy files (about a second of parsing each)
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=WORKERS_KILL_TIMEOUT + 30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
    # (granian may log a worker's exit as unexpected, when it ended before the server
    # read its own signal: the server still stops, and respawns none for good.)
    assert "refused to gracefully stop" not in log_path.read_text()


def test_chunked_bodies_are_read_by_the_served_app(tmp_path, database_url):
    """A client that streams its body (Transfer-Encoding: chunked, no Content-Length)
    gets the same answers from the decision fast path and the Flask routes."""

    def post_chunked(port: int, path: str, who: str, body: dict, tenant: str = "provider"):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        headers = {"Content-Type": "application/json", **auth(who, tenant)}
        chunks = iter([json.dumps(body).encode()[:10], json.dumps(body).encode()[10:]])
        connection.request("POST", path, chunks, headers, encode_chunked=True)
        answer = connection.getresponse()
        return answer.status, json.loads(answer.read())

    with served(tmp_path, REPO_POLICY_DIR, database_url, workers=1) as (port, _):
        status, answer = post_chunked(port, "/v1/decisions", "diag-tool", read_check())
        assert (status, answer["reason"]) == (200, "no_active_grant"), answer
        batch = {"checks": [read_check(), read_check(action="write")]}
        status, answer = post_chunked(port, "/v1/decisions/batch", "diag-tool", batch)
        assert status == 200, answer
        assert [r["reason"] for r in answer["results"]] == ["no_active_grant", "read_only"]
        ticket = {"tenant_id": "fabrikam", "title": "streamed"}
        status, answer = post_chunked(port, "/v1/support-requests", "bob", ticket, "fabrikam")
        assert (status, answer["title"]) == (201, "streamed"), answer


def test_an_error_answered_before_a_large_body_is_read_reaches_a_client_that_sends_it_all(
    tmp_path, database_url
):
    """http.client (and requests) send the whole body before reading the answer. Left
    unread, a body larger than the sockets' buffers made the server's close a reset: a
    broken pipe where the 413, 401 or 415 should be (service/unread_body.py)."""
    big = b'{"title": "' + b"x" * (5 * 1024 * 1024) + b'"}'
    cases = [
        ("/v1/support-requests", auth("bob", "fabrikam"), "application/json", 413),
        ("/v1/decisions", auth("diag-tool"), "application/json", 413),
        ("/v1/decisions/batch", auth("diag-tool"), "text/plain", 415),
    ]
    with served(tmp_path, REPO_POLICY_DIR, database_url, workers=1) as (port, _):
        for path, headers, media, status in cases:
            for _ in range(3):
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                connection.request("POST", path, big, {**headers, "Content-Type": media})
                answer = connection.getresponse()
                assert answer.status == status, (path, answer.status)
                assert "error" in json.loads(answer.read())
                connection.close()


def test_a_connection_without_a_token_that_stops_sending_its_body_holds_no_worker(tmp_path, database_url):
    """Reading an unwanted body has no time limit, so it is done only for a caller whose
    token checked out: idle connections from anyone else would hold every worker's
    thread (two of them stopped a server of two workers)."""
    head = (
        b"POST /v1/decisions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n{"
    )
    with served(tmp_path, REPO_POLICY_DIR, database_url, workers=1) as (port, _):
        idle = []
        for _ in range(3):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(head)
            idle.append(sock)
        try:
            for sock in idle:
                assert sock.recv(4096).startswith(b"HTTP/1.1 401")  # answered, body unsent
            health = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            health.request("GET", "/healthz")
            assert health.getresponse().status == 200
        finally:
            for sock in idle:
                sock.close()


def _start_make(target: str, port: int, env: dict, log_path: Path) -> subprocess.Popen:
    """`make TARGET` on 127.0.0.1:`port`, in a session of its own: make, its shell and the
    server can be stopped together (os.killpg), whatever the test does first."""
    with log_path.open("w") as log:
        return subprocess.Popen(
            ["make", "--no-print-directory", target, "HOST=127.0.0.1", f"PORT={port}"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def test_make_serve_with_a_jwks_and_a_database_adds_no_demo_and_no_development_secret(tmp_path):
    """`make serve` out of the box serves the demo with the development secret; given
    production settings it must add neither: a JWKS service taking tokens signed with
    instance/dev-secret would let anyone who reads that file act as the demo operator."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed (make test installs nothing without it)")
    key = rsa_key()
    jwks = write_jwks(tmp_path / "jwks.json", [("k1", key, "RS256")])
    env = production_environment(tmp_path, JWKS=str(jwks))
    port = free_port()
    log_path = tmp_path / "make.log"
    make = _start_make("serve", port, env, log_path)
    try:
        wait_until_ready(port, make, log_path)
        now = int(time.time())
        claims = {"sub": "ops", "tid": "provider", "aud": "support-access", "iat": now, "exp": now + 600}
        dev_secret = (ROOT / "instance" / "dev-secret").read_text().strip()
        for token, expected in (
            (jwt.encode(claims, dev_secret, algorithm="HS256"), 401),  # no development secret
            (jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"}), 403),  # no demo operator
        ):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.request("GET", "/v1/policy", headers={"Authorization": f"Bearer {token}"})
            assert connection.getresponse().status == expected
    finally:
        with contextlib.suppress(ProcessLookupError):  # make ended early: its log says why
            os.killpg(make.pid, signal.SIGTERM)
        make.wait(timeout=30)


def test_make_serve_with_a_database_but_no_keys_refuses_to_start(tmp_path):
    """API.md: with neither a secret nor a JWKS the service refuses to start. A deployment
    (here: a database URL) that forgot its JWKS must not come up on instance/dev-secret."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    log_path = tmp_path / "make.log"
    make = _start_make("serve", free_port(), production_environment(tmp_path), log_path)
    try:
        returncode = make.wait(timeout=120)
    finally:  # a server that did start must not outlive the test
        with contextlib.suppress(ProcessLookupError):
            os.killpg(make.pid, signal.SIGTERM)
    log = log_path.read_text()
    assert returncode != 0, log
    assert "cannot start: set SUPPORT_ACCESS_JWT_SECRET" in log, log
    assert not (tmp_path / "env.db").exists()  # refused before opening the store


def test_make_serve_listens_on_loopback_whatever_the_environment_says_host_is(tmp_path):
    """Some shells export HOST as the machine's name; serving must not follow it there."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    env = {
        **os.environ,
        "HOST": "example.invalid",
        "SUPPORT_ACCESS_DATABASE_URL": f"sqlite:///{tmp_path}/x.db",
    }
    planned = subprocess.run(
        ["make", "-n", "--no-print-directory", "serve"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert planned.returncode == 0, planned.stderr
    assert "service.serve --host 127.0.0.1 " in planned.stdout, planned.stdout


def test_the_flask_cli_serves_as_make_serve_does(tmp_path, database_url):
    """SPEC §7: serving is a Flask CLI command too (`flask --app service serve`)."""
    env = served_environment(tmp_path, REPO_POLICY_DIR, database_url)
    port = free_port()
    flask = [
        sys.executable,
        "-m",
        "flask",
        "--app",
        "service",
        "serve",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    log_path = tmp_path / "server.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(flask, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until_ready(port, server, log_path)
            status, health = call(port, "GET", "/healthz")
            assert status == 200
            # The production server, not Flask's: a granian worker under the server process.
            assert _runs_granian(health["pid"]) and _parent_of(health["pid"]) == server.pid
            importers = _importers_of(server.pid)
        finally:
            server.terminate()
            server.wait(timeout=WORKERS_KILL_TIMEOUT + 30)  # a bound for a loaded machine
    assert len(importers) == 1
    assert f"serving on http://127.0.0.1:{port} with 1 granian workers" in log_path.read_text()


def test_stopping_make_run_stops_its_server(tmp_path):
    """A harness that starts `make run` and signals only make (not its process group)
    must not leave the server behind on the port."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed (make test installs nothing without it)")
    env = production_environment(tmp_path)
    port = free_port()
    log_path = tmp_path / "make.log"
    make = _start_make("run", port, env, log_path)
    try:
        wait_until_ready(port, make, log_path)
        make.terminate()
        make.wait(timeout=30)
        deadline = time.monotonic() + 30  # a bound for a loaded machine
        while call(port, "GET", "/healthz", timeout=1)[0] is not None:
            assert time.monotonic() < deadline, "the server outlived make"
            time.sleep(0.1)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(make.pid, signal.SIGKILL)


def test_the_serving_module_starts_without_a_warning():
    """`python -m service.serve` (make serve) must not find itself imported already,
    which runpy reports as a RuntimeWarning on every start."""
    answer = subprocess.run(
        [sys.executable, "-m", "service.serve", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert answer.returncode == 0, answer.stderr
    assert "Warning" not in answer.stderr, answer.stderr


def test_workers_are_forked_with_every_module_their_app_imports(tmp_path):
    """The server imports the app's modules before granian forks its workers
    (service/serve.py, WORKER_MODULES), so that a worker starts without importing them:
    building the app after that imports no module of ours."""
    program = """
import sys
from service import serve
serve.import_worker_modules()
before = set(sys.modules)
from service import create_app
create_app()
print(sorted(m for m in set(sys.modules) - before if m.split(".")[0] in ("service", "models")))
"""
    env = production_environment(tmp_path, JWT_SECRET="s" * 32)
    answer = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.strip() == "[]"


FORKING_WORKER = """
import os, sys, time
from service import serve
serve._server_pid = os.getpid()  # as serve() records it before granian forks the workers
os.register_at_fork(after_in_child=serve._stop_at_once_while_starting)
worker = os.fork()
if worker == 0:
    grandchild = os.fork()  # a process the worker starts (a library's fork, say)
    if grandchild == 0:
        time.sleep(3 * serve.SERVER_CHECK_INTERVAL)
        os._exit(0)
    os._exit(os.waitstatus_to_exitcode(os.waitpid(grandchild, 0)[1]) & 0xFF)
sys.exit(os.waitstatus_to_exitcode(os.waitpid(worker, 0)[1]) & 0xFF)
"""


def test_a_process_a_worker_forks_is_not_stopped_as_if_its_server_were_gone():
    """Only a worker watches for its server: a process forked inside a worker saw a
    parent other than the server and stopped itself."""
    done = subprocess.run(
        [sys.executable, "-c", FORKING_WORKER], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def test_an_importer_that_cannot_be_started_is_tried_again(monkeypatch):
    """No process to be had (a pid limit, memory): the supervisor goes on trying; its
    thread ended, and the server ran without an importer for the rest of its life."""
    attempts = []
    stopping = threading.Event()

    class Started:
        def wait(self) -> int:
            stopping.set()  # as a stop signal would
            return 0

    def popen(command, env):
        attempts.append(command)
        if len(attempts) == 1:
            raise OSError(11, "Resource temporarily unavailable")
        return Started()

    monkeypatch.setattr(serve_module, "_stopping", stopping)
    monkeypatch.setattr(serve_module, "IMPORTER_RESTART_DELAY", 0.01)
    monkeypatch.setattr(serve_module.subprocess, "Popen", popen)
    supervisor = serve_module.keep_an_importer_running()
    # Stopped (the fake's wait sets `stopping`) before the patches are undone: after,
    # it would start a real importer from this process.
    supervisor.join(timeout=30)  # a bound for a loaded machine, not a speed test
    assert not supervisor.is_alive()
    assert len(attempts) == 2, "the importer was not tried again"
