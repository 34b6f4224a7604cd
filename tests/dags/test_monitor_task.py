"""The daily run's `monitor` task writes the monitoring report of the day before its date (a real
Airflow DAG run, `airflow dags test`, every other task marked successful)."""

import json
from datetime import date
from pathlib import Path

import pytest

from testsupport.feature_samples import write_sample_gold
from towerflow.airflow_runner import run_dag
from towerflow.settings import Settings


@pytest.mark.integration
def test_the_monitor_task_reports_the_day_before_the_run_date(home: Path, lake) -> None:
    write_sample_gold(lake, users=120, items=60, days=9, start=date(2025, 3, 1), embeddings=False)

    ok, log = run_dag(Settings(), "towerflow_daily", "2025-03-10", only=["monitor"])
    assert ok, log.read_text()[-4000:]
    folder = home / "reports" / "monitoring"
    assert (folder / "2025-03-09.html").is_file()
    summary = json.loads((folder / "2025-03-09.json").read_text())
    assert summary["reference"]["last"] == "2025-03-08"  # no model published: the days before
    assert all(d["psi"] is not None for d in summary["drift"])  # every key feature compared
