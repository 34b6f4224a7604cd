"""Online feature reads: one user's features, and features of up to ~1000 items, for the gateway
and batch precompute alike.

`FeatureReader` is the seam. Three implementations pass one contract test
(tests/features/test_feature_reader_contract.py):

- `FeastFeatureReader`: Feast's `get_online_features`. The reference for what values must be.
- `FastFeatureReader`: the same values, faster. Item features come from a process-local snapshot
  loaded from the online store and reloaded when a new materialization lands (features/marker.py,
  written by `jobs.feature_store.materialize`); the user is one Redis HGETALL decoded with Feast's
  own helpers.
  Feast stays the source of truth: the feature service says which features, the online store
  holds the values, and decoding is Feast's.
- `InMemoryFeatureReader` (testsupport/feature_reader.py): a fake for unit tests of code around
  the seam (route tests run on `FastFeatureReader` over a real online store).

Feature names are Feast's full names, `<view>__<feature>`, the same as the training set columns
(`jobs.feature_store.training_set`), so a model sees identical keys in training and serving.

`FastFeatureReader.user_features` returns a `UserFeatures`: the same dict, plus when each view's
values became valid (`event_times`), read in the same round trip (the Redis hash's `_ts:<view>`
fields), so the gateway can measure how old the features it serves are.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from feast import FeatureStore
    from redis import Redis

log = logging.getLogger(__name__)
USER_KEY = "user_id"
ITEM_KEY = "item_id"


@runtime_checkable
class FeatureReader(Protocol):
    """Online features by entity, for one feature service.

    Missing entities or values come back as None, never as an error.
    """

    def user_features(self, user_id: str) -> dict[str, Any]:
        """`{"<view>__<feature>": value}` for the user's features."""
        ...

    def item_features(self, item_ids: Sequence[str]) -> dict[str, list[Any]]:
        """Columns aligned with `item_ids`: `{"item_id": ids, "<view>__<feature>": [values]}`."""
        ...


class UserFeatures(dict[str, Any]):
    """A user's features, `{"<view>__<feature>": value}` like any reader's, and `event_times`:
    per feature view, when the values the store holds became valid (seconds since the epoch; a
    view the store has no row of is absent)."""

    __slots__ = ("event_times",)

    def __init__(
        self, values: Mapping[str, Any] | Iterable[tuple[str, Any]] = (), event_times: Mapping[str, float] | None = None
    ) -> None:
        super().__init__(values)
        self.event_times = dict(event_times or {})


def _epoch_seconds(when: datetime) -> float:
    """A Feast event time in seconds since the epoch (a naive one is UTC, as Feast stores it)."""
    return (when if when.tzinfo is not None else when.replace(tzinfo=UTC)).timestamp()


# ------------------------------------------------------------------------------------------------
# Which features: resolved once from the feature service.


@dataclass(frozen=True)
class ViewRead:
    """One feature view's part of a feature service."""

    view: str  # the registered feature view
    alias: str  # the name used in outputs (`name_to_use`)
    features: tuple[str, ...]
    value_types: tuple[Any, ...]  # feast ValueType per feature, for Feast's own decoding
    fv: Any  # the FeatureView (for the online store's read API)
    live: bool  # fed by a push source: may change between materializations

    @property
    def columns(self) -> list[str]:
        return [f"{self.alias}__{f}" for f in self.features]


def service_reads(store: FeatureStore, service: str) -> dict[str, list[ViewRead]]:
    """The feature service's views grouped by join key (`user_id`, `item_id`)."""
    from feast.data_source import PushSource

    grouped: dict[str, list[ViewRead]] = {}
    for projection in store.get_feature_service(service).feature_view_projections:
        fv = store.get_feature_view(projection.name)
        if len(fv.join_keys) != 1:
            raise ValueError(f"feature view {fv.name} has join keys {fv.join_keys}; expected one")
        names = tuple(f.name for f in projection.features)
        types = {f.name: f.dtype.to_value_type() for f in fv.features}
        grouped.setdefault(fv.join_keys[0], []).append(
            ViewRead(
                view=fv.name,
                alias=projection.name_to_use(),
                features=names,
                value_types=tuple(types[n] for n in names),
                fv=fv,
                live=isinstance(fv.stream_source, PushSource),
            )
        )
    return grouped


def _entity_key(join_key: str, value: str):
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    return EntityKey(join_keys=[join_key], entity_values=[Value(string_val=value)])


def _online_read(
    store: FeatureStore,
    read: ViewRead,
    join_key: str,
    ids: Sequence[str],
    times: list[datetime | None] | None = None,
) -> list[list[Any]]:
    """Feast's lower-level online read, decoded: one list of values per id (None when missing).
    `times`, when given, receives each id's event time (None when missing)."""
    from feast.type_map import feast_value_type_to_python_type

    from features.feast_compat import online_store

    online = online_store(store)  # Feast's own store object: same reads as Feast's
    keys = [_entity_key(join_key, i) for i in ids]
    rows = online.online_read(store.config, read.fv, keys, list(read.features))
    out = []
    for when, values in rows:
        if times is not None:
            times.append(when)
        if not values:
            out.append([None] * len(read.features))
            continue
        out.append(
            [
                feast_value_type_to_python_type(values[f], t) if f in values else None
                for f, t in zip(read.features, read.value_types, strict=True)
            ]
        )
    return out


# ------------------------------------------------------------------------------------------------
# Feast's get_online_features: the reference.


class FeastFeatureReader:
    """Reads through `FeatureStore.get_online_features` (the reference implementation)."""

    def __init__(self, store: FeatureStore, service: str = "ranking") -> None:
        reads = service_reads(store, service)
        self._store = store
        self._user_refs = [f"{r.alias}:{f}" for r in reads.get(USER_KEY, []) for f in r.features]
        self._item_refs = [f"{r.alias}:{f}" for r in reads.get(ITEM_KEY, []) for f in r.features]

    def user_features(self, user_id: str) -> dict[str, Any]:
        out = self._store.get_online_features(
            features=self._user_refs, entity_rows=[{USER_KEY: user_id}], full_feature_names=True
        ).to_dict()
        return {k: v[0] for k, v in out.items() if k != USER_KEY}

    def item_features(self, item_ids: Sequence[str]) -> dict[str, list[Any]]:
        if not item_ids:
            return {ITEM_KEY: [], **{r.replace(":", "__"): [] for r in self._item_refs}}
        return self._store.get_online_features(
            features=self._item_refs, entity_rows={ITEM_KEY: list(item_ids)}, full_feature_names=True
        ).to_dict()


# ------------------------------------------------------------------------------------------------
# The project's reader.


@dataclass
class ItemSnapshot:
    """Item features of the non-live views, columnar, indexed by item id.

    Every column has one extra None at the end: the position of ids the snapshot lacks.
    """

    version: str | None
    index: dict[str, int]
    columns: dict[str, list[Any]]
    loaded_at: float
    seconds: float
    #: The same columns as numpy arrays for gathers (`as_array`); built on first use if not given.
    arrays: dict[str, np.ndarray] | None = None

    def column_arrays(self) -> dict[str, np.ndarray]:
        if self.arrays is None:
            self.arrays = {name: as_array(values) for name, values in self.columns.items()}
        return self.arrays

    @property
    def size(self) -> int:
        return len(self.index)


def as_array(values: Sequence[Any]) -> np.ndarray:
    """A feature column as numpy: float64 with NaN for missing values when every value is a
    number (bools excluded), else an object array with None for missing values."""
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out


class FastFeatureReader:
    """Feast's values at a fraction of Feast's cost (see module doc).

    Args:
        store: the feature store (Redis or SQLite online store).
        service: feature service whose user and item features are read.
        check_interval_s: how often, at most, to look for a new materialization marker; a new
            one reloads the item snapshot in a background thread (the old one serves meanwhile).
        item_ids: the ids to snapshot; default: every id in the item views' gold tables.
        chunk: ids per online-store read while loading (keeps each Redis pipeline small).
    """

    def __init__(
        self,
        store: FeatureStore,
        service: str = "ranking",
        *,
        check_interval_s: float = 1.0,
        item_ids: Sequence[str] | None = None,
        chunk: int = 2000,
    ) -> None:
        from feast.infra.online_stores.redis import RedisOnlineStoreConfig

        reads = service_reads(store, service)
        self._store = store
        self._user_reads = reads.get(USER_KEY, [])
        self._item_reads = reads.get(ITEM_KEY, [])
        self._snap_reads = [r for r in self._item_reads if not r.live]
        self._live_reads = [r for r in self._item_reads if r.live]
        self._item_columns = [c for r in self._item_reads for c in r.columns]
        self._fixed_ids = list(item_ids) if item_ids is not None else None
        self._chunk = chunk
        self._check_interval = check_interval_s
        self._next_check = 0.0
        self._lock = threading.Lock()
        self._loading: threading.Thread | None = None
        self._snapshot: ItemSnapshot | None = None
        self._row_memo: dict[Hashable, tuple[ItemSnapshot, np.ndarray]] = {}
        self._redis: Any = None
        self._aredis: tuple[Any, Any] | None = None  # (event loop, redis.asyncio client)
        if isinstance(store.config.online_store, RedisOnlineStoreConfig):
            from features.store import redis_client

            self._redis = redis_client(store)
            self._user_fields = self._hash_fields(self._user_reads)
            self._user_ts_fields = self._ts_fields(self._user_reads)

    # -- user: one HGETALL ----------------------------------------------------------------------

    @staticmethod
    def _hash_fields(reads: list[ViewRead]) -> list[tuple[bytes, str, Any]]:
        """(Redis hash field, output column, value type) per feature, as Feast lays them out."""
        from features.feast_compat import redis_field

        return [
            (redis_field(r.view, f), f"{r.alias}__{f}", t)
            for r in reads
            for f, t in zip(r.features, r.value_types, strict=True)
        ]

    def _ts_fields(self, reads: list[ViewRead]) -> list[tuple[bytes, str]]:
        """(Redis hash field holding the view's event time, view) per view."""
        from features.feast_compat import redis_ts_field

        return [(redis_ts_field(r.fv, self._store.config).encode(), r.view) for r in reads]

    def user_features(self, user_id: str) -> UserFeatures:
        if self._redis is None:
            out: dict[str, Any] = {}
            times: dict[str, float] = {}
            for read in self._user_reads:
                when: list[datetime | None] = []
                values = _online_read(self._store, read, USER_KEY, [user_id], when)[0]
                out.update(zip(read.columns, values, strict=True))
                if when and when[0] is not None:
                    times[read.view] = _epoch_seconds(when[0])
            return UserFeatures(out, times)
        return self._decode_user(self._redis.hgetall(self._user_key(user_id)))

    @property
    def online_redis(self) -> Redis | None:
        """The Redis client over the online store (None when the store is not Redis)."""
        return self._redis

    @property
    def reads_users_async(self) -> bool:
        """Whether `user_features_async` reads without a thread (a Redis online store)."""
        return self._redis is not None

    async def user_features_async(self, user_id: str) -> UserFeatures:
        """`user_features` on the event loop: one HGETALL over `redis.asyncio` (Redis stores only;
        see `reads_users_async`), so a request needs no thread hop for its user."""
        import asyncio

        loop = asyncio.get_running_loop()
        if self._aredis is None or self._aredis[0] is not loop:  # connections belong to one loop
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            from features.store import redis_client

            client = redis_client(self._store, asynchronous=True)
            # As the sync client: no retries with backoff and the same socket timeouts (the
            # caller's time budget and breaker handle a Redis that is down).
            client.set_retry(Retry(NoBackoff(), 1))
            timeouts = ("socket_timeout", "socket_connect_timeout")
            sync = self._redis.connection_pool.connection_kwargs
            client.connection_pool.connection_kwargs.update({k: sync[k] for k in timeouts if sync.get(k)})
            self._aredis = (loop, client)
        return self._decode_user(await self._aredis[1].hgetall(self._user_key(user_id)))

    async def aclose(self) -> None:
        """Close the event-loop client of `user_features_async`, if one was opened."""
        if self._aredis is not None:
            await self._aredis[1].aclose()
            self._aredis = None

    def _user_key(self, user_id: str) -> bytes:
        from features.feast_compat import redis_key

        config = self._store.config
        return redis_key(config.project, _entity_key(USER_KEY, user_id), config.entity_key_serialization_version)

    def _decode_user(self, raw: Mapping[bytes, bytes]) -> UserFeatures:
        from feast.protos.feast.types.Value_pb2 import Value
        from feast.type_map import feast_value_type_to_python_type
        from google.protobuf.timestamp_pb2 import Timestamp

        out: dict[str, Any] = {}
        for field, column, vtype in self._user_fields:
            data = raw.get(field)
            if data is None:
                out[column] = None
                continue
            value = Value()
            value.ParseFromString(data)
            out[column] = feast_value_type_to_python_type(value, vtype)
        times: dict[str, float] = {}
        for field, view in self._user_ts_fields:  # in the same hash: no extra round trip
            data = raw.get(field)
            if data is not None:
                stamp = Timestamp.FromString(data)  # ~0.5 us; Timestamp() + ParseFromString costs 2 us
                times[view] = stamp.seconds + stamp.nanos / 1e9
        return UserFeatures(out, times)

    # -- items: the snapshot ---------------------------------------------------------------------

    @property
    def user_columns(self) -> list[str]:
        """The user feature columns this reader serves (`<view>__<feature>`)."""
        return [c for r in self._user_reads for c in r.columns]

    @property
    def item_columns(self) -> list[str]:
        """The item feature columns this reader serves (`<view>__<feature>`)."""
        return list(self._item_columns)

    def item_features_in_memory(
        self,
        item_ids: Sequence[str],
        columns: Collection[str] | None = None,
        rows: tuple[Hashable, Sequence[int] | np.ndarray] | None = None,
    ) -> dict[str, Any] | None:
        """`item_features` as numpy columns (`as_array`: numbers float64 with NaN where missing)
        when the snapshot answers every id and no view is live, else None (the caller then reads
        with `item_features` off its event loop, since that does I/O). Gathering arrays rather
        than lists: the 1,000 candidates' columns cost a tenth as much to pick and to bind.

        `columns`: only these of `item_columns` (each gather of 1,000 rows costs ~30 us; a
        ranking model and the rules use a few of the fourteen).
        `rows`: `(catalog key, the ids' positions in that catalog)`, e.g. a retrieval version's
        `item_rows`: the snapshot position of each catalog row is remembered per key and
        snapshot, so ids seen before need no dict lookup (1,000 of them cost ~0.4 ms here)."""
        snapshot = self._snapshot
        if self._live_reads or snapshot is None:
            return None
        if time.monotonic() >= self._next_check:  # a marker check is due: run it off this thread
            self._next_check = time.monotonic() + self._check_interval
            threading.Thread(target=self._check_in_background, name="item-snapshot-check", daemon=True).start()
        ids = list(item_ids)
        missing_at = len(snapshot.index)
        positions = self._remembered_positions(snapshot, ids, rows) if rows is not None else None
        if positions is None:
            try:  # every id known (the usual case): one C-level lookup of all of them
                found = itemgetter(*ids)(snapshot.index) if ids else ()
                positions = np.array([found] if len(ids) == 1 else found, dtype=np.int64)
            except KeyError:
                if self._snap_reads:
                    return None
                get = snapshot.index.get
                positions = np.fromiter((get(i, missing_at) for i in ids), dtype=np.int64, count=len(ids))
        arrays = snapshot.column_arrays()
        out: dict[str, Any] = {ITEM_KEY: ids}
        for column in self._item_columns:
            if columns is not None and column not in columns:
                continue
            values = arrays.get(column)
            out[column] = values[positions] if values is not None else as_array([None] * len(ids))
        return out

    def _remembered_positions(
        self, snapshot: ItemSnapshot, ids: list[str], rows: tuple[Hashable, Sequence[int] | np.ndarray]
    ) -> np.ndarray | None:
        """Snapshot positions of `ids` via their catalog rows (see `item_features_in_memory`);
        None when the rows do not fit or an id is not in the snapshot (the lookup path decides)."""
        key, catalog_rows = rows
        at = np.asarray(catalog_rows, dtype=np.int64)
        if at.shape != (len(ids),) or (len(at) and at.min() < 0):
            return None
        memo = self._row_memo.get(key)
        known = memo[1] if memo is not None and memo[0] is snapshot else np.full(0, -1, np.int64)
        if len(at) and at.max() >= len(known):
            grown = np.full(max(int(at.max()) + 1, 2 * len(known)), -1, np.int64)
            grown[: len(known)] = known
            known = grown
        positions = known[at]
        new = np.flatnonzero(positions < 0)
        if len(new):
            get = snapshot.index.get
            found = np.fromiter((get(ids[n], -1) for n in new), dtype=np.int64, count=len(new))
            if (found < 0).any():
                return None
            positions[new] = found
            known[at[new]] = found
        self._row_memo.pop(key, None)
        self._row_memo[key] = (snapshot, known)
        while len(self._row_memo) > 4:  # a few retrieval versions (A/B arms, a rollout) at once
            self._row_memo.pop(next(iter(self._row_memo)))
        return positions

    def item_features(self, item_ids: Sequence[str]) -> dict[str, list[Any]]:
        snapshot = self._current_snapshot()
        ids = list(item_ids)
        if not ids:
            return {ITEM_KEY: [], **{c: [] for c in self._item_columns}}
        out, misses = self._from_snapshot(snapshot, ids)
        if misses and self._snap_reads:  # items newer than the snapshot: read them as Feast does
            self._fill(out, self._snap_reads, [ids[n] for n in misses], misses)
        if self._live_reads:  # pushed values change between materializations: always read live
            self._fill(out, self._live_reads, ids, range(len(ids)))
        return {ITEM_KEY: ids, **{c: out[c] for c in self._item_columns}}

    def _from_snapshot(self, snapshot: ItemSnapshot, ids: list[str]) -> tuple[dict[str, list[Any]], list[int]]:
        """The snapshot's columns for `ids` (None where it lacks an id) and those ids' positions."""
        out: dict[str, list[Any]] = {ITEM_KEY: ids}
        if not ids:
            return {ITEM_KEY: [], **{c: [] for c in self._item_columns}}, []
        missing_at = len(snapshot.index)
        get = snapshot.index.get
        positions = [get(i, missing_at) for i in ids]
        pick = itemgetter(*positions)
        for column, values in snapshot.columns.items():
            picked = pick(values)
            out[column] = list(picked) if len(ids) > 1 else [picked]
        for column in self._item_columns:
            out.setdefault(column, [None] * len(ids))
        misses = [n for n, p in enumerate(positions) if p == missing_at] if missing_at in positions else []
        return out, misses

    def _fill(self, out: dict[str, list[Any]], reads: list[ViewRead], ids: list[str], at: Sequence[int]) -> None:
        for read in reads:
            rows = _online_read(self._store, read, ITEM_KEY, ids)
            for column_no, column in enumerate(read.columns):
                target = out.setdefault(column, [None] * len(out[ITEM_KEY]))
                for n, row in zip(at, rows, strict=True):
                    target[n] = row[column_no]

    @property
    def snapshot(self) -> ItemSnapshot:
        return self._current_snapshot()

    def _current_snapshot(self) -> ItemSnapshot:
        now = time.monotonic()
        if self._snapshot is None:
            self.refresh()
        elif now >= self._next_check:
            self._next_check = now + self._check_interval
            self._maybe_reload()
        assert self._snapshot is not None
        return self._snapshot

    def marker_version(self) -> str | None:
        """The version of the last materialization (None before the first), read now."""
        from features.marker import read_marker

        marker = read_marker(self._store, self._redis)
        return marker["version"] if marker else None

    def _check_in_background(self) -> None:
        try:
            self._maybe_reload()
        except Exception as err:  # noqa: BLE001 - keep serving the snapshot we have; check again later
            log.warning("item snapshot marker check failed: %s", err)

    def _maybe_reload(self) -> None:
        version = self.marker_version()
        current = self._snapshot.version if self._snapshot is not None else None
        if version == current or (self._loading and self._loading.is_alive()):
            return
        self._loading = threading.Thread(target=self.refresh, name="item-snapshot", daemon=True)
        self._loading.start()

    def refresh(self) -> ItemSnapshot:
        """Load the item snapshot now (blocking) and swap it in; returns it."""
        with self._lock:
            started = time.perf_counter()
            version = self.marker_version()
            ids = self._fixed_ids if self._fixed_ids is not None else self._catalog_ids()
            columns: dict[str, list[Any]] = {c: [] for r in self._snap_reads for c in r.columns}
            for start in range(0, len(ids), self._chunk):
                part = ids[start : start + self._chunk]
                for read in self._snap_reads:
                    rows = _online_read(self._store, read, ITEM_KEY, part)
                    for column_no, column in enumerate(read.columns):
                        columns[column].extend(row[column_no] for row in rows)
            for values in columns.values():
                values.append(None)  # the slot for ids not in the snapshot
            self._snapshot = ItemSnapshot(
                version=version,
                index={item: n for n, item in enumerate(ids)},
                columns=columns,
                loaded_at=time.time(),
                seconds=time.perf_counter() - started,
                arrays={name: as_array(values) for name, values in columns.items()},  # off the event loop
            )
            self._next_check = time.monotonic() + self._check_interval
            return self._snapshot

    def _catalog_ids(self) -> list[str]:
        """Every item id in the snapshot views' gold tables (ids only; cheap to scan)."""
        import pyarrow as pa
        import pyarrow.compute as pc
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        from features.offline_store import source_uri

        seen: list[pa.Array] = []
        for read in self._snap_reads:
            try:
                table = DeltaTable(source_uri(self._store.config, read.fv.batch_source))
            except TableNotFoundError:
                continue
            seen.append(table.to_pyarrow_dataset().to_table(columns=[ITEM_KEY]).column(ITEM_KEY).combine_chunks())
        if not seen:
            return []
        return pc.unique(pa.chunked_array(seen)).to_pylist()
