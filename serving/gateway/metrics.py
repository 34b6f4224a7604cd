"""Prometheus metrics of the gateway, in a registry of its own per app (tests build many apps).

- `towerflow_gateway_http_request_seconds{route,method,status}`: whole requests.
- `towerflow_gateway_stage_seconds{stage}`: user_features, retrieval, item_features, ranking,
  rules, precomputed, popular, rate_limit.
- `towerflow_gateway_recommendations_total{path,reason}`: which path served (model, cached,
  fallback_popular) and why it was not the model.
- `towerflow_gateway_precomputed_lookups_total{result}`: hit / miss / error (cache hit rate).
- `towerflow_gateway_feature_lookups_total{entity,result}`: hit / miss / error per entity
  (feature-store hit rate; items counted per candidate).
- `towerflow_gateway_dependency_errors_total{dependency}` and `..._breaker_open{dependency}`.
- `towerflow_gateway_item_snapshot_age_seconds`, `..._item_snapshot_stale` (1 when a newer
  materialization landed than the snapshot being served): stale features.
- `towerflow_gateway_rate_limited_total{scope}`, `towerflow_gateway_impressions_total{result}`.
- `towerflow_gateway_impressions_by_version_total{path,retrieval_version,ranking_version,recommender}`:
  items shown in responses the impression log records (not replays, not forced arms), by the path
  and model versions that chose them (CTR and conversion per version: the daily report).
- `towerflow_gateway_user_feature_age_seconds{view}`: how old each user feature view's values
  were when a request used them; `towerflow_gateway_stale_user_features_total{view}`: such reads
  older than the stale threshold.
- With `reports_dir`: the latest daily monitoring report's drift and outcomes
  (`towerflow_drift_*`, `towerflow_monitor_*`; monitoring/exporter.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Seconds; most stages take 0.1-5 ms, a timed-out one up to the stage budget.
BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
#: Seconds; live views are seconds to minutes old, daily ones up to a day and a bit, 36 h = stale.
AGE_BUCKETS = (60, 300, 900, *(hours * 3600 for hours in (1, 3, 6, 12, 24, 30, 36, 48, 72, 168, 720)))


class GatewayMetrics:
    """The gateway's metrics; `registry` is what `/metrics` exposes.

    Args:
        registry: default a registry of its own.
        reports_dir: the daily monitoring reports' folder; when given, `/metrics` also exposes
            the latest report's drift and outcomes (read when scraped).
    """

    def __init__(self, registry: CollectorRegistry | None = None, *, reports_dir: Path | None = None) -> None:
        # Importing Feast sets PROMETHEUS_MULTIPROC_DIR for the whole process (for Gunicorn
        # workers), which keeps every value in an mmap'ed file and checks the pid on each update.
        # The gateway has one process and a registry of its own: plain in-memory values.
        values.ValueClass = values.MutexValue
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.http = Histogram(
            "towerflow_gateway_http_request_seconds",
            "HTTP request latency.",
            ["route", "method", "status"],
            buckets=BUCKETS,
            registry=r,
        )
        self.stage = Histogram(
            "towerflow_gateway_stage_seconds",
            "Latency per recommendation stage.",
            ["stage"],
            buckets=BUCKETS,
            registry=r,
        )
        self.served = Counter(
            "towerflow_gateway_recommendations",
            "Responses by path served and reason.",
            ["path", "reason"],
            registry=r,
        )
        self.precomputed = Counter(
            "towerflow_gateway_precomputed_lookups",
            "Precomputed recommendation lookups.",
            ["result"],
            registry=r,
        )
        self.features = Counter(
            "towerflow_gateway_feature_lookups", "Online feature lookups.", ["entity", "result"], registry=r
        )
        self.dependency_errors = Counter(
            "towerflow_gateway_dependency_errors", "Failed or timed-out calls.", ["dependency"], registry=r
        )
        self.unbound_inputs = Counter(
            "towerflow_gateway_unbound_inputs",
            "Model calls refused because a signature input has no serving source.",
            ["model", "version", "input"],
            registry=r,
        )
        self.breaker_open = Gauge(
            "towerflow_gateway_breaker_open",
            "1 while calls to a dependency are skipped.",
            ["dependency"],
            registry=r,
        )
        self.snapshot_age = Gauge(
            "towerflow_gateway_item_snapshot_age_seconds", "Age of the item feature snapshot.", registry=r
        )
        self.snapshot_stale = Gauge(
            "towerflow_gateway_item_snapshot_stale",
            "1 when a newer materialization landed than the item snapshot being served.",
            registry=r,
        )
        self.catalog_items = Gauge("towerflow_gateway_catalog_items", "Items in the in-memory catalog.", registry=r)
        self.rate_limited = Counter(
            "towerflow_gateway_rate_limited", "Requests refused by the rate limit.", ["scope"], registry=r
        )
        self.impressions = Counter(
            "towerflow_gateway_impressions", "Impression rows written or dropped.", ["result"], registry=r
        )
        self.events = Counter(
            "towerflow_gateway_events",
            "Events posted: accepted into the stream, or not (the stream unavailable).",
            ["result"],
            registry=r,
        )
        self.impressions_by_version = Counter(
            "towerflow_gateway_impressions_by_version",
            "Items shown (logged responses) by the path and model versions that chose them.",
            ["path", "retrieval_version", "ranking_version", "recommender"],
            registry=r,
        )
        self.user_feature_age = Histogram(
            "towerflow_gateway_user_feature_age_seconds",
            "Age of each user feature view's online values when a request used them.",
            ["view"],
            buckets=AGE_BUCKETS,
            registry=r,
        )
        self.stale_user_features = Counter(
            "towerflow_gateway_stale_user_features",
            "User feature reads whose view's values were older than the stale threshold.",
            ["view"],
            registry=r,
        )
        self._feature_age: dict[str, tuple[Histogram, Counter]] = {}  # per view: its children
        if reports_dir is not None:
            from monitoring.exporter import ReportCollector

            r.register(ReportCollector(reports_dir))

    def user_feature_read(self, view: str, age_s: float, *, stale: bool) -> None:
        """Observe the age of a user feature view a request used (children cached: this runs for
        every view of every request, and `labels()` costs more than `observe`)."""
        children = self._feature_age.get(view)
        if children is None:
            children = (self.user_feature_age.labels(view), self.stale_user_features.labels(view))
            self._feature_age[view] = children
        children[0].observe(age_s)
        if stale:
            children[1].inc()

    @contextmanager
    def time(self, stage: str) -> Iterator[None]:
        """Observe the block's duration as `stage` (also when it raises)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.stage.labels(stage).observe(time.perf_counter() - start)


class HttpMetricsMiddleware:
    """Pure ASGI middleware timing each HTTP request by route template (not raw path)."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            name = (route.path if isinstance(route, Route | WebSocketRoute | Mount) else None) or "unmatched"
            self.metrics.http.labels(name, scope["method"], str(status)).observe(time.perf_counter() - start)
