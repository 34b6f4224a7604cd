"""A real Airflow DAG run (`airflow dags test`, SQLite metadata DB) over a tiny landing folder."""

from datetime import date
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from jobs.synth import SynthConfig, write_landing
from towerflow.airflow_runner import run_dag
from towerflow.settings import Settings


@pytest.mark.integration
def test_daily_run_ingests_the_days_before_its_date_once(home: Path, lake) -> None:
    cfg = SynthConfig(users=150, items=60, days=5, seed=5)
    write_landing(cfg, home / "landing" / "synth")
    settings = Settings()

    ok, log = run_dag(settings, "towerflow_daily", "2025-01-04", only=["ingest_landing"])
    assert ok, log.read_text()[-4000:]
    landed = lake.read(lake.uri("bronze", "events"))
    days = sorted({str(d) for d in landed.column("event_date").to_pylist()})
    assert days == ["2025-01-01", "2025-01-02", "2025-01-03"]  # lookback 3 days, not the run date
    expected = ds.dataset(home / "landing" / "synth" / "events", format="parquet", partitioning="hive")
    assert landed.num_rows == expected.count_rows(filter=ds.field("event_date") < "2025-01-04")
    version = lake.version(lake.uri("bronze", "events"))

    ok, log = run_dag(settings, "towerflow_daily", "2025-01-04", only=["ingest_landing"])
    assert ok, log.read_text()[-4000:]
    assert lake.version(lake.uri("bronze", "events")) == version


@pytest.mark.integration
def test_a_run_for_a_date_before_2000_runs_its_tasks(home: Path, lake) -> None:
    # Airflow creates no task for a logical date before the DAG's start_date and calls the run a
    # success; these days also straddle the Unix epoch (negative timestamps).
    cfg = SynthConfig(users=150, items=60, days=3, seed=5, start=date(1969, 12, 30))
    write_landing(cfg, home / "landing" / "synth")

    ok, log = run_dag(Settings(), "towerflow_daily", "1970-01-02", only=["ingest_landing"])
    assert ok, log.read_text()[-4000:]
    landed = lake.read(lake.uri("bronze", "events"))
    assert landed is not None
    assert sorted({str(d) for d in landed.column("event_date").to_pylist()}) == [
        "1969-12-30",
        "1969-12-31",
        "1970-01-01",
    ]
