"""`python -m bench.policy_load` (`make bench-policy-load`): how long a policy takes to load
as roles.yaml grows.

The shipped policy, with N generated roles added to roles.yaml (one action each, or
`--actions K`), loaded the way the service loads it (parse, validate, build both Casbin
models, evaluate every permission row). A load blocks a reload and a start-up, so it
should grow with the roles, not with their square. Prints one markdown table: roles,
p rows, median seconds of `--repeat` loads (default 3), seconds per 1,000 rows. About
half a minute.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from service.policy import REPO_POLICY_DIR, load_policy  # noqa: E402

ROLE_COUNTS = (250, 500, 1000, 2000, 4000)


def policy_with_roles(directory: Path, roles: int, actions: int) -> None:
    shutil.copytree(REPO_POLICY_DIR, directory)
    entries = []
    for index in range(roles):
        listed = "".join(f"      - bench.roles/r{index}/a{action}\n" for action in range(actions))
        entries.append(
            f"  - name: Bench Role {index}\n    template_id: {uuid.UUID(int=index + 1)}\n"
            f"    scope: customer\n    actions:\n{listed}"
        )
    roles_file = directory / "roles.yaml"
    roles_file.write_text(roles_file.read_text().rstrip("\n") + "\n" + "".join(entries))


def load_seconds(directory: Path, repeat: int) -> tuple[float, int]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        policy = load_policy(directory)
        times.append(time.perf_counter() - started)
    return statistics.median(times), len(policy.permission_rules)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actions", type=int, default=1, help="actions per generated role")
    parser.add_argument("--repeat", type=int, default=3, help="loads per size (the median is shown)")
    args = parser.parse_args(argv)
    print("| roles added | p rows | load s | s per 1,000 rows |")
    print("| ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as work:
        for roles in ROLE_COUNTS:
            directory = Path(work) / f"roles-{roles}"
            policy_with_roles(directory, roles, args.actions)
            seconds, rows = load_seconds(directory, args.repeat)
            print(f"| {roles:,} | {rows:,} | {seconds:.2f} | {seconds / rows * 1000:.3f} |", flush=True)


if __name__ == "__main__":
    main()
