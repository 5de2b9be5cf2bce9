"""`python -m bench.line_profile` (`make bench-profile`): where a large-set decision
spends its extra time, line by line, as the py-spy sampling profiler sees it.

Runs our in-process decision workload (bench/engines/ours.py, as `make bench` times it)
on the small and the large data set, each in a child process recorded by py-spy, in
alternating rounds so that both sets meet the host's same moments. py-spy samples
without stopping the child (--nonblocking), so the profile does not disturb the caches it
is about. Each sample taken while the child decides is charged to the innermost line of
this repository's code on its stack (a call into the standard library or a C function is
charged to the line that made it). A line's µs per decision is its share of those
samples times the child's measured time per decision.

It prints the whole decision on both sets and the lines whose time differs most between
them. Times, so run it on an idle machine; `make bench-cache` gives the same question's
answer in counts (README "Performance", decision time flat). About a minute.
"""

from __future__ import annotations

import argparse
import json
import linecache
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import dataset  # noqa: E402
from bench.dataset import SIZES  # noqa: E402

WORK = REPO / "bench" / ".work" / "line-profile"
WORKLOAD = 100_000  # checks generated per child, decided in a cycle
WARM_UP = 20_000
RATE = 2_000  # py-spy samples per second
LOOP = "profiled_decisions"  # the child's deciding function: only its samples count
FRAME = re.compile(r"^(?P<function>.*) \((?P<file>.*):(?P<line>\d+)\)$")
LINES_SHOWN = 12

Line = tuple[str, int, str]  # (path relative to the repository, line number, function)


def profiled_decisions(check, checks: list, seconds: float) -> int:
    """Decide `checks` in a cycle for `seconds`; the number of decisions made. The clock
    is read once per 1,000 decisions, not per decision."""
    deadline = time.perf_counter() + seconds
    made = 0
    while time.perf_counter() < deadline:
        for start in range(0, len(checks), 1_000):
            for c in checks[start : start + 1_000]:
                check(c)
            made += min(1_000, len(checks) - start)
            if time.perf_counter() >= deadline:
                break
    return made


def run_child(size: str, seconds: float, db_path: Path, report: Path) -> None:
    """The child: load our engine on `db_path`, warm it up, decide for `seconds`, and write
    how many decisions it made in how long to `report`."""
    from bench.engines.ours import open_engine

    ds = dataset.generate(SIZES[size])
    engine = open_engine(db_path, WORK, "line-profile-secret-" + "x" * 16)
    try:
        checks = dataset.workload(ds, WORKLOAD)
        for c in checks[:WARM_UP]:
            engine.check(c)
        started = time.perf_counter()
        made = profiled_decisions(engine.check, checks, seconds)
        elapsed = time.perf_counter() - started
    finally:
        engine.close()
    report.write_text(json.dumps({"decisions": made, "seconds": elapsed}))


def ours(path: str) -> str | None:
    """`path` relative to the repository if it is this repository's code, else None."""
    try:
        relative = Path(path).resolve().relative_to(REPO)
    except ValueError:
        return None
    return None if relative.parts[0].startswith(".") else str(relative)  # not .venv


def charged_samples(raw: str) -> Counter[Line]:
    """py-spy's raw output (one stack and its sample count per line) -> samples per line
    of our code, counting only the stacks inside LOOP."""
    samples: Counter[Line] = Counter()
    for entry in raw.splitlines():
        stack, _, count = entry.rpartition(" ")
        frames = [FRAME.match(frame) for frame in stack.split(";")]
        if not any(frame and frame["function"] == LOOP for frame in frames):
            continue
        for frame in reversed(frames):
            relative = frame and ours(frame["file"])
            if relative:
                samples[(relative, int(frame["line"]), frame["function"])] += int(count)
                break
    return samples


def py_spy() -> str | None:
    """py-spy's path: on PATH, or beside this interpreter (the virtualenv's bin/)."""
    beside = Path(sys.executable).parent / "py-spy"
    return shutil.which("py-spy") or (str(beside) if beside.exists() else None)


def profile_once(profiler: str, size: str, seconds: float, db_path: Path) -> tuple[Counter[Line], int, float]:
    raw_path, report = WORK / f"{size}.raw", WORK / f"{size}.json"
    command = [
        profiler,
        "record",
        "--rate",
        str(RATE),
        "--nonblocking",
        "--full-filenames",
        "--format",
        "raw",
        "--output",
        str(raw_path),
        "--",
        sys.executable,
        "-m",
        "bench.line_profile",
        "--child",
        size,
        str(seconds),
        str(db_path),
        str(report),
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not report.exists():
        raise RuntimeError(f"py-spy run failed ({size}):\n{done.stderr[-2000:]}")
    measured = json.loads(report.read_text())
    report.unlink()
    return charged_samples(raw_path.read_text()), measured["decisions"], measured["seconds"]


def source(line: Line) -> str:
    text = linecache.getline(str(REPO / line[0]), line[1]).strip()
    return text if len(text) <= 70 else text[:67] + "..."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="deciding time of one child run")
    parser.add_argument("--rounds", type=int, default=4, help="child runs per data set, alternating")
    child = ("SIZE", "SECONDS", "DB", "REPORT")
    parser.add_argument("--child", nargs=len(child), metavar=child, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        size, seconds, db_path, report = args.child
        run_child(size, float(seconds), Path(db_path), Path(report))
        return 0
    profiler = py_spy()
    if profiler is None:
        print("bench.line_profile: py-spy is not installed (pip install -r bench/requirements.txt)")
        return 2

    WORK.mkdir(parents=True, exist_ok=True)
    sizes = ("small", "large")
    samples = {size: Counter() for size in sizes}
    decisions, seconds = dict.fromkeys(sizes, 0), dict.fromkeys(sizes, 0.0)
    try:
        databases = {size: WORK / f"{size}.db" for size in sizes}
        for size in sizes:
            dataset.load_into_database(dataset.generate(SIZES[size]), databases[size])
        for round_number in range(args.rounds):
            order = sizes if round_number % 2 == 0 else sizes[::-1]  # neither always first
            for size in order:
                print(f"py-spy, {size} set, round {round_number + 1} of {args.rounds} ...", flush=True)
                found, made, spent = profile_once(profiler, size, args.seconds, databases[size])
                samples[size] += found
                decisions[size] += made
                seconds[size] += spent
    finally:
        shutil.rmtree(WORK, ignore_errors=True)

    per_decision = {size: seconds[size] / decisions[size] * 1e6 for size in sizes}

    def us(size: str, line: Line) -> float:
        return samples[size][line] / sum(samples[size].values()) * per_decision[size]

    small, large = per_decision["small"], per_decision["large"]
    print(
        f"\nWhole decision: {small:.2f} µs small, {large:.2f} µs large ({large / small:.2f}×, "
        f"{large - small:+.2f} µs); {decisions['small']:,} and {decisions['large']:,} decisions, "
        f"{sum(samples['small'].values()):,} and {sum(samples['large'].values()):,} samples at {RATE:,}/s.\n"
    )
    lines = set(samples["small"]) | set(samples["large"])
    ranked = sorted(lines, key=lambda line: us("large", line) - us("small", line), reverse=True)
    shown = ranked[:LINES_SHOWN]
    print("| line | code | small µs | large µs | large − small |")
    print("| --- | --- | ---: | ---: | ---: |")
    for line in shown:
        s, b = us("small", line), us("large", line)
        print(f"| {line[0]}:{line[1]} {line[2]} | `{source(line)}` | {s:.2f} | {b:.2f} | {b - s:+.2f} |")
    rest_small = small - sum(us("small", line) for line in shown)
    rest_large = large - sum(us("large", line) for line in shown)
    print(
        f"| the other {len(ranked) - len(shown)} lines | | {rest_small:.2f} | {rest_large:.2f} "
        f"| {rest_large - rest_small:+.2f} |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
