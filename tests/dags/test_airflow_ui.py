"""What the Airflow UI shows of a run started by `towerflow pipeline run` (`run_dag`, in process):
each task's log read through Airflow's own log reader (what the API server serves to the Logs
tab), start and end dates of the run and its tasks in wall-clock time, the DAG's description and
task docs, and the Data Docs of a good run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from jobs.synth import SynthConfig, write_landing
from tests.conftest import DailyWorld
from towerflow.airflow_runner import airflow_env, run_dag, task_logs_dir
from towerflow.settings import Settings

REPO = Path(__file__).resolve().parents[2]

#: Reads one DAG run from the metadata DB as the API server does: the run and task instance
#: records, and each task's log through `TaskLogReader` (the reader behind the Logs tab).
READ_RUN = """
import json, sys
from sqlalchemy import select
from airflow.models.dagrun import DagRun
from airflow.utils.log.log_reader import TaskLogReader
from airflow.utils.session import create_session

dag_id, logical_date, wanted = sys.argv[1], sys.argv[2], set(sys.argv[3:])
reader = TaskLogReader()
iso = lambda d: d.isoformat() if d else None
with create_session() as session:
    runs = session.scalars(select(DagRun).where(DagRun.dag_id == dag_id).order_by(DagRun.id)).all()
    run = [r for r in runs if r.logical_date and r.logical_date.date().isoformat() == logical_date][-1]
    tis = {}
    for ti in run.get_task_instances(session=session):
        entry = {"state": ti.state, "try_number": ti.try_number, "start": iso(ti.start_date), "end": iso(ti.end_date)}
        if ti.task_id in wanted:
            stream, _ = reader.read_log_chunks(ti, ti.try_number, {})
            entry["log"] = [message.event for message in stream]
        tis[ti.task_id] = entry
    record = {"state": run.state, "start": iso(run.start_date), "end": iso(run.end_date), "tis": tis}
print(json.dumps(record, default=str))
"""

PARSE = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
print(json.dumps({
    dag_id: {"description": dag.description, "docs": {t.task_id: t.doc_md for t in dag.tasks}}
    for dag_id, dag in bag.dags.items()
}))
"""


def read_run(settings: Settings, dag_id: str, run_date: str, logs_of: list[str]) -> dict:
    """The newest run of `dag_id` for `run_date`: state, start/end, and per task state, try,
    start/end and, for the tasks in `logs_of`, the log lines the UI would show."""
    proc = subprocess.run(
        [sys.executable, "-c", READ_RUN, dag_id, run_date, *logs_of],
        env=airflow_env(settings),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _time(value: str | None) -> datetime:
    assert value is not None, "a start or end date is missing"
    return datetime.fromisoformat(value)


def assert_wall_clock(run: dict, started: datetime, finished: datetime) -> None:
    """The run and each task that ran started and ended between `started` and `finished`."""
    run_start, run_end = _time(run["start"]), _time(run["end"])
    assert started <= run_start <= run_end <= finished, (run["start"], run["end"], started, finished)
    for task_id, ti in run["tis"].items():
        if ti["start"] is None and ti["state"] == "skipped":
            continue
        assert run_start <= _time(ti["start"]) <= _time(ti["end"]) <= run_end, (task_id, ti)


def assert_own_log(task_id: str, lines: list[str], base: Path) -> str:
    """The task's log comes from its file under `base` and holds its own run, not another's."""
    text = "\n".join(lines)
    assert any(line.startswith(str(base)) and f"task_id={task_id}/" in line for line in lines), text[:2000]
    assert f"[DAG TEST] starting task_id={task_id} " in text, text[-3000:]
    assert f"[DAG TEST] end task task_id={task_id} " in text, text[-3000:]
    assert text.count("[DAG TEST] starting task_id=") == 1, f"{task_id}'s log holds other tasks"
    return text


def test_the_dag_has_a_description_and_every_task_docs(tmp_path: Path) -> None:
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    proc = subprocess.run(
        [sys.executable, "-c", PARSE, str(REPO / "dags")], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    daily = json.loads(proc.stdout.strip().splitlines()[-1])["towerflow_daily"]
    assert daily["description"] and len(daily["description"]) <= 120
    undocumented = [task_id for task_id, doc in daily["docs"].items() if not (doc or "").strip()]
    assert undocumented == []


@pytest.mark.integration
def test_a_task_log_is_where_the_ui_reads_it_and_dates_are_wall_clock(home: Path) -> None:
    write_landing(SynthConfig(users=60, items=30, days=3, seed=7), home / "landing" / "synth")
    settings = Settings()
    started = datetime.now(UTC)
    ok, log = run_dag(settings, "towerflow_daily", "2025-01-04", only=["ingest_landing"])
    finished = datetime.now(UTC)
    assert ok, log.read_text()[-4000:]

    run = read_run(settings, "towerflow_daily", "2025-01-04", ["ingest_landing"])
    assert run["state"] == "success"
    text = assert_own_log(
        "ingest_landing", run["tis"]["ingest_landing"]["log"], task_logs_dir(settings, "towerflow_daily")
    )
    assert "ingest 2025-01-01..2025-01-03" in text  # the task's own output
    assert "Marking success" not in text  # the other tasks' lines stay in the run's log
    assert "ingest 2025-01-01..2025-01-03" in log.read_text()  # which still holds everything
    # The logical date is 2025-01-04; the run and its task ran now.
    assert_wall_clock(run, started, finished)


@pytest.mark.integration
@pytest.mark.slow
def test_every_task_of_a_full_run_has_its_log_and_wall_clock_dates(daily_world: DailyWorld) -> None:
    settings = daily_world.settings
    tasks = read_run(settings, "towerflow_daily", daily_world.run_date, [])["tis"]
    ran = [task_id for task_id, ti in tasks.items() if ti["state"] in ("success", "failed")]
    run = read_run(settings, "towerflow_daily", daily_world.run_date, ran)
    assert run["state"] == "success"
    assert {"ingest_landing", "validate_raw", "build_gold", "train_retrieval", "report"} <= set(ran)
    base = task_logs_dir(settings, "towerflow_daily")
    for task_id in ran:
        text = assert_own_log(task_id, run["tis"][task_id]["log"], base)
        if task_id.startswith("validate_"):
            assert f"Data Docs: {settings.data_docs_dir}" in text, f"{task_id} does not say where its Data Docs are"
    assert_wall_clock(run, daily_world.started, datetime.now(UTC))


@pytest.mark.integration
@pytest.mark.slow
def test_a_good_run_leaves_data_docs_of_every_gate(daily_world: DailyWorld) -> None:
    docs = daily_world.settings.data_docs_dir
    index = docs / "index.html"
    assert index.exists(), f"no Data Docs index in {docs}"
    for suite in ("bronze_events", "silver_interactions", "gold_user_features", "gold_item_features"):
        assert list((docs / "validations" / suite).rglob("*.html")), f"no Data Docs page of {suite}"
        assert suite in index.read_text()
