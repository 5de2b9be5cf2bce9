"""Production serving: `make serve`, or `python -m service.serve [--port N]` by hand.

The server is granian (WSGI interface, one process per core), chosen by measurement on
our 2-core machine: with the same app and load it answered about twice the decision
requests per second of gunicorn's sync workers (README "Performance"). Each worker
process is forked from the server's and builds its own app with `service:create_app`
(the server has imported the app's modules, so the workers need not); the decision
index and the policy live per worker and are kept exact by the shared change signal
(service/state_signal.py).
SIGHUP to the server respawns its workers, which load the policy files afresh (or, if
they are broken, the last good snapshot). Beside the workers runs the read journal's
importer (service/read_importer.py), which moves allowed reads into the audit log.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import NoReturn

WORKERS_KILL_TIMEOUT = 10  # seconds (an orchestrator's own grace period is often 30)
IMPORTER_LATE_START = (
    "import signal, time, runpy; signal.signal(signal.SIGHUP, signal.SIG_IGN); time.sleep({delay}); "
    "runpy.run_module('service.read_importer', run_name='__main__')"
)
IMPORTER_DELAY = 2.0  # seconds before the importer's first start (below)
IMPORTER_RESTART_DELAY = 0.5  # seconds before an importer that ended is started again
SERVER_CHECK_INTERVAL = 1.0  # seconds between a worker's checks that its server still runs
log = logging.getLogger("support_access")
# Set once the server has been told to stop: an importer ending then is not started again.
_stopping = threading.Event()
_server_pid: int | None = None  # the server process, as its forked workers see it
_in_worker = False  # set in a worker as it is forked (_stop_at_once_while_starting)


def granian_server(host: str, port: int, workers: int, threads: int):
    """The granian server `serve` runs in this process. It forks its workers from here,
    so each starts with what this process has imported (WORKER_MODULES)."""
    from granian import Granian
    from granian.constants import Interfaces
    from granian.log import LogLevels

    return Granian(
        "service:create_app",
        factory=True,
        interface=Interfaces.WSGI,
        address=host,
        port=port,
        workers=workers,
        blocking_threads=threads,
        respawn_failed_workers=True,
        # A worker that has not stopped this long after SIGTERM is killed: without it the
        # server waits for it for ever (granian seldom misses a worker's signal, but it
        # happens). Killing one loses nothing: an answer leaves only after its read is
        # journalled, and a transaction cut short is rolled back.
        workers_kill_timeout=WORKERS_KILL_TIMEOUT,
        log_level=LogLevels.warning,
    )


# What building a worker's app imports (service.build_app imports some of these only as
# it runs). Imported once, here, before granian forks the workers: on a slow host each
# worker spent ~0.7 s importing the app on the way to ready, after this process had
# imported most of it for the settings check. tests/test_serving.py checks the list.
WORKER_MODULES = (
    "service.admin",
    "service.api.access_requests",
    "service.api.audit",
    "service.api.decisions",
    "service.api.health",
    "service.api.policy_admin",
    "service.api.support_requests",
    "service.api.tenants",
    "service.decision_endpoint",
    "service.decision_index",
    "service.decision_log",
    "service.policy_reload",
    "service.read_journal",
    "service.starting",
    "service.state_signal",
    "service.unread_body",
)


def import_worker_modules() -> None:
    for name in WORKER_MODULES:
        importlib.import_module(name)


# Loopback unless asked: not the environment's HOST, which some shells set to the machine's name.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_WORKERS = os.cpu_count() or 1  # one per core


def port_number(value: str) -> int:
    """`--port`'s type, and PORT's check: a port, not granian's OverflowError traceback."""
    if not (value.isascii() and value.isdigit() and 0 < int(value) < 65536):
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number (1-65535)")
    return int(value)


def default_port() -> int:
    from service.errors import ConfigError

    try:
        return port_number(os.environ.get("PORT") or "5000")
    except argparse.ArgumentTypeError as exc:
        raise ConfigError(f"PORT: {exc}") from None


METRICS_PREFIX = "support-access-metrics-"


def metrics_directory() -> str:
    """A new directory for this server's metrics files (prometheus_client's multiprocess
    mode), named after its pid. Those of servers no longer running are removed first: a
    server removes its own when it stops, but not when it is killed."""
    for old in Path(tempfile.gettempdir()).glob(f"{METRICS_PREFIX}*-*"):
        pid = old.name.removeprefix(METRICS_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not process_running(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    return tempfile.mkdtemp(prefix=f"{METRICS_PREFIX}{os.getpid()}-")


def forget_exited_workers(directory: str) -> None:
    """Drop the live-only gauges (multiprocess_mode "livesum"/"liveall") of workers that
    have exited. prometheus_client leaves them until someone calls mark_process_dead, and
    granian, unlike gunicorn, has no hook on a worker's exit: a worker respawned after a
    crash or a SIGHUP would otherwise be counted twice. Counters of exited workers stay."""
    # Imported here: prometheus_client picks its value class (multiprocess or not) when
    # first imported, and serve() sets PROMETHEUS_MULTIPROC_DIR before that happens.
    from prometheus_client import multiprocess

    for path in Path(directory).glob("gauge_live*_*.db"):
        pid = path.stem.rsplit("_", 1)[-1]
        if pid.isdigit() and not process_running(int(pid)):
            # Another worker's scrape may remove the same files first.
            with contextlib.suppress(FileNotFoundError):
                multiprocess.mark_process_dead(int(pid), directory)


def process_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def serve(host: str | None, port: int | None, workers: int | None, threads: int = 1) -> NoReturn:
    """Run the server in this process: granian, with workers forked from it, and the
    read journal's importer beside them. None: the default."""
    # Each worker counts its metrics into files here, and /metrics sums them: a scrape
    # shows the server's counts whichever worker answers it (prometheus_client's
    # multiprocess mode: set before this process, whose modules the workers inherit,
    # imports it).
    own_metrics = None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        own_metrics = os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_directory()
    try:
        _run_granian(host, port, workers, threads)
    finally:  # stopped, refused or failed; a server killed leaves it to the next start
        if own_metrics:
            shutil.rmtree(own_metrics, ignore_errors=True)
    sys.exit(0)


def _run_granian(host: str | None, port: int | None, workers: int | None, threads: int) -> None:
    port = _refuse_settings_it_cannot_start_with(port)
    host = host or DEFAULT_HOST
    workers = workers or DEFAULT_WORKERS
    global _server_pid
    _server_pid = os.getpid()
    keep_an_importer_running()
    print(f"serving on http://{host}:{port} with {workers} granian workers", flush=True)
    import_worker_modules()
    os.register_at_fork(
        before=_hold_stop_signals,
        after_in_parent=_release_stop_signals,
        after_in_child=_stop_at_once_while_starting,
    )
    from granian.errors import FatalError

    server = granian_server(host, port, workers, threads)
    relay_signals(server)
    try:
        server.serve()
    except FatalError:  # granian has said why (a port in use, say)
        sys.exit(1)


def keep_an_importer_running() -> threading.Thread:
    """The read journal's importer, beside the workers; it ends when the server (this
    process) does. It starts a little later, so that it does not slow the workers'
    start; the reads wait in the journal meanwhile. One that ends while the server runs
    (killed, or failed) is started again: without one, reads reach the audit table only
    once 8 MB wait, or when the log is read or the state changes."""
    env = {**os.environ, "SUPPORT_ACCESS_SERVER_PID": str(os.getpid())}

    def supervise() -> None:
        delay, wait = IMPORTER_DELAY, IMPORTER_RESTART_DELAY
        while not _stopping.is_set():
            command = [sys.executable, "-c", IMPORTER_LATE_START.format(delay=delay)]
            started = time.monotonic()
            try:
                ended = f"ended (exit status {subprocess.Popen(command, env=env).wait()})"
            except OSError as exc:  # no process to be had (a pid limit, memory): try again
                ended = f"could not start ({exc})"
            if time.monotonic() - started >= 60:
                wait = IMPORTER_RESTART_DELAY
            time.sleep(wait)  # also: a stop signal reaches it and us at once
            if not _stopping.is_set():
                log.warning("the read journal's importer %s: starting another", ended)
            # Waits double while it keeps failing at once (not a start a second for ever).
            delay, wait = 0, min(wait * 2, 60)

    supervisor = threading.Thread(target=supervise, name="importer-supervisor", daemon=True)
    supervisor.start()
    return supervisor


def _stop_when_the_server_is_gone() -> None:
    """In a forked worker: stop once the server process is gone. A server SIGKILLed
    cannot stop its workers, and they served on for ever, beside the next server started
    on the same port (granian binds with SO_REUSEPORT), with no importer beside them and
    answering after that one was stopped."""

    def watch() -> None:
        while os.getppid() == _server_pid:
            time.sleep(SERVER_CHECK_INTERVAL)
        log.warning("the server process %s is gone: this worker stops", _server_pid)
        os.kill(os.getpid(), signal.SIGTERM)  # granian's own stop: answers under way are sent
        time.sleep(WORKERS_KILL_TIMEOUT)
        os._exit(1)

    threading.Thread(target=watch, name="server-watch", daemon=True).start()


def relay_signals(server) -> None:
    """granian's handlers for SIGTERM, SIGINT and SIGHUP set a threading.Event. A second
    signal that arrives while the first one's handler holds the Event's lock runs its
    handler in the same thread, which waits for that lock for ever: the server hung
    instead of stopping (`make serve` stopped with killpg gets SIGTERM twice: once from
    killpg, once from make passing it on). The handlers granian installs now only queue
    the signal (SimpleQueue.put may interrupt itself), and a thread of this process
    calls granian's own handler."""
    pending: queue.SimpleQueue = queue.SimpleQueue()
    handlers = {"stop": server.signal_handler_interrupt, "reload": server.signal_handler_reload}

    def relay() -> None:
        while True:
            signalled = pending.get()
            if signalled == "stop":
                _stopping.set()
            try:
                handlers[signalled]()
            except Exception:  # the next signal must still reach granian
                logging.getLogger(__name__).exception("granian's %s handler failed", signalled)

    threading.Thread(target=relay, name="signal-relay", daemon=True).start()
    # granian installs whatever these attributes hold when it starts.
    server.signal_handler_interrupt = lambda *_: pending.put("stop")
    server.signal_handler_reload = lambda *_: pending.put("reload")


STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def _stop_at_once_while_starting() -> None:
    """In a forked worker (it also starts the worker's watch on its server,
    `_stop_when_the_server_is_gone`): SIGTERM and SIGINT end it at once until granian installs its
    own handlers, after the app is built. Otherwise the server's handlers, inherited,
    swallow them: a worker stopped while building its app (a server stopped right after
    start, or systemd signalling every process of the service at once) served on until
    the kill timeout, or kept the server from stopping at all."""
    for stop in STOP_SIGNALS:
        signal.signal(stop, signal.SIG_DFL)
    _release_stop_signals()
    global _in_worker
    if not _in_worker:  # a worker; a process a worker forks inherits True
        _in_worker = True
        _stop_when_the_server_is_gone()  # (at once, if the server is already gone)


def _hold_stop_signals() -> None:
    """Held across granian's fork of a worker: one that reached the new worker before
    the lines above ran would be dropped by Python (a fork clears pending signals)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)


def _release_stop_signals() -> None:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def serve_command(host: str | None, port: int | None, workers: int | None, threads: int) -> list[str]:
    """`python -m service.serve` with these options (None: the default)."""
    argv = [sys.executable, "-m", "service.serve", "--threads", str(threads)]
    for option, value in (("--host", host), ("--port", port), ("--workers", workers)):
        if value is not None:
            argv += [option, str(value)]
    return argv


def _refuse_settings_it_cannot_start_with(port: int | None) -> int:
    """No token settings, a blank secret, a database URL that names no store, a PORT that
    is no port: said in one line, before granian starts workers that would each print it
    as a traceback. Returns the port to serve on."""
    from service import auth, configured_app
    from service.errors import ConfigError

    try:
        auth.init_app(configured_app())
        return port or default_port()
    except ConfigError as exc:
        print(f"cannot start: {exc.message}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # Defaults (None) are serve()'s: loopback, $PORT or 5000, one worker per core.
    parser.add_argument("--host")
    parser.add_argument("--port", type=port_number)
    parser.add_argument("--workers", type=int, help="default: one per core")
    parser.add_argument("--threads", type=int, default=1, help="request threads per worker")
    args = parser.parse_args()
    serve(args.host, args.port, args.workers, args.threads)


if __name__ == "__main__":
    main()
