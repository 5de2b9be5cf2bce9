"""Bounded HTTP load: wrk (Debian's package) with bench/wrk/post.lua, or, when wrk is not
installed, a bounded Python client (threads, one keep-alive connection each).

Every run stops at its duration and at its request cap, whichever comes first.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

LUA = Path(__file__).with_name("wrk") / "post.lua"


@dataclass
class LoadResult:
    tool: str
    connections: int
    duration_s: float
    requests: int
    errors: int  # non-2xx answers, socket errors and timeouts
    p50_ms: float
    p99_ms: float
    answered: tuple[int, ...] = ()  # answers per connection (the Python client only)

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), int(round(q / 100.0 * len(sorted_values) + 0.5))))
    return sorted_values[rank - 1]


def wrk_path() -> str | None:
    return shutil.which("wrk")


def ensure_wrk(log, allow_install: bool) -> str | None:
    """wrk's path; tries `apt-get install -y wrk` (as root) when missing and allowed."""
    found = wrk_path()
    if found or not allow_install:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None
    log("wrk not found: trying apt-get install -y wrk ...")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for attempt in (
        ["apt-get", "install", "-y", "-qq", "wrk"],
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "wrk"],
    ):
        try:
            subprocess.run(attempt, capture_output=True, timeout=180, env=env)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if wrk_path():
            return wrk_path()
    return wrk_path()


def run_wrk(
    wrk: str,
    url: str,
    bodies: Path | None,
    connections: int,
    duration_s: float,
    token: str | None,
    max_requests: int,
    timeout_s: float = 30.0,
) -> LoadResult:
    threads = max(1, min(connections, os.cpu_count() or 1))
    per_thread_cap = max(1, max_requests // threads)
    command = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        f"--timeout={int(timeout_s)}s",
        "-s",
        str(LUA),
        url,
        "--",
        str(bodies) if bodies else "GET",
        token or "-",
        str(per_thread_cap),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration_s + timeout_s + 30)
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCHJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary (exit {done.returncode}): {done.stderr or done.stdout}")
    data = json.loads(line[len("BENCHJSON ") :])
    errors = sum(
        data[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
    )
    return LoadResult(
        tool="wrk",
        connections=connections,
        duration_s=data["duration_us"] / 1e6,
        requests=data["requests"],
        errors=errors,
        p50_ms=data["p50_us"] / 1000.0,
        p99_ms=data["p99_us"] / 1000.0,
    )


class Client:
    """A small keep-alive JSON client (reconnects when the server closes)."""

    def __init__(self, base_url: str, timeout: float = 30.0):
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname, parts.port
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        return self.conn

    def request(self, method: str, path: str, body: bytes | None, headers: dict) -> tuple[int, bytes]:
        for attempt in (0, 1):
            conn = self._connection()
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                if response.getheader("Connection", "").lower() == "close" or response.will_close:
                    conn.close()
                    self.conn = None
                return response.status, data
            except (http.client.HTTPException, ConnectionError, OSError):
                conn.close()
                self.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def post_json(self, path: str, payload, token: str | None = None) -> tuple[int, dict | None]:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        status, data = self.request("POST", path, json.dumps(payload).encode(), headers)
        try:
            return status, json.loads(data) if data else None
        except ValueError:
            return status, None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def run_python(
    url: str,
    bodies: Path | None,
    connections: int,
    duration_s: float,
    token: str | None,
    max_requests: int,
) -> LoadResult:
    """The fallback load generator: `connections` threads, each its own connection."""
    lines = (
        [line.encode() for line in bodies.read_text(encoding="utf-8").splitlines() if line]
        if bodies
        else [b""]
    )
    method = "POST" if bodies else "GET"
    parts = urlsplit(url)
    base = f"{parts.scheme}://{parts.netloc}"
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    per_thread = max(1, max_requests // connections)
    latencies: list[list[float]] = [[] for _ in range(connections)]
    errors = [0] * connections
    start = time.perf_counter()
    deadline = start + duration_s

    def worker(n: int) -> None:
        client = Client(base)
        i = (n * 7919) % len(lines)
        mine = latencies[n]
        try:
            while len(mine) < per_thread and time.perf_counter() < deadline:
                i = (i + 1) % len(lines)
                t0 = time.perf_counter()
                try:
                    status, _ = client.request(method, parts.path, lines[i] or None, headers)
                except (http.client.HTTPException, OSError):
                    errors[n] += 1
                    continue
                mine.append(time.perf_counter() - t0)
                if status != 200:
                    errors[n] += 1
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(duration_s + 60)
    elapsed = time.perf_counter() - start
    merged = sorted(x for per in latencies for x in per)
    return LoadResult(
        tool="python",
        connections=connections,
        duration_s=elapsed,
        requests=len(merged),
        errors=sum(errors),
        p50_ms=percentile(merged, 50) * 1000.0,
        p99_ms=percentile(merged, 99) * 1000.0,
        answered=tuple(len(per) for per in latencies),
    )


def run_load(
    wrk: str | None,
    url: str,
    bodies: Path | None,
    connections: int,
    duration_s: float,
    token: str | None,
    max_requests: int,
) -> LoadResult:
    if wrk:
        return run_wrk(wrk, url, bodies, connections, duration_s, token, max_requests)
    return run_python(url, bodies, connections, duration_s, token, max_requests)


def warm_up(url: str, bodies: Path, seconds: float, token: str | None, max_requests: int = 200) -> int:
    """Sequential requests until `seconds` have passed (at least one): each is waited
    for, so none is left running on the server when the measured run starts."""
    parts = urlsplit(url)
    client = Client(f"{parts.scheme}://{parts.netloc}", timeout=120.0)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    sent = 0
    deadline = time.perf_counter() + seconds
    try:
        with bodies.open("rb") as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                client.request("POST", parts.path, line, headers)
                sent += 1
                if sent >= max_requests or time.perf_counter() >= deadline:
                    break
    finally:
        client.close()
    return sent


def drain(health_url: str, parallel: int, timeout: float = 90.0, quick_s: float = 0.25) -> bool:
    """Wait until the server has finished what an ended load left queued: `parallel`
    simultaneous GETs of `health_url` (one per worker) all answer within `quick_s`,
    three rounds in a row. Bounded by `timeout`."""
    parts = urlsplit(health_url)
    deadline = time.perf_counter() + timeout
    good = 0

    def one(out: list, n: int) -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        t0 = time.perf_counter()
        try:
            conn.request("GET", parts.path)
            ok = conn.getresponse().status == 200
        except (http.client.HTTPException, OSError):
            ok = False
        finally:
            conn.close()
        out[n] = ok and (time.perf_counter() - t0) < quick_s

    while time.perf_counter() < deadline:
        out = [False] * parallel
        threads = [threading.Thread(target=one, args=(out, n), daemon=True) for n in range(parallel)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(0.1, deadline - time.perf_counter()))
        good = good + 1 if all(out) else 0
        if good >= 3:
            return True
        time.sleep(0.05)
    return False
