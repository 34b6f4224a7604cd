"""Issue 20's drift must-show: a day whose feature distribution shifted is flagged by the daily
report and by the alert rule on the gauge the gateway exports from it; an unchanged day is not.
Also: the reference is the serving model's last training days, and CTR and conversion per model
version come from the lake's impressions and attributed events.

The lake: nine days of gold user and item features drawn alike (testsupport.feature_samples),
impressions of ranking version 3 (trained before the eighth day) and a day's clicks and purchases.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import yaml

from monitoring.drift import Thresholds
from monitoring.exporter import ReportCollector
from monitoring.report import monitor_day
from tests.conftest import REPO, need
from testsupport.feature_samples import item_feature_rows, user_feature_rows
from towerflow import schemas
from towerflow.lake import Lake

FIRST = date(2025, 3, 1)
TRAINED_BEFORE = date(2025, 3, 8)  # ranking version 3's training data ends the day before
UNCHANGED, SHIFTED = date(2025, 3, 8), date(2025, 3, 9)
REQUESTS, SHOWN = 300, 10  # model-path responses per day, items per response
THRESHOLDS = Thresholds(warn=0.1, alert=0.25)
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"


@dataclass(frozen=True)
class World:
    lake: Lake
    models_dir: Path


def _impressions(day: date, seed: int) -> pa.Table:
    rng = np.random.default_rng([seed, day.toordinal()])
    at = datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=12)
    rows = []
    for r in range(REQUESTS):
        for position in range(1, SHOWN + 1):
            rows.append(
                {
                    "request_id": f"{day}-r{r}",
                    "user_id": f"u{r}",
                    "item_id": f"i{(r + position) % 600}",
                    "position": position,
                    "score": float(rng.normal()),
                    "served_path": "model",
                    "experiment_id": "default",
                    "arm": "control",
                    "retrieval_version": "3",
                    "ranking_version": "3",
                    "timestamp": at,
                    "event_date": day,
                }
            )
    for r in range(50):  # cold starts: popular items, no score, no versions
        for position in range(1, SHOWN + 1):
            rows.append(
                {
                    "request_id": f"{day}-p{r}",
                    "user_id": f"new{r}",
                    "item_id": f"i{position}",
                    "position": position,
                    "score": None,
                    "served_path": "fallback_popular",
                    "experiment_id": "default",
                    "arm": "control",
                    "retrieval_version": None,
                    "ranking_version": None,
                    "timestamp": at,
                    "event_date": day,
                }
            )
    return pa.Table.from_pylist(rows, schema=schemas.BRONZE_IMPRESSIONS)


def _events(day: date) -> pa.Table:
    """60 model-path responses clicked once (the first item), 10 of them bought it; 5 popular
    responses clicked. All with the response's request id, an hour after it."""
    at = datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=13)
    picks = [(f"r{r}", f"u{r}", f"i{(r + 1) % 600}", "click") for r in range(60)]
    picks += [(f"r{r}", f"u{r}", f"i{(r + 1) % 600}", "purchase") for r in range(10)]
    picks += [(f"p{r}", f"new{r}", "i1", "click") for r in range(5)]
    rows = [
        {
            "event_id": f"e{n}",
            "user_id": user,
            "item_id": item,
            "action": action,
            "timestamp": at,
            "quantity": 1,
            "price": 10.0,
            "source": "stream",
            "import_batch": "test",
            "source_row": n,
            "request_id": f"{day}-{request}",
            "event_date": day,
        }
        for n, (request, user, item, action) in enumerate(picks)
    ]
    return schemas.as_schema(pa.Table.from_pylist(rows), schemas.BRONZE_EVENTS)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    home = tmp_path_factory.mktemp("monitoring")
    lake = Lake(str(home / "lake"))
    users, items = [f"u{n}" for n in range(1500)], [f"i{n}" for n in range(600)]
    for n in range(9):
        day = FIRST + timedelta(days=n)
        user_rows = user_feature_rows(users, day, seed=11)
        if day == SHIFTED:  # prices drift up: avg_price_30d, uniform on [0, 50), moves to [25, 75)
            shifted = pa.compute.add(user_rows.column("avg_price_30d"), 25.0)
            user_rows = user_rows.set_column(
                user_rows.schema.get_field_index("avg_price_30d"), "avg_price_30d", shifted
            )
        lake.write(lake.uri("gold", "user_features"), user_rows, partition_by=["feature_date"])
        lake.write(
            lake.uri("gold", "item_features"), item_feature_rows(items, day, seed=11), partition_by=["feature_date"]
        )
        lake.write(lake.uri("bronze", "impressions"), _impressions(day, seed=5), partition_by=["event_date"])
    lake.write(lake.uri("bronze", "events"), _events(SHIFTED), partition_by=["event_date"])
    models_dir = home / "models"
    meta = models_dir / "ranking" / "3" / "assets.extra" / "towerflow.json"
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps({"cutoff": f"{TRAINED_BEFORE}T00:00:00+00:00", "version": 3}))
    return World(lake, models_dir)


def _report(world: World, day: date, folder: Path) -> dict:
    _, summary = monitor_day(world.lake, world.models_dir, day, folder, thresholds=THRESHOLDS, reference_days=7)
    return summary


def _levels(summary: dict) -> dict[str, str]:
    return {f"{d['table']}.{d['feature']}{d['model_version']}": d["level"] for d in summary["drift"]}


def test_an_unchanged_day_is_not_flagged(world: World, tmp_path: Path) -> None:
    summary = _report(world, UNCHANGED, tmp_path)
    assert summary["reference"]["first"] == "2025-03-01" and summary["reference"]["last"] == "2025-03-07"
    assert "ranking version 3" in summary["reference"]["source"]
    assert set(_levels(summary).values()) == {"ok"}, _levels(summary)
    assert max(d["psi"] for d in summary["drift"]) < THRESHOLDS.warn
    assert "impressions.score3" in _levels(summary)  # the scores are watched too
    page = (tmp_path / f"{UNCHANGED}.html").read_text()
    assert "no drift" in page and "data:image/png;base64," in page


def test_a_shifted_feature_is_flagged_by_the_report(world: World, tmp_path: Path) -> None:
    summary = _report(world, SHIFTED, tmp_path)
    levels = _levels(summary)
    assert levels.pop("user_features.avg_price_30d") == "alert"
    assert set(levels.values()) == {"ok"}, levels
    drifted = next(d for d in summary["drift"] if d["feature"] == "avg_price_30d")
    assert drifted["psi"] > THRESHOLDS.alert
    assert [f["label"] for f in summary["flagged"]] == ["user_features.avg_price_30d"]
    page = (tmp_path / f"{SHIFTED}.html").read_text()
    assert '<span class="alert">1 alert(s)</span>' in page
    assert "user_features.avg_price_30d" in page


def test_ctr_and_conversion_per_model_version(world: World, tmp_path: Path) -> None:
    summary = _report(world, SHIFTED, tmp_path)
    by_version = {(o["path"], o["retrieval_version"], o["ranking_version"]): o for o in summary["outcomes"]}
    model = by_version[("model", "3", "3")]
    assert (model["impressions"], model["responses"]) == (REQUESTS * SHOWN, REQUESTS)
    assert (model["clicked_impressions"], model["converted_responses"]) == (60, 10)
    assert model["ctr"] == pytest.approx(60 / 3000) and model["conversion"] == pytest.approx(10 / 300)
    popular = by_version[("fallback_popular", "", "")]
    assert popular["ctr"] == pytest.approx(5 / 500) and popular["conversion"] == 0
    assert summary["attribution"]["by_request_id"] == 75
    # No events on the unchanged day: nothing clicked, rates of 0.
    quiet = _report(world, UNCHANGED, tmp_path / "quiet")
    assert {o["ctr"] for o in quiet["outcomes"]} == {0.0}


# -- the alert rule on the exported gauge ------------------------------------------------------------


def _exposition(folder: Path) -> str:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    registry.register(ReportCollector(folder))
    return generate_latest(registry).decode()


def _drift_alerts(exposition: str, tmp_path: Path) -> dict[str, list[dict]]:
    """Which drift alerts alerts.yml raises on `exposition` scraped from the gateway: each
    rule's expected alerts are asserted by `promtool test rules`; returns what it was told."""
    from prometheus_client.parser import text_string_to_metric_families

    promtool = shutil.which("promtool")
    need(promtool is not None, "no promtool (deploy/prometheus/install-promtool.sh)")
    assert promtool is not None
    series, psi = [], {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            labels = {**sample.labels, "instance": "gateway:8000", "job": "gateway"}
            text = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if v)
            series.append({"series": f"{sample.name}{{{text}}}", "values": f"{sample.value:.12f}x10"})
            if sample.name == "towerflow_drift_psi":
                psi[(sample.labels["table"], sample.labels["feature"], sample.labels["model_version"])] = sample.value
    rules = {r["alert"]: r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]}
    expected: dict[str, list[dict]] = {"FeatureDriftAlert": [], "FeatureDriftWarning": []}
    for (table, feature, version), value in psi.items():
        name = "FeatureDriftAlert" if value >= THRESHOLDS.alert else "FeatureDriftWarning"
        if value < THRESHOLDS.warn:
            continue
        severity = "critical" if name == "FeatureDriftAlert" else "warning"
        labels = {
            "severity": severity,
            "table": table,
            "feature": feature,
            **({"model_version": version} if version else {}),
        }
        shown = f"{table}.{feature}" + (f" (ranking {version})" if version else "")
        verb = "drifted" if name == "FeatureDriftAlert" else "shifted"
        annotations = {"summary": f"{shown} {verb}: PSI {value:.3f}"}
        if "description" in rules[name]["annotations"]:
            annotations["description"] = rules[name]["annotations"]["description"]
        expected[name].append({"exp_labels": labels, "exp_annotations": annotations})
    tests = {
        "rule_files": [str(ALERTS)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    {"eval_time": "5m", "alertname": name, "exp_alerts": alerts} for name, alerts in expected.items()
                ],
            }
        ],
    }
    path = tmp_path / "drift_test.yml"
    path.write_text(yaml.safe_dump(tests))
    proc = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return expected


def test_the_alert_fires_on_the_exported_gauge_of_a_shifted_day(world: World, tmp_path: Path) -> None:
    _report(world, UNCHANGED, tmp_path)
    _report(world, SHIFTED, tmp_path)  # the latest report is the one exported
    exposition = _exposition(tmp_path)
    assert 'towerflow_drift_psi{feature="avg_price_30d",model_version="",table="user_features"}' in exposition
    fired = _drift_alerts(exposition, tmp_path)
    assert [a["exp_labels"]["feature"] for a in fired["FeatureDriftAlert"]] == ["avg_price_30d"]
    assert fired["FeatureDriftWarning"] == []


def test_no_alert_on_an_unchanged_day(world: World, tmp_path: Path) -> None:
    _report(world, UNCHANGED, tmp_path)
    fired = _drift_alerts(_exposition(tmp_path), tmp_path)
    assert fired == {"FeatureDriftAlert": [], "FeatureDriftWarning": []}
