"""ETL of one heavy synthetic day: wall time, events/s and peak memory of
`towerflow pipeline etl --date` on 1M and 10M events (target: 10M in under 5 minutes); and a
backfill: Online Retail (`$TOWERFLOW_SHARED_DATA/online_retail.csv.gz`, when present) imported
and run through the ETL and both gates as one range, as a first `pipeline run` does (target:
under 3 minutes).

The day is made by the seeded generator with many users (`sessions_per_user_day=1`, about 13
events per user, plus the generator's bots) and committed straight into bronze as Arrow (the
file importer is measured by `bench synth`). The ETL runs in a fresh process - Spark start,
raw gate, silver, gold, training/holdout split - and its peak memory is the sum of the resident
memory of that process and its JVM, sampled every 0.2 s. Afterwards the same process times the
two ways a Spark result reaches delta-rs on that day's silver rows: collected as Arrow
(`toArrow`) and committed, or written by Spark as Parquet and streamed in.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

from rich.console import Console
from rich.table import Table

SIZES = (1_000_000, 10_000_000)
EVENTS_PER_USER = 13.4  # measured mean of the generator at sessions_per_user_day=1 (bots included)
DAY = date(2025, 3, 1)


def _child(day_text: str) -> None:  # pragma: no cover - runs in the benchmark's child process
    """The measured process: the ETL of one day, then the two write paths on its silver rows.

    Run as `python -m bench.etl DAY`, not `python -c`: under `-c` PySpark's connect module takes
    itself for a doctest run and exits (no grpc_status installed).
    """
    from jobs.spark import get_spark
    from jobs.sparklake import SparkLake
    from towerflow import schemas as S
    from towerflow import tasks
    from towerflow.lake import Lake
    from towerflow.settings import get_settings

    settings = get_settings()
    lake = Lake(settings.lake)
    day = date.fromisoformat(day_text)
    steps: dict[str, float] = {}
    removed: dict[str, int] = {}

    def on_step(step) -> None:
        steps[step.name] = steps.get(step.name, 0.0) + step.seconds
        for rule, n in step.detail.get("removed", {}).items():
            removed[rule] = removed.get(rule, 0) + n

    started = time.perf_counter()
    tasks.etl({"start": day.isoformat(), "end": day.isoformat()}, holdout_days=1, on_step=on_step)
    done = {
        "seconds": round(time.perf_counter() - started, 2),
        "steps": steps,
        "silver_rows": lake.count(lake.uri("silver", "interactions")),
        "removed": removed,
    }
    print("ETL_DONE", json.dumps(done), flush=True)  # noqa: T201 - read by the parent
    spark = get_spark(settings.spark_master, settings.spark_driver_memory, settings.spark_conf)
    timings: dict[str, object] = {}
    for via in ("arrow", "staging"):
        spark_lake = SparkLake(spark, lake, engine="delta-rs", staging_dir=settings.staging_dir, write_via=via)
        frame = spark_lake.read(lake.uri("silver", "interactions"), S.SILVER_INTERACTIONS)
        start = time.perf_counter()
        try:
            spark_lake.write(
                frame,
                lake.uri("gold", f"_bench_{via}"),
                S.SILVER_INTERACTIONS,
                partition_by=["event_date"],
                mode="overwrite",
            )
            timings[via] = round(time.perf_counter() - start, 2)
        except Exception as err:  # noqa: BLE001 - toArrow past spark.driver.maxResultSize is a finding
            timings[via] = f"failed: {str(err).splitlines()[0][:120]}"
    print("WRITE_DONE", json.dumps(timings), flush=True)  # noqa: T201 - read by the parent


def _child_backfill(path_text: str) -> None:  # pragma: no cover - runs in the benchmark's child process
    """The measured process of the backfill case: import the file, then the ETL of all its days."""
    from jobs.ingest import import_online_retail
    from towerflow import tasks
    from towerflow.lake import Lake
    from towerflow.settings import get_settings

    settings = get_settings()
    lake = Lake(settings.lake)
    started = time.perf_counter()
    report = import_online_retail(lake, Path(path_text))
    imported = time.perf_counter() - started
    dates = lake.read(lake.uri("bronze", "events"), columns=["event_date"]).column("event_date")
    first, last = min(dates.to_pylist()), max(dates.to_pylist())
    steps: dict[str, float] = {}

    def on_step(step) -> None:
        steps[step.name] = steps.get(step.name, 0.0) + step.seconds

    done = tasks.etl({"start": first.isoformat(), "end": last.isoformat()}, holdout_days=7, on_step=on_step)
    seconds = time.perf_counter() - started
    # validate_features reports no steps: its share is what the steps and the import leave.
    steps["validate_features (rest)"] = seconds - imported - sum(steps.values())
    figures = {
        "import_seconds": round(imported, 2),
        "seconds": round(seconds, 2),
        "events": report.events_landed,
        "days": (last - first).days + 1,
        "steps": steps,
        "silver_rows": lake.count(lake.uri("silver", "interactions")),
        "rows_checked": done["validate_features"]["rows_checked"],
    }
    print("ETL_DONE", json.dumps(figures), flush=True)  # noqa: T201 - read by the parent


def _land_day(home: Path, target_events: int) -> int:
    """Generate one day of about `target_events` events into bronze; returns the count."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from jobs.ingest import import_items
    from jobs.synth import SynthConfig, build_world, generate_day, items_table
    from towerflow.lake import Lake
    from towerflow.schemas import BRONZE_EVENTS, EVENTS_PARTITION, as_schema

    users = round(target_events / EVENTS_PER_USER)
    cfg = SynthConfig(users=users, items=50_000, days=1, seed=11, start=DAY, sessions_per_user_day=1.0)
    world = build_world(cfg)
    lake = Lake(str(home / "lake"))
    items_path = home / "items.parquet"
    pq.write_table(items_table(cfg, world), items_path)
    import_items(lake, items_path, source="synth")
    events = generate_day(cfg, world, 0, np.zeros(cfg.items))
    n = len(events)
    events = events.append_column("invoice_no", pa.nulls(n, pa.string()))
    events = events.append_column("country", pa.nulls(n, pa.string()))
    events = events.append_column("source", pa.array(["synth"] * n))
    events = events.append_column("import_batch", pa.array([f"bench-{target_events}"] * n))
    events = events.append_column("source_row", pa.array(np.arange(1, n + 1, dtype=np.int64)))
    events = events.append_column("event_date", pa.array([DAY] * n, pa.date32()))
    lake.write(
        lake.uri("bronze", "events"),
        as_schema(events, BRONZE_EVENTS),
        partition_by=EVENTS_PARTITION,
    )
    del events, world
    gc.collect()
    return n


def _tree_rss_mb(pid: int) -> float:
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


def _run_etl(home: Path, *args: str) -> tuple[float, float, dict, dict]:
    """`python -m bench.etl ARGS` in a fresh process: (wall seconds, peak RSS MiB, ETL figures,
    write timings)."""
    env = {**os.environ, "TOWERFLOW_HOME": str(home)}
    # Spark logs a lot on stderr: a file, not a pipe nobody reads while the child runs.
    stderr = (home / "etl.stderr").open("w")
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.etl", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
    peak = 0.0
    etl_done: list[float] = []

    def sample() -> None:
        nonlocal peak
        while proc.poll() is None and not etl_done:
            peak = max(peak, _tree_rss_mb(proc.pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    figures, writes = {}, {}
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("ETL_DONE"):
            etl_done.append(time.perf_counter() - start)
            figures = json.loads(line.split(" ", 1)[1])
        elif line.startswith("WRITE_DONE"):
            writes = json.loads(line.split(" ", 1)[1])
    proc.wait()
    sampler.join()
    stderr.close()
    if proc.returncode != 0 or not etl_done:
        tail = (home / "etl.stderr").read_text()[-3000:]
        raise RuntimeError(f"ETL benchmark child failed (exit {proc.returncode}):\n{tail}")
    return etl_done[0], peak, figures, writes


def run() -> dict[str, object]:
    figures: dict[str, object] = {}
    table = Table(title=f"towerflow pipeline etl --date {DAY}: one synthetic day")
    for column in (
        "events",
        "wall s",
        "events/s",
        "peak RSS MiB",
        "silver rows",
        "bots removed",
        "write via arrow s",
        "via staging s",
    ):
        table.add_column(column, justify="right")
    for size in SIZES:
        with tempfile.TemporaryDirectory(prefix="towerflow-bench-etl-") as tmp:
            home = Path(tmp)
            events = _land_day(home, size)
            wall, peak, etl, writes = _run_etl(home, DAY.isoformat())
        label = f"{size // 1_000_000}m"
        removed = etl.get("removed", {})
        bots = removed.get("bot_rate", 0) + removed.get("bot_pattern", 0)
        figures |= {
            f"etl_{label}_events": events,
            f"etl_{label}_wall_seconds": round(wall, 1),
            f"etl_{label}_inside_seconds": etl.get("seconds"),
            f"etl_{label}_events_per_s": round(events / wall),
            f"etl_{label}_peak_rss_mb": round(peak),
            f"etl_{label}_silver_rows": etl.get("silver_rows"),
            f"etl_{label}_bot_events_removed": bots,
            f"etl_{label}_step_seconds": {k: round(v, 1) for k, v in etl.get("steps", {}).items()},
            f"write_{label}_arrow_seconds": writes.get("arrow"),
            f"write_{label}_staging_seconds": writes.get("staging"),
        }
        table.add_row(
            f"{events:,}",
            f"{wall:.1f}",
            f"{events / wall:,.0f}",
            f"{peak:,.0f}",
            f"{etl.get('silver_rows', 0):,}",
            f"{bots:,}",
            str(writes.get("arrow")),
            str(writes.get("staging")),
        )
    figures["etl_10m_under_5_minutes"] = bool(figures.get("etl_10m_wall_seconds", 1e9) < 300)
    Console().print(table)
    figures |= _backfill()
    return figures


def _backfill() -> dict[str, object]:
    """The backfill case; no figures (and a line saying why) without the Online Retail file."""
    from towerflow.settings import get_settings

    path = get_settings().shared_data / "online_retail.csv.gz"
    if not path.exists():
        Console().print(f"backfill case skipped: {path} not found")
        return {"backfill_skipped": f"{path} not found"}
    with tempfile.TemporaryDirectory(prefix="towerflow-bench-backfill-") as tmp:
        wall, peak, etl, _ = _run_etl(Path(tmp), "backfill", str(path.resolve()))
    table = Table(title="backfill: Online Retail imported, then ETL and both gates over every day")
    for column in ("days", "events", "import s", "ETL + gates s", "wall s", "peak RSS MiB"):
        table.add_column(column, justify="right")
    etl_seconds = etl["seconds"] - etl["import_seconds"]
    table.add_row(
        str(etl["days"]),
        f"{etl['events']:,}",
        f"{etl['import_seconds']:.1f}",
        f"{etl_seconds:.1f}",
        f"{wall:.1f}",
        f"{peak:,.0f}",
    )
    Console().print(table)
    return {
        "backfill_days": etl["days"],
        "backfill_events": etl["events"],
        "backfill_import_seconds": etl["import_seconds"],
        "backfill_etl_seconds": round(etl_seconds, 1),
        "backfill_wall_seconds": round(wall, 1),
        "backfill_peak_rss_mb": round(peak),
        "backfill_step_seconds": {k: round(v, 1) for k, v in etl["steps"].items()},
        "backfill_under_3_minutes": bool(wall < 180),
    }


if __name__ == "__main__":  # pragma: no cover - the benchmark's child process
    if sys.argv[1] == "backfill":
        _child_backfill(sys.argv[2])
    else:
        _child(sys.argv[1])
