"""Gold: per-day user and item features, and training examples, from silver.

A feature row of day D summarizes everything up to the end of D and carries
`event_timestamp` = D + 1 day 00:00 UTC (towerflow/schemas.py), so a point-in-time join never
hands a training example features computed from its own future. Windows are 1, 7 and 30 days
ending with D: "7d" is D-6 .. D. Cancellations are not counted as actions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING

import numpy as np

from towerflow.schemas import COUNTED, WINDOWS

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

#: Actions that are positives for training: a person chose the item.
POSITIVE_ACTIONS = ("click", "add_to_cart", "purchase")
LOOKBACK_DAYS = max(WINDOWS)
#: Recency of the last purchase looks this far back (purchases only, so it stays cheap).
PURCHASE_LOOKBACK_DAYS = 365
POPULARITY_HALF_LIFE_DAYS = 7.0
#: Pseudo-views of the global rate added to each item's CTR and conversion (Bayesian smoothing).
SMOOTHING_VIEWS = 20.0
#: Prices are averaged as exact decimals (a double sum depends on row order); the sum and average
#: types are Spark's own for an `avg` of this type, so the day-by-day sums give the same value.
PRICE_DECIMAL, PRICE_SUM_DECIMAL, PRICE_AVG_DECIMAL = "decimal(18,6)", "decimal(28,6)", "decimal(22,10)"


def as_of(day: date) -> datetime:
    """When day `day`'s features become valid: the next midnight, UTC."""
    return datetime.combine(day + timedelta(days=1), time.min, UTC)


def window_start(day: date, days: int) -> date:
    """First day of the `days`-day window that ends with `day`."""
    return day - timedelta(days=days - 1)


def _as_of_column() -> Column:
    """`as_of` of each row's `feature_date` (the session time zone is UTC)."""
    from pyspark.sql import functions as F

    return F.date_add("feature_date", 1).cast("timestamp")


def _days_before(moment: Column) -> Column:
    """Days (fractional) from `moment` to the end of the row's feature day."""
    return (_as_of_column().cast("double") - moment.cast("double")) / 86_400.0


def feature_days(interactions: DataFrame, first: date, last: date) -> DataFrame:
    """Each silver row once for every feature day in `first`..`last` whose 30-day window holds
    it, with `feature_date` and `_age` (whole days from the event's day to the feature day).

    One aggregation per (key, feature_date) over this frame computes a whole range of days in one
    pass; a single day is the range `day`..`day`.
    """
    from pyspark.sql import functions as F

    rows = interactions.where(
        (F.col("event_date") >= F.lit(window_start(first, LOOKBACK_DAYS))) & (F.col("event_date") <= F.lit(last))
    )
    # event_date >= first - 29 and <= last, so the sequence bounds are always in order.
    start = F.greatest(F.col("event_date"), F.lit(first))
    end = F.least(F.date_add("event_date", LOOKBACK_DAYS - 1), F.lit(last))
    return rows.withColumn("feature_date", F.explode(F.sequence(start, end))).withColumn(
        "_age", F.datediff("feature_date", "event_date")
    )


def _windowed_counts() -> list[Column]:
    from pyspark.sql import functions as F

    return [
        F.count(F.when((F.col("action") == action) & (F.col("_age") < w), True)).alias(f"{prefix}_{w}d")
        for prefix, action in COUNTED.items()
        for w in WINDOWS
    ]


def transform_user_features(
    interactions: DataFrame, items: DataFrame, purchases: DataFrame, first: date, last: date
) -> DataFrame:
    """Silver -> GOLD_USER_FEATURES rows: one per user and feature day in `first`..`last`, for
    users active in the 30 days ending with that day.

    Each user's rows are first summed per day (counts, decimal price sums, acts per category, the
    day's 10 latest items), and only those day rows are spread over the feature days whose window
    holds them: a 30-day window then reads 30 short rows per user instead of every event again.

    Args:
        interactions: silver interactions (at least `first - 29` .. `last`).
        items: the silver catalog (for categories).
        purchases: silver purchases (`user_id`, `timestamp`, `event_date`) from
            `first - PURCHASE_LOOKBACK_DAYS` on, for `days_since_last_purchase` (null: none in
            the lookback).
        first: first feature day.
        last: last feature day.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    rows = interactions.where(
        (F.col("event_date") >= F.lit(window_start(first, LOOKBACK_DAYS))) & (F.col("event_date") <= F.lit(last))
    ).join(F.broadcast(items.select("item_id", "category")), "item_id", "left")
    acted = F.col("action") != "cancellation"
    price = F.when(acted, F.col("price").cast(PRICE_DECIMAL))
    day_keys = ("user_id", "event_date")
    days = rows.groupBy(*day_keys).agg(
        *[F.count(F.when(F.col("action") == action, True)).alias(f"_{prefix}") for prefix, action in COUNTED.items()],
        F.max("timestamp").alias("_last_event"),
        # Exact decimal sums: a double sum depends on row order, and reruns must agree bit for bit.
        F.sum(price).alias("_price_sum"),
        F.count(price).alias("_priced"),
    )
    # The day's 10 latest distinct items, each as its latest act (ties: item id, then action): any
    # item among a window's 10 latest is among the 10 latest of the day of its latest act.
    latest_act = F.max(F.when(acted, F.struct("timestamp", "item_id", "action")))
    latest = (
        rows.groupBy(*day_keys, "item_id")
        .agg(latest_act.alias("_act"))
        .groupBy(*day_keys)
        .agg(F.slice(F.sort_array(F.collect_list("_act"), asc=False), 1, 10).alias("_acts"))
    )
    day_rows = feature_days(days.join(latest, list(day_keys)), first, last)
    users = day_rows.groupBy("user_id", "feature_date").agg(
        *[
            F.sum(F.when(F.col("_age") < w, F.col(f"_{prefix}")).otherwise(0)).alias(f"{prefix}_{w}d")
            for prefix in COUNTED
            for w in WINDOWS
        ],
        F.max("_last_event").alias("_last_event"),
        F.sum("_price_sum").alias("_price_sum"),
        F.sum("_priced").alias("_priced"),
        F.sort_array(F.flatten(F.collect_list("_acts")), asc=False).alias("_acts"),
    )
    # Spark's decimal avg: the sum in the input's sum type, divided by the count, in the avg's type.
    price_sum = F.col("_price_sum").cast(PRICE_SUM_DECIMAL)
    avg_price = (price_sum / F.col("_priced").cast("decimal(20,0)")).cast(PRICE_AVG_DECIMAL)
    users = users.withColumn("avg_price_30d", F.when(F.col("_priced") > 0, avg_price).cast("double"))
    # Last 10 distinct items, most recent first (ties broken by item id, so reruns agree), and the
    # most recent action on each (the action only orders acts sharing an instant and an item).
    newest_first = F.transform("_acts", lambda act: act["item_id"])
    users = users.withColumn("last_10_items", F.slice(F.array_distinct(newest_first), 1, 10))
    users = users.withColumn(
        "last_10_actions",
        F.transform("last_10_items", lambda item: F.filter("_acts", lambda act: act["item_id"] == item)[0]["action"]),
    )
    # Acts per category in 30 days: how many categories, and the one acted on most (ties: first
    # by name).
    categories = (
        feature_days(
            rows.where(acted)
            .groupBy(*day_keys, F.coalesce("category", F.lit("other")).alias("_category"))
            .agg(F.count("*").alias("_n")),
            first,
            last,
        )
        .groupBy("user_id", "feature_date", "_category")
        .agg(F.sum("_n").alias("_n"))
        .groupBy("user_id", "feature_date")
        .agg(
            F.count("*").alias("distinct_categories_30d"),
            F.min(F.struct(-F.col("_n"), F.col("_category")))["_category"].alias("favourite_category"),
        )
    )
    users = users.join(categories, ["user_id", "feature_date"], "left").fillna(0, subset=["distinct_categories_30d"])
    # Last purchase within the lookback, as of each feature day: a running max over days.
    bought = (
        purchases.where(F.col("event_date") <= F.lit(last))
        .groupBy("user_id", F.col("event_date").alias("feature_date"))
        .agg(F.max("timestamp").alias("_purchase"))
        .withColumn("_is_row", F.lit(False))
    )
    lookback = (
        Window.partitionBy("user_id")
        .orderBy(F.unix_date("feature_date"))
        .rangeBetween(-(PURCHASE_LOOKBACK_DAYS - 1), 0)
    )
    users = (
        users.withColumn("_is_row", F.lit(True))
        .unionByName(bought, allowMissingColumns=True)
        .withColumn("_last_purchase", F.max("_purchase").over(lookback))
        .where("_is_row")
    )
    return users.select(
        "*",
        _as_of_column().alias("event_timestamp"),
        _days_before(F.col("_last_event")).alias("days_since_last_event"),
        _days_before(F.col("_last_purchase")).alias("days_since_last_purchase"),
    )


def transform_item_features(exploded: DataFrame, items: DataFrame, first: date, last: date) -> DataFrame:
    """Silver -> GOLD_ITEM_FEATURES rows: one per catalog item and feature day in
    `first`..`last`, for items that exist by the end of that day.

    Items nobody touched get zero counts (cold start still has price, category and age).
    Price, category and availability are the catalog's current values (silver/items), so the
    latest day's row is what the gateway filters on.
    CTR and conversion are smoothed toward the catalog-wide rate of the 30 days with
    `SMOOTHING_VIEWS` pseudo-views; where the source records no views at all (Online Retail),
    neither can be measured and both are null.

    Args:
        exploded: `feature_days(silver interactions, first, last)`.
        items: the silver catalog.
        first: first feature day.
        last: last feature day.
    """
    from pyspark.sql import functions as F

    decay = F.pow(F.lit(0.5), _days_before(F.col("timestamp")) / POPULARITY_HALF_LIFE_DAYS)
    counts = exploded.groupBy("item_id", "feature_date").agg(
        *_windowed_counts(),
        # Rounded: a sum of doubles depends on row order, and reruns must agree bit for bit.
        F.round(F.sum(F.when(F.col("action").isin("click", "purchase"), decay).otherwise(0.0)), 9).alias("popularity"),
    )
    count_columns = [c for c in counts.columns if c not in ("item_id", "feature_date")]
    calendar = exploded.sparkSession.createDataFrame(
        [(first + timedelta(days=n),) for n in range((last - first).days + 1)], "feature_date date"
    )
    catalog = (
        items.select("item_id", "price", "category", "created_at", "available")
        .crossJoin(F.broadcast(calendar))
        .where(F.col("created_at").isNull() | (F.col("created_at") < _as_of_column()))
    )
    totals = counts.groupBy("feature_date").agg(
        F.sum("views_30d").alias("_views"),
        F.sum("clicks_30d").alias("_clicks"),
        F.sum("purchases_30d").alias("_purchases"),
    )
    rows = (
        catalog.join(counts, ["item_id", "feature_date"], "left")
        .fillna(0, subset=count_columns)
        .join(F.broadcast(totals), "feature_date", "left")
    )
    prior_views = F.lit(SMOOTHING_VIEWS)

    def smoothed(hits: str, total_hits: str) -> Column:
        rate = F.col(total_hits) / F.col("_views")
        value = (F.col(hits) + prior_views * rate) / (F.col("views_30d") + prior_views)
        return F.when(F.col("_views") > 0, F.least(F.lit(1.0), value))

    return rows.select(
        "*",
        smoothed("clicks_30d", "_clicks").alias("ctr"),
        smoothed("purchases_30d", "_purchases").alias("conversion"),
        # greatest() skips nulls, so an unknown creation time must stay null explicitly.
        F.when(F.col("created_at").isNotNull(), F.greatest(F.lit(0.0), _days_before(F.col("created_at")))).alias(
            "age_days"
        ),
        _as_of_column().alias("event_timestamp"),
    )


def transform_examples(interactions: DataFrame, first: date | None, last: date) -> DataFrame:
    """Silver -> GOLD_EXAMPLES: the positives (click, add_to_cart, purchase) with their time.

    Args:
        interactions: silver interactions.
        first: first day included (None: from the beginning).
        last: last day included.
    """
    from pyspark.sql import functions as F

    rows = interactions.where(F.col("action").isin(*POSITIVE_ACTIONS) & (F.col("event_date") <= F.lit(last)))
    if first is not None:
        rows = rows.where(F.col("event_date") >= F.lit(first))
    return rows.select(
        "user_id",
        "item_id",
        "action",
        F.col("timestamp").alias("event_timestamp"),
        "quantity",
        "event_date",
    )


@dataclass(frozen=True)
class HoldoutSize:
    """How much of the latest data is held out for evaluation: at least `min_days` days, and
    more (up to `max_days`, and never more than half of the days with data) until every
    evaluation variant has `min_users` users and the holdout `min_events` positives."""

    min_days: int = 7
    min_users: int = 100
    min_events: int = 500
    max_days: int = 28


def holdout_users(interactions: DataFrame) -> DataFrame:
    """Silver interactions -> one row per user who chose something: `first` (first day of a
    positive), `last` (last day of a positive) and `last_new` (the latest day on which an item
    the user chose was first touched at all). A user counts in a holdout from cutoff `c` when
    `first < c <= last` (variant `all`), and also `c <= last_new` (variant `new`: an item chosen
    in the holdout that the user never touched before it)."""
    from pyspark.sql import functions as F

    chosen = F.col("action").isin(*POSITIVE_ACTIONS)
    per_item = (
        interactions.groupBy("user_id", "item_id")
        .agg(
            F.min(F.when(chosen, F.col("event_date"))).alias("_first"),
            F.max(F.when(chosen, F.col("event_date"))).alias("_last"),
            F.min("event_date").alias("_touched"),
        )
        .where(F.col("_first").isNotNull())
    )
    return per_item.groupBy("user_id").agg(
        F.min("_first").alias("first"), F.max("_last").alias("last"), F.max("_touched").alias("last_new")
    )


def choose_cutoff(
    users: dict[str, np.ndarray],
    positives_per_day: dict[date, int],
    first_day: date,
    end: date,
    size: HoldoutSize,
) -> tuple[date, dict[str, int]]:
    """The latest cutoff (first holdout day) whose holdout `cutoff..end` meets `size`.

    Args:
        users: `holdout_users` as arrays of dates (`first`, `last`, `last_new`).
        positives_per_day: positives per day, for the days that have any.
        first_day: the first day with data; at least half the days stay before the cutoff.
        end: the holdout's last day (the day before the run).

    Returns:
        The cutoff and what its holdout holds (`days`, `users_all`, `users_new`, `events`). When
        no allowed length meets `size`, the longest allowed one.
    """
    span = (end - first_day).days + 1
    longest = max(size.min_days, min(size.max_days, span // 2))
    first, last, last_new = (users[k] for k in ("first", "last", "last_new"))
    counts: dict[str, int] = {}
    for days in range(size.min_days, longest + 1):
        cutoff = end - timedelta(days=days - 1)
        c = np.datetime64(cutoff)
        before = first < c
        counts = {
            "days": days,
            "users_all": int((before & (last >= c)).sum()),
            "users_new": int((before & (last_new >= c)).sum()),
            "events": sum(n for day, n in positives_per_day.items() if cutoff <= day <= end),
        }
        if min(counts["users_all"], counts["users_new"]) >= size.min_users and counts["events"] >= size.min_events:
            break
    return end - timedelta(days=counts["days"] - 1), counts


HISTORY_ITEMS = 100


def user_year_items(interactions: DataFrame, first: date, last: date) -> DataFrame:
    """For each user and day in `first`..`last` on which the user did anything (`feature_date`),
    each item the user acted on in the `PURCHASE_LOOKBACK_DAYS` days ending with that day:
    `_seen_at` (the latest act), `_bought_at` (the latest purchase; null: none), `n` (purchases),
    and `_buying_day` (the user bought something on `feature_date`).

    The join of each active day with its year of rows is what user history and user seen lists
    both need; computed once, it serves both.

    Args:
        interactions: silver interactions (`user_id`, `item_id`, `action`, `timestamp`,
            `event_date`) from `first - PURCHASE_LOOKBACK_DAYS` on.
    """
    from pyspark.sql import functions as F

    bought = F.col("action") == "purchase"
    active = (
        interactions.where((F.col("event_date") >= F.lit(first)) & (F.col("event_date") <= F.lit(last)))
        .groupBy("user_id", F.col("event_date").alias("feature_date"))
        .agg(F.max(bought).alias("_buying_day"))
    )
    year = active.join(interactions, "user_id").where(
        (F.col("event_date") <= F.col("feature_date"))
        & (F.col("event_date") > F.date_sub("feature_date", PURCHASE_LOOKBACK_DAYS))
    )
    return year.groupBy("user_id", "feature_date", "item_id").agg(
        F.max("_buying_day").alias("_buying_day"),
        F.max("timestamp").alias("_seen_at"),
        F.max(F.when(bought, F.col("timestamp"))).alias("_bought_at"),
        F.count(F.when(bought, True)).alias("n"),
    )


def transform_user_history(
    interactions: DataFrame, first: date, last: date, *, year_items: DataFrame | None = None
) -> DataFrame:
    """Silver interactions -> GOLD_USER_HISTORY rows: for each user and day in `first`..`last`
    on which the user bought something, the (up to) 100 items bought most in the 365 days ending
    with that day, with their counts and the last time each was bought (days since the epoch).

    Rows exist only on purchase days; the feature view's long TTL carries them forward, so a user
    back after months still has a history, and reruns rewrite only their interval.

    Args:
        interactions: silver interactions (`user_id`, `item_id`, `action`, `timestamp`,
            `event_date`) from `first - PURCHASE_LOOKBACK_DAYS` on; purchases alone will do.
        year_items: `user_year_items(interactions, first, last)`, when already computed.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if year_items is None:
        year_items = user_year_items(interactions, first, last)
    window = year_items.where(F.col("_buying_day") & (F.col("n") > 0)).withColumnRenamed("_bought_at", "_last")
    best = Window.partitionBy("user_id", "feature_date").orderBy(F.desc("n"), F.desc("_last"), "item_id")
    top = window.withColumn("_rank", F.row_number().over(best)).where(F.col("_rank") <= HISTORY_ITEMS)
    lists = top.groupBy("user_id", "feature_date").agg(
        F.sort_array(
            F.collect_list(F.struct("_rank", "item_id", "n", (F.col("_last").cast("double") / 86_400.0).alias("d")))
        ).alias("_top")
    )
    return lists.select(
        "user_id",
        "feature_date",
        _as_of_column().alias("event_timestamp"),
        F.transform("_top", lambda t: t["item_id"]).alias("items"),
        F.transform("_top", lambda t: t["n"].cast("long")).alias("counts"),
        F.transform("_top", lambda t: t["d"]).alias("last_day"),
    )


#: At most this many items in each of a user's `seen` and `bought` lists (the most recent).
SEEN_ITEMS = 1000


def transform_user_seen(
    interactions: DataFrame, first: date, last: date, *, year_items: DataFrame | None = None
) -> DataFrame:
    """Silver interactions -> GOLD_USER_SEEN rows: for each user and day in `first`..`last` on
    which the user did anything, every item the user acted on (`seen`: views too) and every item
    the user bought (`bought`) in the 365 days ending with that day, most recent first, at most
    `SEEN_ITEMS` each. The gateway's `exclude_seen` and `exclude_purchased` take them out.

    Args:
        interactions: silver interactions (`user_id`, `item_id`, `action`, `timestamp`,
            `event_date`) from `first - PURCHASE_LOOKBACK_DAYS` on.
        year_items: `user_year_items(interactions, first, last)`, when already computed.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    per_item = year_items if year_items is not None else user_year_items(interactions, first, last)
    day = Window.partitionBy("user_id", "feature_date")
    ranked = per_item.withColumn("_seen", F.row_number().over(day.orderBy(F.desc("_seen_at"), "item_id"))).withColumn(
        "_bought", F.row_number().over(day.orderBy(F.desc_nulls_last("_bought_at"), "item_id"))
    )
    lists = ranked.groupBy("user_id", "feature_date").agg(
        F.sort_array(F.collect_list(F.when(F.col("_seen") <= SEEN_ITEMS, F.struct("_seen", "item_id")))).alias("_s"),
        F.sort_array(
            F.collect_list(
                F.when(
                    F.col("_bought_at").isNotNull() & (F.col("_bought") <= SEEN_ITEMS), F.struct("_bought", "item_id")
                )
            )
        ).alias("_b"),
    )
    return lists.select(
        "user_id",
        "feature_date",
        _as_of_column().alias("event_timestamp"),
        F.transform("_s", lambda t: t["item_id"]).alias("seen"),
        F.transform("_b", lambda t: t["item_id"]).alias("bought"),
    )
