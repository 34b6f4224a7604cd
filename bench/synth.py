"""Synthetic data at scale: wall time, events/s and peak memory of `towerflow data synth`
(100k users, 50k items, 30 days) and of importing it into bronze, each in its own process so
peak RSS is that step's alone; whether a second run with the same seed is byte-identical; and a
60-day run (~11M events) to show peak memory does not grow with the number of events."""

from __future__ import annotations

import hashlib
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ARGS = ["--users", "100000", "--items", "50000", "--days", "30", "--seed", "7"]
# Twice the days (~11M events): peak memory must stay flat, since one day is in memory at a time.
ARGS_LONG = ["--users", "100000", "--items", "50000", "--days", "60", "--seed", "7"]


def _child(args: list[str], home: Path) -> tuple[float, float, str]:
    """Run `towerflow ...` in a fresh process; (seconds, peak RSS MiB, stdout)."""
    code = (
        "import resource, sys\n"
        "from towerflow.cli import app\n"
        "try:\n    app(sys.argv[1:])\nexcept SystemExit as e:\n    code = e.code\nelse:\n    code = 0\n"
        "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
        "sys.exit(code)\n"
    )
    env = {**os.environ, "TOWERFLOW_HOME": str(home), "COLUMNS": "120"}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"towerflow {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    peak_kb = int(proc.stdout.rsplit("PEAK_RSS_KB", 1)[1].split()[0])
    return seconds, peak_kb / 1024, proc.stdout


def _digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*.parquet")):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def run() -> dict[str, object]:
    import pyarrow.dataset as ds

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        first, second = home / "a", home / "b"
        gen_s, gen_mb, _ = _child(["data", "synth", *ARGS, "--out", str(first), "--no-import"], home)
        _child(["data", "synth", *ARGS, "--out", str(second), "--no-import"], home / "other")
        identical = _digest(first) == _digest(second)
        events = ds.dataset(first / "events", format="parquet", partitioning="hive").count_rows()
        code = (
            "import sys; from pathlib import Path; from towerflow.cli import import_synth_landing;"
            " from towerflow.settings import get_settings;"
            " import_synth_landing(get_settings(), Path(sys.argv[1]))"
        )
        start = time.perf_counter()
        env = {**os.environ, "TOWERFLOW_HOME": str(home)}
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        subprocess.run([sys.executable, "-c", code, str(first)], env=env, check=True, capture_output=True)
        imp_s = time.perf_counter() - start
        imp_mb = max(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, before) / 1024
        long_dir = home / "long"
        long_s, long_mb, _ = _child(["data", "synth", *ARGS_LONG, "--out", str(long_dir), "--no-import"], home)
        long_events = ds.dataset(long_dir / "events", format="parquet", partitioning="hive").count_rows()
    figures = {
        "synth_events": events,
        "synth_seconds": round(gen_s, 2),
        "synth_events_per_s": round(events / gen_s),
        "synth_peak_rss_mb": round(gen_mb),
        "import_seconds": round(imp_s, 2),
        "import_events_per_s": round(events / imp_s),
        "import_peak_rss_mb": round(imp_mb),
        "same_seed_byte_identical": identical,
        "synth_60d_events": long_events,
        "synth_60d_seconds": round(long_s, 2),
        "synth_60d_peak_rss_mb": round(long_mb),
    }
    table = Table(title="towerflow data synth " + " ".join(ARGS))
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in figures.items():
        table.add_row(key, f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value))
    Console().print(table)
    return figures
