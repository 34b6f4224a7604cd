"""The gateway's monitoring metrics: impressions per model version (only for responses the
impression log records), the age of the user features it serves and stale reads, and the latest
daily report's drift on /metrics (monitoring/exporter.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families


def _recommender(gw, **kwargs):
    from scoring.catalog import Catalog
    from serving.gateway.metrics import GatewayMetrics
    from serving.gateway.recommender import Recommender, RuleConfig, Timeouts

    recommender = Recommender(
        runner=None,
        redis=None,
        prefix="t:",
        rules=RuleConfig(count=10),
        timeouts=Timeouts(),
        metrics=GatewayMetrics(),
        executor=None,
        breakers={},
        **kwargs,
    )
    recommender.catalog = Catalog.from_columns(gw.item_columns())
    return recommender


def _samples(registry, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in registry.collect()
        for s in family.samples
        if s.name == name
    }


def test_impressions_are_counted_per_version_and_path_only_when_logged(gw) -> None:
    from serving.gateway.recommender import MODEL, RuleConfig, Served

    recommender = _recommender(gw)
    versions = {"retrieval": "4", "ranking": "5", "recommender": "two_stage"}
    served = Served("r", "u1", [("i5", 0.9), ("i0", 0.8)], MODEL, None, "default", "control", dict(versions))
    recommender._done(served, {}, RuleConfig(count=5))  # 2 from the model, 3 popular top-ups
    replay = Served("r2", "u1", [("i5", 0.9)], MODEL, None, "default", "control", dict(versions))
    recommender._done(replay, {}, RuleConfig(count=5), logged=False)  # not logged: not counted
    counted = _samples(recommender.metrics.registry, "towerflow_gateway_impressions_by_version_total")
    model = (("path", "model"), ("ranking_version", "5"), ("recommender", "two_stage"), ("retrieval_version", "4"))
    popular = (("path", "fallback_popular"), ("ranking_version", ""), ("recommender", ""), ("retrieval_version", ""))
    assert counted == {model: 2.0, popular: 3.0}


def test_the_age_of_each_user_feature_view_is_observed_and_old_ones_counted_stale(gw) -> None:
    from features.reader import UserFeatures

    recommender = _recommender(gw, stale_features_s=36 * 3600)
    now = time.time()
    user = UserFeatures({"user_features__views_7d": 3}, {"user_features": now - 40 * 3600, "user_recent": now - 5})
    recommender._count_user(user)
    recommender._count_user({"user_features__views_7d": 3})  # a reader without event times: no age
    registry = recommender.metrics.registry
    counts = _samples(registry, "towerflow_gateway_user_feature_age_seconds_count")
    assert counts == {(("view", "user_features"),): 1.0, (("view", "user_recent"),): 1.0}
    sums = _samples(registry, "towerflow_gateway_user_feature_age_seconds_sum")
    assert sums[(("view", "user_features"),)] == pytest.approx(40 * 3600, abs=60)
    stale = _samples(registry, "towerflow_gateway_stale_user_features_total")
    assert stale == {(("view", "user_features"),): 1.0, (("view", "user_recent"),): 0.0}  # 0: a series to rate


def test_metrics_expose_the_latest_reports_drift(tmp_path: Path) -> None:
    from prometheus_client import generate_latest

    from serving.gateway.metrics import GatewayMetrics

    metrics = GatewayMetrics(reports_dir=tmp_path)
    assert "towerflow_drift_psi{" not in generate_latest(metrics.registry).decode()  # no report yet
    drift = {"table": "user_features", "feature": "views_30d", "model_version": "", "psi": 0.31, "level": "alert"}
    for day, psi in (("2025-03-08", 0.01), ("2025-03-09", 0.31)):
        summary = {
            "day": day,
            "thresholds": {"warn": 0.1, "alert": 0.25},
            "drift": [{**drift, "psi": psi}],
            "outcomes": [],
            "paths": [{"path": "model", "impressions": 3000, "clicked_impressions": 60, "ctr": 0.02}],
        }
        (tmp_path / f"{day}.json").write_text(json.dumps(summary))
    text = generate_latest(metrics.registry).decode()
    found = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    key = (("feature", "views_30d"), ("model_version", ""), ("table", "user_features"))
    assert found[("towerflow_drift_psi", key)] == 0.31  # the newest day's
    assert found[("towerflow_drift_threshold", (("level", "alert"),))] == 0.25
    assert found[("towerflow_monitor_path_ctr", (("path", "model"),))] == 0.02
    assert found[("towerflow_monitor_report_day_timestamp_seconds", ())] == 1741478400.0  # 2025-03-09 UTC


def test_a_request_observes_the_users_feature_age(bare_app, gw) -> None:
    """Through the app: the fast reader's event times reach the age histogram."""
    response = bare_app.get("/v1/recommendations", params={"user_id": "u1"}, headers=gw.auth())
    assert response.status_code == 200
    text = bare_app.get("/metrics").text
    ages = {
        s.labels["view"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "towerflow_gateway_user_feature_age_seconds_count"
    }
    assert ages.get("user_features", 0) >= 1, ages


@pytest.fixture
def bare_app(tmp_path: Path, gw, gateway_home):
    """The gateway on the embedded (SQLite) online store, no Redis, no model server."""
    settings = gateway_home.settings(
        lake_uri=gateway_home.own_lake(tmp_path),
        database_url=f"sqlite:///{tmp_path / 'experiments.sqlite3'}",
        redis_url=None,
        feature_env="embedded",
        model_server_target=f"127.0.0.1:{gw.free_port()}",
        jwt_key=gw.SECRET,
        impressions_flush_s=60,
    )
    client = gw.start_client(settings)
    yield client
    client.__exit__(None, None, None)
