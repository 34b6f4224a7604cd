"""
### towerflow_experiments

Every hour, each running A/B experiment is decided on everything it has served so far: its
impressions (`bronze/impressions`) and the clicks and purchases attributed to them
(`bronze/events`), from the experiment's start to the end of the run's data interval.

**decide_experiments**: per experiment, per-arm metrics and each variant against control with an
always-valid p-value (checking every hour does not inflate false positives), then:

- **promote**: the variant won on the primary metric at `TOWERFLOW_EXPERIMENT_ALPHA` with at least
  `TOWERFLOW_EXPERIMENT_MIN_USERS_PER_ARM` users in each arm: `stable` moves to the variant's model
  versions (both models in one write of `models.config`) and the experiment stops;
- **rollback**: the variant lost, or broke a guardrail (a CTR drop): the experiment stops and
  every user is served `stable` again (the `canary` label stays where it is);
- **continue**: not enough users yet, or no significant difference: nothing changes.

The task's log (its Logs tab) shows each arm's counts and metrics, the p-values and the decision;
a stopped experiment keeps its decision and the reason (`towerflow experiments show ID`).
Publishing a model pair as `canary` starts the experiments this DAG decides (docs/experiments.md).
Set `end` when triggering to decide on the data up to another instant.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param, dag, task

# The end of the data looked at: the `end` param when given, else the end of the data interval
# (the hour that just ended, for a scheduled run). Rendered by Airflow into an ISO instant.
END = "{{ params.end or data_interval_end.isoformat() }}"

DEFAULT_ARGS = {
    "owner": "towerflow",
    "retries": 2,
    "retry_delay": timedelta(minutes=1),
    "execution_timeout": timedelta(minutes=30),
}


@dag(
    dag_id="towerflow_experiments",
    description="Hourly: decide each running A/B experiment (promote, roll back or continue)",
    schedule="@hourly",
    start_date=None,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["towerflow", "experiments", "hourly"],
    doc_md=__doc__,
    params={
        "end": Param(
            None,
            type=["null", "string"],
            format="date-time",
            description="Decide on the data before this instant (default: the data interval end).",
        ),
    },
)
def towerflow_experiments():
    @task
    def decide_experiments(end: str) -> dict:
        """Each running experiment's metrics from its start to `end`, the decision and its action: promote
        (`stable` moves to the winner's versions), roll back or continue; per-arm counts, p-values and the
        decision in the log."""

        from towerflow.tasks import review_experiments

        return review_experiments(end)

    decide_experiments(END)


towerflow_experiments()
