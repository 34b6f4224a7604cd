"""The performance table (docs/performance.md), rendered from a results file of `towerflow bench ... --out FILE`.

Each line of the file is one benchmark's JSON figures plus the facts of the machine it ran on
(see `bench.machine`). When a benchmark appears more than once, its last line wins.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

#: Keys that describe the machine, not the benchmark (rendered once, above the table).
MACHINE_KEYS = ("machine", "cpu_model", "cpus", "memory_gb", "os", "python", "date")


def load(path: Path) -> list[dict[str, Any]]:
    """Results in file order, one per benchmark (the last line of each)."""
    latest: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError as err:
            raise ValueError(f"{path}:{number}: not a JSON line ({err})") from None
        if not isinstance(entry, dict) or "bench" not in entry:
            raise ValueError(f"{path}:{number}: a results line needs a `bench` key")
        latest.pop(entry["bench"], None)
        latest[entry["bench"]] = entry
    return list(latest.values())


def flatten(figures: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested figures as dotted keys: {"paths": {"model": 3}} -> {"paths.model": 3}."""
    flat: dict[str, Any] = {}
    for key, value in figures.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def fmt(value: Any) -> str:
    """A figure as the table shows it: thousands separators, yes/no, n/a for NaN."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:g}"
    if isinstance(value, list):
        return ", ".join(fmt(v) for v in value)
    return str(value).replace("|", "\\|")


def machine_line(entry: Mapping[str, Any]) -> str:
    """`x86_64, 2 CPUs, 23.5 GB RAM, Python 3.11.7` from a results line's machine facts."""
    parts = [str(entry[k]) for k in ("machine", "cpu_model", "os") if entry.get(k)]
    if entry.get("cpus"):
        parts.append(f"{entry['cpus']} CPUs")
    if entry.get("memory_gb"):
        parts.append(f"{entry['memory_gb']} GB RAM")
    if entry.get("python"):
        parts.append(f"Python {entry['python']}")
    if entry.get("date"):
        parts.append(str(entry["date"]))
    return ", ".join(parts) or "unknown machine"


def render(results: Iterable[Mapping[str, Any]]) -> str:
    """Markdown: the machine(s), then one row per figure (`| benchmark | figure | value |`)."""
    results = list(results)
    if not results:
        return "_No benchmark results._\n"
    machines = list(dict.fromkeys(machine_line(r) for r in results))
    lines = []
    if len(machines) == 1:
        lines += [f"Measured with `make bench` on: {machines[0]}.", ""]
    else:
        lines += ["Measured with `make bench` on several machines (see the last column).", ""]
    header = "| benchmark | figure | value |" + (" machine |" if len(machines) > 1 else "")
    lines += [header, "|---|---|---:|" + ("---|" if len(machines) > 1 else "")]
    for entry in results:
        figures = flatten({k: v for k, v in entry.items() if k != "bench" and k not in MACHINE_KEYS})
        for name, value in figures.items():
            row = f"| {entry['bench']} | {name} | {fmt(value)} |"
            lines.append(row + (f" {machine_line(entry)} |" if len(machines) > 1 else ""))
    return "\n".join(lines) + "\n"
