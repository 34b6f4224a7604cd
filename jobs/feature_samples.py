"""Small, seeded gold tables in the exact contract schemas, for feature-store tests and benchmarks.

They stand in for the ETL's output (towerflow/schemas.py): feature rows of day D are stamped
D + 1 00:00 UTC, partitioned by `feature_date`; examples are partitioned by `event_date`.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import numpy as np
import pyarrow as pa

from jobs.lake import Lake
from towerflow import schemas

CATEGORIES = ("garden", "kitchen", "toys", "books", "lighting", "gifts")


@dataclass(frozen=True)
class SampleGold:
    """What `write_sample_gold` wrote."""

    users: list[str]
    items: list[str]
    days: list[date]


def day_stamp(day: date) -> datetime:
    """`event_timestamp` of the feature rows of `day`: the next midnight, UTC."""
    return datetime.combine(day + timedelta(days=1), time(), UTC)


def user_feature_rows(users: list[str], day: date, seed: int, *, bump: int = 0) -> pa.Table:
    """One gold/user_features row per user for `day`; `bump` shifts every counter (reruns)."""
    rng = np.random.default_rng([seed, day.toordinal(), 1])
    n = len(users)
    cols: dict[str, object] = {
        "user_id": users,
        "feature_date": [day] * n,
        "event_timestamp": [day_stamp(day)] * n,
    }
    for prefix in ("views", "clicks", "carts", "purchases"):
        for window in schemas.WINDOWS:
            cols[f"{prefix}_{window}d"] = rng.integers(0, 10 * window, n) + bump
    cols["days_since_last_event"] = rng.random(n) * 5
    cols["days_since_last_purchase"] = [None if x < 0.3 else float(x * 20) for x in rng.random(n)]
    cols["distinct_categories_30d"] = rng.integers(0, len(CATEGORIES), n)
    cols["favourite_category"] = [CATEGORIES[i] for i in rng.integers(0, len(CATEGORIES), n)]
    cols["avg_price_30d"] = np.round(rng.random(n) * 50, 2)
    picks = rng.integers(0, 1000, (n, 10))
    cols["last_10_items"] = [[f"i{x}" for x in row[: 1 + i % 10]] for i, row in enumerate(picks)]
    return pa.Table.from_pydict(cols, schema=schemas.GOLD_USER_FEATURES)


def user_history_rows(users: list[str], day: date, seed: int) -> pa.Table:
    """One gold/user_history row per user for `day`: a few items with counts and last days."""
    rng = np.random.default_rng([seed, day.toordinal(), 3])
    n = len(users)
    sizes = rng.integers(1, 6, n)
    items = [[f"i{x}" for x in rng.choice(80, size, replace=False)] for size in sizes]
    last = day_stamp(day).timestamp() / 86_400
    return pa.Table.from_pydict(
        {
            "user_id": users,
            "feature_date": [day] * n,
            "event_timestamp": [day_stamp(day)] * n,
            "items": items,
            "counts": [sorted(rng.integers(1, 5, len(row)).tolist(), reverse=True) for row in items],
            "last_day": [[last - float(rng.integers(1, 30)) for _ in row] for row in items],
        },
        schema=schemas.GOLD_USER_HISTORY,
    )


def item_feature_rows(
    items: list[str], day: date, seed: int, *, bump: int = 0, unavailable: Collection[str] = ()
) -> pa.Table:
    """One gold/item_features row per item for `day`; `bump` shifts every counter (reruns).
    Every item is available except those in `unavailable`."""
    rng = np.random.default_rng([seed, day.toordinal(), 2])
    n = len(items)
    cols: dict[str, object] = {
        "item_id": items,
        "feature_date": [day] * n,
        "event_timestamp": [day_stamp(day)] * n,
    }
    for prefix in ("views", "clicks", "carts", "purchases"):
        for window in schemas.WINDOWS:
            cols[f"{prefix}_{window}d"] = rng.integers(0, 100 * window, n) + bump
    cols["popularity"] = rng.random(n) * 100
    cols["ctr"] = rng.random(n) / 5
    cols["conversion"] = rng.random(n) / 20
    cols["age_days"] = rng.random(n) * 365
    cols["price"] = [None if x < 0.05 else round(float(x) * 80, 2) for x in rng.random(n)]
    cols["category"] = [CATEGORIES[i] for i in rng.integers(0, len(CATEGORIES), n)]
    cols["available"] = [item not in unavailable for item in items]
    return pa.Table.from_pydict(cols, schema=schemas.GOLD_ITEM_FEATURES)


def embedding_rows(ids: list[str], key: str, when: datetime, version: str, dim: int, seed: int) -> pa.Table:
    """gold/<user|item>_embeddings rows valid from `when`."""
    rng = np.random.default_rng([seed, len(ids), dim])
    vectors = rng.standard_normal((len(ids), dim)).astype(np.float32)
    schema = schemas.GOLD_USER_EMBEDDINGS if key == "user_id" else schemas.GOLD_ITEM_EMBEDDINGS
    return pa.Table.from_pydict(
        {
            key: ids,
            "event_timestamp": [when] * len(ids),
            "embedding": pa.array(list(vectors), type=pa.list_(pa.float32())),
            "model_version": [version] * len(ids),
        },
        schema=schema,
    )


def example_rows(users: list[str], items: list[str], days: list[date], per_day: int, seed: int) -> pa.Table:
    """gold/training_examples: `per_day` positives per day at random times within the day."""
    rng = np.random.default_rng([seed, 3])
    rows: dict[str, list] = {k: [] for k in schemas.GOLD_EXAMPLES.names}
    for day in days:
        seconds = np.sort(rng.integers(0, 86_400, per_day))
        for s in seconds:
            rows["user_id"].append(users[rng.integers(0, len(users))])
            rows["item_id"].append(items[rng.integers(0, len(items))])
            rows["action"].append("purchase" if rng.random() < 0.3 else "click")
            rows["event_timestamp"].append(datetime.combine(day, time(), UTC) + timedelta(seconds=int(s)))
            rows["quantity"].append(1)
            rows["event_date"].append(day)
    return pa.Table.from_pydict(rows, schema=schemas.GOLD_EXAMPLES)


def write_sample_gold(
    lake: Lake,
    *,
    users: int = 50,
    items: int = 80,
    days: int = 3,
    start: date = date(2025, 3, 1),
    examples_per_day: int = 40,
    embeddings: bool = True,
    embedding_dim: int = 8,
    seed: int = 7,
    unavailable: Collection[str] = (),
) -> SampleGold:
    """Write gold/user_features, user_history, item_features, training_examples (and embeddings).

    Every item is available on every day except the ids in `unavailable`."""
    user_ids = [f"u{i}" for i in range(users)]
    item_ids = [f"i{i}" for i in range(items)]
    day_list = [start + timedelta(days=d) for d in range(days)]
    for day in day_list:
        lake.write(
            lake.uri("gold", "user_features"),
            user_feature_rows(user_ids, day, seed),
            mode="append",
            partition_by=["feature_date"],
        )
        lake.write(
            lake.uri("gold", "item_features"),
            item_feature_rows(item_ids, day, seed, unavailable=unavailable),
            mode="append",
            partition_by=["feature_date"],
        )
        lake.write(
            lake.uri("gold", "user_history"),
            user_history_rows(user_ids, day, seed),
            mode="append",
            partition_by=["feature_date"],
        )
    lake.write(
        lake.uri("gold", "training_examples"),
        example_rows(user_ids, item_ids, day_list, examples_per_day, seed),
        mode="append",
        partition_by=["event_date"],
    )
    if embeddings:
        when = day_stamp(day_list[0])
        pairs = (("user_id", user_ids, "user_embeddings"), ("item_id", item_ids, "item_embeddings"))
        for key, ids, table in pairs:
            lake.write(
                lake.uri("gold", table),
                embedding_rows(ids, key, when, "v1", embedding_dim, seed),
                mode="append",
                partition_by=schemas.EMBEDDINGS_PARTITION,
            )
    return SampleGold(user_ids, item_ids, day_list)


def overwrite_day(lake: Lake, table: str, rows: pa.Table, day: date) -> int | None:
    """Replace one day's partition of a gold feature table, as an ETL rerun does."""
    return lake.write(
        lake.uri("gold", table),
        rows,
        mode="overwrite",
        predicate=f"feature_date = '{day.isoformat()}'",
        partition_by=["feature_date"],
    )
