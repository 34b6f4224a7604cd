"""The feature store's batch side: apply the definitions, materialize, build training sets.

Opening the store (two environments, embedded and redis), the online store and its client, and the
materialization marker live in the features runtime package (features/), which the gateway
imports too; their names are re-exported here for the jobs, the CLI and the tests.

The definitions are feature_repo/'s, registered with Feast's own plan and apply (the same as
`feast apply` with the environment's feature_store.yaml).

Typical use (a DAG task, the CLI):

    store = feature_store(settings)
    apply(store)
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
    yaml_path,
)

if TYPE_CHECKING:  # heavy imports stay inside functions
    import pandas as pd
    import pyarrow as pa
    from feast import FeatureStore, FeatureView
    from feast.data_source import DataSource
    from feast.repo_contents import RepoContents

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
    "write_marker",
    "yaml_path",
    # the batch side
    "ApplyReport",
    "MaterializeReport",
    "ViewMaterialization",
    "apply",
    "delete_online_project",
    "materialize",
    "plan",
    "repo_contents",
    "training_set",
]


# ------------------------------------------------------------------------------------------------
# Definitions, plan and apply


def repo_contents(project: str) -> RepoContents:
    """feature_repo/'s objects as `feast plan` collects them (feature_repo/definitions.py).

    A fresh copy each call: Feast fills in inferred fields when it plans, and the repository's
    own module objects stay as written.
    """
    import copy

    from feast import Entity, FeatureService, FeatureView, Project
    from feast.data_source import DataSource, PushSource
    from feast.feature_view import DUMMY_ENTITY
    from feast.repo_contents import RepoContents

    import feature_repo.definitions as definitions

    objects = copy.deepcopy([getattr(definitions, name) for name in definitions.__all__])
    sources = [o for o in objects if isinstance(o, DataSource)]
    views = [o for o in objects if isinstance(o, FeatureView)]
    # Sources reached only through a push source or a view are registered too, as feast does.
    for nested in [s.batch_source for s in sources if isinstance(s, PushSource)] + [
        s for v in views for s in (v.batch_source, v.stream_source)
    ]:
        if nested is not None and not any(nested is s for s in sources):
            sources.append(nested)
    return RepoContents(
        projects=[Project(name=project)],
        data_sources=sources,
        feature_views=views,
        on_demand_feature_views=[],
        stream_feature_views=[],
        label_views=[],
        entities=[o for o in objects if isinstance(o, Entity)] + [DUMMY_ENTITY],
        feature_services=[o for o in objects if isinstance(o, FeatureService)],
        permissions=[],
    )


@dataclass
class ApplyReport:
    """What `apply` did: object counts by kind, which objects changed, seconds taken."""

    objects: dict[str, int]
    changed: list[str]
    seconds: float
    env: str
    project: str


def plan(store: FeatureStore) -> list[str]:
    """What `feast plan` would change in the registry: `"<transition> <kind> <name>"` per object.

    Feast's plan compares a feature view's embedded sources with their registry timestamps, so
    after a materialization it reports every view as updated although nothing was declared
    differently (`feast plan` prints these too); such views are not counted here.
    """
    from feast.diff.property_diff import TransitionType

    registry_diff, _, _ = store.plan(repo_contents(store.project))
    return [
        f"{d.transition_type.name.lower()} {d.feast_object_type.value} {d.name}"
        for d in registry_diff.feast_object_diffs
        if d.transition_type != TransitionType.UNCHANGED and not _timestamps_only(d)
    ]


def _timestamps_only(diff: Any) -> bool:
    """True when a feature view differs from its registered self only in its sources' meta."""
    props = diff.feast_object_property_diffs
    return bool(props) and all(
        p.property_name in ("batch_source", "stream_source")
        and _sans_meta(p.val_existing) == _sans_meta(p.val_declared)
        for p in props
    )


def _sans_meta(source: Any) -> bytes:
    clone = type(source)()
    clone.CopyFrom(source)
    clone.ClearField("meta")
    if clone.HasField("batch_source"):  # a push source's own batch source
        clone.batch_source.ClearField("meta")
    return clone.SerializeToString(deterministic=True)


def apply(store: FeatureStore) -> ApplyReport:
    """Register feature_repo/'s definitions and create online tables, as `feast apply` does.

    Feast's plan decides what changed; when nothing did, nothing is applied, so a rerun is a
    no-op (`changed` is empty). Objects registered but no longer defined are deleted.

    Args:
        store: the feature store (`feature_store(settings, env)`); its config carries the
            home and the lake.
    """
    from feast.repo_operations import extract_objects_for_apply_delete

    start = time.perf_counter()
    changed = plan(store)
    repo = repo_contents(store.project)
    if changed:
        to_apply, to_delete, _, _ = extract_objects_for_apply_delete(store.project, store.registry, repo)
        store.apply(to_apply, objects_to_delete=to_delete, partial=False)
    counts: dict[str, int] = {}
    for obj in [*repo.entities[:-1], *repo.data_sources, *repo.feature_views, *repo.feature_services]:
        counts[type(obj).__name__] = counts.get(type(obj).__name__, 0) + 1
    return ApplyReport(counts, changed, time.perf_counter() - start, env_of(store), store.project)


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

    from features.offline_store import source_uri

    started = time.perf_counter()
    end = _utc(end)
    report = MaterializeReport(end=end)
    for fv in sorted(store.list_feature_views(), key=lambda v: v.name):
        if views is not None and fv.name not in views:
            continue
        if start:
            window_start = _utc(start)
        elif fv.ttl is not None:
            window_start = end - fv.ttl
        else:
            raise ValueError(f"feature view {fv.name} has no ttl: give the window start")
        path = source_uri(store.config, _batch_source(fv))
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
    job = store.get_historical_features(entity_df=frame, features=service, full_feature_names=True)
    out = job.to_df()
    return out.sort_values("__row").drop(columns="__row").reset_index(drop=True)


def _batch_source(view: FeatureView) -> DataSource:
    """The view's offline source (Feast types it optional; every view of feature_repo/ has one)."""
    if view.batch_source is None:
        raise ValueError(f"feature view {view.name} has no batch source")
    return view.batch_source


def _require_tables(store: FeatureStore, service: Any) -> None:
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    from features.offline_store import source_uri

    for projection in service.feature_view_projections:
        path = source_uri(store.config, _batch_source(store.get_feature_view(projection.name)))
        try:
            DeltaTable(path)
        except TableNotFoundError:
            raise FeatureStoreError(
                f"feature view {projection.name} reads {path}, which does not exist yet; "
                "run the job that writes it first"
            ) from None
