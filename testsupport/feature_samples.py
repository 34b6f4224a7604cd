"""Small, seeded gold tables in the exact contract schemas, for feature-store tests and benchmarks.

Two kinds: `write_sample_gold` draws every column at random (each day independently), and
`write_world_gold` derives the tables from a `SampleWorld` of events (`sample_world`), so a
model trained on its examples knows the users, items and features the online store serves.

They stand in for the ETL's output (towerflow/schemas.py): feature rows of day D are stamped
D + 1 00:00 UTC, partitioned by `feature_date`; examples are partitioned by `event_date`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from jobs.gold import COUNTED, HISTORY_ITEMS, POSITIVE_ACTIONS, SMOOTHING_VIEWS, as_of
from towerflow import schemas
from towerflow.lake import Lake

CATEGORIES = ("garden", "kitchen", "toys", "books", "lighting", "gifts")


@dataclass(frozen=True)
class SampleGold:
    """What `write_sample_gold` wrote."""

    users: list[str]
    items: list[str]
    days: list[date]


def day_stamp(day: date) -> datetime:
    """`event_timestamp` of the feature rows of `day`: the next midnight, UTC (as the ETL stamps them)."""
    return as_of(day)


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
    actions = list(COUNTED.values())
    cols["last_10_actions"] = [[actions[x % len(actions)] for x in row[: 1 + i % 10]] for i, row in enumerate(picks)]
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


def user_seen_rows(users: list[str], day: date, seed: int) -> pa.Table:
    """One gold/user_seen row per user for `day`: a few items seen, some of them bought."""
    rng = np.random.default_rng([seed, day.toordinal(), 4])
    seen = [[f"i{x}" for x in rng.choice(80, size, replace=False)] for size in rng.integers(1, 8, len(users))]
    return pa.Table.from_pydict(
        {
            "user_id": users,
            "feature_date": [day] * len(users),
            "event_timestamp": [day_stamp(day)] * len(users),
            "seen": seen,
            "bought": [row[::2] for row in seen],
        },
        schema=schemas.GOLD_USER_SEEN,
    )


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
    """Write gold/user_features, user_history, user_seen, item_features, training_examples (and
    embeddings).

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
            lake.uri("gold", "user_seen"),
            user_seen_rows(user_ids, day, seed),
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


# ------------------------------------------------------------------------------------------------
# A small world of events, and the gold tables that follow from it (with jobs/gold.py's counters,
# positives, history length and smoothing).


@dataclass(frozen=True)
class SampleWorld:
    """Events over a catalog, from which `world_gold_tables` derives every gold table, so
    features, training examples and the catalog a model learns agree.

    Attributes:
        events: user_id, item_id, action (view, click, add_to_cart, purchase), timestamp (UTC).
        items: item_id, category, description, price, created_at (UTC), available, popularity:
            the catalog (silver/items columns, so `models.data.catalog_from_frame` reads it) plus
            a fixed popularity, so popular lists are known in advance.
        days: the feature days (each gets rows stamped the next midnight).
    """

    events: pd.DataFrame
    items: pd.DataFrame
    days: list[date]

    @property
    def users(self) -> list[str]:
        return sorted(set(self.events["user_id"]), key=_natural)

    @property
    def item_ids(self) -> list[str]:
        return self.items["item_id"].tolist()

    @property
    def end(self) -> datetime:
        """The materialization end that makes the last day's rows current."""
        return day_stamp(self.days[-1])

    def examples(self) -> pd.DataFrame:
        """Training positives (gold/training_examples columns but `quantity`, `event_date`)."""
        rows = self.events[self.events["action"].isin(POSITIVE_ACTIONS)]
        rows = rows.rename(columns={"timestamp": "event_timestamp"})
        return rows[["user_id", "item_id", "action", "event_timestamp"]].reset_index(drop=True)

    def owned(self, user: str) -> set[str]:
        """Items the user acted on (positives) or bought by the end of the last day: what the
        rules treat as already had (the last 10 items and the purchase history)."""
        mine = self.events[(self.events["user_id"] == user) & self.events["action"].isin(POSITIVE_ACTIONS)]
        return set(mine["item_id"])


def _natural(name: str) -> tuple[str, int]:
    """`u2` before `u10`."""
    head = name.rstrip("0123456789")
    tail = name[len(head) :]
    return head, int(tail) if tail else -1


def sample_world(
    *,
    users: int = 300,
    items: int = 60,
    days: int = 14,
    start: date = date(2025, 3, 1),
    seed: int = 7,
    planted: Mapping[str, Sequence[str]] | None = None,
    unavailable: Collection[str] = (),
) -> SampleWorld:
    """A seeded world: users `u0`.. with a favourite category each, items `i0`.., and `days` of
    views, clicks, carts and purchases.

    Item `i<n>` is in category `CATEGORIES[n % 6]`, `7 n` days old at `start`, and the `n`-th most
    popular (popularity `max(100, items) - n`); every item is available but those in
    `unavailable`. A user in `planted` does nothing but view, click and buy exactly the items
    given, one a day, so tests know what that user has; every other user acts on 0-3 items a day,
    mostly in their favourite category and mostly popular ones.
    """
    planted = dict(planted or {})
    rng = np.random.default_rng([seed, 11])
    ids = [f"i{n}" for n in range(items)]
    top = max(100, items)
    created = pd.Timestamp(datetime.combine(start, time(), UTC))
    catalog = pd.DataFrame(
        {
            "item_id": ids,
            "category": [CATEGORIES[n % len(CATEGORIES)] for n in range(items)],
            "description": [f"{CATEGORIES[n % len(CATEGORIES)]} thing number {n}" for n in range(items)],
            "price": [round(2.0 + (n * 37 % 50), 2) for n in range(items)],
            "created_at": [created - pd.Timedelta(days=7 * n) for n in range(items)],
            "available": [i not in unavailable for i in ids],
            "popularity": [float(top - n) for n in range(items)],
        }
    )
    weight = catalog["popularity"].to_numpy() ** 2
    by_category = {c: np.flatnonzero(catalog["category"].to_numpy() == c) for c in CATEGORIES}
    rows: list[tuple[str, str, str, pd.Timestamp]] = []

    def act(user: str, item: str, at: pd.Timestamp, actions: Sequence[str]) -> None:
        rows.extend((user, item, action, at + pd.Timedelta(minutes=k)) for k, action in enumerate(actions))

    for n in range(users):
        user = f"u{n}"
        if user in planted:
            for j, item in enumerate(planted[user]):
                day = start + timedelta(days=(n + 2 * j) % days)
                act(user, item, pd.Timestamp(datetime.combine(day, time(12), UTC)), ("view", "click", "purchase"))
            continue
        favourite = by_category[CATEGORIES[rng.integers(len(CATEGORIES))]]
        if not len(favourite):  # fewer items than categories
            favourite = np.arange(items)
        for d in range(days):
            day = datetime.combine(start + timedelta(days=d), time(), UTC)
            for _ in range(rng.integers(0, 4)):
                pool = favourite if rng.random() < 0.8 else np.arange(items)
                item = ids[rng.choice(pool, p=weight[pool] / weight[pool].sum())]
                chain = ["view"]
                if rng.random() < 0.6:
                    chain.append("click")
                    if rng.random() < 0.4:
                        chain.append("add_to_cart")
                        if rng.random() < 0.6:
                            chain.append("purchase")
                act(user, item, pd.Timestamp(day) + pd.Timedelta(seconds=int(rng.integers(0, 80_000))), chain)
    events = pd.DataFrame(rows, columns=["user_id", "item_id", "action", "timestamp"])
    events = events.sort_values(["timestamp", "user_id"], kind="stable").reset_index(drop=True)
    return SampleWorld(events, catalog, [start + timedelta(days=d) for d in range(days)])


def _days_before(end: pd.Timestamp, moments: pd.Series) -> pd.Series:
    return (end - moments) / pd.Timedelta(days=1)


def _windowed(recent: pd.DataFrame, key: str, ids: list[str]) -> dict[str, list[int]]:
    """`<prefix>_<w>d` counts per id of `recent` (which has `_age`: whole days before the day)."""
    out = {}
    for prefix, action in COUNTED.items():
        for window in schemas.WINDOWS:
            hit = (recent["action"] == action) & (recent["_age"] < window)
            out[f"{prefix}_{window}d"] = hit.groupby(recent[key]).sum().reindex(ids, fill_value=0).astype(int).tolist()
    return out


def _optional(values: pd.Series) -> list[float | None]:
    return [None if pd.isna(v) else float(v) for v in values]


def _user_rows(upto: pd.DataFrame, day: date) -> pa.Table:
    """GOLD_USER_FEATURES rows of `day` for users active in the 30 days ending with it."""
    end = pd.Timestamp(day_stamp(day))
    recent = upto[upto["_age"] < 30]
    users = sorted(set(recent["user_id"]), key=_natural)
    cols: dict[str, Any] = {"user_id": users, "feature_date": [day] * len(users), "event_timestamp": [end] * len(users)}
    cols.update(_windowed(recent, "user_id", users))
    last_event = _days_before(end, upto.groupby("user_id")["timestamp"].max()).reindex(users)
    cols["days_since_last_event"] = _optional(last_event)
    bought = upto[upto["action"] == "purchase"]
    last_buy = _days_before(end, bought.groupby("user_id")["timestamp"].max()).reindex(users)
    cols["days_since_last_purchase"] = _optional(last_buy)
    categories = recent.groupby("user_id")["category"]
    cols["distinct_categories_30d"] = categories.nunique().reindex(users).astype(int).tolist()
    counts = recent.groupby(["user_id", "category"]).size().rename("n").reset_index()
    counts = counts.sort_values(["user_id", "n", "category"], ascending=[True, False, True])  # ties: first by name
    favourite = counts.drop_duplicates("user_id").set_index("user_id")["category"]
    cols["favourite_category"] = favourite.reindex(users).tolist()
    prices = recent[recent["action"] == "purchase"].groupby("user_id")["price"].mean().reindex(users)
    cols["avg_price_30d"] = [None if v is None else round(v, 6) for v in _optional(prices)]
    positives = upto[upto["action"].isin(POSITIVE_ACTIONS)].iloc[::-1]  # newest first
    last = positives.drop_duplicates(["user_id", "item_id"]).groupby("user_id", sort=False)
    for column, name in (("item_id", "last_10_items"), ("action", "last_10_actions")):
        last_10 = last[column].agg(lambda s: s.head(10).tolist())
        cols[name] = [last_10.get(u, []) for u in users]
    return pa.Table.from_pydict(cols, schema=schemas.GOLD_USER_FEATURES)


def _history_rows(upto: pd.DataFrame, day: date) -> pa.Table:
    """GOLD_USER_HISTORY rows of `day`: users who bought that day, their items bought so far
    (most bought first, then most recent), counts and last purchase day (epoch days)."""
    bought = upto[upto["action"] == "purchase"]
    today = set(bought.loc[bought["_age"] == 0, "user_id"])
    mine = bought[bought["user_id"].isin(today)]
    per_item = mine.groupby(["user_id", "item_id"])["timestamp"].agg(["count", "max"]).reset_index()
    per_item["last_day"] = (per_item["max"] - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(days=1)
    per_item = per_item.sort_values(["user_id", "count", "last_day"], ascending=[True, False, False])
    grouped = per_item.groupby("user_id", sort=False).head(HISTORY_ITEMS).groupby("user_id", sort=False)
    users = sorted(today, key=_natural)
    lists = {name: grouped[column].agg(list) for name, column in (("items", "item_id"), ("counts", "count"))}
    lists["last_day"] = grouped["last_day"].agg(list)
    stamp = day_stamp(day)
    return pa.Table.from_pydict(
        {
            "user_id": users,
            "feature_date": [day] * len(users),
            "event_timestamp": [stamp] * len(users),
            **{name: [[*values[u]] for u in users] for name, values in lists.items()},
        },
        schema=schemas.GOLD_USER_HISTORY,
    )


def _seen_rows(upto: pd.DataFrame, day: date) -> pa.Table:
    """GOLD_USER_SEEN rows of `day`: users who acted that day, every item they acted on so far
    and every item they bought, most recent first."""
    today = set(upto.loc[upto["_age"] == 0, "user_id"])
    mine = upto[upto["user_id"].isin(today)]
    users = sorted(today, key=_natural)

    def latest_first(rows: pd.DataFrame) -> dict[str, list[str]]:
        last = rows.groupby(["user_id", "item_id"])["timestamp"].max().reset_index()
        last = last.sort_values(["user_id", "timestamp", "item_id"], ascending=[True, False, True])
        return last.groupby("user_id", sort=False)["item_id"].agg(list).to_dict()

    seen, bought = latest_first(mine), latest_first(mine[mine["action"] == "purchase"])
    return pa.Table.from_pydict(
        {
            "user_id": users,
            "feature_date": [day] * len(users),
            "event_timestamp": [day_stamp(day)] * len(users),
            "seen": [seen.get(u, []) for u in users],
            "bought": [bought.get(u, []) for u in users],
        },
        schema=schemas.GOLD_USER_SEEN,
    )


def _item_rows(upto: pd.DataFrame, items: pd.DataFrame, day: date) -> pa.Table:
    """GOLD_ITEM_FEATURES rows of `day` for every catalog item (counts 0 for untouched ones)."""
    end = pd.Timestamp(day_stamp(day))
    ids = items["item_id"].tolist()
    cols: dict[str, Any] = {"item_id": ids, "feature_date": [day] * len(ids), "event_timestamp": [end] * len(ids)}
    cols.update(_windowed(upto[upto["_age"] < 30], "item_id", ids))
    views, clicks, buys = (np.asarray(cols[f"{p}_30d"], dtype=float) for p in ("views", "clicks", "purchases"))
    total = max(views.sum(), 1.0)

    def smoothed(hits: np.ndarray) -> list[float]:
        rate = hits.sum() / total
        return np.minimum(1.0, (hits + SMOOTHING_VIEWS * rate) / (views + SMOOTHING_VIEWS)).tolist()

    cols["popularity"] = items["popularity"].astype(float).tolist()
    cols["ctr"] = smoothed(clicks)
    cols["conversion"] = smoothed(buys)
    cols["age_days"] = np.maximum(0.0, _days_before(end, pd.to_datetime(items["created_at"], utc=True))).tolist()
    cols["price"] = items["price"].astype(float).tolist()
    cols["category"] = items["category"].tolist()
    cols["available"] = items["available"].astype(bool).tolist()
    return pa.Table.from_pydict(cols, schema=schemas.GOLD_ITEM_FEATURES)


def world_gold_tables(world: SampleWorld) -> dict[str, pa.Table]:
    """The gold tables of `world`: user_features, user_history, user_seen, item_features (one set
    of rows per feature day, as jobs/gold.py defines them) and training_examples (the positives)."""
    events = world.events.copy()
    events["timestamp"] = pd.to_datetime(events["timestamp"], utc=True)
    events = events.sort_values("timestamp", kind="stable").reset_index(drop=True)
    catalog = world.items.set_index("item_id")
    events["category"] = events["item_id"].map(catalog["category"])
    events["price"] = events["item_id"].map(catalog["price"])
    ordinal = np.array([d.toordinal() for d in events["timestamp"].dt.date], dtype=np.int64)
    parts: dict[str, list[pa.Table]] = {"user_features": [], "user_history": [], "user_seen": [], "item_features": []}
    for day in world.days:
        age = day.toordinal() - ordinal
        upto = events[age >= 0].assign(_age=age[age >= 0])
        parts["user_features"].append(_user_rows(upto, day))
        parts["user_history"].append(_history_rows(upto, day))
        parts["user_seen"].append(_seen_rows(upto, day))
        parts["item_features"].append(_item_rows(upto, world.items, day))
    examples = world.examples()
    moments = pd.to_datetime(examples["event_timestamp"], utc=True)
    tables = {name: pa.concat_tables(tables) for name, tables in parts.items()}
    tables["training_examples"] = pa.Table.from_pydict(
        {
            "user_id": examples["user_id"].tolist(),
            "item_id": examples["item_id"].tolist(),
            "action": examples["action"].tolist(),
            "event_timestamp": list(moments),
            "quantity": [1] * len(examples),
            "event_date": list(moments.dt.date),
        },
        schema=schemas.GOLD_EXAMPLES,
    )
    return tables


def write_world_gold(lake: Lake, world: SampleWorld) -> SampleGold:
    """Write `world_gold_tables(world)` (appended, partitioned as the ETL partitions them)."""
    for name, table in world_gold_tables(world).items():
        partition = "event_date" if name == "training_examples" else "feature_date"
        lake.write(lake.uri("gold", name), table, mode="append", partition_by=[partition])
    return SampleGold(world.users, world.item_ids, list(world.days))
