"""Run the service as `make serve` does (service/serve.py: granian, several worker
processes) on a free 127.0.0.1 port, for tests that need real processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import DIRECTORY_FILE, SECRET, auth

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def call(port: int, method: str, path: str, who: str | None = None, body=None, timeout=5.0):
    """(status, JSON body) of one request; (None, None) if the server does not answer."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json", **(auth(who) if who else {})}
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data, headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")
    except OSError:
        return None, None


def serve_command(port: int, workers: int) -> list[str]:
    """`make serve`'s command: granian workers and the read journal's importer."""
    serve = [sys.executable, "-m", "service.serve", "--host", "127.0.0.1", "--port", str(port)]
    return [*serve, "--workers", str(workers)]


def served_environment(
    tmp_path: Path, policy_dir: Path, database_url: str, journal_dir: Path | None = None
) -> dict[str, str]:
    """The environment of the served app (and of CLI commands run beside it). A
    `journal_dir` of its own makes it another machine's instance, for a server database."""
    journal = {"SUPPORT_ACCESS_READ_JOURNAL_DIR": str(journal_dir)} if journal_dir else {}
    return {
        **journal,
        **os.environ,
        "SUPPORT_ACCESS_JWT_SECRET": SECRET,
        "SUPPORT_ACCESS_DATABASE_URL": database_url,
        "SUPPORT_ACCESS_POLICY_DIR": str(policy_dir),
        "SUPPORT_ACCESS_POLICY_SNAPSHOT_DIR": str(tmp_path / "last-good-policy"),
        "SUPPORT_ACCESS_DECISION_LOG": str(tmp_path / "decisions.log"),
    }


def production_environment(tmp_path: Path, **variables: str) -> dict:
    """A process environment configured as in production: SUPPORT_ACCESS_* variables
    only (no test_config), none of them inherited (no secret unless given)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPORT_ACCESS_")}
    env.update(
        SUPPORT_ACCESS_DATABASE_URL=f"sqlite:///{tmp_path / 'env.db'}",
        SUPPORT_ACCESS_DECISION_LOG=str(tmp_path / "env-decisions.log"),
        SUPPORT_ACCESS_READ_JOURNAL_DIR=str(tmp_path / "env-journal"),
        SUPPORT_ACCESS_POLICY_SNAPSHOT_DIR=str(tmp_path / "env-snapshot"),
    )
    env.update({f"SUPPORT_ACCESS_{name}": value for name, value in variables.items()})
    return env


def kill_tree(server: subprocess.Popen) -> None:
    """SIGKILL the server and every process below it, as a crash would end them."""
    pids, todo = [], [server.pid]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        for children in Path(f"/proc/{pid}/task").glob("*/children"):
            try:
                todo += [int(child) for child in children.read_text().split()]
            except OSError:
                pass
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    server.wait(timeout=10)


def wait_until_ready(port: int, process: subprocess.Popen, log_path: Path, timeout: float = 60) -> None:
    """Until /readyz answers 200; fails with the end of the log if `process` ends first."""
    deadline = time.monotonic() + timeout  # a bound for a loaded machine, not a speed test
    while call(port, "GET", "/readyz")[0] != 200:
        assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()[-2000:]
        time.sleep(0.1)


def import_directory(env: dict, directory: Path) -> None:
    """`flask --app service directory import` in a process of its own."""
    flask = [sys.executable, "-m", "flask", "--app", "service", "directory", "import", str(directory)]
    imported = subprocess.run(flask, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert imported.returncode == 0, imported.stderr


@contextmanager
def served(
    tmp_path: Path,
    policy_dir: Path,
    database_url: str,
    workers: int = 2,
    journal_dir: Path | None = None,
    directory: Path | None = DIRECTORY_FILE,
):
    """Yield (port, server process) of a served app on the database at `database_url`,
    with `directory` imported first (tests/directory.yaml; None: none)."""
    env = served_environment(tmp_path, policy_dir, database_url, journal_dir)
    if directory is not None:
        import_directory(env, directory)
    port = free_port()
    log_path = tmp_path / "server.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            serve_command(port, workers), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            wait_until_ready(port, server, log_path)
            yield port, server
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=5)


def served_grant(port: int) -> tuple[str, str]:
    """eve's approved cross-tenant access to contoso, over HTTP: (ticket id, request id)."""
    body = {"tenant_id": "fabrikam", "resource_tenant_id": "contoso", "title": "t"}
    status, ticket = call(port, "POST", "/v1/support-requests", "bob", body)
    assert status == 201, ticket
    assert (
        call(port, "POST", f"/v1/support-requests/{ticket['id']}/assign", "eve", {"engineer": "eve"})[0]
        == 200
    )
    body = {"support_request_id": ticket["id"], "justification": "j"}
    status, request = call(port, "POST", "/v1/access-requests", "eve", body)
    assert status == 201, request
    url = f"/v1/access-requests/{request['id']}/approve"
    assert call(port, "POST", url, "alice", {"tenant_id": "contoso"})[0] == 200
    status, approved = call(port, "POST", url, "bob", {"tenant_id": "fabrikam"})
    assert approved["status"] == "approved", approved
    return ticket["id"], request["id"]
