"""The results table: rows = workloads, columns = ours, each peer, and ours/peer."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

ENGINES = ("ours", "pycasbin", "cedarpy", "Cerbos")
PEERS = ENGINES[1:]


@dataclass
class Row:
    label: str
    unit: str
    better: str  # "higher", "lower" or "" (no ratio)
    values: dict[str, float | str | None] = field(default_factory=dict)


class Results:
    def __init__(self) -> None:
        self.rows: dict[str, Row] = {}
        self.notes: list[str] = []
        self.skipped: dict[str, str] = {}
        self.machine: list[tuple[str, str]] = []
        self.sections: list[tuple[str, list[str]]] = []  # (title, row keys)
        self.targets: list[tuple[str, str, str]] = []  # (target, measured, status)

    def section(self, title: str) -> None:
        self.sections.append((title, []))

    def set(self, key: str, label: str, unit: str, better: str, engine: str, value) -> None:
        row = self.rows.get(key)
        if row is None:
            row = self.rows[key] = Row(label, unit, better)
            if not self.sections:
                self.section("Results")
            self.sections[-1][1].append(key)
        row.values[engine] = value

    def get(self, key: str, engine: str):
        row = self.rows.get(key)
        return None if row is None else row.values.get(engine)

    def note(self, text: str) -> None:
        self.notes.append(text)


def fmt(value, unit: str) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    if isinstance(value, float) and math.isnan(value):
        return "—"
    if unit in ("decisions/s", "req/s", "checks"):
        return f"{value:,.0f}"
    if unit == "µs":
        return f"{value:,.1f}"
    if unit in ("ms", "s", "MiB"):
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else f"{value:,.2f}"


def ratio(ours, peer) -> str:
    if not isinstance(ours, (int, float)) or not isinstance(peer, (int, float)):
        return "—"
    if peer == 0 or math.isnan(ours) or math.isnan(peer):
        return "—"
    return f"{ours / peer:.2f}×"


def render(results: Results, title: str) -> str:
    out = [f"# {title}", ""]
    if results.machine:
        out += ["| machine | |", "| --- | --- |"]
        out += [f"| {k} | {v} |" for k, v in results.machine]
        out.append("")
    header = "| workload | unit | better | ours | " + " | ".join(f"{p} | ours/{p}" for p in PEERS) + " |"
    rule = "| --- | --- | --- | ---: | " + " | ".join("---: | ---:" for _ in PEERS) + " |"
    out += [header, rule]
    for title_text, keys in results.sections:
        out.append(f"| **{title_text}** | | | | " + " | ".join(" | " for _ in PEERS) + " |")
        for key in keys:
            row = results.rows[key]
            ours = row.values.get("ours")
            cells = [
                row.label,
                row.unit,
                {"higher": "↑", "lower": "↓"}.get(row.better, ""),
                fmt(ours, row.unit),
            ]
            for peer in PEERS:
                value = row.values.get(peer)
                cells.append(fmt(value, row.unit))
                cells.append(ratio(ours, value) if row.better else "—")
            out.append("| " + " | ".join(cells) + " |")
    out.append("")
    out.append("↑ higher is better, ↓ lower is better; ours/peer is our figure divided by the peer's.")
    out.append("")
    if results.targets:
        out += ["Targets (issue 4):", "", "| target | measured | status |", "| --- | --- | --- |"]
        out += [f"| {t} | {m} | {s} |" for t, m, s in results.targets]
        out.append("")
    if results.skipped:
        out.append("Skipped:")
        out += [f"- {name}: {reason}" for name, reason in results.skipped.items()]
        out.append("")
    if results.notes:
        out.append("Notes:")
        out += [f"- {text}" for text in results.notes]
        out.append("")
    return "\n".join(out)
