"""run_dag on a DAG run in which Airflow created no task (no Airflow process: `_airflow` faked)."""

import subprocess
from pathlib import Path

import pytest

from towerflow import airflow_runner
from towerflow.settings import Settings

# The end of an `airflow dags test` log when no task instance was created: the run "succeeds".
NO_TASK_LOG = (
    "[info] Created dag run. dagrun=<DagRun towerflow_daily @ 1998-03-04 00:00:00+00:00>\n"
    "[info] DagRun Finished: dag_id=towerflow_daily, logical_date=1998-03-04 00:00:00+00:00, state=success\n"
)


def test_a_run_with_no_task_fails_and_its_log_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_airflow(args, env, log=None, module="airflow"):
        log.write_text(NO_TASK_LOG)
        return subprocess.CompletedProcess(args, 0)

    monkeypatch.setattr(airflow_runner, "ensure_db", lambda settings: None)
    monkeypatch.setattr(airflow_runner, "_airflow", fake_airflow)
    ok, log = airflow_runner.run_dag(Settings(home=tmp_path), "towerflow_daily", "1998-03-04")
    assert not ok
    # `towerflow pipeline run` shows the log's lines that hold "Error" or "failed".
    shown = [line for line in log.read_text().splitlines() if "Error" in line or "failed" in line]
    assert shown and "no task" in shown[-1] and "1998-03-04" in shown[-1]
