"""Point-in-time feature lookup: the seam between the models and the feature store.

`FeastLookup` is the real one (Feast's `get_historical_features` over the gold Delta tables).
`FrameLookup` does the same join in memory over feature frames, for model tests that should not
need Spark or a registry; a contract test runs both on the same gold data and expects the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

import pandas as pd


class FeatureLookup(Protocol):
    def __call__(self, entities: pd.DataFrame, service: str) -> pd.DataFrame:
        """`entities` (user_id, item_id, event_timestamp, ...) plus `<view>__<feature>` columns
        holding each view's latest row at or before the row's timestamp and within its TTL."""

    def columns(self, service: str) -> dict[str, list[str]]:
        """The service's feature columns by join key: `{"user_id": [...], "item_id": [...]}`."""


@dataclass
class FeastLookup:
    """Feast's point-in-time join (DuckDB offline store over the gold tables)."""

    store: Any  # feast.FeatureStore

    def __call__(self, entities: pd.DataFrame, service: str) -> pd.DataFrame:
        from jobs.feature_store import training_set

        return training_set(self.store, entities, service)

    def columns(self, service: str) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for projection in self.store.get_feature_service(service).feature_view_projections:
            (key,) = self.store.get_feature_view(projection.name).join_keys
            out.setdefault(key, []).extend(f"{projection.name_to_use()}__{f.name}" for f in projection.features)
        return out


@dataclass(frozen=True)
class FrameView:
    """One feature view as a frame: `key` column, `event_timestamp`, feature columns."""

    name: str
    key: str
    frame: pd.DataFrame
    features: tuple[str, ...]
    ttl: timedelta


@dataclass
class FrameLookup:
    """The same point-in-time semantics as Feast, over in-memory frames.

    Args:
        views: the feature views by name.
        services: service name -> view names it reads.
    """

    views: dict[str, FrameView]
    services: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def columns(self, service: str) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for name in self.services[service]:
            view = self.views[name]
            out.setdefault(view.key, []).extend(f"{view.name}__{f}" for f in view.features)
        return out

    def __call__(self, entities: pd.DataFrame, service: str) -> pd.DataFrame:
        out = entities.copy()
        out["event_timestamp"] = pd.to_datetime(out["event_timestamp"], utc=True).astype("datetime64[ns, UTC]")
        out["__row"] = range(len(out))
        for view_name in self.services[service]:
            view = self.views[view_name]
            rows = view.frame[[view.key, "event_timestamp", *view.features]].copy()
            rows["event_timestamp"] = pd.to_datetime(rows["event_timestamp"], utc=True).astype("datetime64[ns, UTC]")
            rows = rows.rename(
                columns={"event_timestamp": "__feature_ts", **{f: f"{view.name}__{f}" for f in view.features}}
            )
            left = out.sort_values("event_timestamp", kind="stable")
            joined = pd.merge_asof(
                left,
                rows.sort_values("__feature_ts", kind="stable"),
                left_on="event_timestamp",
                right_on="__feature_ts",
                left_by=view.key,
                right_by=view.key,
                direction="backward",
                allow_exact_matches=True,
            )
            expired = joined["__feature_ts"].isna() | (joined["event_timestamp"] - joined["__feature_ts"] > view.ttl)
            for f in view.features:
                column = f"{view.name}__{f}"
                joined[column] = joined[column].where(~expired, None)
            out = joined.drop(columns="__feature_ts")
        return out.sort_values("__row").drop(columns="__row").reset_index(drop=True)
