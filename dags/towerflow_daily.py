"""
### towerflow_daily

The daily batch of the recommender. A run for date D processes the data before D: the scheduled
run at midnight handles the day that just ended (and catches up on days silver does not have yet).
Set `date` when triggering to run for another day.

1. **ingest_landing**: landing files -> `bronze/events`, `bronze/items` (a file imported before lands nothing).
   **plan_days**: the days this run processes, from the lake: from the first day gold lacks
   through the day before the run date (at least that day); every ETL task gets them (an XCom).
2. **validate_raw**: Great Expectations on each day's bronze events; a failure stops the run here.
3. **build_silver**: dedup, unknown items, bots and spam out (each rule counted), sessions.
4. **build_gold**: user and item features per day, purchase history, the time-based split (the
   holdout: at least `holdout_days` days, longer until it holds enough users and events).
5. **validate_features**: Great Expectations on the gold features as written.
6. **materialize_features**: `feast apply`, then materialize to the online store.
7. **tune** (with `tune`): training settings chosen on a validation window just before the holdout,
   within `tune_budget_minutes`; every training step of the run uses them. Off: the defaults.
8. **training_set**: Feast's point-in-time training sets, kept in the run folder (Parquet + manifest).
9. **train_retrieval**: a retrieval model trained before the ranker's window proposes the ranker's
   labelled candidates; the two-tower model that ships is trained on everything before the cutoff.
10. **train_ranking**: the deep & cross ranker on those candidates; both models staged.
11. **evaluate**: candidate vs production vs baselines on the holdout (HTML report).
12. **gate**: what serves next: the trained pair, its retrieval model alone, or the best baseline
    (a trained model must beat every baseline in every variant); published only if it beats
    production and the data passed both gates.
13. **refit**: the chosen recipe trained again on everything before the run date (holdout included).
14. **publish** (versions, `models.config` labels, precomputed recommendations, a stable vs canary
    experiment that `towerflow_experiments` decides) or **keep_production**.
15. **report**: what ran and what serves now.
16. **monitor**: the monitoring report of the day before the run date: drift (PSI) of key features and of
    the ranking scores against the serving model's training days, CTR and conversion per model version
    (`$TOWERFLOW_HOME/reports/monitoring/<day>.html`; the gateway's /metrics serves its gauges).

Each task calls one function of `towerflow.tasks` with the run's date or days; XComs carry small
summaries. `towerflow pipeline etl --start D1 --end D2` runs the ETL tasks in this order for D1..D2.
The training tasks skip when their outputs for the same inputs (data versions, params, code) exist.
Task logs: each task's Logs tab, runs of `towerflow pipeline run` included (files under
`$TOWERFLOW_HOME/airflow/logs/`). Data Docs of every validation:
`$TOWERFLOW_HOME/reports/data_docs/index.html`; evaluation: `$TOWERFLOW_HOME/runs/<date>/evaluation/`;
monitoring: `$TOWERFLOW_HOME/reports/monitoring/` (docs/monitoring.md).
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Asset, Param, dag, task

# The run's date: the `date` param when given, else the end of the data interval (the moment the
# scheduled run fires). Rendered by Airflow, so tasks receive a plain YYYY-MM-DD string.
RUN_DATE = "{{ params.date or data_interval_end.strftime('%Y-%m-%d') }}"
HOLDOUT_DAYS = "{{ params.holdout_days }}"

GOLD = [
    Asset(f"towerflow://lake/gold/{table}") for table in ("user_features", "item_features", "user_history", "user_seen")
]
SPLIT = [Asset(f"towerflow://lake/gold/{table}") for table in ("training_examples", "holdout")]
MODELS = Asset("towerflow://models")

DEFAULT_ARGS = {
    "owner": "towerflow",
    "retries": 2,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=10),
    "execution_timeout": timedelta(hours=1),
}


@dag(
    dag_id="towerflow_daily",
    description="Daily batch: landing files -> gated lake tables -> Feast -> train, evaluate, publish models",
    schedule="@daily",
    # None, so a run can be triggered for any historical date: Airflow creates no task for a date
    # before a start_date and calls such a run a success. With catchup off the scheduler starts
    # from today.
    start_date=None,
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
        "holdout_days": Param(
            7,
            type="integer",
            minimum=1,
            description="Fewest days before the run date held out (more when they hold too few users or events).",
        ),
        "epochs": Param(
            None, type=["null", "integer"], minimum=1, description="Training epochs (default: the model's)."
        ),
        "tune": Param(False, type="boolean", description="Choose training settings on a validation window first."),
        "tune_budget_minutes": Param(30, type="integer", minimum=1, description="Time budget of the tuning."),
        "force_publish": Param(False, type="boolean", description="Publish even if not better (never on bad data)."),
    },
)
def towerflow_daily():
    @task(execution_timeout=timedelta(minutes=20))
    def ingest_landing(run_date: str) -> dict:
        """Import the landing files of the days before the run date into `bronze/events` and `bronze/items`; a
        file imported before lands nothing."""

        from towerflow.tasks import ingest_landing_days

        return ingest_landing_days(run_date)

    @task
    def plan_days(run_date: str) -> dict:
        """The days this run processes, from the lake: from the first day gold lacks through the day before the
        run date. The ETL tasks get them as an XCom."""

        from towerflow.tasks import plan_days

        return plan_days(run_date)

    @task
    def validate_raw(days: dict) -> dict:
        """Great Expectations suite `bronze_events` on the run's days of bronze events. A failure stops the run
        here without retries. Data Docs: `$TOWERFLOW_HOME/reports/data_docs/index.html`; the log names the
        page of this validation."""

        from towerflow.tasks import validate_raw

        return validate_raw(days)

    @task(execution_timeout=timedelta(hours=2))
    def build_silver(days: dict) -> dict:
        """`silver/items` and `silver/interactions`: dedup, unknown items, bots and spam out (each rule counted
        in the XCom), sessions; gated by the `silver_interactions` suite before writing."""

        from towerflow.tasks import build_silver

        return build_silver(days)

    @task(execution_timeout=timedelta(hours=2), outlets=[*GOLD, *SPLIT])
    def build_gold(days: dict, holdout_days: str) -> dict:
        """Per-day user and item features (gated before writing), purchase history, and the time-based split:
        the holdout is at least `holdout_days` days, longer until it holds enough users and events."""

        from towerflow.tasks import build_gold

        return build_gold(days, int(holdout_days))

    @task
    def validate_features(days: dict) -> dict:
        """Great Expectations suites `gold_user_features` and `gold_item_features` on the features as written.
        Data Docs: `$TOWERFLOW_HOME/reports/data_docs/index.html`; the log names the pages."""

        from towerflow.tasks import validate_features

        return validate_features(days)

    @task(execution_timeout=timedelta(minutes=30))
    def materialize_features(run_date: str) -> dict:
        """`feast apply` (unchanged objects skipped), then materialize the feature views to the online store up
        to the run date."""

        from towerflow.tasks import materialize_features

        return materialize_features(run_date)

    @task(execution_timeout=timedelta(hours=6))
    def tune(run_date: str, params=None) -> dict:
        """With the `tune` param: choose training settings on a validation window before the holdout, within
        `tune_budget_minutes`. Without it: the defaults."""

        from towerflow.tasks import tune_models

        return tune_models(run_date, bool(params.get("tune")), params["tune_budget_minutes"], params.get("epochs"))

    @task(execution_timeout=timedelta(hours=1))
    def training_set(run_date: str, params=None) -> dict:
        """Feast's point-in-time training sets, kept in the run folder (Parquet and a manifest). Skipped when
        the same inputs were built before."""

        from towerflow.tasks import build_training_set

        return build_training_set(run_date, params.get("epochs"))

    @task(execution_timeout=timedelta(hours=2))
    def train_retrieval(run_date: str, params=None) -> dict:
        """Train the two-tower retrieval models: one before the ranker's window to propose its labelled
        candidates, and the one that ships, on everything before the cutoff."""

        from towerflow.tasks import train_retrieval

        return train_retrieval(run_date, params.get("epochs"))

    @task(execution_timeout=timedelta(hours=1))
    def train_ranking(run_date: str, params=None) -> dict:
        """Train the deep & cross ranker on the retrieval model's candidates; stage both models."""

        from towerflow.tasks import train_ranking

        return train_ranking(run_date, params.get("epochs"))

    @task(execution_timeout=timedelta(hours=1))
    def evaluate(run_date: str) -> dict:
        """Candidate vs production vs baselines on the holdout; HTML report in
        `$TOWERFLOW_HOME/runs/<date>/evaluation/`."""

        from towerflow.tasks import evaluate_models

        return evaluate_models(run_date)

    @task.branch
    def gate(run_date: str, params=None) -> str:
        """Decide what serves next: `refit` when the candidate beats production and the data passed both gates
        (or `force_publish`), else `keep_production`."""

        from towerflow.tasks import gate_models

        return "refit" if gate_models(run_date, bool(params.get("force_publish")))["publish"] else "keep_production"

    @task(execution_timeout=timedelta(hours=3))
    def refit(run_date: str, params=None) -> dict:
        """Train the chosen recipe again on everything before the run date, holdout included."""

        from towerflow.tasks import refit_models

        return refit_models(run_date, params.get("epochs"))

    @task(outlets=[MODELS])
    def publish(run_date: str) -> dict:
        """New model versions, `models.config` labels, precomputed recommendations, and an experiment giving
        the canary `TOWERFLOW_CANARY_SHARE` percent of `home`'s users."""

        from towerflow.tasks import publish_models

        return publish_models(run_date)

    @task
    def keep_production() -> str:
        """The gate kept the models in production; nothing to publish."""

        return "production unchanged"

    @task(trigger_rule="none_failed_min_one_success")
    def report(run_date: str) -> dict:
        """What ran and what serves now."""

        from towerflow.tasks import report

        return report(run_date)

    @task(execution_timeout=timedelta(minutes=30))
    def monitor(run_date: str) -> dict:
        """Monitoring report of the day before the run date: PSI of key features and scores against the serving
        model's training days, CTR and conversion per model version, in
        `$TOWERFLOW_HOME/reports/monitoring/<day>.html`; the gateway's /metrics serves its gauges."""

        from monitoring.report import report_task

        return report_task(run_date)

    days = plan_days(RUN_DATE)
    ingest_landing(RUN_DATE) >> days
    checked = validate_raw(days)
    silver = build_silver(days)
    checked >> silver
    gold = build_gold(days, HOLDOUT_DAYS)
    silver >> gold
    features_ok = validate_features(days)
    gold >> features_ok
    online = materialize_features(RUN_DATE)
    features_ok >> online
    tuned = tune(RUN_DATE)
    online >> tuned
    train_set = training_set(RUN_DATE)
    tuned >> train_set
    retrieval = train_retrieval(RUN_DATE)
    train_set >> retrieval
    ranking = train_ranking(RUN_DATE)
    retrieval >> ranking
    evaluated = evaluate(RUN_DATE)
    ranking >> evaluated
    decision = gate(RUN_DATE)
    evaluated >> decision
    refitted, kept = refit(RUN_DATE), keep_production()
    decision >> [refitted, kept]
    published = publish(RUN_DATE)
    refitted >> published
    reported = report(RUN_DATE)
    [published, kept] >> reported
    reported >> monitor(RUN_DATE)


towerflow_daily()
