"""Synthetic worlds for model tests and benchmarks: a `jobs.synth` world with planted tastes,
split into training examples and a holdout, with its gold-like feature frames built in pandas.
Feature lookups go through `models.lookup.FrameLookup`, whose agreement with Feast is checked in
tests/features/test_lookup_contract.py. The frames hold a subset of the gold features (30-day
purchases and favourite category per user; every counter, popularity and category per item); the
rest are declared without values, as the online store serves missing ones."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from jobs.gold import HoldoutSize, choose_cutoff
from jobs.synth import SynthConfig, build_world, items_table, iter_days
from models.data import Catalog
from models.lookup import FrameLookup, FrameView
from towerflow.schemas import COUNTED, WINDOWS

SERVICES = {
    "retrieval": ("user_features", "user_recent", "user_history"),
    "ranking": ("user_features", "user_recent", "user_history", "item_features"),
}


def day_end(day) -> pd.Timestamp:
    return pd.Timestamp(day, tz="UTC") + pd.Timedelta(days=1)


def recent_frame(events: pd.DataFrame) -> pd.DataFrame:
    """Per user and day with activity: last 10 distinct items (most recent first), as of day end."""
    rows = []
    for user, group in events.sort_values("timestamp").groupby("user_id", sort=True):
        seen: list[str] = []
        for day, day_rows in group.groupby(group["timestamp"].dt.date, sort=True):
            for item in day_rows["item_id"]:
                if item in seen:
                    seen.remove(item)
                seen.append(item)
            rows.append({"user_id": user, "event_timestamp": day_end(day), "last_10_items": seen[-10:][::-1]})
    return pd.DataFrame(rows)


def history_frame(purchases: pd.DataFrame) -> pd.DataFrame:
    """Per user and purchase day: top 50 items bought so far, their counts and last day (epoch days)."""
    rows = []
    for user, group in purchases.sort_values("timestamp").groupby("user_id", sort=True):
        counts: dict[str, int] = {}
        last: dict[str, float] = {}
        for day, day_rows in group.groupby(group["timestamp"].dt.date, sort=True):
            for item, ts in zip(day_rows["item_id"], day_rows["timestamp"], strict=True):
                counts[item] = counts.get(item, 0) + 1
                last[item] = ts.timestamp() / 86_400
            top = sorted(counts, key=lambda i: (-counts[i], -last[i]))[:50]
            rows.append(
                {
                    "user_id": user,
                    "event_timestamp": day_end(day),
                    "items": top,
                    "counts": [counts[i] for i in top],
                    "last_day": [last[i] for i in top],
                }
            )
    return pd.DataFrame(rows)


def user_counts_frame(events: pd.DataFrame, categories: dict[str, str]) -> pd.DataFrame:
    """Per user and active day: purchases over 30 days and the favourite category."""
    rows = []
    buys = events[events["action"] == "purchase"]
    for user, group in events.groupby("user_id", sort=True):
        days = sorted(group["timestamp"].dt.date.unique())
        mine = buys[buys["user_id"] == user]
        for day in days:
            end = day_end(day)
            window = mine[(mine["timestamp"] < end) & (mine["timestamp"] >= end - pd.Timedelta(days=30))]
            acted = group[group["timestamp"] < end]
            favourite = acted["item_id"].map(categories).mode()
            rows.append(
                {
                    "user_id": user,
                    "event_timestamp": end,
                    "purchases_30d": len(window),
                    "favourite_category": favourite.iloc[0] if len(favourite) else "",
                }
            )
    return pd.DataFrame(rows)


def item_frame(events: pd.DataFrame, catalog: Catalog, days: list) -> pd.DataFrame:
    """Per catalog item and day: its counters over 7 and 30 days, popularity (clicks and
    purchases, halved every 7 days) and category, as of day end, as `jobs.gold` computes them."""
    from jobs.gold import POPULARITY_HALF_LIFE_DAYS

    index = catalog.index()
    rows = events["item_id"].map(index)
    events = events[rows.notna()].assign(_row=rows[rows.notna()].astype(np.int64))
    frames = []
    for day in days:
        end = day_end(day)
        age = (end - events["timestamp"]).dt.total_seconds().to_numpy() / 86_400
        before = age > 0
        columns: dict[str, Any] = {"item_id": catalog.item_ids, "event_timestamp": end, "category": catalog.category}
        for prefix, action in COUNTED.items():
            acted = before & (events["action"] == action).to_numpy()
            for window in WINDOWS:
                at = events["_row"].to_numpy()[acted & (age < window)]
                columns[f"{prefix}_{window}d"] = np.bincount(at, minlength=len(catalog))
        chosen = before & (age < max(WINDOWS)) & events["action"].isin(["click", "purchase"]).to_numpy()
        decay = 0.5 ** (age[chosen] / POPULARITY_HALF_LIFE_DAYS)
        columns["popularity"] = np.bincount(events["_row"].to_numpy()[chosen], decay, minlength=len(catalog))
        frames.append(pd.DataFrame(columns))
    return pd.concat(frames, ignore_index=True)


@dataclass
class World:
    events: pd.DataFrame
    examples: pd.DataFrame
    holdout: pd.DataFrame
    catalog: Catalog
    lookup: FrameLookup
    users: pd.DataFrame  # ground truth: user_id, is_bot, top_category
    cutoff: datetime
    run_date: date

    def eval_data(self) -> Any:
        """The holdout's `models.evaluate.EvalData`: the examples, the holdout positives and
        everything seen before the cutoff, features from the world's lookup."""
        from models.evaluate import prepare

        seen = self.events[self.events["timestamp"] < self.cutoff]
        return prepare(self.examples, self.holdout, seen, self.catalog, self.cutoff, self.lookup)


def sized_holdout_days(events: pd.DataFrame, end: date, size: HoldoutSize) -> int:
    """The holdout length the ETL would choose for `events` (`jobs.gold.choose_cutoff`, fed the
    per-user days `jobs.gold.holdout_users` computes in Spark, here in pandas)."""
    days = events.assign(day=events["timestamp"].dt.date)
    chosen = days[days["action"].isin(["click", "add_to_cart", "purchase"])]
    touched = days.groupby(["user_id", "item_id"])["day"].min().rename("touched")
    per_item = chosen.groupby(["user_id", "item_id"])["day"].agg(["min", "max"]).join(touched)
    users = per_item.groupby("user_id").agg(first=("min", "min"), last=("max", "max"), last_new=("touched", "max"))
    arrays = {name: users[name].to_numpy().astype("datetime64[D]") for name in ("first", "last", "last_new")}
    per_day = chosen.groupby("day").size().to_dict()
    _, held = choose_cutoff(arrays, per_day, min(days["day"]), end, size)
    return held["days"]


def make_world(cfg: SynthConfig, holdout: int | HoldoutSize) -> World:
    """The synthetic world of `cfg` without its bots, split `holdout` days before its end (or as
    the ETL sizes a holdout by `holdout`)."""
    synth = build_world(cfg)
    events = pd.concat([t.to_pandas() for _, t in iter_days(cfg, synth)], ignore_index=True)
    events["timestamp"] = pd.to_datetime(events["timestamp"], utc=True)
    truth = pd.DataFrame(
        {
            "user_id": synth.user_ids,
            "is_bot": synth.is_bot,
            "top_category": np.array(list(cfg.shape.categories))[synth.user_taste.argmax(1)],
        }
    )
    events = events[~events["user_id"].isin(set(truth.loc[truth.is_bot, "user_id"]))].reset_index(drop=True)
    items = items_table(cfg, synth).to_pandas()
    catalog = Catalog(
        item_ids=items["item_id"].to_numpy(),
        category=items["category"].to_numpy(),
        description=items["description"].to_numpy(),
        price=items["price"].to_numpy(),
        created_at=pd.to_datetime(items["created_at"], utc=True),
        available=items["available"].to_numpy(),
    )
    run_date = cfg.start + timedelta(days=cfg.days)
    if isinstance(holdout, HoldoutSize):
        holdout = sized_holdout_days(events, run_date - timedelta(days=1), holdout)
    cutoff = datetime.combine(run_date - timedelta(days=holdout), datetime.min.time(), UTC)
    positives = events[events["action"].isin(["click", "add_to_cart", "purchase"])].rename(
        columns={"timestamp": "event_timestamp"}
    )
    examples = positives[positives["event_timestamp"] < cutoff][["user_id", "item_id", "action", "event_timestamp"]]
    holdout = positives[positives["event_timestamp"] >= cutoff][["user_id", "item_id", "action", "event_timestamp"]]
    categories = dict(zip(catalog.item_ids, catalog.category, strict=True))
    days = sorted(events["timestamp"].dt.date.unique())
    recent = recent_frame(events)
    views = {
        # 30 days: gold keeps a user's row on every day within 30 days of activity.
        "user_recent": FrameView("user_recent", "user_id", recent, ("last_10_items",), timedelta(days=30)),
        "user_history": FrameView(
            "user_history",
            "user_id",
            history_frame(events[events["action"] == "purchase"]),
            ("items", "counts", "last_day"),
            timedelta(days=400),
        ),
        "user_features": FrameView(
            "user_features",
            "user_id",
            user_counts_frame(events, categories),
            ("purchases_30d", "favourite_category"),
            timedelta(days=2),
        ),
        "item_features": FrameView(
            "item_features",
            "item_id",
            item_frame(events, catalog, days),
            (*(f"{p}_{w}d" for p in COUNTED for w in WINDOWS), "popularity", "category"),
            timedelta(days=2),
        ),
    }
    return World(
        events, examples, holdout, catalog, FrameLookup(_declare_all(views), SERVICES), truth, cutoff, run_date
    )


def _declare_all(views: dict[str, FrameView]) -> dict[str, FrameView]:
    """Every feature the exported signatures read, declared in its view: the ones this small
    world does not compute have no values (NaN), which bind as the online store's missing values
    do. Without them a signature input would have no source, which serving refuses."""
    from models.features import ITEM_NUMERIC, USER_NUMERIC

    out = dict(views)
    for name in {n.partition("__")[0] for n in (*USER_NUMERIC, *ITEM_NUMERIC)}:
        view = out[name]
        extra = tuple(
            n.partition("__")[2]
            for n in (*USER_NUMERIC, *ITEM_NUMERIC)
            if n.startswith(f"{name}__") and n.partition("__")[2] not in view.features
        )
        frame = view.frame.assign(**dict.fromkeys(extra, np.nan))
        out[name] = FrameView(view.name, view.key, frame, (*view.features, *extra), view.ttl)
    return out
