"""Importer transforms on a few rows each."""

from datetime import UTC, datetime, timedelta

import pandas as pd
import pyarrow as pa

from jobs.ingest import parse_timestamps, transform_events, transform_items, transform_online_retail
from towerflow.schemas import BRONZE_EVENTS, BRONZE_ITEMS


def _retail(rows: list[list[str]]) -> pd.DataFrame:
    columns = [
        "InvoiceNo",
        "StockCode",
        "Description",
        "Quantity",
        "InvoiceDate",
        "UnitPrice",
        "CustomerID",
        "Country",
    ]
    return pd.DataFrame(rows, columns=columns)


def test_online_retail_lines_become_purchases_and_cancellations() -> None:
    raw = _retail(
        [
            [
                "536365",
                "85123A",
                "WHITE HANGING HEART T-LIGHT HOLDER",
                "6",
                "2010-12-01 08:26:00",
                "2.55",
                "17850",
                "United Kingdom",
            ],
            [
                "C536379",
                "85123A",
                "WHITE HANGING HEART T-LIGHT HOLDER",
                "-1",
                "2010-12-01 09:41:00",
                "2.55",
                "17850.0",
                "United Kingdom",
            ],
            ["536414", "22139", "", "56", "12/1/2010 11:52", "0", "", "United Kingdom"],
            [
                "536415",
                "22139",
                "RETROSPOT TEA SET CERAMIC 11 PC",
                "3",
                "2010-12-02 10:00:00",
                "4.95",
                "",
                "France",
            ],
        ]
    )
    events, items, rejects = transform_online_retail(raw, batch="b1")
    assert rejects.total == 0
    assert events.schema == BRONZE_EVENTS
    rows = events.to_pylist()
    assert [r["action"] for r in rows] == ["purchase", "cancellation", "purchase", "purchase"]
    assert [r["user_id"] for r in rows] == ["17850", "17850", None, None]  # guests kept, float ids fixed
    assert rows[2]["timestamp"].isoformat() == "2010-12-01T11:52:00+00:00"  # US-style date accepted
    assert [r["source_row"] for r in rows] == [1, 2, 3, 4]
    assert len({r["event_id"] for r in rows}) == 4
    assert items.schema == BRONZE_ITEMS
    catalog = {r["item_id"]: r for r in items.to_pylist()}
    assert set(catalog) == {"85123A", "22139"}
    assert catalog["22139"]["description"] == "RETROSPOT TEA SET CERAMIC 11 PC"
    assert catalog["22139"]["price"] == 4.95  # zero-price lines do not set the price
    assert catalog["85123A"]["created_at"].isoformat() == "2010-12-01T08:26:00+00:00"


def test_online_retail_bad_lines_are_rejected_with_reasons() -> None:
    raw = _retail(
        [
            ["536365", "85123A", "X", "6", "not a date", "2.55", "17850", "UK"],
            ["536366", "", "X", "six", "2010-12-01 08:26:00", "2.55", "17850", "UK"],
        ]
    )
    _, _, rejects = transform_online_retail(raw, batch="b1")
    assert rejects.counts() == {
        "InvoiceDate is not a timestamp": 1,
        "Quantity is not a number": 1,
        "StockCode is empty": 1,
    }
    assert rejects.rows["InvoiceDate is not a timestamp"] == [1]
    assert "not a date" in rejects.describe("f.csv")


def test_events_are_typed_and_bad_rows_named() -> None:
    raw = pd.DataFrame(
        {
            "user_id": ["u1", "u2", "", "u4", "u5"],
            "item_id": ["i1", "i2", "i3", "i4", "i5"],
            "action": ["view", "PURCHASE", "click", "teleport", "click"],
            "timestamp": [
                "2025-01-01T10:00:00Z",
                "2025-01-01 11:00:00",
                "2025-01-01 12:00:00",
                "2025-01-01 13:00:00",
                "yesterday",
            ],
            "quantity": ["", "2", "1", "1", "1"],
            "price": ["", "9.5", "", "", ""],
        }
    )
    events, rejects = transform_events(raw, batch="b2", source="mine")
    assert [r["event_id"] for r in events.to_pylist()] == ["b2-1", "b2-2"]
    assert [r["action"] for r in events.to_pylist()] == ["view", "purchase"]
    assert [r["quantity"] for r in events.to_pylist()] == [0, 2]
    assert rejects.rows == {
        "user_id is empty": [3],
        "action is not one of view, click, add_to_cart, purchase, cancellation": [4],
        "timestamp is not a timestamp": [5],
    }


def test_supplied_event_ids_are_kept() -> None:
    raw = pd.DataFrame(
        {
            "event_id": ["e-9"],
            "user_id": ["u"],
            "item_id": ["i"],
            "action": ["view"],
            "timestamp": ["2025-01-01"],
        }
    )
    events, _ = transform_events(raw, batch="b", source="s")
    assert events.column("event_id").to_pylist() == ["e-9"]


NEWEST = datetime(2026, 5, 1, 9, 30, tzinfo=UTC)  # the newest updated_at already in bronze/items
JUST_AFTER = NEWEST + timedelta(microseconds=1)


def test_items_file_defaults_and_rejects() -> None:
    raw = pd.DataFrame(
        {
            "item_id": ["a", "b", ""],
            "title": ["Mug", "Lamp", "?"],
            "category": ["Kitchen", None, None],
            "price": ["3.5", "abc", "1"],
        }
    )
    items, rejects = transform_items(raw, batch="b", source="s")
    assert rejects.rows == {"item_id is empty": [3], "price is not a number": [2]}
    row = items.to_pylist()[0]
    assert (row["item_id"], row["description"], row["category"], row["available"]) == (
        "a",
        "Mug",
        "kitchen",
        None,  # not stated: silver keeps what an earlier file said, else available
    )
    assert row["updated_at"] == datetime(1970, 1, 1, tzinfo=UTC)  # nothing imported before it


def test_an_availability_file_states_only_availability() -> None:
    raw = pd.DataFrame(
        {
            "item_id": ["a", "b", "c", "d", "e"],
            "available": ["false", "No", "1", "", "maybe"],
            "description": ["", " ", "Lamp", "", ""],
            "created_at": ["", "2027-01-01", "", "", ""],
            "updated_at": ["", "", "2025-02-01 10:00", "", ""],
        }
    )
    items, rejects = transform_items(raw, batch="b", source="s", newest_known=NEWEST)
    assert rejects.rows == {"available is not true/false": [5]}
    rows = {r["item_id"]: r for r in items.to_pylist()}
    assert {i: r["available"] for i, r in rows.items()} == {"a": False, "b": False, "c": True, "d": None}
    assert [rows[i]["description"] for i in "abcd"] == [None, None, "Lamp", None]  # blank is no value
    # Undated rows are newer than everything imported before (or dated at a later creation).
    assert [rows[i]["updated_at"] for i in "abd"] == [JUST_AFTER, datetime(2027, 1, 1, tzinfo=UTC), JUST_AFTER]
    assert rows["c"]["updated_at"] == datetime(2025, 2, 1, 10, tzinfo=UTC)  # a stated date stands


def test_catalogs_derived_from_sales_do_not_claim_availability() -> None:
    raw = _retail([["536365", "85123A", "HEART", "6", "12/1/2010 8:26", "2.55", "17850", "United Kingdom"]])
    _, items, _ = transform_online_retail(raw, batch="b")
    assert items.column("available").to_pylist() == [None]


def test_timestamps_keep_microseconds_in_utc() -> None:
    parsed = parse_timestamps(pd.Series(["2025-01-01T10:00:00.123456+01:00"]))
    assert pa.array(parsed).to_pylist()[0].isoformat() == "2025-01-01T09:00:00.123456+00:00"
