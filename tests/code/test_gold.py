"""Gold transforms on a few hand-made rows each (jobs/gold.py)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from jobs import gold
from jobs.sparklake import spark_schema
from towerflow import schemas as S

pytestmark = pytest.mark.spark

DAY = date(2025, 1, 31)


def at(day: date, hour: int = 12) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def silver(spark, rows: list[tuple]):
    """Silver interactions from (user, item, action, day[, hour]) tuples."""
    full = []
    for n, (user, item, action, day, *hour) in enumerate(rows):
        full.append(
            {
                "event_id": f"e{n}",
                "user_id": user,
                "item_id": item,
                "action": action,
                "timestamp": at(day, *(hour or [12])),
                "quantity": 1,
                "price": 10.0 if item == "cheap" else 30.0,
                "session_id": "s",
                "source": "t",
                "event_date": day,
            }
        )
    return spark.createDataFrame(full, schema=spark_schema(S.SILVER_INTERACTIONS))


def catalog(spark, unavailable: tuple[str, ...] = ()):
    rows = [
        ("cheap", "kitchen", at(DAY - timedelta(days=100))),
        ("dear", "garden", at(DAY - timedelta(days=2), 0)),
        ("untouched", "toys", None),
        ("future", "toys", at(DAY + timedelta(days=3))),
    ]
    full = [
        {
            "item_id": i,
            "description": None,
            "category": c,
            "price": 1.0,
            "created_at": t,
            "available": i not in unavailable,
            "updated_at": at(DAY),
        }
        for i, c, t in rows
    ]
    return spark.createDataFrame(full, schema=spark_schema(S.SILVER_ITEMS))


def purchases(frame):
    return frame.where("action = 'purchase'").select("user_id", "timestamp", "event_date")


def test_user_features_count_windows_recency_and_last_items(spark) -> None:
    rows = silver(
        spark,
        [
            ("u", "cheap", "view", DAY),
            ("u", "cheap", "click", DAY, 13),
            ("u", "dear", "view", DAY - timedelta(days=3)),
            ("u", "dear", "purchase", DAY - timedelta(days=10)),
            ("u", "cheap", "view", DAY - timedelta(days=40)),  # outside 30 days
            ("u", "dear", "cancellation", DAY, 14),  # not an action
            ("gone", "cheap", "view", DAY - timedelta(days=31)),  # not active in 30 days
        ],
    )
    out = gold.transform_user_features(rows, catalog(spark), purchases(rows), DAY, DAY).collect()
    assert [r["user_id"] for r in out] == ["u"]
    u = out[0]
    assert (u["views_1d"], u["views_7d"], u["views_30d"]) == (1, 2, 2)
    assert (u["clicks_1d"], u["purchases_7d"], u["purchases_30d"]) == (1, 0, 1)
    assert u["days_since_last_event"] == pytest.approx(10 / 24)  # cancellation at 14:00
    assert u["days_since_last_purchase"] == pytest.approx(10.5)
    assert u["distinct_categories_30d"] == 2
    assert u["favourite_category"] == "garden"  # 2 acts on kitchen, 2 on garden: tie -> by name
    assert u["last_10_items"] == ["cheap", "dear"]
    assert u["last_10_actions"] == ["click", "view"]  # the latest action on each; cancellations are none
    assert u["avg_price_30d"] == pytest.approx((10 + 10 + 30 + 30) / 4)
    assert u["feature_date"] == DAY


def test_a_range_of_days_equals_the_days_one_by_one(spark) -> None:
    rows = silver(
        spark,
        [
            ("u", "cheap", "view", DAY - timedelta(days=2)),
            ("u", "dear", "purchase", DAY - timedelta(days=1)),
            ("v", "dear", "click", DAY),
        ],
    )
    first = DAY - timedelta(days=2)
    ranged = gold.transform_user_features(rows, catalog(spark), purchases(rows), first, DAY)
    ranged = {(r["user_id"], r["feature_date"]): r.asDict() for r in ranged.collect()}
    one_by_one = {}
    for n in range(3):
        day = first + timedelta(days=n)
        single = gold.transform_user_features(rows, catalog(spark), purchases(rows), day, day).collect()
        one_by_one |= {(r["user_id"], day): r.asDict() for r in single}
    assert one_by_one == ranged
    assert len(ranged) == 4  # u on each of the 3 days, v on the last


def test_item_features_smooth_rates_and_keep_untouched_items(spark) -> None:
    rows = silver(
        spark,
        [("x", "cheap", "view", DAY)] * 9
        + [("x", "cheap", "click", DAY), ("x", "dear", "view", DAY), ("x", "cheap", "purchase", DAY)],
    )
    out = gold.transform_item_features(gold.feature_days(rows, DAY, DAY), catalog(spark), DAY, DAY).collect()
    by_item = {r["item_id"]: r for r in out}
    assert set(by_item) == {"cheap", "dear", "untouched"}  # "future" does not exist yet
    cheap, untouched = by_item["cheap"], by_item["untouched"]
    assert (cheap["views_1d"], cheap["clicks_30d"], cheap["purchases_7d"]) == (9, 1, 1)
    # Global CTR over 30 days = 1 click / 10 views; 20 pseudo-views of it.
    assert cheap["ctr"] == pytest.approx((1 + 20 * 0.1) / (9 + 20))
    assert untouched["ctr"] == pytest.approx(0.1) and untouched["views_30d"] == 0
    assert cheap["popularity"] == pytest.approx(2 * 0.5 ** (0.5 / 7))
    assert by_item["dear"]["age_days"] == pytest.approx(3.0)
    assert untouched["age_days"] is None and untouched["category"] == "toys"


def test_item_features_carry_the_catalogs_availability_on_every_day(spark) -> None:
    rows = silver(spark, [("x", "dear", "purchase", DAY - timedelta(days=1)), ("x", "cheap", "click", DAY)])
    first = DAY - timedelta(days=1)
    items = catalog(spark, unavailable=("dear", "untouched"))
    out = gold.transform_item_features(gold.feature_days(rows, first, DAY), items, first, DAY).collect()
    got = {(r["item_id"], r["feature_date"]): r["available"] for r in out}
    assert got == {
        ("cheap", first): True,
        ("cheap", DAY): True,
        ("dear", first): False,  # bought that day, yet gone from the catalog now
        ("dear", DAY): False,
        ("untouched", first): False,
        ("untouched", DAY): False,
    }  # "future" does not exist yet


def test_rates_are_null_where_the_source_has_no_views(spark) -> None:
    rows = silver(spark, [("x", "cheap", "purchase", DAY)])
    out = gold.transform_item_features(gold.feature_days(rows, DAY, DAY), catalog(spark), DAY, DAY).collect()
    assert {r["ctr"] for r in out} == {None} and {r["conversion"] for r in out} == {None}


def test_examples_are_positives_in_the_interval(spark) -> None:
    rows = silver(
        spark,
        [
            ("u", "cheap", "view", DAY),
            ("u", "cheap", "click", DAY),
            ("u", "dear", "purchase", DAY - timedelta(days=5)),
            ("u", "dear", "cancellation", DAY),
        ],
    )
    train = gold.transform_examples(rows, None, DAY - timedelta(days=1)).collect()
    holdout = gold.transform_examples(rows, DAY, DAY).collect()
    assert [(r["item_id"], r["action"]) for r in train] == [("dear", "purchase")]
    assert [(r["item_id"], r["action"]) for r in holdout] == [("cheap", "click")]
    assert holdout[0]["event_timestamp"] is not None


def test_user_history_ranks_items_by_purchases_over_a_year(spark) -> None:
    old = DAY - timedelta(days=400)  # outside the 365-day window
    rows = [
        ("u", "a", "purchase", DAY - timedelta(days=3)),
        ("u", "a", "purchase", DAY - timedelta(days=1)),
        ("u", "b", "purchase", DAY - timedelta(days=2)),
        ("u", "c", "purchase", old),
        ("u", "c", "purchase", old),
        ("u", "c", "purchase", old),
        ("u", "b", "purchase", DAY),
        ("u", "b", "purchase", DAY, 15),
        ("u", "z", "view", DAY),
        ("v", "a", "view", DAY),
    ]
    purchases = silver(spark, rows).where("action = 'purchase'")
    out = {(r["user_id"], r["feature_date"]): r for r in gold.transform_user_history(purchases, DAY, DAY).collect()}
    assert set(out) == {("u", DAY)}  # rows only for users who bought that day
    row = out[("u", DAY)]
    assert row["items"] == ["b", "a"]  # 3 buys of b beat 2 of a; c is older than a year
    assert row["counts"] == [3, 2]
    assert row["last_day"][0] == pytest.approx(at(DAY, 15).timestamp() / 86_400)
    stamp = row["event_timestamp"]
    assert (stamp.date(), stamp.hour, stamp.minute) == (DAY + timedelta(days=1), 0, 0)  # valid from the next midnight


def test_holdout_users_give_each_users_first_last_and_newest_choice(spark) -> None:
    d = [DAY - timedelta(days=n) for n in range(6)]  # d[0] is the latest day
    rows = [
        ("u1", "a", "purchase", d[5]),
        ("u1", "a", "purchase", d[1]),  # a repeat: not new on d[1]
        ("u1", "b", "view", d[4]),
        ("u1", "b", "click", d[2]),  # chosen on d[2], first touched on d[4]
        ("u2", "c", "view", d[0]),  # only viewed: u2 chose nothing
        ("u3", "c", "add_to_cart", d[3]),
        ("u3", "e", "purchase", d[0]),
    ]
    got = {r["user_id"]: r for r in gold.holdout_users(silver(spark, rows)).collect()}
    assert set(got) == {"u1", "u3"}
    assert (got["u1"]["first"], got["u1"]["last"], got["u1"]["last_new"]) == (d[5], d[1], d[4])
    assert (got["u3"]["first"], got["u3"]["last"], got["u3"]["last_new"]) == (d[3], d[0], d[0])


def test_user_seen_lists_everything_seen_and_bought_in_the_year_latest_first(spark) -> None:
    rows = [
        ("u1", "old", "purchase", DAY - timedelta(days=400)),  # beyond the year
        ("u1", "a", "purchase", DAY - timedelta(days=30)),
        ("u1", "b", "view", DAY - timedelta(days=2)),
        ("u1", "a", "view", DAY - timedelta(days=1)),  # seen again: now the most recent
        ("u1", "c", "cancellation", DAY, 9),
        ("u1", "d", "purchase", DAY, 10),
        ("u2", "a", "view", DAY - timedelta(days=5)),  # not active in the interval
    ]
    got = {
        (r["user_id"], r["feature_date"]): r
        for r in gold.transform_user_seen(silver(spark, rows), DAY - timedelta(days=2), DAY).collect()
    }
    assert sorted(got) == [("u1", DAY - timedelta(days=2)), ("u1", DAY - timedelta(days=1)), ("u1", DAY)]
    today = got["u1", DAY]
    assert today["seen"] == ["d", "c", "a", "b"]
    assert today["bought"] == ["d", "a"]  # d today, a 30 days ago; "old" is beyond the year
    assert got["u1", DAY - timedelta(days=2)]["seen"] == ["b", "a"]
    assert got["u1", DAY - timedelta(days=2)]["bought"] == ["a"]
