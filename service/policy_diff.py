"""Impact diff: replay recorded decisions under two policy versions and list what changes."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import yaml

from service import strict_yaml
from service.decision_index import DecisionIndex
from service.decisions import Check, decide
from service.errors import BadRequest
from service.policy import Policy
from service.state_signal import ProcessCounter

CHECK_FIELDS = ("principal", "tenant_id", "action", "resource", "support_request_id")


@dataclass(frozen=True)
class Change:
    check: Check
    old: tuple[bool, str]
    new: tuple[bool, str]


def is_json_lines(path: Path) -> bool:
    """A decision log, read as JSON lines: named *.log or *.jsonl, or a rotated copy
    of one (decisions.log.1). Anything else is a YAML or JSON list."""
    return bool(re.search(r"\.(log|jsonl)(\.\d+)?$", path.name))


def read_requests(path: str | Path) -> list[Check]:
    """Decision requests from a decision log (JSON lines with an `input`) or from a YAML
    or JSON list of request bodies (optionally under `checks`)."""
    raw = Path(path).read_bytes()
    if is_json_lines(Path(path)):
        entries = []
        # Line by line from the bytes: a line cut short inside a UTF-8 character (a log
        # being written) is named by its line, as any other line that does not parse.
        for number, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                entries.append(json.loads(line))
            except ValueError as exc:  # UnicodeDecodeError included
                raise BadRequest(f"{path}: line {number}: cannot parse: {exc}") from exc
    else:
        try:
            entries = strict_yaml.load(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise BadRequest(f"{path}: byte {exc.start}: not UTF-8 text") from exc
        except yaml.YAMLError as exc:
            raise BadRequest(f"{path}: cannot parse: {exc}") from exc
    if isinstance(entries, dict):
        entries = entries.get("checks")
    if not isinstance(entries, list):
        raise BadRequest(f"{path}: expected a list of decision requests")
    checks = []
    for index, entry in enumerate(entries):
        body = entry.get("input", entry) if isinstance(entry, dict) else None
        if not isinstance(body, dict) or not all(isinstance(body.get(f), str) for f in CHECK_FIELDS[:4]):
            raise BadRequest(f"{path}: entry {index}: not a decision request")
        checks.append(Check(**{f: body.get(f) for f in CHECK_FIELDS}))
    return checks


def replay(old: Policy, new: Policy, checks: list[Check], now: datetime, provider: str) -> list[Change]:
    """Decide every request under both policies against the current database state
    (read-only: nothing is recorded)."""
    index = DecisionIndex(ProcessCounter(), max(old.timing.retention, new.timing.retention))
    index.load(now)
    changes = []
    for check in checks:
        before = decide(old, index, check, now, provider)
        after = decide(new, index, check, now, provider)
        if (before.allowed, before.reason) != (after.allowed, after.reason):
            changes.append(Change(check, (before.allowed, before.reason), (after.allowed, after.reason)))
    return changes


def format_changes(changes: list[Change], total: int, old: Policy, new: Policy) -> list[str]:
    lines = [f"replayed {total} decisions: policy {old.version} -> {new.version}"]
    if not changes:
        return [*lines, "no decision changes"]
    groups: dict[tuple, list[Change]] = defaultdict(list)
    for change in changes:
        groups[(change.old, change.new)].append(change)
    lines.append(f"{len(changes)} decisions change:")
    for (before, after), members in sorted(groups.items(), key=lambda item: -len(item[1])):
        lines.append(f"  {_label(before)} -> {_label(after)}: {len(members)}")
        for change in members[:20]:
            c = change.check
            ticket = f" ticket {c.support_request_id}" if c.support_request_id else ""
            lines.append(f"    {c.principal} {c.action} {c.resource} in {c.tenant_id}{ticket}")
        if len(members) > 20:
            lines.append(f"    ... and {len(members) - 20} more")
    return lines


def _label(answer: tuple[bool, str]) -> str:
    return f"{'allow' if answer[0] else 'deny'} ({answer[1]})"
