"""The feature store's batch side: apply the definitions, materialize, build training sets.

Opening the store (two environments, embedded and redis), the online store and its client, and the
materialization marker live in the features runtime package (features/), which the gateway
imports too; their names are re-exported here for the jobs, the CLI and the tests.

Typical use (a DAG task, the CLI):

    store = feature_store(settings)
    apply(store, settings)
    materialize(store, end=data_interval_end)
    frame = training_set(store, examples, "ranking")
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from features.marker import MARKER_KEY, marker_file, read_marker, write_marker
from features.store import (
    ENVIRONMENTS,
    REPO_DIR,
    FeatureStoreError,
    env_of,
    feature_store,
    redis_client,
    redis_connection_string,
    redis_reachable,
    repo_config,
    repo_config_dict,
    resolve_env,
    use_bundled_duckdb_extensions,
)
from towerflow.settings import Settings

if TYPE_CHECKING:  # heavy imports stay inside functions
    import pandas as pd
    import pyarrow as pa
    from feast import FeatureStore

__all__ = [
    # re-exported from features/
    "ENVIRONMENTS",
    "MARKER_KEY",
    "REPO_DIR",
    "FeatureStoreError",
    "env_of",
    "feature_store",
    "read_marker",
    "redis_client",
    "redis_connection_string",
    "redis_reachable",
    "repo_config",
    "repo_config_dict",
    "resolve_env",
    "use_bundled_duckdb_extensions",
    "write_marker",
    # the batch side
    "ApplyReport",
    "MaterializeReport",
    "ViewMaterialization",
    "apply",
    "definitions",
    "delete_online_project",
    "materialize",
    "training_set",
    "write_feature_store_yaml",
]

#: Definition modules, in dependency order.
REPO_MODULES = ("entities", "sources", "views", "services")


def write_feature_store_yaml(settings: Settings, env: str, project: str | None = None) -> Path:
    """Write `<feature_registry_dir>/<env>/feature_store.yaml` for the `feast` CLI and UI.

    Registry commands work with it, e.g. `feast -c feature_repo -f <that file> feature-views list`
    or `feast ui`. Register definitions with `towerflow features apply`, not `feast apply`: the
    `feast` CLI imports each repo file as a top-level module next to our package imports of the
    same files and then sees every object twice.
    """
    import yaml

    path = settings.feature_registry_dir / env / "feature_store.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(repo_config_dict(settings, env, project), sort_keys=False))
    return path


# ------------------------------------------------------------------------------------------------
# Definitions and apply


def definitions(settings: Settings) -> list[Any]:
    """Every Feast object in feature_repo/, with its sources pointed at `settings`' lake.

    The repository resolves paths once, at import; re-pointing here keeps the definitions the
    same while letting one process work with several homes (tests, benchmarks).
    """
    import copy
    import importlib

    from feast import Entity, FeatureService, FeatureView, FileSource, PushSource

    from feature_repo.paths import TABLE_TAG

    kinds = (Entity, FileSource, PushSource, FeatureView, FeatureService)
    objects: list[Any] = []
    for name in REPO_MODULES:
        module = importlib.import_module(f"feature_repo.{name}")
        found = [v for k, v in vars(module).items() if not k.startswith("_") and isinstance(v, kinds)]
        objects += [copy.deepcopy(v) for v in found]
    unique = {(type(o).__name__, o.name): o for o in objects}

    def repoint(source: Any) -> None:
        if isinstance(source, PushSource):
            source = source.batch_source
        if isinstance(source, FileSource) and TABLE_TAG in source.tags:
            layer, table = source.tags[TABLE_TAG].split("/", 1)
            source.file_options.uri = settings.table_uri(layer, table)

    for obj in unique.values():
        if isinstance(obj, FeatureView):
            repoint(obj.batch_source)
            repoint(obj.stream_source)
        elif isinstance(obj, FileSource | PushSource):
            repoint(obj)
    return list(unique.values())


@dataclass
class ApplyReport:
    """What `apply` did: object counts by kind, which objects changed, seconds taken."""

    objects: dict[str, int]
    changed: list[str]
    seconds: float
    env: str
    project: str


def apply(store: FeatureStore, settings: Settings) -> ApplyReport:
    """Register feature_repo/'s definitions and create online tables; a rerun changes nothing.

    Objects identical to the registered ones are not re-applied, so a second run is a no-op
    (`changed` is empty).
    """
    start = time.perf_counter()
    objects = definitions(settings)
    changed = [f"{type(o).__name__} {o.name}" for o in objects if _differs(store, o)]
    if changed:
        store.apply(objects)
    counts: dict[str, int] = {}
    for obj in objects:
        counts[type(obj).__name__] = counts.get(type(obj).__name__, 0) + 1
    return ApplyReport(counts, changed, time.perf_counter() - start, env_of(store), store.project)


def _differs(store: FeatureStore, obj: Any) -> bool:
    """True when `obj` is not registered in this form (registry bookkeeping aside)."""
    from feast import Entity, FeatureService, FeatureView, FileSource, PushSource

    getters = {
        Entity: store.get_entity,
        FeatureView: store.get_feature_view,
        FeatureService: store.get_feature_service,
        FileSource: store.get_data_source,
        PushSource: store.get_data_source,
    }
    getter = next(g for kind, g in getters.items() if isinstance(obj, kind))
    try:
        current = getter(obj.name)
    except Exception:  # not registered, or no registry file yet
        return True
    return _spec(current) != _spec(obj)


def _spec(obj: Any) -> bytes:
    proto = obj.to_proto()
    spec = getattr(proto, "spec", proto)
    _strip_meta(spec)
    return spec.SerializeToString(deterministic=True)


def _strip_meta(message: Any) -> None:
    """Clear what the registry fills in itself (created/updated times, entity columns it infers
    from the entities) at every depth, leaving what the definitions say."""
    for descriptor, value in message.ListFields():
        if descriptor.name in ("meta", "entity_columns"):
            message.ClearField(descriptor.name)
        elif descriptor.message_type is not None:
            if descriptor.is_repeated:
                values = value.values() if hasattr(value, "values") else value
                for item in values:
                    if hasattr(item, "ListFields"):
                        _strip_meta(item)
            else:
                _strip_meta(value)


# ------------------------------------------------------------------------------------------------
# Materialization


@dataclass
class ViewMaterialization:
    """One feature view's materialization: its window and how many entities it wrote."""

    view: str
    start: datetime | None
    end: datetime
    entities: int
    seconds: float = 0.0
    skipped: str | None = None


@dataclass
class MaterializeReport:
    """Per-view results of `materialize`; `marker` is the new materialization version."""

    end: datetime
    views: list[ViewMaterialization] = field(default_factory=list)
    seconds: float = 0.0
    marker: str | None = None

    @property
    def entities(self) -> int:
        return sum(v.entities for v in self.views)


def materialize(
    store: FeatureStore,
    end: datetime,
    start: datetime | None = None,
    views: Sequence[str] | None = None,
    on_view: Callable[[ViewMaterialization], None] | None = None,
) -> MaterializeReport:
    """Load each feature view's latest values as of `end` into the online store.

    Each view reads only its TTL window `[end - ttl, end]` (or `[start, end]`): rows older than
    that are expired at `end` and can never be served, so the window is all that can change
    online. Reading the whole window each time (not only what came since the last run) is what
    makes an ETL rerun of a day inside the window show up online; with the same-instant-replaces
    rule (features/redis_store.py) a rerun gives the same result. Views whose source table does not
    exist yet (embeddings before the first training) are skipped and reported.

    Args:
        store: the feature store.
        end: materialize values valid at this instant (UTC), e.g. the DAG's data_interval_end.
        start: override the window start for every view.
        views: only these feature views (default: all).
        on_view: called after each view (progress).

    Returns:
        Per-view windows and entity counts, and the new marker (readers reload on it).
    """
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    started = time.perf_counter()
    end = _utc(end)
    report = MaterializeReport(end=end)
    for fv in sorted(store.list_feature_views(), key=lambda v: v.name):
        if views is not None and fv.name not in views:
            continue
        window_start = _utc(start) if start else end - fv.ttl
        path = fv.batch_source.path
        view_started = time.perf_counter()
        try:
            table = DeltaTable(path)
        except TableNotFoundError:
            entry = ViewMaterialization(fv.name, None, end, 0, skipped=f"no table at {path}")
        else:
            entities = _count_entities(table, fv.join_keys, window_start, end)
            store.materialize(window_start, end, feature_views=[fv.name])  # both ends inclusive
            seconds = time.perf_counter() - view_started
            entry = ViewMaterialization(fv.name, window_start, end, entities, seconds)
        report.views.append(entry)
        if on_view:
            on_view(entry)
    report.seconds = time.perf_counter() - started
    if any(v.skipped is None for v in report.views):
        landed = {v.view: v.entities for v in report.views if v.skipped is None}
        report.marker = write_marker(store, report.end, landed)
    return report


def _count_entities(table: Any, keys: list[str], start: datetime, end: datetime) -> int:
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    ts = ds.field("event_timestamp")
    rows = table.to_pyarrow_dataset().to_table(columns=keys, filter=(ts >= start) & (ts <= end))
    if len(keys) == 1:
        return len(pc.unique(rows.column(keys[0])))
    return len(rows.group_by(keys).aggregate([]))


def _utc(when: datetime) -> datetime:
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


# ------------------------------------------------------------------------------------------------
# Online store clean-up


def delete_online_project(store: FeatureStore) -> int:
    """Remove this project's online values and marker (tests, benchmarks). Never flushes Redis.

    Returns:
        How many Redis keys (or 1 for the SQLite file) were deleted.
    """
    if env_of(store) == "embedded":
        path = Path(store.config.online_store.path)
        existed = path.exists()
        path.unlink(missing_ok=True)
        marker_file(store).unlink(missing_ok=True)
        return int(existed)
    client = redis_client(store)
    suffix = store.project.encode()
    deleted = 0
    batch: list[bytes] = []
    # Feast keys are <serialized entity key><project>: match only this project's.
    for key in client.scan_iter(match=b"*" + suffix, count=1000):
        if key.endswith(suffix):
            batch.append(key)
        if len(batch) >= 1000:
            deleted += client.delete(*batch)
            batch.clear()
    if batch:
        deleted += client.delete(*batch)
    deleted += client.delete(MARKER_KEY.format(project=store.project))
    return deleted


# ------------------------------------------------------------------------------------------------
# Training sets


def training_set(
    store: FeatureStore,
    examples: pd.DataFrame | pa.Table,
    feature_service: str = "ranking",
) -> pd.DataFrame:
    """Point-in-time training rows: each example joined with features as of its timestamp.

    A feature row joins an example when `row.event_timestamp <= example.event_timestamp` and is
    within the view's TTL; the latest such row wins. Rows of day D are stamped D + 1 00:00, so an
    example never sees the day it happened in, let alone later days.

    Args:
        store: the feature store.
        examples: rows with `user_id`, `item_id`, `event_timestamp` (gold/training_examples);
            other columns (action, quantity, ...) are carried through.
        feature_service: `retrieval` or `ranking`.

    Returns:
        The examples, in input order, plus one column per feature named `<view>__<feature>`.

    Raises:
        FeatureStoreError: a column is missing, or a view's gold table does not exist yet.
    """
    import pandas as pd
    import pyarrow as pa

    frame = examples.to_pandas() if isinstance(examples, pa.Table) else examples.copy()
    missing = {"user_id", "item_id", "event_timestamp"} - set(frame.columns)
    if missing:
        raise FeatureStoreError(f"examples lack column(s) {sorted(missing)}")
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    frame["__row"] = range(len(frame))
    service = store.get_feature_service(feature_service)
    _require_tables(store, service)
    use_bundled_duckdb_extensions()
    job = store.get_historical_features(entity_df=frame, features=service, full_feature_names=True)
    out = job.to_df()
    return out.sort_values("__row").drop(columns="__row").reset_index(drop=True)


def _require_tables(store: FeatureStore, service: Any) -> None:
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    for projection in service.feature_view_projections:
        path = store.get_feature_view(projection.name).batch_source.path
        try:
            DeltaTable(path)
        except TableNotFoundError:
            raise FeatureStoreError(
                f"feature view {projection.name} reads {path}, which does not exist yet; "
                "run the job that writes it first"
            ) from None
