"""`python -m bench.lookup_cost` (`make bench-lookups`): how much of a large-set decision's
extra time is the index's dictionary reads.

Times, per check of the in-process workload of `make bench` (p50, best of 3 passes of
100,000 checks), on the small and the large data set:
- the whole decision, as `make bench` times it (bench/engines/ours.py);
- the index reads alone: the tenant, the principal's roles, its grants and
  advanced-diagnostics tickets in the tenant, the grant's fields;
- the grant lookup alone: the two dictionaries from engineer to grant;
- an empty call (the loop's own cost).
About a minute. These are times, so run it on an idle machine (README "Performance").
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import dataset  # noqa: E402
from bench.dataset import SIZES, Check  # noqa: E402

WORK = REPO / "bench" / ".work" / "lookups"
CHECKS = 100_000
WARM_UP = 20_000
PASSES = 3
EMPTY: dict = {}


def index_reads(index, c: Check) -> bool:
    """What a decision reads of the index for one check (service/decisions.py)."""
    grant = index.grants.get(c.principal, EMPTY).get(c.tenant_id)
    known = c.tenant_id in index.tenants
    roles = index.roles.get(c.principal)
    advanced = index.advanced.get(c.principal, EMPTY).get(c.tenant_id)
    live = grant is not None and float(grant) > 0 and grant.status == "approved" and grant.next_grant is None
    return known and bool(roles) and (live or bool(advanced))


def grant_lookup(index, c: Check) -> bool:
    return index.grants.get(c.principal, EMPTY).get(c.tenant_id) is not None


def p50_us(call: Callable[[Check], object], checks: list[Check]) -> float:
    """The best p50 of a few passes: the least disturbed by other work on the machine."""
    clock = time.perf_counter_ns
    best = float("inf")
    for _ in range(PASSES):
        latencies = []
        for c in checks:
            start = clock()
            call(c)
            latencies.append(clock() - start)
        latencies.sort()
        best = min(best, latencies[len(latencies) // 2] / 1000.0)
    return best


def measure(size: str) -> dict[str, float]:
    from bench.engines.ours import open_engine

    ds = dataset.generate(SIZES[size])
    db_path = WORK / f"{size}.db"
    dataset.load_into_database(ds, db_path)
    engine = open_engine(db_path, WORK, "lookup-cost-secret-" + "x" * 16)
    try:
        index = engine._index
        checks = dataset.workload(ds, CHECKS)
        for c in checks[:WARM_UP]:
            engine.check(c)
        calls = {
            "whole decision": engine.check,
            "index reads": lambda c: index_reads(index, c),
            "grant lookup (two dictionaries)": lambda c: grant_lookup(index, c),
            "empty call": lambda c: c.principal is None,
        }
        return {name: p50_us(call, checks) for name, call in calls.items()}
    finally:
        engine.close()


def main() -> int:
    WORK.mkdir(parents=True, exist_ok=True)
    try:
        small, large = measure("small"), measure("large")
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
    print(f"\np50 per check, µs (best of {PASSES} passes of {CHECKS:,} checks):\n")
    print("| step | small | large | large − small | large / small |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name in small:
        s, b = small[name], large[name]
        print(f"| {name} | {s:.3f} | {b:.3f} | {b - s:+.3f} | {b / s:.2f}× |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
