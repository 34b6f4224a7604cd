"""Benchmarks: `towerflow bench <name>`. Each prints a human table, then one JSON line last.

A benchmark module exposes `run() -> dict` returning its figures; machine facts are added here.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
from pathlib import Path

BENCHMARKS = {
    "synth": "bench.synth",
    "etl": "bench.etl",
    "model_server": "bench.model_server",
    "features": "bench.features",
    "serve": "bench.serve",
    "events": "bench.events",
    "train": "bench.train",
    "quality": "bench.quality",
    "cpu_stalls": "bench.cpu_stalls",
}


def machine() -> dict[str, object]:
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "memory_gb": round(mem_gb, 1),
        "python": platform.python_version(),
    }


def run(name: str, out: Path | None = None) -> dict[str, object]:
    figures = importlib.import_module(BENCHMARKS[name]).run()
    line = {"bench": name, **figures, **machine()}
    text = json.dumps(line, sort_keys=True)
    print(text)  # noqa: T201 - the JSON line is the benchmark's output contract
    if out is not None:
        with out.open("a") as handle:
            handle.write(text + "\n")
    return line
