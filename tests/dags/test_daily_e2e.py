"""towerflow_daily end to end through Airflow on a small synthetic world: tables, features,
published models, the gateway serving them; a rerun changes nothing; bad data stops the run at its
gate and production keeps serving."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from datetime import date, timedelta

import httpx
import pyarrow as pa
import pytest

from jobs.lake import Lake
from models.registry import labels, list_models
from tests.conftest import DAILY_CONF, DAILY_RUN_DATE, DAILY_SYNTH
from towerflow.airflow_runner import run_dag

pytestmark = [pytest.mark.integration, pytest.mark.training, pytest.mark.slow]
RUN_DATE = DAILY_RUN_DATE
CONF = DAILY_CONF
TABLES = [
    ("silver", "interactions"),
    ("silver", "items"),
    ("gold", "user_features"),
    ("gold", "item_features"),
    ("gold", "user_history"),
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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_gateway_serves_the_published_models(world) -> None:
    settings, lake = world
    port, model_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "TOWERFLOW_HOME": str(settings.home_dir),
        "TOWERFLOW_GATEWAY_PORT": str(port),
        "TOWERFLOW_MODEL_SERVER_PORT": str(model_port),
        "TOWERFLOW_MODEL_SERVER_TARGET": f"127.0.0.1:{model_port}",
        "TF_CPP_MIN_LOG_LEVEL": "3",
        # This checks that the published models serve, not latency: generous budgets on a busy CI machine.
        "TOWERFLOW_RETRIEVAL_TIMEOUT_MS": "5000",
        "TOWERFLOW_RANKING_TIMEOUT_MS": "5000",
        "TOWERFLOW_FEATURES_TIMEOUT_MS": "5000",
    }
    env.pop("REDIS_URL", None)
    env.pop("TOWERFLOW_REDIS_URL", None)
    serve = subprocess.Popen(
        [sys.executable, "-m", "towerflow.cli", "serve", "--port", str(port), "--model-port", str(model_port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert serve.poll() is None, serve.stderr.read()[-3000:]
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        token = (
            subprocess.run(
                [sys.executable, "-m", "towerflow.cli", "token", "--user", "t", "--scopes", "recommend:any"],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        features = lake.read(lake.uri("gold", "user_features"), columns=["user_id", "feature_date"]).to_pandas()
        active = sorted(features.loc[features["feature_date"] == features["feature_date"].max(), "user_id"])[:5]
        known = set(lake.read(lake.uri("silver", "items"), columns=["item_id"]).column("item_id").to_pylist())
        paths = []
        for user in active:
            for _ in range(3):  # the first calls warm the model server up and may take a fallback
                answer = httpx.get(
                    f"{base}/v1/recommendations",
                    params={"user_id": user, "count": 10},
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=10,
                )
                assert answer.status_code == 200, answer.text
                body = answer.json()
                if body["path"] == "model":
                    break
            items = [entry["item_id"] for entry in body["items"]]
            assert len(items) == 10 and len(set(items)) == 10 and set(items) <= known
            paths.append((body["path"], body.get("reason")))
        assert ("model", None) in paths, paths  # the published models answer, not only the fallbacks
    finally:
        serve.terminate()
        serve.wait(timeout=60)


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
    assert lake.version(lake.uri("silver", "interactions")) == silver_version
    assert labels(settings.models_dir, "retrieval") == {"stable": 1, "canary": 1}
    assert [i.version for i in list_models(settings.models_dir) if i.model == "retrieval"] == [1]
