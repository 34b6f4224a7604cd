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
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Seconds; most stages take 0.1-5 ms, a timed-out one up to the stage budget.
BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class GatewayMetrics:
    """The gateway's metrics; `registry` is what `/metrics` exposes."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
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
