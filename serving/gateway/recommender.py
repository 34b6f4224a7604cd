"""The recommendation flow behind `GET /v1/recommendations`, degrading instead of failing.

    A/B arm -> user features -> retrieval (top K) -> item features -> ranking -> rules -> top N

Paths (the response's `path`):
- `model`: the flow above.
- `cached`: the model server failed, timed out, or its breaker is open -> the user's precomputed
  recommendations from Redis, through the same rules.
- `fallback_popular`: the online store is unreachable, the user is unknown (cold start), or
  nothing precomputed exists -> popular items (within the requested category) from the
  in-memory catalog.
Every stage has a time budget; a dependency that fails opens its breaker, so later requests skip
it (no per-request timeout cost) until a probe finds it back. Short lists are topped up from
popular items, so a response has `count` items whenever the catalog allows.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple, TypedDict, TypeVar

import grpc
import numpy as np

from experiments.domain import DEFAULT_SURFACE, Arm, Experiment, control
from features.precomputed import Precomputed, read_precomputed
from features.reader import UserFeatures
from scoring import binding
from scoring.binding import UnboundInputError
from scoring.catalog import EMPTY, Catalog
from scoring.context import request_context, variant_of
from scoring.rules import RuleConfig, apply_rules, rule_columns
from scoring.twostage import (
    candidates_of,
    check_sources,
    is_cold,
    popular_items,
    ranking_inputs,
    retrieval_inputs,
)
from serving.gateway.breaker import Breaker
from serving.gateway.metrics import GatewayMetrics
from serving.tfs_client import AsyncModelClient, InputSpec, Prediction, input_specs_of, names
from towerflow.logs import REQUEST_ID

if TYPE_CHECKING:  # features/ imports Feast: opened in the app's lifespan
    from redis.asyncio import Redis

    from features.reader import FastFeatureReader

log = logging.getLogger(__name__)
_T = TypeVar("_T")

MODEL, CACHED, POPULAR = "model", "cached", "fallback_popular"
#: The ranking output naming what a published pair serves (`models.export.RECOMMENDER`).
RECOMMENDER = "recommender"
#: A user feature view older than this at read time counts as stale (36 h: a daily run missed).
STALE_FEATURES_S = 36 * 3600.0
#: gRPC codes after which a cached signature may be out of date (version gone or changed).
_STALE_SIGNATURE = (
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
)


@dataclass(frozen=True)
class Timeouts:
    """Per-stage budgets in seconds."""

    retrieval: float = 0.08
    ranking: float = 0.08
    features: float = 0.05
    redis: float = 0.05


@dataclass
class Served:
    """One response: the items, which path served them and why, and what to log.

    `sources`: how many items each source gave, in list order (the path's own list, then
    `fallback_popular` items that topped it up)."""

    request_id: str
    user_id: str
    items: list[tuple[str, float | None]]
    path: str
    reason: str | None
    experiment_id: str
    arm: str
    model_versions: dict[str, str] = field(default_factory=dict)
    sources: dict[str, int] = field(default_factory=dict)


class Assignment(NamedTuple):
    """A request's experiment and arm; `forced` when the caller chose the arm (`X-Experiment-Arm`)
    instead of the user's hash."""

    experiment: Experiment
    arm: Arm
    forced: bool = False


class VersionSpec(TypedDict, total=False):
    """Which version a model-server call names: a number, or a label (one of the two)."""

    version: int
    version_label: str


def version_spec(label_or_version: str) -> VersionSpec:
    """`{"version": n}` for a number, else `{"version_label": label}` (ModelClient keywords)."""
    if label_or_version.isdigit():
        return {"version": int(label_or_version)}
    return {"version_label": label_or_version}


class StageError(Exception):
    """A stage failed; `reason` says which dependency and how (for metrics and the response)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ModelRunner:
    """Predict with inputs bound from the model's signature, cached per model version.

    The signature of the version a label points to is fetched once (GetModelMetadata) and reused
    for `ttl_s`; calls pin that exact version so inputs always match its signature. A NOT_FOUND /
    INVALID_ARGUMENT answer drops the cached signature and retries once (a new version landed).
    """

    def __init__(self, client: AsyncModelClient, *, ttl_s: float = 5.0) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self._cache: dict[tuple[str, str], tuple[int, dict[str, InputSpec], float]] = {}

    async def specs(self, model: str, label: str) -> tuple[int, dict[str, InputSpec]]:
        """(version, input specs) for `model` at `label` (a version label or number)."""
        entry = self._cache.get((model, label))
        if entry is not None and time.monotonic() - entry[2] < self.ttl_s:
            return entry[0], entry[1]
        version, defs = await self.client.signature_defs(model, **version_spec(label))
        specs = input_specs_of(defs)
        self._cache[(model, label)] = (version, specs, time.monotonic())
        return version, specs

    async def predict(
        self, model: str, label: str, build: Callable[[int, Mapping[str, InputSpec]], dict[str, np.ndarray]]
    ) -> Prediction:
        """Predict with `build(version, specs)`'s inputs for the version `label` points to."""
        for attempt in (0, 1):
            version, specs = await self.specs(model, label)
            inputs = build(version, specs)
            dtypes = {name: spec.dtype for name, spec in specs.items()}
            try:
                return await self.client.predict(model, inputs, version=version, dtypes=dtypes)
            except grpc.RpcError as err:
                if attempt == 0 and err.code() in _STALE_SIGNATURE:
                    self._cache.pop((model, label), None)
                    continue
                raise
        raise AssertionError("unreachable")


def _reason_of(err: BaseException) -> str:
    if isinstance(err, StageError):
        return err.reason
    if isinstance(err, UnboundInputError):
        return "model_unbound_input"
    if isinstance(err, TimeoutError):
        return "model_timeout"
    if isinstance(err, grpc.RpcError):
        code = err.code()
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return "model_timeout"
        if code == grpc.StatusCode.UNAVAILABLE:
            return "model_unavailable"
    return "model_error"


class Recommender:
    """Runs the flow for one request (see module doc). One per gateway process.

    Args:
        runner: model calls.
        redis: `redis.asyncio.Redis` holding precomputed recommendations.
        prefix: their key prefix.
        experiments: the running experiment of each surface that has one (`assignment` serves
            `control(surface)` on the others); the gateway replaces it when the store changes.
        rules: rule settings (`count` etc. are per request; the rest are defaults).
        timeouts: stage budgets.
        metrics: the gateway's metrics.
        executor: threads for the blocking feature reader.
        breakers: `model_server`, `online_store`, `redis`.
        stale_features_s: a user feature view older than this when read counts as stale.
    """

    def __init__(
        self,
        *,
        runner: ModelRunner,
        redis: Redis | None,
        prefix: str,
        experiments: Mapping[str, Experiment] | None = None,
        rules: RuleConfig,
        timeouts: Timeouts,
        metrics: GatewayMetrics,
        executor: Executor,
        breakers: Mapping[str, Breaker],
        stale_features_s: float = STALE_FEATURES_S,
    ) -> None:
        self.stale_features_s = stale_features_s
        self.runner = runner
        self.redis = redis
        self.prefix = prefix
        self.experiments: Mapping[str, Experiment] = dict(experiments or {})
        self.rules = rules
        self.timeouts = timeouts
        self.metrics = metrics
        self.executor = executor
        self.breakers = dict(breakers)
        self.catalog: Catalog = EMPTY
        #: Items withdrawn by a catalog upsert since the item features were materialized
        #: (serving/gateway/catalog_overrides.py): excluded on every path.
        self.withdrawn: frozenset[str] = frozenset()
        #: Per model, why the version its label points to is refused (`check_version`).
        self.unbound: dict[str, UnboundInputError] = {}
        self._checked: set[tuple[Any, ...]] = set()
        self._wanted: tuple[tuple[frozenset[str], tuple[str, ...]], frozenset[str]] | None = None

    def experiment(self, surface: str = DEFAULT_SURFACE) -> Experiment:
        """The experiment `surface` serves: its running one, else every user on `stable`."""
        return self.experiments.get(surface) or control(surface)

    def assignment(self, user_id: str, surface: str = DEFAULT_SURFACE) -> Assignment:
        """The user's arm in the experiment of `surface` (sticky: see experiments.domain)."""
        experiment = self.experiment(surface)
        return Assignment(experiment, experiment.assign(user_id))

    def serving_arms(self) -> list[Arm]:
        """Every arm some request may be served by now: the running experiments' and `control`."""
        unique: dict[tuple[tuple[str, str], ...], Arm] = {}
        for arm in (*control().arms, *(a for e in self.experiments.values() for a in e.arms)):
            unique.setdefault(tuple(arm.models.items()), arm)
        return list(unique.values())

    async def recommend(
        self,
        reader: FastFeatureReader | None,
        *,
        user_id: str,
        count: int,
        exclude: Sequence[str] = (),
        category: str | None = None,
        exclude_purchased: bool = True,
        exclude_seen: bool = False,
        user_read: Awaitable[dict[str, Any] | None] | None = None,
        moment: datetime | None = None,
        assignment: Assignment | None = None,
    ) -> Served:
        """Recommendations for one user; never raises for a dependency failure.

        `moment`: what the recommendations are for (the request context); default now.

        `user_read`: the user's features being read already (`read_user`), else read here.

        `assignment`: the request's experiment and arm; default the user's arm on `home`."""
        experiment, arm, forced = assignment or self.assignment(user_id)
        logged = moment is None and not forced  # what the route logs as impressions
        rules = replace(
            self.rules,
            count=count,
            exclude=frozenset(exclude) | self.withdrawn if self.withdrawn else frozenset(exclude),
            category=category,
            exclude_purchased=exclude_purchased,
            exclude_seen=exclude_seen,
        )
        request_id = REQUEST_ID.get() or uuid.uuid4().hex
        served = Served(request_id, user_id, [], POPULAR, None, experiment.id, arm.name)
        # The model server's breaker is open: the precomputed list will be wanted, so it is read
        # while the user's features are (one Redis round trip of waiting instead of two).
        stored = None
        if self.redis is not None and self.breakers["model_server"].skipping and self.breakers["redis"].allow():
            stored = asyncio.ensure_future(self._read_stored(user_id))
        try:
            user = await (user_read if user_read is not None else self.read_user(reader, user_id))
            self._count_user(user)
            if user is None or reader is None:  # no reader: no user read either
                served.reason = "online_store_unavailable"
            elif is_cold(user):
                served.reason = "cold_start"
            else:
                when = moment or datetime.now(UTC)
                served.reason = await self._model_path(served, reader, user, arm.models, rules, when)
                if served.reason is None:
                    return self._done(served, user, rules, logged)
                if await self._cached(served, user, rules, stored):
                    return self._done(served, user, rules, logged)
        finally:
            if stored is not None and not stored.done():
                stored.cancel()
            elif stored is not None and not stored.cancelled():
                stored.exception()  # retrieved, even when unused: no "never retrieved" warning
        served.path, served.model_versions = POPULAR, {}
        served.items = self._popular(user or {}, rules, [])
        return self._done(served, user or {}, rules, logged)

    def _done(self, served: Served, user: Mapping[str, Any], rules: RuleConfig, logged: bool = True) -> Served:
        own = len(served.items)
        if own < rules.count:  # top up a short list from popular items
            served.items += self._popular(user, rules, [i for i, _ in served.items])
        served.sources = {served.path: own} if own else {}
        if len(served.items) > own:
            served.sources[POPULAR] = served.sources.get(POPULAR, 0) + len(served.items) - own
        self.metrics.served.labels(served.path, served.reason or "").inc()
        if logged:
            self._count_impressions(served)
        return served

    def _count_impressions(self, served: Served) -> None:
        """Items shown by the path and versions that chose them (top-ups under their own path)."""
        versions = served.model_versions
        for path, n in served.sources.items():
            if path == MODEL:
                labels = (
                    MODEL,
                    versions.get("retrieval", ""),
                    versions.get("ranking", ""),
                    versions.get(RECOMMENDER, ""),
                )
            else:
                labels = (path, "", "", "")
            self.metrics.impressions_by_version.labels(*labels).inc(n)

    # -- stages ----------------------------------------------------------------------------------

    async def _in_thread(self, fn: Callable[..., _T], *args: object) -> _T:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.timeouts.features):
            return await loop.run_in_executor(self.executor, fn, *args)

    async def read_user(self, reader: FastFeatureReader | None, user_id: str) -> dict[str, Any] | None:
        """The user's features; None when the online store is unreachable (or its breaker open).
        Failures count against the store's breaker here; the lookup's metric is counted by the
        request that uses it."""
        breaker = self.breakers["online_store"]
        if reader is None or not breaker.allow():
            return None
        try:
            with self.metrics.time("user_features"):
                if reader.reads_users_async:  # Redis: on the loop, no thread hop
                    async with asyncio.timeout(self.timeouts.features):
                        user = await reader.user_features_async(user_id)
                else:
                    user = await self._in_thread(reader.user_features, user_id)
        except Exception:  # noqa: BLE001 - unreachable, slow or broken store: degrade
            breaker.failure()
            self.metrics.dependency_errors.labels("online_store").inc()
            return None
        breaker.success()
        return user

    def _count_user(self, user: Mapping[str, Any] | None) -> None:
        """Count the user lookup a request used (here, not in `read_user`: a request refused by
        the rate limit may have read the user already, and served nothing)."""
        if user is None:
            result = "error"
        else:
            result = "hit" if any(v is not None for v in user.values()) else "miss"
        self.metrics.features.labels("user", result).inc()
        if isinstance(user, UserFeatures):  # the fast reader says when each view's values became valid
            now = time.time()
            for view, valid_from in user.event_times.items():
                age = max(now - valid_from, 0.0)
                self.metrics.user_feature_read(view, age, stale=age > self.stale_features_s)

    async def _model_path(
        self,
        served: Served,
        reader: FastFeatureReader,
        user: dict[str, Any],
        labels: Mapping[str, str],
        rules: RuleConfig,
        moment: datetime,
    ) -> str | None:
        """Fill `served` from the models; returns None on success, else the failure reason."""
        breaker = self.breakers["model_server"]
        if not breaker.allow():
            return "model_server_unavailable"
        try:
            items, versions = await self._run_models(reader, served.user_id, user, labels, rules, moment)
        except Exception as err:  # noqa: BLE001 - every failure degrades to the next path
            reason = _reason_of(err)
            if isinstance(err, UnboundInputError):  # the version, not the server, is at fault
                self._count_unbound(err)
            elif reason.startswith("online_store"):
                self.breakers["online_store"].failure()
                self.metrics.dependency_errors.labels("online_store").inc()
            else:
                breaker.failure()
                self.metrics.dependency_errors.labels("model_server").inc()
                if reason == "model_error":
                    log.warning("model path failed: %r", err)
            return reason
        breaker.success()
        served.items, served.model_versions, served.path = items, versions, MODEL
        return None

    async def _run_models(
        self,
        reader: FastFeatureReader,
        user_id: str,
        user: dict[str, Any],
        labels: Mapping[str, str],
        rules: RuleConfig,
        moment: datetime,
    ) -> tuple[list[tuple[str, float | None]], dict[str, str]]:
        """The two-stage path of `scoring.twostage`, stage by stage with budgets."""
        ctx = request_context(moment, variant_of(rules.exclude_purchased, rules.exclude_seen))

        def retrieval(version: int, specs: Mapping[str, InputSpec]) -> dict[str, np.ndarray]:
            self.check_version(reader, "retrieval", version, specs)
            return retrieval_inputs(specs, user_id=user_id, user=user, ctx=ctx)

        with self.metrics.time("retrieval"):
            async with asyncio.timeout(self.timeouts.retrieval):
                retrieved = await self.runner.predict("retrieval", labels["retrieval"], retrieval)
        candidates = candidates_of(retrieved)
        ids = candidates.ids
        rows = candidates.rows  # the candidates' positions in this version's catalog
        catalog_rows = ((retrieved.model, retrieved.version), rows) if rows is not None else None
        # Gathered from memory: only the columns ranking's signature and the rules read. The
        # signature is the one predict will use (cached per version; a miss is a model-server call,
        # so it is fetched outside the feature stage and fails as the model path would).
        async with asyncio.timeout(self.timeouts.ranking):  # a cache miss asks the model server
            _, rank_specs = await self.runner.specs("ranking", labels["ranking"])
        wanted = self._wanted_columns(rank_specs, reader.item_columns)
        try:
            with self.metrics.time("item_features"):
                # From memory when the reader can (no thread hop); else off the loop (I/O).
                in_memory = reader.item_features_in_memory(ids, wanted, catalog_rows)
                items: Mapping[str, Any] = (
                    in_memory if in_memory is not None else await self._in_thread(reader.item_features, ids)
                )
        except Exception as err:  # noqa: BLE001
            self.metrics.features.labels("item", "error").inc(len(ids))
            raise StageError("online_store_unavailable") from err
        self._count_item_hits(items, len(ids))

        def ranking(version: int, specs: Mapping[str, InputSpec]) -> dict[str, np.ndarray]:
            self.check_version(reader, "ranking", version, specs)
            return ranking_inputs(specs, user_id=user_id, user=user, ctx=ctx, candidates=candidates, items=items)

        with self.metrics.time("ranking"):
            async with asyncio.timeout(self.timeouts.ranking):
                ranked = await self.runner.predict("ranking", labels["ranking"], ranking)
        with self.metrics.time("rules"):
            chosen = apply_rules(ids, ranked["scores"][0], items, user, rules)
        versions = {"retrieval": str(retrieved.version), "ranking": str(ranked.version)}
        served_by = ranked.get(RECOMMENDER)
        if served_by is not None and served_by.size:  # what the pair is: two_stage, a baseline...
            versions[RECOMMENDER] = names(served_by.ravel()[:1])[0]
        return list(chosen), versions

    def check_version(
        self, reader: FastFeatureReader, model: str, version: int, specs: Mapping[str, InputSpec]
    ) -> None:
        """Raise `UnboundInputError` when `reader` serves no source for one of the signature's
        inputs; remembered per version and reader columns (a version is refused, never fed zeros)."""
        user_columns = tuple(reader.user_columns)
        item_columns = tuple(reader.item_columns)
        key = (model, version, frozenset(specs), user_columns, item_columns)
        if key in self._checked:
            return
        try:
            check_sources(model, version, specs, user_columns, item_columns)
        except UnboundInputError as err:
            self.unbound[model] = err
            raise
        self.unbound.pop(model, None)
        self._checked.add(key)

    async def refusal(self, reader: FastFeatureReader | None, model: str) -> str | None:
        """Why a version an experiment arm routes `model` to is refused, in words, or None.
        (Fetches the signatures through the runner's cache.)"""
        if reader is None:
            return None
        for arm in self.serving_arms():
            label = arm.models[model]
            version, specs = await self.runner.specs(model, label)
            try:
                self.check_version(reader, model, version, specs)
            except UnboundInputError as err:
                inputs = ", ".join(err.inputs)
                return f"version {version} ({label}) is not served: no serving source for input(s) {inputs}"
        return None

    def _count_unbound(self, err: UnboundInputError) -> None:
        for name in err.inputs:
            self.metrics.unbound_inputs.labels(str(err.model), str(err.version), name).inc()
        log.error("%s", err)

    def _wanted_columns(self, specs: Mapping[str, InputSpec], columns: list[str]) -> frozenset[str]:
        key = (frozenset(specs), tuple(columns))
        if self._wanted is None or self._wanted[0] != key:
            self._wanted = (key, frozenset(c for c in columns if c in specs) | frozenset(rule_columns(columns)))
        return self._wanted[1]

    def _count_item_hits(self, items: Mapping[str, Sequence[Any]], n: int) -> None:
        column = next((v for k, v in items.items() if k != binding.ITEM_ID), None)
        if column is None:
            hits = n
        elif isinstance(column, np.ndarray) and column.dtype.kind == "f":
            hits = n - int(np.isnan(column).sum())
        else:
            hits = n - list(column).count(None)
        self.metrics.features.labels("item", "hit").inc(hits)
        if n - hits:
            self.metrics.features.labels("item", "miss").inc(n - hits)

    async def _read_stored(self, user_id: str) -> Precomputed | None:
        """The user's precomputed list within the Redis budget, timed as the `precomputed` stage."""
        with self.metrics.time("precomputed"):
            if self.redis is None:  # fails as an unreachable Redis does: popular instead
                raise ConnectionError("no Redis configured for precomputed recommendations")
            read = read_precomputed(self.redis, user_id, prefix=self.prefix)
            async with asyncio.timeout(self.timeouts.redis):
                return await read

    async def _cached(
        self, served: Served, user: Mapping[str, Any], rules: RuleConfig, pending: asyncio.Future | None = None
    ) -> bool:
        """Serve the precomputed list when there is one (`pending`: its read, already started);
        False otherwise."""
        breaker = self.breakers["redis"]
        if self.redis is None:  # none configured (embedded mode): nothing stored, nothing failed
            return False
        if pending is None and not breaker.allow():
            self.metrics.precomputed.labels("error").inc()
            return False
        try:
            stored = await (pending if pending is not None else self._read_stored(served.user_id))
        except Exception:  # noqa: BLE001 - unreachable or slow Redis: popular instead
            breaker.failure()
            self.metrics.dependency_errors.labels("redis").inc()
            self.metrics.precomputed.labels("error").inc()
            return False
        breaker.success()
        self.metrics.precomputed.labels("hit" if stored else "miss").inc()
        if stored is None:
            return False
        ids = stored.for_variant(variant_of(rules.exclude_purchased, rules.exclude_seen))
        ranks = np.arange(len(ids), 0, -1, dtype=np.float64)  # keep the stored order
        chosen = apply_rules(ids, ranks, self.catalog.features(ids), user, replace(rules, freshness_boost=0.0))
        if not chosen:
            return False
        served.items = [(i, None) for i, _ in chosen]
        served.path, served.model_versions = CACHED, {"precomputed": stored.model_version}
        return True

    def _popular(
        self, user: Mapping[str, Any], rules: RuleConfig, already: list[str]
    ) -> list[tuple[str, float | None]]:
        """Popular items (in the requested category), through the rules, minus `already`."""
        with self.metrics.time("popular"):
            chosen = popular_items(self.catalog, user, rules, already)
        return list(chosen)
