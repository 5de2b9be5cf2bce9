"""`python -m bench.change_cost` (`make bench-changes`): how long a new grant and its
revocation take to be in force in our engine, on the large data set.

`make bench` reports the median of a few changes; this takes more of them (default 15,
`--changes N`) and prints each, to compare two versions of the code side by side (run it
in a checkout of each, alternately). Engine time as `make bench` counts it
(bench/run.py `effect_time`): from the committed change to the first decision that
reflects it, both included; the workflow's own database work is not counted. About two
minutes, most of it loading the data set (kept in bench/.work/changes between runs).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import dataset  # noqa: E402
from bench.dataset import SIZES  # noqa: E402
from bench.engines import ours  # noqa: E402
from bench.run import effect_time  # noqa: E402

WORK = REPO / "bench" / ".work" / "changes"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=15, help="grants (each then revoked) to time")
    args = parser.parse_args(argv)
    WORK.mkdir(parents=True, exist_ok=True)
    ds = dataset.generate(SIZES["large"])
    db_path = WORK / "large.db"
    if not db_path.exists():
        dataset.load_into_database(ds, db_path)
    engine = ours.open_engine(db_path, WORK / "logs", "change-cost-" + "x" * 32)
    try:
        effects = [effect_time(engine, ds) for _ in range(args.changes)]
    finally:
        engine.close()
    timed = [e for e in effects if e is not None]
    if len(timed) != len(effects):
        sys.exit(f"{len(effects) - len(timed)} of {len(effects)} changes were not in force when asked")
    grant = statistics.median(g for g, _ in timed)
    revoke = statistics.median(r for _, r in timed)
    print(f"large set, {len(timed)} changes, medians: new grant in force after {grant:.3f} ms,", end=" ")
    print(f"revocation {revoke:.3f} ms")
    print("each (grant / revocation, ms): " + ", ".join(f"{g:.2f} / {r:.2f}" for g, r in timed))


if __name__ == "__main__":
    main()
