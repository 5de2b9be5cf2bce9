"""`python -m bench.run [--quick]`: generate the data sets, load them, and measure our
engine (in-process, and over HTTP served as `make serve` serves it) side by side with
pycasbin, cedarpy and the Cerbos PDP. Prints one markdown table and writes it to
bench/RESULTS.md.

Every measurement is bounded: in-process passes by decision count and seconds, HTTP
loads by duration and request count; the whole run checks a time budget before each
step and skips what would not fit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import dataset, http_load, report, servers  # noqa: E402
from bench.dataset import CLIENT, PROVIDER, SIZES, Check, Dataset  # noqa: E402
from bench.peers import casbin_peer, cedar_peer, cerbos_peer  # noqa: E402

BENCH = REPO / "bench"
WORK = BENCH / ".work"
RESULTS_FILE = BENCH / "RESULTS.md"


@dataclass(frozen=True)
class Settings:
    quick: bool
    sizes: tuple[str, ...]
    http_size: str
    inprocess_decisions: int
    inprocess_seconds: float
    load_seconds: float
    warmup_seconds: float
    single_bodies: int
    batch50_bodies: int
    batch1000_bodies: int
    workers: int
    budget_seconds: float
    server: str  # "serve" or "gunicorn" (bench/servers.py)


def settings(args) -> Settings:
    nproc = os.cpu_count() or 1
    if args.quick:
        return Settings(
            True,
            ("small",),
            "small",
            2_000,
            2.0,
            2.0,
            1.0,
            2_000,
            40,
            4,
            args.workers or nproc,
            args.budget or 180.0,
            servers.server_kind(args.server),
        )
    return Settings(
        False,
        ("small", "large"),
        "large",
        100_000,
        10.0,
        args.duration or 10.0,
        2.0,
        10_000,
        200,
        20,
        args.workers or nproc,
        args.budget or 570.0,
        servers.server_kind(args.server),
    )


T0 = time.perf_counter()


def log(message: str) -> None:
    print(f"[bench {time.perf_counter() - T0:6.1f}s] {message}", flush=True)


def elapsed() -> float:
    return time.perf_counter() - T0


# --- in-process ----------------------------------------------------------------------


@dataclass
class Pass:
    decisions: int
    wall_ns: int
    p50_us: float
    p99_us: float
    mismatches: int

    @property
    def per_second(self) -> float:
        return self.decisions / (self.wall_ns / 1e9) if self.wall_ns else 0.0


def measure(check, checks: list[Check], max_seconds: float) -> Pass:
    """One bounded pass: every decision timed with perf_counter_ns."""
    perf = time.perf_counter_ns
    latencies: list[int] = []
    mismatches = 0
    start = perf()
    deadline = start + int(max_seconds * 1e9)
    for c in checks:
        t0 = perf()
        allowed = check(c)
        t1 = perf()
        latencies.append(t1 - t0)
        if allowed != c.expected:
            mismatches += 1
        if t1 > deadline:
            break
    wall = perf() - start
    latencies.sort()
    return Pass(
        len(latencies),
        wall,
        http_load.percentile(latencies, 50) / 1000.0,
        http_load.percentile(latencies, 99) / 1000.0,
        mismatches,
    )


def median_pass(runs: list[Pass]) -> Pass:
    """The passes as one: each figure's median over them, and every pass's mismatches.
    One pass (~0.3 s for ours) is at the mercy of what the host's other machines do
    with the shared L3 cache at that moment; the median of several is not."""
    if len(runs) == 1:
        return runs[0]
    # decisions/s: the pass of median rate (decisions and wall time from the same pass)
    middle = sorted(runs, key=lambda r: r.per_second)[len(runs) // 2]
    return Pass(
        middle.decisions,
        middle.wall_ns,
        statistics.median(r.p50_us for r in runs),
        statistics.median(r.p99_us for r in runs),
        sum(r.mismatches for r in runs),
    )


def record_pass(results: report.Results, size: str, temp: str, engine: str, p: Pass) -> None:
    prefix = f"inproc.{size}.{temp}"
    label = f"in-process, {size}, {temp}"
    results.set(f"{prefix}.dps", f"{label}: decisions/s", "decisions/s", "higher", engine, p.per_second)
    results.set(f"{prefix}.p50", f"{label}: p50", "µs", "lower", engine, p.p50_us)
    results.set(f"{prefix}.p99", f"{label}: p99", "µs", "lower", engine, p.p99_us)


def effect_time(engine, ds: Dataset) -> tuple[float, float] | None:
    """In-process peers: ms from applying a new grant (or its revocation) to the first
    decision that reflects it (both included)."""
    if not hasattr(engine, "grant"):
        return None
    engineer = ds.engineers[-1]
    held = set(ds.granted(engineer))
    tenant = next(t for t in ds.tenants if t not in held)
    probe = Check(engineer, tenant, "read", f"diagnostics/{ds.categories[0]}", True, "granted")
    if engine.check(probe):
        return None
    t0 = time.perf_counter()
    spent_grant = engine.grant(engineer, tenant)
    granted_ok = engine.check(probe)
    t1 = time.perf_counter()
    spent_revoke = engine.revoke(engineer, tenant)
    revoked_ok = not engine.check(probe)
    t2 = time.perf_counter()
    if not (granted_ok and revoked_ok):
        return None
    # An engine whose change goes through a store (ours: the workflow's transactions)
    # reports its own engine time: from the committed change to the decision that shows it.
    if isinstance(spent_grant, float) and isinstance(spent_revoke, float):
        return spent_grant * 1000.0, spent_revoke * 1000.0
    return (t1 - t0) * 1000.0, (t2 - t1) * 1000.0


def run_inprocess(
    results: report.Results, cfg: Settings, ds: Dataset, db_path: Path, secret: str, peers_ok: dict[str, bool]
) -> None:
    from bench.engines import ours

    size = ds.size.name
    checks = dataset.workload(ds, cfg.inprocess_decisions)
    openers = [("ours", lambda: ours.open_engine(db_path, WORK / "logs", secret))]
    if peers_ok.get("pycasbin"):
        openers.append(("pycasbin", lambda: casbin_peer.open_engine(ds, WORK / "data")))
    if peers_ok.get("cedarpy"):
        openers.append(("cedarpy", lambda: cedar_peer.open_engine(ds)))
    for name, opener in openers:
        log(f"in-process {size}: building {name} ...")
        t0 = time.perf_counter()
        try:
            engine = opener()
        except Exception as exc:  # a peer that breaks is reported, not fatal
            traceback.print_exc()
            results.note(f"in-process {size}: {name} failed to start: {exc}")
            continue
        ready = time.perf_counter() - t0
        results.set(
            f"inproc.{size}.ready",
            f"in-process, {size}: engine ready (data loaded)",
            "s",
            "lower",
            name,
            ready,
        )
        try:
            for temp, passes in (("cold", 1), ("warm", WARM_PASSES)):
                runs = [measure(engine.check, checks, cfg.inprocess_seconds) for _ in range(passes)]
                p = median_pass(runs)
                log(
                    f"  {name} {size} {temp} ({passes} passes, medians): {p.decisions} decisions, "
                    f"{p.per_second:,.0f}/s, p50 {p.p50_us:.1f} µs, p99 {p.p99_us:.1f} µs, "
                    f"mismatches {p.mismatches}; p50 of each pass "
                    + ", ".join(f"{r.p50_us:.2f}" for r in runs)
                )
                record_pass(results, size, temp, name, p)
                key = f"check.inproc.{size}"
                previous = results.get(key, name)
                results.set(
                    key,
                    f"in-process, {size}: answers ≠ expected",
                    "checks",
                    "",
                    name,
                    (previous or 0) + p.mismatches,
                )
            # The median of a few changes: the first one also pays one-off costs (compiling
            # statements, warming caches) that every later change is spared.
            effects = [e for e in (effect_time(engine, ds) for _ in range(EFFECT_REPEATS)) if e is not None]
            if effects:
                results.set(
                    f"inproc.{size}.grant",
                    f"in-process, {size}: new grant in force after (median of {len(effects)})",
                    "ms",
                    "lower",
                    name,
                    statistics.median(e[0] for e in effects),
                )
                results.set(
                    f"inproc.{size}.revoke",
                    f"in-process, {size}: revocation in force after (median of {len(effects)})",
                    "ms",
                    "lower",
                    name,
                    statistics.median(e[1] for e in effects),
                )
                if name == "ours":
                    results.note(
                        f"ours, {size}: grant / revocation in force after, each change: "
                        + ", ".join(f"{g:.2f} / {r:.2f} ms" for g, r in effects)
                    )
        finally:
            engine.close()
            del engine


def run_flatness(
    results: report.Results, cfg: Settings, datasets: dict[str, tuple[Dataset, Path]], secret: str
) -> None:
    """Ours on the small and the large set, both loaded in one process, measured in short
    interleaved chunks: the large/small p50 ratio of each pair of chunks, and the median
    of those ratios. On a busy host the speed of the whole machine changes from one
    second to the next (whole passes of the small set twice as slow as its others in one
    run), so passes measured apart, even back to back, compare the host's moments as
    much as the data sets; two chunks of ~20 ms meet the same moment. The first
    FLAT_CHUNK_WARMUP decisions of each chunk are not counted: they refill the caches
    the other set's chunk used."""
    from bench.engines import ours

    small, large = cfg.sizes[0], cfg.sizes[-1]
    if small == large:
        return
    engines, checks = {}, {}
    pairs: list[tuple[float, float]] = []
    try:
        for size in (small, large):
            ds, db_path = datasets[size]
            engines[size] = ours.open_engine(db_path, WORK / "logs", secret)
            checks[size] = dataset.workload(ds, cfg.inprocess_decisions)
            measure(engines[size].check, checks[size], cfg.inprocess_seconds)  # warm-up, not counted
        deadline = time.perf_counter() + cfg.inprocess_seconds
        mismatches = dict.fromkeys((small, large), 0)
        start = 0
        for n in range(FLAT_PAIRS):
            if start + FLAT_CHUNK > min(len(checks[small]), len(checks[large])):
                start = 0
            order = (small, large) if n % 2 == 0 else (large, small)  # neither always goes first
            p50 = {}
            for size in order:
                p50[size], wrong = measure_chunk(
                    engines[size].check, checks[size][start : start + FLAT_CHUNK]
                )
                mismatches[size] += wrong
            pairs.append((p50[small], p50[large]))
            start += FLAT_CHUNK
            if time.perf_counter() > deadline:
                break
        for size, wrong in mismatches.items():
            if wrong:  # counted in the set's correctness row, with its other passes
                key, label = f"check.inproc.{size}", f"in-process, {size}: answers ≠ expected"
                results.set(key, label, "checks", "", "ours", (results.get(key, "ours") or 0) + wrong)
    finally:
        for size in reversed(list(engines)):  # app contexts are a stack: the last one first
            engines[size].close()
    ratios = sorted(big / little for little, big in pairs)
    ratio = statistics.median(ratios)
    quartiles = f"{ratios[len(ratios) // 4]:.2f}–{ratios[3 * len(ratios) // 4]:.2f}"
    big_p50, little_p50 = (statistics.median(pair[i] for pair in pairs) for i in (1, 0))
    medians = f"{big_p50:.2f} / {little_p50:.2f}"
    log(
        f"  ours {large}/{small}, {len(pairs)} interleaved pairs of {FLAT_CHUNK:,}-decision chunks: "
        f"median ratio {ratio:.2f}× (quartiles {quartiles}); median chunk p50 µs {large} / {small}: {medians}"
    )
    results.set(
        FLAT_KEY,
        f"in-process, warm: {large}/{small} p50, interleaved chunks (median of {len(pairs)} pairs)",
        "×",
        "lower",
        "ours",
        ratio,
    )
    results.note(
        f"ours, {large}/{small} p50 in {len(pairs)} interleaved pairs of {FLAT_CHUNK:,}-decision chunks: "
        f"median ratio {ratio:.2f}×, quartiles {quartiles}; median chunk p50 µs ({large} / {small}) {medians}"
    )


def measure_chunk(check, checks: list[Check]) -> tuple[float, int]:
    """One chunk of run_flatness: its p50 in µs (not counting the first FLAT_CHUNK_WARMUP
    decisions) and how many answers differ from the expected."""
    perf = time.perf_counter_ns
    latencies: list[int] = []
    mismatches = 0
    for c in checks:
        t0 = perf()
        allowed = check(c)
        latencies.append(perf() - t0)
        if allowed != c.expected:
            mismatches += 1
    counted = sorted(latencies[FLAT_CHUNK_WARMUP:])
    return http_load.percentile(counted, 50) / 1000.0, mismatches


FLAT_PAIRS = 200  # at most; the pairs stop at cfg.inprocess_seconds
FLAT_CHUNK = 2_000  # decisions a chunk: ~20 ms of ours
FLAT_CHUNK_WARMUP = 200
FLAT_KEY = "inproc.flat.interleaved"


# --- HTTP ------------------------------------------------------------------------------


EFFECT_REPEATS = 3  # grant-and-revoke cycles per engine and data set
WARM_PASSES = 5  # warm in-process figures are the medians of this many passes (median_pass)

HTTP_WORKLOADS = (
    # key, label, bodies kind, checks per request, connections
    ("single.c1", "HTTP single check, 1 connection", "single", 1, 1),
    ("single.c16", "HTTP single check, 16 connections", "single", 1, 16),
    ("batch50.c16", "HTTP batch of 50, 16 connections", "batch50", 50, 16),
    ("batch1000.c4", "HTTP batch of 1000, 4 connections", "batch1000", 1000, 4),
)
REQUEST_CAPS = {"single": 1_000_000, "batch50": 200_000, "batch1000": 20_000}


@dataclass(frozen=True)
class Bodies:
    path: Path
    checks_per_request: int  # a batch the engine cannot take in one request is split


def write_bodies(ds: Dataset, cfg: Settings, directory: Path):
    """One file per (engine, workload): one JSON request body per line. Returns
    ({engine: {kind: Bodies}}, {kind: [check groups]})."""
    directory.mkdir(parents=True, exist_ok=True)
    singles = dataset.workload(ds, cfg.single_bodies)
    groups_by_kind = {
        "single": [[c] for c in singles],
        "batch50": dataset.batches(ds, 50, cfg.batch50_bodies),
        "batch1000": dataset.batches(ds, 1000, cfg.batch1000_bodies),
    }
    files: dict[str, dict[str, Bodies]] = {"ours": {}, "Cerbos": {}}
    for kind, groups in groups_by_kind.items():
        ours_path = directory / f"ours-{kind}.jsonl"
        with ours_path.open("w", encoding="utf-8") as f:
            for group in groups:
                body = group[0].body() if kind == "single" else {"checks": [c.body() for c in group]}
                f.write(json.dumps(body, separators=(",", ":")) + "\n")
        files["ours"][kind] = Bodies(ours_path, len(groups[0]))
        cerbos_path = directory / f"cerbos-{kind}.jsonl"
        per_request = min(len(groups[0]), cerbos_peer.MAX_RESOURCES)
        with cerbos_path.open("w", encoding="utf-8") as f:
            for n, group in enumerate(groups):
                for part in range(0, len(group), per_request):
                    body = cerbos_peer.body(ds, group[part : part + per_request], f"b{n}.{part}")
                    f.write(json.dumps(body, separators=(",", ":")) + "\n")
        files["Cerbos"][kind] = Bodies(cerbos_path, per_request)
    return files, groups_by_kind


def measure_floor(
    results: report.Results, cfg: Settings, engine: str, wrk: str | None, health_url: str
) -> None:
    """The server alone: its health endpoint at 1 connection, before anything else ran."""
    label = "HTTP floor: GET health endpoint, 1 connection"
    try:
        r = http_load.run_load(wrk, health_url, None, 1, min(cfg.load_seconds, 5.0), None, 200_000)
        log(f"  {engine} {label}: {r.rps:,.0f} req/s, p50 {r.p50_ms:.2f} ms, p99 {r.p99_ms:.2f} ms")
        results.set("http.floor.rps", f"{label}: requests/s", "req/s", "higher", engine, r.rps)
        results.set("http.floor.p50", f"{label}: p50", "ms", "lower", engine, r.p50_ms)
    except Exception as exc:
        traceback.print_exc()
        results.note(f"{engine}: {label} failed: {exc}")


def run_loads(
    results: report.Results,
    cfg: Settings,
    engine: str,
    wrk: str | None,
    urls: dict[str, str],
    files: dict[str, Bodies],
    token: str | None,
    health_url: str,
    parallel: int,
    after_load=None,
) -> None:
    """Each HTTP workload in turn. `after_load()` (ours) returns what the load left to do
    after it ended, as (bytes, seconds to finish), and has waited for it to be done."""
    for key, label, kind, per_batch, conns in HTTP_WORKLOADS:
        needed = cfg.load_seconds + cfg.warmup_seconds + 5
        if elapsed() + needed > cfg.budget_seconds:
            results.note(
                f"{engine}: {label} skipped: the run's time budget "
                f"({cfg.budget_seconds:.0f} s) would be exceeded"
            )
            continue
        cap = REQUEST_CAPS[kind]
        bodies = files[kind]
        try:
            http_load.warm_up(urls[kind], bodies.path, cfg.warmup_seconds, token)
            r = http_load.run_load(wrk, urls[kind], bodies.path, conns, cfg.load_seconds, token, cap)
        except Exception as exc:
            traceback.print_exc()
            results.note(f"{engine}: {label} failed: {exc}")
            continue
        finally:
            if not http_load.drain(health_url, parallel):
                results.note(f"{engine}: the server was still busy 90 s after {label} ended")
        decisions = r.rps * bodies.checks_per_request
        log(
            f"  {engine} {label}: {r.requests} requests of {bodies.checks_per_request} in "
            f"{r.duration_s:.1f} s = {r.rps:,.0f} req/s, {decisions:,.0f} decisions/s, "
            f"p50 {r.p50_ms:.2f} ms, p99 {r.p99_ms:.2f} ms, errors {r.errors} ({r.tool})"
        )
        # requests/s counts whole batches: a batch sent as k requests counts 1/k per request
        results.set(
            f"http.{key}.rps", f"{label}: requests/s", "req/s", "higher", engine, decisions / per_batch
        )
        if per_batch > 1:
            results.set(
                f"http.{key}.dps", f"{label}: decisions/s", "decisions/s", "higher", engine, decisions
            )
        if r.requests:
            results.set(f"http.{key}.p50", f"{label}: p50", "ms", "lower", engine, r.p50_ms)
            results.set(f"http.{key}.p99", f"{label}: p99", "ms", "lower", engine, r.p99_ms)
        else:
            for q in ("p50", "p99"):
                results.set(f"http.{key}.{q}", f"{label}: {q}", "ms", "lower", engine, "none done")
            results.note(f"{engine}: {label}: no request completed within the {r.duration_s:.0f} s run")
        if after_load is not None and r.requests:
            behind, catch_up = after_load()
            sustained = decisions * r.duration_s / (r.duration_s + catch_up)
            results.set(
                f"http.{key}.sustained",
                f"{label}: decisions/s counting the audit import it left behind",
                "decisions/s",
                "higher",
                engine,
                sustained,
            )
            results.note(
                f"{engine}: {label}: when the load ended, {behind / 1e6:.1f} MB of allowed reads "
                f"(~{behind // 500:,}) waited in the read journal; imported {catch_up:.2f} s later."
            )
        if bodies.checks_per_request != per_batch:
            results.note(
                f"{engine}: {label}: the engine takes at most {bodies.checks_per_request} checks a request, "
                f"so each batch went as {per_batch // bodies.checks_per_request} requests; requests/s counts "
                f"whole batches, p50/p99 are per request of {bodies.checks_per_request}."
            )
        if r.requests >= 0.9 * cap:
            results.note(f"{engine}: {label}: reached its request cap ({cap:,}); its rate is understated")
        if r.errors:
            results.note(
                f"{engine}: {label}: {r.errors} errors (non-200 answers, socket errors "
                f"or timeouts) out of {r.requests} requests"
            )


def verify_ours(
    client: http_load.Client, token: str, groups: dict[str, list[list[Check]]]
) -> tuple[int, int]:
    """Send some of the workload through the API once; (checked, answers ≠ expected)."""
    checked = wrong = 0
    for group in groups["single"][:200]:
        c = group[0]
        status, body = client.post_json("/v1/decisions", c.body(), token)
        checked += 1
        wrong += int(status != 200 or body is None or body.get("allowed") != c.expected)
    for group in groups["batch50"][:10] + groups["batch1000"][:1]:
        status, body = client.post_json("/v1/decisions/batch", {"checks": [c.body() for c in group]}, token)
        if status != 200 or body is None:
            checked += len(group)
            wrong += len(group)
            continue
        for c, answer in zip(group, body["results"], strict=True):
            checked += 1
            wrong += int(answer.get("allowed") != c.expected)
    return checked, wrong


def verify_cerbos(
    client: http_load.Client, ds: Dataset, groups: dict[str, list[list[Check]]]
) -> tuple[int, int]:
    checked = wrong = 0
    big = [
        g[i : i + cerbos_peer.MAX_RESOURCES]
        for g in groups["batch1000"][:1]
        for i in range(0, len(g), cerbos_peer.MAX_RESOURCES)
    ]
    for group in groups["single"][:200] + groups["batch50"][:10] + big:
        status, body = client.post_json(cerbos_peer.CHECK_PATH, cerbos_peer.body(ds, group))
        if status != 200 or body is None:
            checked += len(group)
            wrong += len(group)
            continue
        for c, allowed in zip(group, cerbos_peer.answers(body, group), strict=True):
            checked += 1
            wrong += int(allowed != c.expected)
    return checked, wrong


def propagation(client: http_load.Client, ds: Dataset, secret: str, workers: int) -> dict[str, float]:
    """Through the API as a person would: an admin files a ticket, an engineer takes it
    and asks for access, the admin approves; then the admin removes the access. Each time,
    poll the decision API (any worker may answer) until the answer flips."""
    from service.auth import mint_token

    now = datetime.now(UTC)

    def token(sub: str) -> str:
        return mint_token(secret, sub, PROVIDER, timedelta(hours=2), now)

    engineer = ds.engineers[0]
    held = set(ds.granted(engineer))
    tenant = next(t for t in ds.tenants if t not in held)
    admin, client_token, eng_token = token(ds.admin_of(tenant)), token(CLIENT), token(engineer)
    check = {
        "principal": engineer,
        "tenant_id": tenant,
        "action": "read",
        "resource": f"diagnostics/{ds.categories[0]}",
    }

    def step(path: str, who: str, body: dict, expect: int) -> dict:
        status, answer = client.post_json(path, body, who)
        if status != expect:
            raise RuntimeError(f"POST {path}: {status} {answer}")
        return answer or {}

    def allowed() -> bool:
        status, answer = client.post_json("/v1/decisions", check, client_token)
        if status != 200 or answer is None:
            raise RuntimeError(f"POST /v1/decisions: {status} {answer}")
        return bool(answer["allowed"])

    def until(expected: bool, start: float) -> tuple[float, int, bool]:
        polls = 0
        while time.perf_counter() - start < 10.0:
            polls += 1
            if allowed() == expected:
                flipped = time.perf_counter()
                stable = all(allowed() == expected for _ in range(4 * workers))
                return (flipped - start) * 1000.0, polls, stable
        raise RuntimeError(f"decision did not become {expected} within 10 s")

    ticket = step("/v1/support-requests", admin, {"tenant_id": tenant, "title": "bench propagation"}, 201)
    step(f"/v1/support-requests/{ticket['id']}/assign", eng_token, {"engineer": engineer}, 200)
    request = step(
        "/v1/access-requests",
        eng_token,
        {"support_request_id": ticket["id"], "justification": "bench propagation"},
        201,
    )
    if allowed():
        raise RuntimeError("allowed before approval")
    t0 = time.perf_counter()
    approved = step(f"/v1/access-requests/{request['id']}/approve", admin, {"tenant_id": tenant}, 200)
    approve_ms = (time.perf_counter() - t0) * 1000.0
    if approved.get("status") != "approved":
        raise RuntimeError(f"approval left the request {approved.get('status')}")
    grant_ms, grant_polls, grant_stable = until(True, t0)
    t1 = time.perf_counter()
    step(f"/v1/access-requests/{request['id']}/revoke", admin, {}, 200)
    revoke_call_ms = (time.perf_counter() - t1) * 1000.0
    revoke_ms, revoke_polls, revoke_stable = until(False, t1)
    return {
        "approve_call_ms": approve_ms,
        "grant_ms": grant_ms,
        "grant_polls": grant_polls,
        "grant_stable": grant_stable,
        "revoke_call_ms": revoke_call_ms,
        "revoke_ms": revoke_ms,
        "revoke_polls": revoke_polls,
        "revoke_stable": revoke_stable,
    }


def run_http_ours(
    results: report.Results,
    cfg: Settings,
    ds: Dataset,
    db_path: Path,
    wrk: str | None,
    files: dict[str, Bodies],
    groups: dict[str, list[list[Check]]],
    secret: str,
) -> None:
    from service.auth import mint_token

    logs = WORK / "logs"
    (logs / "decisions.log").unlink(missing_ok=True)
    port = servers.free_port()
    base = f"http://127.0.0.1:{port}"
    kind = cfg.server
    log(f"HTTP ours: starting {servers.describe(kind, cfg.workers)} on {base} ({ds.size.name} data set) ...")
    (logs / "server.log").unlink(missing_ok=True)
    proc = servers.start_ours(kind, db_path, port, cfg.workers, secret, logs)
    spawned = time.perf_counter()
    try:
        ready = servers.wait_http_ok(base + "/readyz", proc, 60.0)
        if ready is None:
            tail = (logs / "server.log").read_text(errors="replace").splitlines()[-15:]
            results.note("ours (HTTP): the server did not become ready within 60 s: " + " / ".join(tail))
            return
        results.set(
            "ops.startup",
            "start-up to ready (spawn → ready endpoint 200)",
            "ms",
            "lower",
            "ours",
            ready * 1000.0,
        )
        deadline = time.perf_counter() + 20
        while len(servers.worker_pids(proc.pid)) < cfg.workers and time.perf_counter() < deadline:
            time.sleep(0.05)
        # The loads below measure whole indexes, not the start-up's per-engineer reads.
        if servers.wait_index_whole(base + "/metrics", proc, cfg.workers, 60.0):
            results.set(
                "ops.whole",
                "start-up to every worker's whole decision index (spawn → /metrics)",
                "ms",
                "lower",
                "ours",
                (time.perf_counter() - spawned) * 1000.0,
            )
        else:
            results.note("ours (HTTP): the workers' decision indexes were not whole within 60 s of ready")
        measure_floor(results, cfg, "ours", wrk, base + "/healthz")
        token = mint_token(secret, CLIENT, PROVIDER, timedelta(hours=3), datetime.now(UTC))
        client = http_load.Client(base)
        checked, wrong = verify_ours(client, token, groups)
        results.set(
            "check.http",
            "HTTP: answers ≠ expected (verification pass)",
            "checks",
            "",
            "ours",
            f"{wrong} of {checked}",
        )
        log(f"  ours verification: {wrong} wrong of {checked}")
        urls = {
            "single": base + "/v1/decisions",
            "batch50": base + "/v1/decisions/batch",
            "batch1000": base + "/v1/decisions/batch",
        }
        run_loads(
            results,
            cfg,
            "ours",
            wrk,
            urls,
            files,
            token,
            base + "/healthz",
            cfg.workers,
            after_load=lambda: import_catch_up(db_path),
        )
        rss = [servers.rss_mib(pid) or 0 for pid in servers.importer_pids(proc.pid)]
        results.note(f"ours: importer process RSS {', '.join(f'{r:.0f}' for r in rss) or '—'} MiB.")
        rss = [servers.rss_mib(pid) for pid in servers.worker_pids(proc.pid)]
        rss = [r for r in rss if r is not None]
        if rss:
            results.set("ops.rss", "memory: RSS per worker after the loads", "MiB", "lower", "ours", max(rss))
            results.note(
                f"ours: {len(rss)} worker processes, RSS "
                + ", ".join(f"{r:.1f}" for r in rss)
                + " MiB (the table shows the largest); "
                f"main process {servers.rss_mib(proc.pid) or 0:.1f} MiB"
            )
        try:
            p = propagation(client, ds, secret, cfg.workers)
            results.set(
                "ops.grant",
                "new grant in force after (from approve call, HTTP)",
                "ms",
                "lower",
                "ours",
                p["grant_ms"],
            )
            results.set(
                "ops.revoke",
                "revocation in force after (from revoke call, HTTP)",
                "ms",
                "lower",
                "ours",
                p["revoke_ms"],
            )
            results.note(
                f"ours: approve call {p['approve_call_ms']:.1f} ms, allowed on poll {p['grant_polls']}"
                f" ({'every worker agreed after' if p['grant_stable'] else 'workers DISAGREED after'});"
                f" revoke call {p['revoke_call_ms']:.1f} ms, denied on poll {p['revoke_polls']}"
                f" ({'every worker agreed after' if p['revoke_stable'] else 'workers DISAGREED after'})."
            )
        except Exception as exc:
            traceback.print_exc()
            results.note(f"ours: grant/revocation timing failed: {exc}")
        client.close()
    finally:
        servers.stop(proc)


def journal_backlog(db_path: Path) -> int:
    """Bytes of allowed reads in the read journal not yet imported into the audit log."""
    import sqlite3

    directory = Path(f"{db_path}.reads")
    sizes = {p.name: p.stat().st_size for p in directory.glob("*.jsonl")}
    db = sqlite3.connect(db_path, timeout=30)
    try:
        rows = db.execute("SELECT file, position FROM auditjournalposition").fetchall()
    finally:
        db.close()
    # Rows are keyed "<journal directory key>:<file name>" (service/read_journal.py); the
    # bench's database has one journal directory.
    positions = {key.rsplit(":", 1)[-1]: position for key, position in rows}
    return sum(max(0, size - positions.get(name, 0)) for name, size in sizes.items())


def import_catch_up(db_path: Path, limit_s: float = 120.0) -> tuple[int, float]:
    """(bytes of allowed reads not yet in the audit table, seconds until they were):
    the reads were durable in the read journal all along, but importing them is work the
    load caused, so the sustained figures count it."""
    start, behind = time.perf_counter(), journal_backlog(db_path)
    while journal_backlog(db_path) and time.perf_counter() - start < limit_s:
        time.sleep(0.02)
    return behind, (time.perf_counter() - start) if behind else 0.0


def run_http_cerbos(
    results: report.Results,
    cfg: Settings,
    ds: Dataset,
    wrk: str | None,
    files: dict[str, Bodies],
    groups: dict[str, list[list[Check]]],
    binary: Path,
) -> None:
    run_dir = WORK / "cerbos-run"
    http_port, grpc_port, debug_port = servers.free_port(), servers.free_port(), servers.free_port()
    config = cerbos_peer.write_config(run_dir, ds.categories, http_port, grpc_port)
    base = f"http://127.0.0.1:{http_port}"
    log(f"HTTP Cerbos: starting {binary.name} on {base} ...")
    (WORK / "logs" / "cerbos.log").unlink(missing_ok=True)
    proc = cerbos_peer.start(binary, config, debug_port, WORK / "logs" / "cerbos.log")
    try:
        ready = cerbos_peer.wait_ready(base, proc, 60.0)
        if ready is None:
            tail = (WORK / "logs" / "cerbos.log").read_text(errors="replace").splitlines()[-10:]
            results.skipped["Cerbos"] = "the PDP did not become ready within 60 s: " + " / ".join(tail)
            return
        results.set(
            "ops.startup",
            "start-up to ready (spawn → ready endpoint 200)",
            "ms",
            "lower",
            "Cerbos",
            ready * 1000.0,
        )
        measure_floor(results, cfg, "Cerbos", wrk, base + cerbos_peer.HEALTH_PATH)
        client = http_load.Client(base)
        checked, wrong = verify_cerbos(client, ds, groups)
        client.close()
        results.set(
            "check.http",
            "HTTP: answers ≠ expected (verification pass)",
            "checks",
            "",
            "Cerbos",
            f"{wrong} of {checked}",
        )
        log(f"  Cerbos verification: {wrong} wrong of {checked}")
        url = base + cerbos_peer.CHECK_PATH
        urls = {"single": url, "batch50": url, "batch1000": url}
        run_loads(results, cfg, "Cerbos", wrk, urls, files, None, base + cerbos_peer.HEALTH_PATH, 2)
        rss = servers.rss_mib(proc.pid)
        if rss is not None:
            results.set("ops.rss", "memory: RSS per worker after the loads", "MiB", "lower", "Cerbos", rss)
        results.set(
            "ops.grant", "new grant in force after (from approve call, HTTP)", "ms", "lower", "Cerbos", "n/a¹"
        )
        results.set(
            "ops.revoke",
            "revocation in force after (from revoke call, HTTP)",
            "ms",
            "lower",
            "Cerbos",
            "n/a¹",
        )
        results.note(
            "¹ Cerbos keeps no grant state: the caller sends each engineer's grants with every "
            "request, so a change is in force as soon as the caller's own store has it."
        )
    finally:
        servers.stop(proc)


# --- the run ---------------------------------------------------------------------------


def machine_info(wrk: str | None, cfg: Settings, cerbos_binary: Path | None) -> list[tuple[str, str]]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from importlib.metadata import version

    info = [
        ("when", datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")),
        ("service code", _commit()),
        ("mode", "--quick (small data set, short loads)" if cfg.quick else "full"),
        ("cores (nproc)", str(os.cpu_count())),
        ("CPU", cpu),
        ("memory", _mem_total()),
        ("OS", f"{platform.system()} {platform.release()}"),
        ("Python", platform.python_version()),
        (
            "our server",
            f"{servers.describe(cfg.server, cfg.workers)}, peewee {version('peewee')}",
        ),
        ("load generator", _wrk_version(wrk) if wrk else "bounded Python client (wrk not installed)"),
        ("pycasbin", _safe(casbin_peer.version)),
        ("cedarpy", _safe(cedar_peer.version)),
        ("Cerbos", cerbos_peer.version(cerbos_binary) if cerbos_binary else "not installed"),
    ]
    return info


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def cpu_ticks() -> list[int] | None:
    """The machine's CPU time so far (/proc/stat): user nice system idle iowait irq softirq steal."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:9]
        return [int(f) for f in fields]
    except (OSError, ValueError, IndexError):
        return None


def cpu_shares(before: list[int] | None, after: list[int] | None) -> tuple[float, float] | None:
    """The share of the CPU time between two samples that was busy, and the share stolen
    by the hypervisor for other virtual machines on the host. Unlike the load average,
    which still counts a run that ended a minute ago, this is the machine right then."""
    if before is None or after is None:
        return None
    spent = [b - a for a, b in zip(before, after, strict=True)]
    total = sum(spent)
    if total <= 0:
        return None
    idle = spent[3] + spent[4]
    return (total - idle) / total, spent[7] / total


def _commit() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "log", "-1", "--format=%h %s"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "-uno", "--", "service", "models", "policies"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    if head.returncode != 0:
        return "? (not a git checkout)"
    text = head.stdout.strip()
    if len(text) > 70:
        text = text[:70].rsplit(" ", 1)[0] + " …"
    return text + (" + uncommitted changes in service/, models/ or policies/" if dirty.stdout.strip() else "")


def _safe(fn) -> str:
    try:
        return fn()
    except Exception:
        return "not installed"


def _mem_total() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "?"


def _wrk_version(wrk: str) -> str:
    try:
        out = subprocess.run([wrk, "--version"], capture_output=True, text=True, timeout=10)
        return (out.stdout or out.stderr).splitlines()[0].strip()
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return "wrk"


def targets(results: report.Results, cfg: Settings) -> None:
    def ratio(key: str, peer: str):
        ours, theirs = results.get(key, "ours"), results.get(key, peer)
        if isinstance(ours, (int, float)) and isinstance(theirs, (int, float)) and theirs:
            return ours / theirs
        return None

    def status(value, goal, higher=True) -> str:
        if value is None:
            return "not measured"
        return "met" if (value >= goal if higher else value <= goal) else "not met"

    def sustained(key: str, cerbos_figure: str, goal: float) -> None:
        """The target again, with our figure counting the audit import the load left behind."""
        ours, theirs = (
            results.get(f"{key}.sustained", "ours"),
            results.get(f"{key}.{cerbos_figure}", "Cerbos"),
        )
        if isinstance(ours, float) and isinstance(theirs, (int, float)) and theirs:
            r = ours / theirs
            results.targets.append(
                ("… the same, counting the audit import it left behind", f"{r:.2f}×", status(r, goal))
            )

    size = cfg.sizes[-1]
    r = ratio("http.single.c16.rps", "Cerbos")
    results.targets.append(
        (
            "HTTP single checks at 16 connections ≥ 2× Cerbos req/s",
            f"{r:.2f}×" if r is not None else "—",
            status(r, 2.0),
        )
    )
    sustained("http.single.c16", "rps", 2.0)
    p99, theirs = results.get("http.single.c16.p99", "ours"), results.get("http.single.c16.p99", "Cerbos")
    if isinstance(p99, float) and isinstance(theirs, float):
        results.targets.append(
            (
                "… p99 no worse than Cerbos's",
                f"{p99:.2f} vs {theirs:.2f} ms",
                status(p99, theirs, higher=False),
            )
        )
    for key, goal in (("p50", 0.5), ("p99", 2.0)):
        value = results.get(f"http.single.c1.{key}", "ours")
        results.targets.append(
            (
                f"HTTP single checks at 1 connection: {key} ≤ {goal} ms",
                f"{value:.2f} ms" if isinstance(value, float) else "—",
                status(value if isinstance(value, float) else None, goal, higher=False),
            )
        )
    r = ratio("http.batch50.c16.dps", "Cerbos")
    results.targets.append(
        ("HTTP batches of 50 ≥ 4× Cerbos decisions/s", f"{r:.2f}×" if r is not None else "—", status(r, 4.0))
    )
    sustained("http.batch50.c16", "dps", 4.0)
    rss = results.get("ops.rss", "ours")
    results.targets.append(
        (
            "≤ 150 MB RSS per worker",
            f"{rss:.0f} MiB" if isinstance(rss, float) else "—",
            status(rss * 1.048576 if isinstance(rss, float) else None, 150.0, higher=False),
        )
    )
    ready = results.get("ops.startup", "ours")
    results.targets.append(
        (
            "ready in ≤ 2 s",
            f"{ready / 1000:.2f} s" if isinstance(ready, float) else "—",
            status(ready if isinstance(ready, float) else None, 2000.0, higher=False),
        )
    )
    for key, what in (("grant", "a new grant"), ("revoke", "a revocation")):
        value = results.get(f"inproc.{size}.{key}", "ours")
        results.targets.append(
            (
                f"{what} in force in ≤ 1 ms of engine time ({size})",
                f"{value:.2f} ms" if isinstance(value, float) else "—",
                status(value if isinstance(value, float) else None, 1.0, higher=False),
            )
        )
    large, small = (
        results.get(f"inproc.{size}.warm.p50", "ours"),
        results.get(f"inproc.{cfg.sizes[0]}.warm.p50", "ours"),
    )
    paired = results.get(FLAT_KEY, "ours")
    if isinstance(paired, float):
        apart = f"; {large / small:.2f}× between the warm rows" if isinstance(large, float) and small else ""
        results.targets.append(
            (
                f"decision time flat: {size} p50 within 1.2× of {cfg.sizes[0]} (interleaved chunks)",
                f"{paired:.2f}×{apart}",
                status(paired, 1.2, higher=False),
            )
        )
    r = ratio(f"inproc.{size}.warm.dps", "cedarpy")
    results.targets.append(
        (
            f"in-process ({size}, warm) ≥ 2× cedarpy decisions/s",
            f"{r:.2f}×" if r is not None else "—",
            status(r, 2.0),
        )
    )
    p99 = results.get(f"inproc.{size}.warm.p99", "ours")
    results.targets.append(
        (
            f"in-process ({size}, warm) p99 ≤ 50 µs",
            f"{p99:.1f} µs" if isinstance(p99, float) else "—",
            status(p99 if isinstance(p99, float) else None, 50.0, higher=False),
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small data set only, 2 s loads (smoke test)")
    parser.add_argument("--duration", type=float, help="seconds per HTTP load run (full mode; default 10)")
    parser.add_argument("--workers", type=int, help="server workers (default: nproc, as `make serve`)")
    parser.add_argument(
        "--server",
        choices=("serve", "gunicorn"),
        help="serve = `python -m service.serve`, what `make serve` runs (default when service/serve.py "
        'exists); gunicorn = `gunicorn "service:create_app()"`',
    )
    parser.add_argument("--budget", type=float, help="time budget of the whole run in seconds")
    parser.add_argument("--no-http", action="store_true", help="in-process measurements only")
    parser.add_argument(
        "--no-install",
        action="store_true",
        help="do not try to install wrk (apt-get) or Cerbos (npm) when missing",
    )
    parser.add_argument("--output", type=Path, default=RESULTS_FILE, help="where to write the table")
    parser.add_argument("--note", action="append", default=[], help="a note to print with the results")
    parser.add_argument(
        "--keep-work",
        action="store_true",
        help="keep the databases, request bodies and decision log in bench/.work (~1.7 GiB after a full run)",
    )
    args = parser.parse_args(argv)
    cfg = settings(args)
    load_at_start, ticks_before = load_average(), cpu_ticks()
    time.sleep(1.0)
    ticks_at_start = cpu_ticks()
    cpu_at_start = cpu_shares(ticks_before, ticks_at_start)
    for sub in ("data", "logs", "bodies"):
        (WORK / sub).mkdir(parents=True, exist_ok=True)

    results = report.Results()
    secret = secrets.token_urlsafe(32)
    peers_ok: dict[str, bool] = {}
    for name, module in (("pycasbin", casbin_peer), ("cedarpy", cedar_peer)):
        reason = module.available()
        peers_ok[name] = reason is None
        if reason:
            results.skipped[name] = reason
            log(f"SKIP {name}: {reason}")

    wrk = None
    cerbos_binary = None
    if not args.no_http:
        wrk = http_load.ensure_wrk(log, allow_install=not args.no_install)
        if wrk is None:
            results.note(
                "wrk is not installed (apt-get install wrk): HTTP loads ran with the bounded "
                "Python client, which is itself CPU-bound; its figures are lower bounds."
            )
            log("wrk not available: using the bounded Python load generator")
        if args.no_install and not cerbos_peer.binary_path(WORK).is_file():
            results.skipped["Cerbos"] = "not installed and --no-install given"
        else:
            cerbos_binary, reason = cerbos_peer.ensure_installed(WORK, log)
            if reason:
                results.skipped["Cerbos"] = reason
                log(f"SKIP Cerbos: {reason}")
    else:
        results.skipped["Cerbos"] = "--no-http: HTTP measurements not run"
    results.machine = machine_info(wrk, cfg, cerbos_binary)

    datasets: dict[str, tuple[Dataset, Path]] = {}
    results.section("In-process decisions (same seeded workload for every engine)")
    for size in cfg.sizes:
        t0 = time.perf_counter()
        ds = dataset.generate(SIZES[size])
        db_path = WORK / "data" / f"{size}.db"
        counts = dataset.load_into_database(ds, db_path)
        took = time.perf_counter() - t0
        log(
            f"data set {size}: {len(ds.tenants)} tenants, {len(ds.engineers)} engineers, "
            f"{len(ds.grants)} grants; generated and loaded into {db_path.name} in {took:.1f} s {counts}"
        )
        results.note(
            f"data set {size}: {len(ds.tenants):,} tenants, {len(ds.engineers):,} engineers, "
            f"{len(ds.grants):,} live grants (generated and bulk-loaded into SQLite in {took:.1f} s)"
        )
        datasets[size] = (ds, db_path)
        run_inprocess(results, cfg, ds, db_path, secret, peers_ok)
    run_flatness(results, cfg, datasets, secret)

    if not args.no_http:
        ds, db_path = datasets[cfg.http_size]
        files, groups = write_bodies(ds, cfg, WORK / "bodies")
        results.section(f"HTTP ({cfg.http_size} data set; bounded loads of {cfg.load_seconds:.0f} s each)")
        run_http_ours(results, cfg, ds, db_path, wrk, files["ours"], groups, secret)
        if cerbos_binary is not None and "Cerbos" not in results.skipped:
            run_http_cerbos(results, cfg, ds, wrk, files["Cerbos"], groups, cerbos_binary)
        results.section("Operations")
        for key in ("ops.startup", "ops.whole", "ops.rss", "ops.grant", "ops.revoke"):
            _move_to_last_section(results, key)
    results.section("Correctness")
    for key in [k for k in results.rows if k.startswith("check.")]:
        _move_to_last_section(results, key)

    load_at_end = load_average()
    results.machine.append(("load average (1/5/15 min)", f"at start {load_at_start}, at end {load_at_end}"))
    cpu_in_run = cpu_shares(ticks_at_start, cpu_ticks())
    if cpu_at_start is not None:
        busy, steal = cpu_at_start
        results.machine.append(
            ("CPU in the second before the run", f"{busy:.0%} busy, of which {steal:.0%} stolen by other VMs")
        )
    if cpu_in_run is not None:
        results.machine.append(("CPU stolen by other VMs during the run", f"{cpu_in_run[1]:.1%}"))
        if busy > 0.25 or steal > 0.05:
            results.note(
                f"The machine was not idle when this run started ({busy:.0%} of its CPU busy, "
                f"{steal:.0%} stolen by other virtual machines, in the second before): figures "
                "are lower and noisier than on an idle machine."
            )
    _static_notes(results, cfg)
    for text in args.note:
        results.note(text)
    targets(results, cfg)
    text = report.render(results, "Support Access benchmark results")
    took = elapsed()
    text += f"\nWhole run: {took:.0f} s (`python -m bench.run{' --quick' if cfg.quick else ''}`).\n"
    print()
    print(text)
    args.output.write_text(text, encoding="utf-8")
    log(f"wrote {args.output}")
    if not args.keep_work:
        clean_work()
    return 0


def clean_work() -> None:
    """Remove what the next run makes anew anyway: databases (with the audit events the
    HTTP loads wrote), request bodies, the decision log. The Cerbos install stays."""
    removed = 0
    for sub in ("data", "bodies"):
        for path in (WORK / sub).glob("*"):
            if path.is_file():
                removed += path.stat().st_size
                path.unlink()
    log_file = WORK / "logs" / "decisions.log"
    if log_file.exists():
        removed += log_file.stat().st_size
        log_file.unlink()
    log(f"removed {removed / 2**20:,.0f} MiB of work files under {WORK} (--keep-work keeps them)")


def _move_to_last_section(results: report.Results, key: str) -> None:
    if key not in results.rows:
        return
    for _, keys in results.sections:
        if key in keys:
            keys.remove(key)
    results.sections[-1][1].append(key)


def _static_notes(results: report.Results, cfg: Settings) -> None:
    results.note(
        "Workload: a seeded mix of checks — 70% reads in a tenant where the engineer holds a live grant "
        "(allow), 10% reads in another tenant, 10% another action (write/delete/update), 10% a category "
        "the policy does not list (deny). Every engine gets the same checks; batches hold checks of one "
        "principal (Cerbos' CheckResources takes one principal per request)."
    )
    results.note(
        "In-process: each pass is bounded by "
        f"{cfg.inprocess_decisions:,} decisions or {cfg.inprocess_seconds:.0f} s; cold = the first pass "
        f"after the engine was built, warm = the same checks {WARM_PASSES} times more, each figure the "
        "median of those passes (answers ≠ expected counts every pass). Ours in-process is "
        "bench/engines/ours.py: the decision call the API makes, without HTTP, authentication, the "
        "decision log and the audit write of allowed reads."
    )
    results.note(
        "HTTP: ours is served as `make serve` serves it (see *our server* above): every allowed "
        "read is committed to the read journal and every decision written to the decision log before "
        "the answer, and the importer process moves the reads into the hash-chained audit log during "
        "the loads (its work is in the figures); the floor row is the health endpoint (server and "
        "framework cost alone); Cerbos is the "
        "PDP binary with a disk policy store, each engineer's grants sent as a principal attribute. "
        "Each load runs after a short warm-up; the load generator shares the machine's cores with the "
        "server under test."
    )


if __name__ == "__main__":
    sys.exit(main())
