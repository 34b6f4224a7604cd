"""The recommendation gateway (FastAPI): `create_app(settings)`.

Resources open in `lifespan`, not at import: the model-server client (gRPC, TF Serving's API
without TensorFlow: serving/tfs_client.py), the online feature reader (`FastFeatureReader` over the
Feast store), a `redis.asyncio` client
(rate limits, precomputed recommendations), the in-memory item catalog (popular items; rebuilt
when a new materialization lands), the impression logger, the event stream (streams/, for
`POST /v1/events`) and the experiments store (experiments/; the running experiments are re-read
every `experiments_refresh_s`, so one started or stopped applies within seconds). None of them
has to be reachable at start: the gateway starts, `/readyz` says what is missing, and requests
degrade meanwhile (without the experiments store: every user on `stable`, or the experiments
last read).

Run it with `towerflow serve`, or `uvicorn serving.gateway.main:serve_app --factory`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from experiments.domain import (
    ExperimentConflict,
    ExperimentError,
    ExperimentNotFound,
    InvalidExperiment,
    StoreUnavailable,
)
from scoring.catalog import Catalog
from scoring.rules import RuleConfig
from serving.gateway.auth import TokenVerifier
from serving.gateway.breaker import Breaker
from serving.gateway.catalog_overrides import POLL_S as OVERRIDES_POLL_S
from serving.gateway.catalog_overrides import CatalogOverrides
from serving.gateway.impressions import ImpressionLogger
from serving.gateway.metrics import GatewayMetrics, HttpMetricsMiddleware
from serving.gateway.ratelimit import RateLimiter
from serving.gateway.recommender import ModelRunner, Recommender, Timeouts
from serving.gateway.request_ids import RequestIdMiddleware
from serving.gateway.routes import events, health, items, recommend
from serving.gateway.routes import experiments as experiment_routes
from towerflow.settings import GatewaySettings, get_settings

if TYPE_CHECKING:  # opened in `lifespan`, imported there
    from feast import FeatureStore
    from redis import Redis
    from redis.asyncio import Redis as AsyncRedis

    from experiments.store import ExperimentStore
    from features.reader import FastFeatureReader
    from serving.tfs_client import AsyncModelClient
    from streams.base import EventStream

log = logging.getLogger(__name__)
CATALOG_REFRESH_S = 5.0
FEATURE_SERVICE = "ranking"
_E = TypeVar("_E", bound=Exception)


@dataclass
class Resources:
    """Everything the routes use; opened by `open_resources`, closed by `close`."""

    settings: GatewaySettings
    metrics: GatewayMetrics
    model_client: AsyncModelClient
    redis: AsyncRedis | None
    verifier: TokenVerifier
    limiter: RateLimiter
    recommender: Recommender
    impressions: ImpressionLogger
    events: EventStream
    overrides: CatalogOverrides
    executor: ThreadPoolExecutor
    breakers: dict[str, Breaker]
    reader: FastFeatureReader | None = None
    store: FeatureStore | None = None
    open_feature_store: bool = True
    experiment_store: ExperimentStore | None = None
    #: The last failure to read the experiments (logged when it changes, not every few seconds).
    experiments_error: str | None = None
    #: The catalog as the item features make it, before catalog upserts (`apply_overrides`).
    base_catalog: Catalog | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    # -- feature store and catalog (blocking; run in a thread) ----------------------------------

    def open_reader(self) -> None:
        """Open the Feast store and the fast reader, and load the item snapshot."""
        from features.reader import FastFeatureReader
        from features.store import feature_store

        env = self.settings.feature_env
        if env == "auto":  # never fall back to an empty SQLite store because Redis blinked
            env = "redis" if self.settings.redis_url else "embedded"
        store = feature_store(self.settings, env)
        reader = FastFeatureReader(store, FEATURE_SERVICE)
        _fail_fast(reader.online_redis)
        self.store, self.reader = store, reader
        reader.refresh()

    def refresh_catalog(self) -> None:
        """Rebuild the catalog when the reader's snapshot changed; update staleness gauges."""
        if self.reader is None:
            if not self.open_feature_store:
                return
            self.open_reader()
        if self.reader is None:
            raise RuntimeError("open_reader did not set the feature reader")
        snapshot = self.reader.snapshot  # also triggers the reader's marker check
        catalog = self.base_catalog
        if catalog is None or not len(catalog) or snapshot.version != catalog.version:
            self.base_catalog = Catalog.from_snapshot(snapshot, top=self.settings.popular_size)
            self.apply_overrides()
            log.info("catalog rebuilt: %d items (snapshot %s)", len(self.base_catalog), snapshot.version)
        self.metrics.snapshot_age.set(time.time() - snapshot.loaded_at)
        latest = self.reader.marker_version()  # the reader's own client: no new connection every few seconds
        self.metrics.snapshot_stale.set(int(latest is not None and latest != snapshot.version))

    def apply_overrides(self) -> None:
        """Serve the catalog upserts held (`CatalogOverrides`): withdrawn items, new items."""
        self.recommender.withdrawn = self.overrides.withdrawn
        if self.base_catalog is not None:
            new = {i: u.category for i, u in self.overrides.items.items() if u.available is not False}
            self.recommender.catalog = self.base_catalog.with_items(new)
            self.metrics.catalog_items.set(len(self.recommender.catalog))

    async def _overrides_loop(self) -> None:
        failing = False
        while True:
            try:
                if await self.overrides.refresh():
                    self.apply_overrides()
                failing = False
            except Exception as err:  # noqa: BLE001 - keep the upserts last read; poll again
                if not failing:
                    log.warning("catalog upserts not read (%s); serving the last read", err)
                failing = True
            await asyncio.sleep(OVERRIDES_POLL_S)

    async def _catalog_loop(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.refresh_catalog)
            except Exception as err:  # noqa: BLE001 - keep the last catalog; try again later
                log.warning("feature store / catalog refresh failed: %s", err)
            for name, breaker in self.breakers.items():
                self.metrics.breaker_open.labels(name).set(int(breaker.is_open))
            await asyncio.sleep(CATALOG_REFRESH_S)

    # -- experiments (blocking; run in a thread) -----------------------------------------------

    def experiments_store(self) -> ExperimentStore:
        """The experiments database, opened on first use (blocking)."""
        from experiments.store import ExperimentStore

        if self.experiment_store is None:
            self.experiment_store = ExperimentStore.open(self.settings.experiments_db_url)
        return self.experiment_store

    def refresh_experiments(self) -> bool:
        """Re-read the running experiments (opening the store first if need be); True when they
        changed. On failure the experiments last read stay in force."""
        try:
            running = self.experiments_store().running()
        except Exception as err:  # noqa: BLE001 - a store down, or a row the domain refuses: keep serving
            if str(err) != self.experiments_error:
                kept = ", ".join(e.describe() for e in self.recommender.experiments.values()) or "none"
                log.warning("experiments not read (%s); still serving the last read: %s", err, kept)
            self.experiments_error = str(err)
            return False
        if self.experiments_error is not None:
            log.info("experiments read again")
            self.experiments_error = None
        if running == self.recommender.experiments:
            return False
        for surface, experiment in running.items():
            if self.recommender.experiments.get(surface) != experiment:
                log.info("experiment %s", experiment.describe())
        for surface in set(self.recommender.experiments) - set(running):
            log.info("no experiment on %s any more: every user on stable", surface)
        self.recommender.experiments = running
        return True

    async def _experiments_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.experiments_refresh_s)
            if await asyncio.to_thread(self.refresh_experiments):
                await self._warm_signatures()

    async def _warm_signatures(self) -> None:
        """Fetch each arm's model signatures now, so the first request does not pay for it."""
        runner = self.recommender.runner
        for arm in self.recommender.serving_arms():
            for model, label in arm.models.items():
                try:
                    await runner.specs(model, label)
                except Exception as err:  # noqa: BLE001 - the model server may not be up yet
                    log.info("model %s@%s not reachable: %s", model, label, err)

    def start(self) -> None:
        self.impressions.start()
        self.tasks.append(asyncio.create_task(self._catalog_loop(), name="catalog-refresh"))
        self.tasks.append(asyncio.create_task(self._experiments_loop(), name="experiments-refresh"))
        self.tasks.append(asyncio.create_task(self._overrides_loop(), name="catalog-upserts"))
        self.tasks.append(asyncio.create_task(self._warm_signatures(), name="warm-signatures"))

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.impressions.close()
        await asyncio.to_thread(self.events.close)
        await self.model_client.close()
        if self.redis is not None:
            await self.redis.aclose()
        if self.reader is not None:
            await self.reader.aclose()
        if self.experiment_store is not None:
            await asyncio.to_thread(self.experiment_store.close)
        self.executor.shutdown(wait=False, cancel_futures=True)


def _fail_fast(client: Redis | None) -> None:
    """No retries with backoff on the reader's Redis client (redis-py's default sleeps up to
    ~7 s per call while Redis is down, holding a feature thread); the breaker retries instead."""
    if client is None:
        return
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client.set_retry(Retry(NoBackoff(), 1))
    client.connection_pool.connection_kwargs.update(socket_timeout=1.0, socket_connect_timeout=0.5)


def _redis_client(settings: GatewaySettings) -> AsyncRedis | None:
    """`redis.asyncio` client with tight timeouts and no retries: a slow Redis degrades a
    request instead of stalling it."""
    if not settings.redis_url:
        return None
    import redis.asyncio as aioredis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    timeout = settings.redis_timeout_ms / 1000
    return aioredis.Redis.from_url(
        settings.redis_url,
        socket_timeout=max(timeout, 0.05),
        socket_connect_timeout=max(timeout, 0.05),
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )


async def open_resources(
    settings: GatewaySettings, metrics: GatewayMetrics, *, open_feature_store: bool = True
) -> Resources:
    """Open the gateway's clients (none needs its service to be up yet)."""
    from serving.tfs_client import AsyncModelClient
    from streams import open_stream

    cooldown = settings.breaker_cooldown_s
    breakers = {
        "model_server": Breaker("model_server", threshold=3, cooldown_s=cooldown),
        "online_store": Breaker("online_store", threshold=3, cooldown_s=cooldown),
        "redis": Breaker("redis", threshold=3, cooldown_s=cooldown),
    }
    client = AsyncModelClient(
        settings.model_target, timeout=5.0, max_request_bytes=settings.model_server_max_request_bytes
    )
    redis = _redis_client(settings)
    executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="features")
    recommender = Recommender(
        runner=ModelRunner(client),
        redis=redis,
        prefix=settings.redis_prefix,
        rules=RuleConfig.from_settings(settings),
        timeouts=Timeouts(
            retrieval=settings.retrieval_timeout_ms / 1000,
            ranking=settings.ranking_timeout_ms / 1000,
            features=settings.features_timeout_ms / 1000,
            redis=settings.redis_timeout_ms / 1000,
        ),
        metrics=metrics,
        executor=executor,
        breakers=breakers,
        stale_features_s=settings.stale_user_features_s,
    )
    limiter = RateLimiter(
        redis,
        prefix=settings.redis_prefix,
        user_limit=settings.rate_limit_user,
        token_limit=settings.rate_limit_token,
        window_s=settings.rate_limit_window_s,
        timeout_s=settings.redis_timeout_ms / 1000,
        breaker=breakers["redis"],
        metrics=metrics,
    )
    events = open_stream(settings)
    impressions = ImpressionLogger(
        events, batch_records=settings.impressions_batch, flush_s=settings.impressions_flush_s, metrics=metrics
    )

    resources = Resources(
        settings=settings,
        metrics=metrics,
        model_client=client,
        redis=redis,
        verifier=TokenVerifier(settings),
        limiter=limiter,
        recommender=recommender,
        impressions=impressions,
        events=events,
        overrides=CatalogOverrides(redis, settings.redis_prefix),
        executor=executor,
        breakers=breakers,
        open_feature_store=open_feature_store,
    )
    await asyncio.to_thread(resources.refresh_experiments)  # the first request sees them already
    if open_feature_store:
        try:
            await asyncio.to_thread(resources.refresh_catalog)
        except Exception as err:  # noqa: BLE001 - start anyway; the refresh loop retries
            log.warning("feature store not available at start (%s); serving degraded until it is", err)
    return resources


def create_app(settings: GatewaySettings | None = None, *, open_feature_store: bool = True) -> FastAPI:
    """The gateway app.

    Args:
        settings: defaults to `get_settings()` (the environment).
        open_feature_store: open the Feast store in `lifespan`; tests that override
            `deps.get_reader` pass False.
    """
    settings = settings or get_settings()
    metrics = GatewayMetrics(reports_dir=settings.monitoring_reports_dir)  # drift gauges from the daily report

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        resources = await open_resources(settings, metrics, open_feature_store=open_feature_store)
        app.state.resources = resources
        resources.start()
        try:
            yield
        finally:
            await resources.close()

    app = FastAPI(
        title="towerflow gateway",
        version="1",
        summary="Two-stage product recommendations that degrade instead of failing.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.add_middleware(HttpMetricsMiddleware, metrics=metrics)
    app.add_middleware(RequestIdMiddleware)  # outermost: the metrics and the routes see the id
    app.include_router(recommend.router)
    app.include_router(events.router)
    app.include_router(items.router)
    app.include_router(experiment_routes.router)
    app.include_router(health.router)
    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            events.add_body_schemas(default_openapi())
        return app.openapi_schema or default_openapi()

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(ExperimentError, _experiment_error)
    return app


def serve_app() -> FastAPI:
    """The gateway as a server process runs it (`towerflow serve`; `uvicorn --factory`): the
    process's logging set up from the settings (`TOWERFLOW_LOG_FORMAT`), then `create_app`."""
    from towerflow.logs import configure

    settings = get_settings()
    configure(settings.log_format)
    return create_app(settings)


def _where(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc[1:]) or str(loc[0]) if loc else "request"


def _expect(exc: Exception, kind: type[_E]) -> _E:
    """`exc` as the exception type its handler was registered for (Starlette types every handler
    as taking any `Exception`)."""
    if not isinstance(exc, kind):
        raise TypeError(f"handler for {kind.__name__} called with {type(exc).__name__}") from exc
    return exc


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """422 with one readable `message` (e.g. `count: Input should be less than or equal to 100`),
    each error once."""
    exc = _expect(exc, RequestValidationError)
    # FastAPI caches a dependency's value, not its errors: a failing dependency that several
    # others need (the query parameters) is solved, and reported, once per path to it.
    errors = list({(tuple(e.get("loc", ())), e.get("type"), e.get("msg")): e for e in exc.errors()}.values())
    message = "; ".join(f"{_where(tuple(e.get('loc', ())))}: {e.get('msg')}" for e in errors)
    return JSONResponse(
        status_code=422,
        content={"message": message or "invalid request", "detail": jsonable_encoder(errors)},
    )


#: The HTTP status of each experiments error a route lets through (the first match wins).
EXPERIMENT_STATUS: tuple[tuple[type[ExperimentError], int], ...] = (
    (ExperimentNotFound, 404),
    (InvalidExperiment, 422),
    (ExperimentConflict, 409),
    (StoreUnavailable, 503),
)


async def _experiment_error(request: Request, exc: Exception) -> JSONResponse:
    """An experiments error as its status (404 unknown id, 422 invalid, 409 conflict, 503 store
    down) with the error's message, which says what to do next."""
    exc = _expect(exc, ExperimentError)
    status = next((code for kind, code in EXPERIMENT_STATUS if isinstance(exc, kind)), 500)
    detail: Any = str(exc)
    if isinstance(exc, InvalidExperiment):
        detail = [{"loc": field.split("."), "msg": problem} for field, problem in exc.errors]
    return JSONResponse(status_code=status, content={"message": str(exc), "detail": detail})


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    exc = _expect(exc, StarletteHTTPException)
    return JSONResponse(
        status_code=exc.status_code,
        content={"message": str(exc.detail), "detail": exc.detail},
        headers=exc.headers,
    )
