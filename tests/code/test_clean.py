"""Silver transforms on a few hand-made rows each (jobs/clean.py)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from jobs import clean
from jobs.sparklake import conform
from towerflow import schemas as S

pytestmark = pytest.mark.spark

DAY = date(2025, 1, 3)
T0 = datetime(2025, 1, 3, 10, 0, tzinfo=UTC)


def events(spark, rows: list[dict]):
    """Bronze events from partial rows; the rest gets harmless defaults."""
    base = {
        "event_id": None,
        "user_id": "u1",
        "item_id": "i1",
        "action": "view",
        "timestamp": T0,
        "quantity": 0,
        "price": 2.5,
        "invoice_no": None,
        "country": None,
        "source": "test",
        "import_batch": "b1",
        "source_row": 0,
        "request_id": None,
        "event_date": DAY,
    }
    full = [{**base, "event_id": f"e{n}", "source_row": n, **row} for n, row in enumerate(rows)]
    return conform(spark.createDataFrame(full, schema=_spark_schema(S.BRONZE_EVENTS)), S.BRONZE_EVENTS)


def items(spark, ids=("i1", "i2")):
    rows = [
        {
            "item_id": i,
            "description": "X",
            "category": "kitchen",
            "price": 2.5,
            "created_at": None,
            "available": True,
            "updated_at": T0,
        }
        for i in ids
    ]
    return spark.createDataFrame(rows, schema=_spark_schema(S.SILVER_ITEMS))


def _spark_schema(schema):
    from jobs.sparklake import spark_schema

    return spark_schema(schema)


def flagged_by_id(df) -> dict[str, str | None]:
    return {r["event_id"]: r["removed_by"] for r in df.collect()}


def test_each_rule_removes_its_rows_and_the_counts_add_up(spark) -> None:
    rows = [
        {"event_id": "keep"},
        {"event_id": "dup", "timestamp": T0 + timedelta(minutes=1)},
        {"event_id": "dup", "timestamp": T0 + timedelta(minutes=1), "import_batch": "b2"},
        {"event_id": "guest", "user_id": None, "invoice_no": "536365"},
        {"event_id": "postage", "item_id": "POST"},
        {"event_id": "unknown", "item_id": "nope"},
        {"event_id": "free", "price": 0.0},
        {"event_id": "first", "timestamp": T0 + timedelta(minutes=2), "action": "purchase"},
        {"event_id": "second", "timestamp": T0 + timedelta(minutes=2), "action": "purchase"},
    ]
    flagged = clean.flag_interactions(events(spark, rows), items(spark))
    by_id = {}
    for row in flagged.collect():
        by_id.setdefault(row["event_id"], []).append(row["removed_by"])
    assert by_id["keep"] == [None]
    assert set(by_id["dup"]) == {"duplicate_event", None}
    assert by_id["guest"] == ["guest_user"]
    assert by_id["postage"] == ["non_product"]
    assert by_id["unknown"] == ["unknown_item"]
    assert by_id["free"] == ["non_positive_price"]
    assert by_id["first"] == [None] and by_id["second"] == ["repeated_event"]
    counts = clean.removed_counts(flagged)
    assert sum(counts.values()) == len(rows) - clean.kept_interactions(flagged).count() == 6


def test_rate_and_pattern_rules_catch_machines_not_people(spark) -> None:
    metronome = [{"event_id": f"m{n}", "user_id": "bot", "timestamp": T0 + timedelta(seconds=3 * n)} for n in range(60)]
    # A person: irregular gaps; a retail invoice: many lines on one timestamp (one decision).
    person = [
        {"event_id": f"p{n}", "user_id": "person", "timestamp": T0 + timedelta(seconds=s)}
        for n, s in enumerate([0, 7, 50, 51, 300, 420, 425, 900])
    ]
    invoice = [{"event_id": f"b{n}", "user_id": "buyer", "item_id": "i2", "price": 1.0 + n} for n in range(80)]
    frame = events(spark, metronome + person + invoice)
    flagged = flagged_by_id(clean.flag_interactions(frame, items(spark)))
    assert {flagged[f"m{n}"] for n in range(60)} == {"bot_pattern"}
    assert {flagged[f"p{n}"] for n in range(8)} == {None}
    assert {flagged[f"b{n}"] for n in range(80)} == {None}
    strict = clean.CleaningRules(max_moments_per_day=5)
    by_rate = flagged_by_id(clean.flag_interactions(frame, items(spark), strict))
    assert by_rate["m0"] == "bot_rate" and by_rate["p0"] == "bot_rate" and by_rate["b0"] is None


def test_sessions_split_after_30_minutes_and_cancellations_keep_positive_quantities(spark) -> None:
    rows = [
        {"event_id": "a", "timestamp": T0},
        {"event_id": "b", "timestamp": T0 + timedelta(minutes=29)},
        {"event_id": "c", "timestamp": T0 + timedelta(minutes=61)},
        {"event_id": "d", "timestamp": T0 + timedelta(minutes=62), "action": "cancellation", "quantity": -3},
    ]
    silver = {r["event_id"]: r for r in clean.transform_interactions(events(spark, rows), items(spark)).collect()}
    assert silver["a"]["session_id"] == silver["b"]["session_id"] == "u1-20250103-1"
    assert silver["c"]["session_id"] == silver["d"]["session_id"] == "u1-20250103-2"
    assert silver["d"]["quantity"] == 3


def test_a_streamed_click_keeps_its_request_id_in_silver(spark) -> None:
    rows = [{"event_id": "a", "action": "click", "request_id": "req-1"}, {"event_id": "b"}]
    silver = {r["event_id"]: r for r in clean.transform_interactions(events(spark, rows), items(spark)).collect()}
    assert silver["a"]["request_id"] == "req-1" and silver["b"]["request_id"] is None


def test_items_take_the_latest_row_and_derive_missing_categories(spark) -> None:
    base = {
        "price": 1.0,
        "created_at": None,
        "available": None,
        "source": "t",
        "import_batch": "b",
        "source_row": 1,
        "category": None,
    }
    rows = [
        {**base, "item_id": "85123A", "description": "OLD NAME", "updated_at": T0 - timedelta(days=1)},
        {**base, "item_id": "85123A", "description": "WHITE HANGING HEART T-LIGHT HOLDER", "updated_at": T0},
        {**base, "item_id": "22633", "description": "HAND WARMER UNION JACK", "updated_at": T0},
        {**base, "item_id": "X1", "description": "whatever", "category": " Garden ", "updated_at": T0},
        {**base, "item_id": "POST", "description": "POSTAGE", "updated_at": T0},
    ]
    bronze = spark.createDataFrame(rows, schema=_spark_schema(S.BRONZE_ITEMS))
    out = {r["item_id"]: r for r in clean.transform_items(bronze).collect()}
    assert set(out) == {"85123A", "22633", "X1"}
    assert out["85123A"]["description"].startswith("WHITE") and out["85123A"]["category"] == "lighting"
    assert out["22633"]["category"] == "other"
    assert out["X1"]["category"] == "garden" and out["X1"]["available"] is True


def test_items_take_each_attribute_from_the_newest_row_that_has_it(spark) -> None:
    base = {"source": "t", "import_batch": "b", "source_row": 1, "created_at": T0 - timedelta(days=9)}
    rows = [
        # A sales log's catalog row, then files that name only some columns.
        {**base, "item_id": "85123A", "description": "WHITE HANGING HEART T-LIGHT HOLDER", "price": 2.55,
         "category": None, "available": None, "updated_at": T0 - timedelta(days=2)},
        {**base, "item_id": "85123A", "description": None, "price": None, "category": None,
         "created_at": None, "available": False, "updated_at": T0 - timedelta(days=1)},
        {**base, "item_id": "85123A", "description": None, "price": 2.95, "category": "",
         "created_at": None, "available": None, "updated_at": T0},
        {**base, "item_id": "22633", "description": "HAND WARMER", "price": 1.0, "category": "Toys",
         "available": False, "updated_at": T0 - timedelta(days=1)},
        {**base, "item_id": "22633", "description": None, "price": None, "category": None,
         "available": True, "updated_at": T0},
    ]  # fmt: skip
    bronze = spark.createDataFrame(rows, schema=_spark_schema(S.BRONZE_ITEMS))
    out = {r["item_id"]: r.asDict() for r in clean.transform_items(bronze).collect()}
    heart = out["85123A"]
    assert heart["available"] is False  # a later price change does not bring it back
    assert heart["price"] == 2.95 and heart["description"].startswith("WHITE")
    naive = T0.replace(tzinfo=None)  # Spark returns session-zone (UTC) times without a zone
    assert heart["category"] == "lighting" and heart["created_at"] == naive - timedelta(days=9)
    assert heart["updated_at"] == naive
    assert out["22633"]["available"] is True and out["22633"]["category"] == "toys"


@pytest.mark.parametrize(
    ("description", "category"),
    [
        ("PACK OF 72 RETROSPOT CAKE CASES", "baking"),
        ("JUMBO BAG RED RETROSPOT", "bags"),
        ("SET OF 3 CAKE TINS PANTRY DESIGN", "kitchen"),
        ("PAPER CHAIN KIT 50'S CHRISTMAS", "christmas"),
        ("ASSORTED COLOUR BIRD ORNAMENT", "garden"),
        ("REGENCY CAKESTAND 3 TIER", "baking"),
        ("HAND WARMER UNION JACK", "other"),
    ],
)
def test_category_keywords(spark, description: str, category: str) -> None:
    from pyspark.sql import functions as F

    frame = spark.createDataFrame([(description,)], "description string")
    assert frame.select(clean.derive_category(F.col("description"))).first()[0] == category
