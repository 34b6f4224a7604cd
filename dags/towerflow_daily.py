"""
### towerflow_daily

The daily batch of the recommender, for one data interval (a UTC day):

A run for date D processes the data up to, not including, D: the scheduled run at midnight
handles the day that just ended. Set `date` when triggering to run for another day.

1. **ingest_landing**: landing files of the last days -> `bronze/events`, `bronze/items`
   (idempotent by file: a file imported before lands nothing).

Each task calls one function from `jobs/`, `models/` or `serving/` with the run's data interval and
returns only small values (counts, paths, versions) through XCom. Trigger a run for a past day with
**Trigger DAG w/ config** (`date`), or from the shell: `towerflow pipeline run --date YYYY-MM-DD`.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag, task

# The run's date: the `date` param when given, else the end of the data interval (the moment the
# scheduled run fires). Rendered by Airflow, so tasks receive a plain YYYY-MM-DD string.
RUN_DATE = "{{ params.date or data_interval_end.strftime('%Y-%m-%d') }}"

DEFAULT_ARGS = {
    "owner": "towerflow",
    "retries": 2,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": True,
    "execution_timeout": timedelta(hours=1),
}


@dag(
    dag_id="towerflow_daily",
    schedule="@daily",
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["towerflow", "daily", "training"],
    doc_md=__doc__,
    params={
        "date": Param(
            None,
            type=["null", "string"],
            format="date",
            description="Run date YYYY-MM-DD: process data before it (default: the data interval end).",
        ),
    },
)
def towerflow_daily():
    @task(execution_timeout=timedelta(minutes=20))
    def ingest_landing(run_date: str) -> dict:
        from towerflow.tasks import ingest_landing_days

        return ingest_landing_days(run_date)

    ingest_landing(RUN_DATE)


towerflow_daily()
