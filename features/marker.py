"""The materialization marker: readers reload their item snapshots when it changes.

`jobs.feature_store.materialize` writes one after each materialization that landed; the fast
reader (features/reader.py) reads it to know when its snapshot is stale. It sits next to the
online values: a Redis key for a Redis store, a JSON file beside the SQLite file otherwise.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from features.store import env_of, redis_client

if TYPE_CHECKING:
    from feast import FeatureStore

MARKER_KEY = "towerflow:feast:{project}:materialized"


def marker_file(store: FeatureStore) -> Path:
    """Where an embedded (SQLite) store keeps its marker."""
    return Path(store.config.online_store.path).with_name(f"materialized-{store.project}.json")


def write_marker(store: FeatureStore, end: datetime, views: Mapping[str, int]) -> str:
    """Record that a materialization landed; returns the new marker (a unique version).

    Args:
        store: the feature store materialized to.
        end: the instant the values are valid at.
        views: entities written per feature view.
    """
    version = f"{time.time_ns()}-{uuid.uuid4().hex[:8]}"
    body = json.dumps({"version": version, "end": end.isoformat(), "views": dict(views)})
    if env_of(store) == "redis":
        redis_client(store).set(MARKER_KEY.format(project=store.project), body)
    else:
        path = marker_file(store)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(body)
        tmp.replace(path)  # atomic: readers never see half a file
    return version


def read_marker(store: FeatureStore, client: Any = None) -> dict[str, Any] | None:
    """The last materialization's marker (`version`, `end`, `views`), or None."""
    if env_of(store) == "redis":
        raw = (client or redis_client(store)).get(MARKER_KEY.format(project=store.project))
    else:
        path = marker_file(store)
        raw = path.read_text() if path.exists() else None
    return json.loads(raw) if raw else None
