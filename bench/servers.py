"""Starting and stopping the servers under test (127.0.0.1 only), and reading their memory."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from bench.dataset import REPO

VENV_BIN = REPO / ".venv" / "bin"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http_ok(url: str, proc: subprocess.Popen, timeout: float) -> float | None:
    """Seconds until GET `url` answers 200 (None if the process exits or time runs out)."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if proc.poll() is not None:
            return None
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return time.perf_counter() - start
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.005)
    return None


def wait_index_whole(metrics_url: str, proc: subprocess.Popen, workers: int, timeout: float) -> bool:
    """Wait until /metrics counts `workers` workers whose decision index is whole (they
    answer before it is, from the directory and what each decision needs; since 2026-11-30).
    Each request may start a worker's whole load."""
    done = f"support_access_decision_index_whole {float(workers)}"
    start = time.perf_counter()
    while time.perf_counter() - start < timeout and proc.poll() is None:
        try:
            with urllib.request.urlopen(metrics_url, timeout=2) as response:
                if done in response.read().decode().splitlines():
                    return True
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.02)
    return False


SERVE_MODULE = REPO / "service" / "serve.py"


def server_kind(requested: str | None) -> str:
    """'serve' = what `make serve` runs (`python -m service.serve`, granian since 0af2ca3);
    'gunicorn' = `gunicorn --workers N "service:create_app()"` (what it ran before);
    'uwsgi' = uWSGI's prefork workers behind its HTTP router (bench/server_choice.py
    compares the three; `bench.run` takes the first two: uWSGI's router would count as a
    worker in `worker_pids`)."""
    if requested:
        return requested
    return "serve" if SERVE_MODULE.is_file() else "gunicorn"


PACKAGES = {"serve": "granian", "gunicorn": "gunicorn", "uwsgi": "uWSGI"}
UWSGI_APP = Path(__file__).with_name("uwsgi_app.py")


def server_command(kind: str, port: int, workers: int) -> list[str]:
    if kind == "uwsgi":
        # Prefork workers that each build their own app after the fork (--lazy-apps), as
        # granian's and gunicorn's do, with threads enabled (the index loads in one),
        # behind uWSGI's HTTP router with keep-alive (--http): served straight from the
        # workers (--http-socket), a worker keeps to one keep-alive connection while it
        # sends requests, and 14 of 16 connections got one answer in 3 s.
        return [
            str(VENV_BIN / "uwsgi"),
            "--http",
            f"127.0.0.1:{port}",
            "--http-keepalive",
            "--master",
            "--processes",
            str(workers),
            "--lazy-apps",
            "--enable-threads",
            "--need-app",
            "--die-on-term",
            "--disable-logging",
            "--wsgi-file",
            str(UWSGI_APP),
        ]
    if kind == "serve":
        python = VENV_BIN / "python"
        return [
            str(python) if python.exists() else "python3",
            "-m",
            "service.serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
        ]
    gunicorn = VENV_BIN / "gunicorn"
    return [
        str(gunicorn) if gunicorn.exists() else "gunicorn",
        "--workers",
        str(workers),
        "--bind",
        f"127.0.0.1:{port}",
        "service:create_app()",
    ]


def installed_version(kind: str) -> str | None:
    """The version of the package that serves as `kind`, or None if it is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(PACKAGES[kind])
    except PackageNotFoundError:
        return None


def describe(kind: str, workers: int) -> str:
    package, found = PACKAGES[kind], installed_version(kind)
    found = f"{package} {found}" if found else f"{package} (not installed)"
    how = {
        "serve": "`python -m service.serve` (as `make serve`)",
        "gunicorn": '`gunicorn "service:create_app()"`',
        "uwsgi": "`uwsgi --http --http-keepalive --lazy-apps --wsgi-file bench/uwsgi_app.py`",
    }[kind]
    return f"{how}: {found}, {workers} workers, SQLite"


def start_ours(
    kind: str, db_path: Path, port: int, workers: int, secret: str, logs: Path
) -> subprocess.Popen:
    env = dict(os.environ)
    env.update(
        SUPPORT_ACCESS_DATABASE_URL=f"sqlite:///{db_path}",
        SUPPORT_ACCESS_JWT_SECRET=secret,
        SUPPORT_ACCESS_DECISION_LOG=str(logs / "decisions.log"),
    )
    env.pop("SUPPORT_ACCESS_JWKS", None)
    env.pop("SUPPORT_ACCESS_POLICY_DIR", None)
    if kind != "serve":
        # What `make serve` sets up around granian: one metrics directory for every
        # worker (/metrics counts their whole indexes) ...
        metrics = logs / f"metrics-{port}"
        metrics.mkdir(parents=True, exist_ok=True)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics)
    handle = open(logs / "server.log", "ab")  # noqa: SIM115 (lives as long as the server)
    server = subprocess.Popen(
        server_command(kind, port, workers),
        cwd=REPO,
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    if kind != "serve":
        # ... and the read journal's importer beside the workers, which `stop` ends with
        # the server (it would run as long as we do: our pid is its server's).
        try:
            server.importer = subprocess.Popen(
                [str(VENV_BIN / "python"), "-m", "service.read_importer"],
                cwd=REPO,
                env={**env, "SUPPORT_ACCESS_SERVER_PID": str(os.getpid())},
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError:
            stop(server)  # not left running behind a failed start
            raise
    return server


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (a server's workers, however deep its tree)."""
    found, todo = [], [pid]
    while todo:
        for child in children(todo.pop()):
            found.append(child)
            todo.append(child)
    return found


IMPORTER = b"service.read_importer"  # the read journal's importer beside the workers (since ec28c8d)


def worker_pids(pid: int) -> list[int]:
    """The server's worker processes: its descendants that are Python processes, but
    the read journal's importer."""
    workers = []
    for child in descendants(pid):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if IMPORTER in cmdline:
            continue
        if b"python" in cmdline or b"granian" in cmdline or b"gunicorn" in cmdline:
            workers.append(child)
    return workers


def importer_pids(pid: int) -> list[int]:
    found = []
    for child in descendants(pid):
        try:
            if IMPORTER in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(child)
        except OSError:
            continue
    return found


def stop(proc: subprocess.Popen | None, timeout: float = 15.0) -> None:
    """Stop a server we started (its own process group: the master and its workers),
    and the importer started beside it, if any."""
    if proc is None:
        return
    stop(getattr(proc, "importer", None), timeout)
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)


def children(pid: int) -> list[int]:
    """Processes `pid` started, from any of its threads (`make serve` starts the importer
    from one)."""
    try:
        return [
            int(x) for path in Path(f"/proc/{pid}/task").glob("*/children") for x in path.read_text().split()
        ]
    except (OSError, ValueError):
        pass
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            found.append(int(entry.name))
    return found


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None
