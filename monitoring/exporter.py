"""The latest daily monitoring report as Prometheus gauges, read when scraped.

The report (monitoring/report.py) writes `<day>.json` beside its HTML; `ReportCollector` exposes
the newest one, so Prometheus sees a day's drift as soon as the report lands and alert rules
compare it with the thresholds the report used (deploy/prometheus/alerts.yml):

- `towerflow_drift_psi{table,feature,model_version}`: PSI of the day against its reference (a
  feature or score without one is left out);
- `towerflow_drift_threshold{level}`: the `warn` and `alert` thresholds;
- `towerflow_monitor_report_day_timestamp_seconds`: the start (UTC) of the day reported;
- `towerflow_monitor_impressions`, `towerflow_monitor_ctr`, `towerflow_monitor_conversion`
  `{path,retrieval_version,ranking_version}`: the day's outcomes per model version;
- `towerflow_monitor_path_impressions`, `towerflow_monitor_path_ctr` `{path}`: the same over every
  version of a path (a series that outlives versions, so a rule can compare it with last week's).

Only the standard library and prometheus_client: the slim gateway image loads it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from monitoring import SUMMARY_FILE

VERSION_LABELS = ["path", "retrieval_version", "ranking_version"]


def latest_summary_path(folder: Path) -> Path | None:
    """The newest `<YYYY-MM-DD>.json` in `folder` (by the day it names), or None."""
    if not folder.is_dir():
        return None
    found = sorted(p.name for p in folder.iterdir() if SUMMARY_FILE.match(p.name))
    return folder / found[-1] if found else None


def summary_metrics(summary: Mapping[str, Any] | None) -> list[Metric]:
    """The gauges of one report summary (families without samples when there is none)."""
    psi = GaugeMetricFamily(
        "towerflow_drift_psi",
        "Population stability index of a feature or of a ranking version's scores: the report's day vs its reference.",
        labels=["table", "feature", "model_version"],
    )
    threshold = GaugeMetricFamily(
        "towerflow_drift_threshold", "PSI from which drift is a warning or an alert.", labels=["level"]
    )
    day = GaugeMetricFamily(
        "towerflow_monitor_report_day_timestamp_seconds", "Start (UTC) of the day the latest monitoring report covers."
    )
    impressions = GaugeMetricFamily(
        "towerflow_monitor_impressions", "Impressions of the reported day per model version.", labels=VERSION_LABELS
    )
    ctr = GaugeMetricFamily(
        "towerflow_monitor_ctr", "Clicked impressions / impressions of the reported day.", labels=VERSION_LABELS
    )
    conversion = GaugeMetricFamily(
        "towerflow_monitor_conversion",
        "Responses with an attributed purchase / responses of the reported day.",
        labels=VERSION_LABELS,
    )
    path_impressions = GaugeMetricFamily(
        "towerflow_monitor_path_impressions", "Impressions of the reported day per served path.", labels=["path"]
    )
    path_ctr = GaugeMetricFamily(
        "towerflow_monitor_path_ctr", "Clicked impressions / impressions of the reported day per path.", labels=["path"]
    )
    families: list[Metric] = [psi, threshold, day, impressions, ctr, conversion, path_impressions, path_ctr]
    if summary is None:
        return families
    for row in summary.get("drift", []):
        if row.get("psi") is not None:
            psi.add_metric([row["table"], row["feature"], row.get("model_version", "")], float(row["psi"]))
    for level, value in summary.get("thresholds", {}).items():
        threshold.add_metric([level], float(value))
    start = datetime.combine(date.fromisoformat(summary["day"]), datetime.min.time(), UTC)
    day.add_metric([], start.timestamp())
    for row in summary.get("outcomes", []):
        labels = [row["path"], row["retrieval_version"], row["ranking_version"]]
        impressions.add_metric(labels, float(row["impressions"]))
        if row.get("ctr") is not None:
            ctr.add_metric(labels, float(row["ctr"]))
        if row.get("conversion") is not None:
            conversion.add_metric(labels, float(row["conversion"]))
    for row in summary.get("paths", []):
        path_impressions.add_metric([row["path"]], float(row["impressions"]))
        if row.get("ctr") is not None:
            path_ctr.add_metric([row["path"]], float(row["ctr"]))
    return families


class ReportCollector(Collector):
    """Exposes the newest summary in `folder` (re-read when a newer one lands or it changes)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._cached: tuple[Path, float, dict[str, Any]] | None = None

    def describe(self) -> list[Metric]:
        return summary_metrics(None)

    def collect(self) -> Iterator[Metric]:
        yield from summary_metrics(self._latest())

    def _latest(self) -> dict[str, Any] | None:
        path = latest_summary_path(self.folder)
        if path is None:
            return None
        try:
            mtime = path.stat().st_mtime
            if self._cached is None or self._cached[:2] != (path, mtime):
                self._cached = (path, mtime, json.loads(path.read_text()))
        except (OSError, ValueError):  # being replaced, or unreadable: the last one read, if any
            return self._cached[2] if self._cached is not None else None
        return self._cached[2]
