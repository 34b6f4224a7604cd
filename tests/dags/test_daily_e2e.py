"""towerflow_daily end to end through Airflow on a small synthetic world: tables, features,
published models; a rerun changes nothing; bad data stops the run at its gate and production
keeps serving. The gateway serving the published models: tests/serving/test_parity.py."""

from __future__ import annotations

from datetime import date, timedelta

import pyarrow as pa
import pytest

from models.registry import labels, list_models
from tests.conftest import DAILY_CONF, DAILY_RUN_DATE, DAILY_SYNTH
from tests.dags.test_airflow_ui import read_run
from towerflow.airflow_runner import run_dag
from towerflow.lake import Lake

pytestmark = [pytest.mark.integration, pytest.mark.training, pytest.mark.slow]
RUN_DATE = DAILY_RUN_DATE
CONF = DAILY_CONF
TABLES = [
    ("silver", "interactions"),
    ("silver", "items"),
    ("gold", "user_features"),
    ("gold", "item_features"),
    ("gold", "user_history"),
    ("gold", "user_seen"),
    ("gold", "training_examples"),
    ("gold", "holdout"),
]


def _content(lake: Lake) -> dict[str, pa.Table]:
    out = {}
    for layer, table in TABLES:
        data = lake.read(lake.uri(layer, table))
        keys = [
            c for c in ("event_id", "user_id", "item_id", "feature_date", "event_timestamp") if c in data.column_names
        ]
        out[f"{layer}/{table}"] = data.sort_by([(k, "ascending") for k in keys])
    return out


@pytest.fixture(scope="module")
def world(daily_world):
    """The session's small pipeline run (tests/conftest.py): settings and lake."""
    return daily_world.settings, daily_world.lake


def test_the_run_builds_tables_features_and_publishes_models(world) -> None:
    settings, lake = world
    for layer, table in TABLES:
        assert lake.count(lake.uri(layer, table)) > 0, f"{layer}/{table} is empty"
    feature_days = set(
        lake.read(lake.uri("gold", "user_features"), columns=["feature_date"]).column("feature_date").to_pylist()
    )
    assert len(feature_days) == DAILY_SYNTH["days"]  # every day of the data, not only the last one
    assert labels(settings.models_dir, "retrieval") == {"stable": 1, "canary": 1}
    assert labels(settings.models_dir, "ranking") == {"stable": 1, "canary": 1}
    report = settings.home_dir / "runs" / RUN_DATE / "evaluation" / "evaluation.html"
    assert report.exists() and "Recall@K" in report.read_text()


def test_a_rerun_of_the_same_date_changes_nothing(world) -> None:
    settings, lake = world
    before = _content(lake)
    ok, log = run_dag(settings, "towerflow_daily", RUN_DATE, CONF)
    assert ok, log.read_text()[-6000:]
    after = _content(lake)
    for name, table in before.items():
        assert after[name].equals(table), f"{name} changed on rerun"
    assert [i.version for i in list_models(settings.models_dir) if i.model == "retrieval"] == [1]
    assert "keep_production" in log.read_text()


def test_bad_data_fails_the_run_at_its_gate_and_production_stays(world) -> None:
    settings, lake = world
    events = lake.read(lake.uri("bronze", "events"))
    last = events.filter(pa.compute.equal(events.column("event_date"), pa.scalar(date(2025, 1, 21), pa.date32())))
    bad = last.to_pandas()
    # The next day, copied from the last one, with 5% of actions that do not exist.
    bad["event_date"] = bad["event_date"].map(lambda d: d + timedelta(days=1))
    bad["timestamp"] = bad["timestamp"] + timedelta(days=1)
    bad["event_id"] = bad["event_id"] + "-next"
    broken = bad.sample(frac=0.05, random_state=1).index
    bad.loc[broken, "action"] = "teleport"
    lake.write(
        lake.uri("bronze", "events"),
        pa.Table.from_pandas(bad, schema=events.schema, preserve_index=False),
        partition_by=["event_date"],
    )
    silver_version = lake.version(lake.uri("silver", "interactions"))
    ok, log = run_dag(settings, "towerflow_daily", "2025-01-23", CONF)
    text = log.read_text()
    assert not ok
    assert "task_id=validate_raw" in text and "data-quality gate 'bronze_events' failed" in text
    failed = read_run(settings, "towerflow_daily", "2025-01-23", ["validate_raw"])["tis"]["validate_raw"]
    assert failed["state"] == "failed" and failed["try_number"] == 1  # bad data is not retried
    assert "data-quality gate 'bronze_events' failed" in "\n".join(failed["log"])  # the UI's Logs tab says why
    assert lake.version(lake.uri("silver", "interactions")) == silver_version
    assert labels(settings.models_dir, "retrieval") == {"stable": 1, "canary": 1}
    assert [i.version for i in list_models(settings.models_dir) if i.model == "retrieval"] == [1]
