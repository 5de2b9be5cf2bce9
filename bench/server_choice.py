"""`make bench-servers`: the WSGI server `make serve` runs, chosen by measurement (issue 4).

Serves our app on the large data set under each candidate, with as many worker processes
as cores and the read journal's importer beside them: granian (what `make serve` runs),
gunicorn's sync workers and uWSGI's prefork workers behind its HTTP router. Each gets the same bounded `wrk`
loads as `make bench`: the health endpoint (the server and Flask alone), then single
decision checks at 1 and 16 connections, each answer of a verification pass compared with
the expected one first. Prints one markdown table and writes it to bench/SERVERS.md.
A server that is not installed (`make bench-servers` installs them) is skipped with the
reason. About 2 minutes.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import dataset, http_load, run, servers  # noqa: E402
from bench.dataset import CLIENT, PROVIDER, SIZES  # noqa: E402

RESULTS_FILE = run.BENCH / "SERVERS.md"
KINDS = ("serve", "gunicorn", "uwsgi")  # the first is the one `make serve` runs
NAMES = {"serve": "granian", "gunicorn": "gunicorn (sync)", "uwsgi": "uWSGI"}
LOADS = (  # (row, path, bodies, connections)
    ("health endpoint, 16 connections", "/healthz", None, 16),
    ("single check, 1 connection", "/v1/decisions", "single", 1),
    ("single check, 16 connections", "/v1/decisions", "single", 16),
)


@dataclass
class Measured:
    """One server's figures: row -> (req/s, p50 ms, p99 ms), or why it has none."""

    loads: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    ready_s: float | None = None
    fair: float | None = None
    wrong: str = ""
    skipped: str = ""
    notes: list[str] = field(default_factory=list)


def fairness(base: str, connections: int = 16, seconds: float = 2.0) -> float:
    """The least-served of `connections` keep-alive clients of the health endpoint: its
    answers as a share of the mean. wrk's figures count the answers that came, so a server
    that serves a few connections and leaves the others waiting looks fast in them."""
    answered = http_load.run_python(base + "/healthz", None, connections, seconds, None, 10**9).answered
    mean = sum(answered) / connections
    return min(answered) / mean if mean else 0.0


def measure_server(kind: str, fresh_db: Path, cfg: run.Settings, wrk: str | None, files, groups, secret: str):
    from service.auth import mint_token

    found = Measured()
    if servers.installed_version(kind) is None:
        package = servers.PACKAGES[kind]
        found.skipped = (
            f"{package} is not installed (`make bench-servers` installs bench/server-requirements.txt)"
        )
        return found
    logs = run.WORK / "logs"
    db_path = run.WORK / "data" / f"servers-{kind}.db"
    shutil.copyfile(fresh_db, db_path)  # each server starts from the same database
    port = servers.free_port()
    base = f"http://127.0.0.1:{port}"
    run.log(f"{NAMES[kind]}: starting {servers.describe(kind, cfg.workers)} on {base} ...")
    proc = servers.start_ours(kind, db_path, port, cfg.workers, secret, logs)
    try:
        found.ready_s = servers.wait_http_ok(base + "/readyz", proc, 60.0)
        if found.ready_s is None:
            found.skipped = "did not become ready within 60 s (bench/.work/logs/server.log)"
            return found
        if not servers.wait_index_whole(base + "/metrics", proc, cfg.workers, 60.0):
            found.notes.append("the workers' decision indexes were not whole within 60 s of ready")
        token = mint_token(secret, CLIENT, PROVIDER, timedelta(hours=3), datetime.now(UTC))
        client = http_load.Client(base)
        checked, wrong = run.verify_ours(client, token, groups)
        client.close()
        found.wrong = f"{wrong} of {checked}"
        found.fair = fairness(base)
        http_load.drain(base + "/healthz", cfg.workers)
        for row, path, bodies, connections in LOADS:
            body_file = files[bodies].path if bodies else None
            try:
                if body_file:
                    http_load.warm_up(base + path, body_file, cfg.warmup_seconds, token)
                r = http_load.run_load(
                    wrk, base + path, body_file, connections, cfg.load_seconds, token, 1_000_000
                )
            except Exception as exc:  # noqa: BLE001 (one load failing must not end the comparison)
                traceback.print_exc()
                found.notes.append(f"{row} failed: {exc}")
                continue
            finally:
                http_load.drain(base + "/healthz", cfg.workers)
            run.log(
                f"  {NAMES[kind]} {row}: {r.rps:,.0f} req/s, p50 {r.p50_ms:.2f} ms, "
                f"p99 {r.p99_ms:.2f} ms, errors {r.errors}"
            )
            found.loads[row] = (r.rps, r.p50_ms, r.p99_ms)
            if r.errors:
                found.notes.append(f"{row}: {r.errors} errors of {r.requests} requests")
            if bodies:
                behind, catch_up = run.import_catch_up(db_path)
                if behind:
                    found.notes.append(
                        f"{row}: {behind / 1e6:.1f} MB of allowed reads waited for the importer, "
                        f"imported {catch_up:.2f} s later"
                    )
    finally:
        servers.stop(proc)
    return found


def render(results: dict[str, Measured], cfg: run.Settings, machine: list[tuple[str, str]]) -> str:
    measured = [k for k in KINDS if not results[k].skipped]
    ours = KINDS[0]
    others = [k for k in measured if k != ours]
    out = ["# Which WSGI server `make serve` runs", "", "| machine | |", "| --- | --- |"]
    out += [f"| {k} | {v} |" for k, v in machine]
    out += ["", "| workload | " + " | ".join(NAMES[k] for k in measured)]
    out[-1] += "".join(f" | {NAMES[ours]}/{NAMES[k]}" for k in others) + " |"
    out.append("| --- |" + " ---: |" * (len(measured) + len(others)))
    for row, *_ in LOADS:
        for what, index, unit in (("requests/s", 0, "req/s"), ("p50 ms", 1, "ms"), ("p99 ms", 2, "ms")):
            cells = []
            for k in measured:
                value = results[k].loads.get(row)
                cells.append("—" if value is None else _fmt(value[index], unit))
            for k in others:
                a, b = results[ours].loads.get(row), results[k].loads.get(row)
                cells.append(f"{a[index] / b[index]:.2f}×" if a and b and b[index] else "—")
            out.append(f"| {row}: {what} | " + " | ".join(cells) + " |")
    cells = [_fmt(results[k].ready_s, "s") if results[k].ready_s else "—" for k in measured]
    out.append("| start-up to ready: s | " + " | ".join(cells + ["" for _ in others]) + " |")
    cells = [f"{results[k].fair:.0%}" if results[k].fair is not None else "—" for k in measured]
    row = "least-served of 16 keep-alive clients of the health endpoint, % of the mean (2 s)"
    out.append(f"| {row} | " + " | ".join(cells + ["" for _ in others]) + " |")
    cells = [results[k].wrong for k in measured]
    out.append(
        "| answers ≠ expected (verification pass) | " + " | ".join(cells + ["" for _ in others]) + " |"
    )
    out += ["", f"Each load {cfg.load_seconds:.0f} s by `wrk` after a warm-up, {cfg.workers} workers each."]
    notes = [
        "How each serves connections: granian from each worker's own event loop, with keep-alive; "
        "gunicorn's sync workers close the connection after every answer (they have no keep-alive); "
        "uWSGI through its HTTP router process, with keep-alive (served straight from its workers, "
        "each worker keeps to one keep-alive connection while that connection sends requests: 14 of "
        "16 clients then got one answer in 3 s, while wrk's figures, which count answers that came, "
        "looked fast).",
        "Every server has the read journal's importer beside it, as `make serve` runs it, and every "
        "allowed read is journalled before its answer.",
    ]
    notes += [f"{NAMES[k]}: skipped: {results[k].skipped}" for k in KINDS if results[k].skipped]
    notes += [f"{NAMES[k]}: {n}" for k in KINDS for n in results[k].notes]
    out += ["", "Notes:"] + [f"- {n}" for n in notes]
    return "\n".join(out) + "\n"


def _fmt(value: float, unit: str) -> str:
    return f"{value:,.0f}" if unit == "req/s" else f"{value:.2f}"


def main(argv: list[str] | None = None) -> int:
    import secrets

    parser = argparse.ArgumentParser(
        prog="python -m bench.server_choice", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--duration", type=float, help="seconds per load (default 10)")
    parser.add_argument("--workers", type=int, help="worker processes per server (default: nproc)")
    parser.add_argument("--output", type=Path, default=RESULTS_FILE, help="where to write the table")
    args = parser.parse_args(argv)
    cfg = run.settings(
        argparse.Namespace(
            quick=False, duration=args.duration, workers=args.workers, server=None, budget=None
        )
    )
    for sub in ("data", "logs", "bodies"):
        (run.WORK / sub).mkdir(parents=True, exist_ok=True)
    wrk = http_load.ensure_wrk(run.log, allow_install=True)
    t0 = time.perf_counter()
    ds = dataset.generate(SIZES["large"])
    fresh_db = run.WORK / "data" / "servers.db"
    dataset.load_into_database(ds, fresh_db)
    files, groups = run.write_bodies(ds, cfg, run.WORK / "bodies")
    run.log(f"large data set loaded in {time.perf_counter() - t0:.1f} s")
    secret = secrets.token_urlsafe(32)
    results = {
        kind: measure_server(kind, fresh_db, cfg, wrk, files["ours"], groups, secret) for kind in KINDS
    }
    peers_and_mode = ("mode", "our server", "pycasbin", "cedarpy", "Cerbos")
    machine = [(k, v) for k, v in run.machine_info(wrk, cfg, None) if k not in peers_and_mode]
    machine += [(NAMES[k], servers.describe(k, cfg.workers)) for k in KINDS]
    text = render(results, cfg, machine)
    print()
    print(text)
    args.output.write_text(text, encoding="utf-8")
    run.log(f"wrote {args.output}")
    # What the next run makes anew: the databases with the reads the loads wrote, the log.
    for path in (run.WORK / "data").glob("servers*"):
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    (run.WORK / "logs" / "decisions.log").unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
