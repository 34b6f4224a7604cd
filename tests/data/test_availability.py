"""Availability from a catalog file to silver and gold: real imports into bronze Delta tables, then
the silver and gold transforms on a local Spark session."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from jobs import clean, gold
from jobs.ingest import import_items, import_online_retail
from jobs.sparklake import spark_schema
from towerflow import schemas as S
from towerflow.lake import Lake

pytestmark = pytest.mark.spark

RETAIL = (
    "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
    "536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,12/1/2010 8:26,2.55,17850,United Kingdom\n"
    "536365,71053,WHITE METAL LANTERN,6,12/1/2010 8:26,3.39,17850,United Kingdom\n"
    "536366,22633,HAND WARMER UNION JACK,6,12/1/2010 8:28,1.85,13047,United Kingdom\n"
)
DAY = date(2010, 12, 1)


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def silver_items(spark, lake: Lake) -> dict[str, dict]:
    bronze = lake.read(lake.uri("bronze", "items")).to_pylist()
    frame = spark.createDataFrame(bronze, schema=spark_schema(S.BRONZE_ITEMS))
    return {r["item_id"]: r.asDict() for r in clean.transform_items(frame).collect()}


def gold_items(spark, lake: Lake) -> dict[str, dict]:
    events = lake.read(lake.uri("bronze", "events")).to_pylist()
    items = spark.createDataFrame(list(silver_items(spark, lake).values()), schema=spark_schema(S.SILVER_ITEMS))
    silver = clean.transform_interactions(spark.createDataFrame(events, schema=spark_schema(S.BRONZE_EVENTS)), items)
    rows = gold.transform_item_features(gold.feature_days(silver, DAY, DAY), items, DAY, DAY)
    return {r["item_id"]: r.asDict() for r in rows.collect()}


def test_an_items_file_marks_an_item_unavailable_and_keeps_what_it_does_not_say(spark, tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    import_online_retail(lake, _write(tmp_path, "retail.csv", RETAIL))
    before = silver_items(spark, lake)
    assert all(row["available"] is True for row in before.values())  # a sales log says nothing else

    report = import_items(lake, _write(tmp_path, "off.csv", "item_id,available\n85123A,false\n"))

    assert report.items_landed == 1
    after = silver_items(spark, lake)
    assert after["85123A"]["available"] is False
    assert after["71053"]["available"] is True and after["22633"]["available"] is True
    # The file named only availability: the item keeps its description, category, price, age.
    for column in ("description", "category", "price", "created_at"):
        assert after["85123A"][column] == before["85123A"][column], column
    features = gold_items(spark, lake)
    assert features["85123A"]["available"] is False
    assert features["71053"]["available"] is True
    assert features["85123A"]["price"] == before["85123A"]["price"]


def test_a_later_file_without_availability_does_not_bring_an_item_back(spark, tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    import_online_retail(lake, _write(tmp_path, "retail.csv", RETAIL))
    import_items(lake, _write(tmp_path, "off.csv", "item_id,available\n85123A,no\n"))
    import_items(lake, _write(tmp_path, "price.csv", "item_id,price\n85123A,3.10\n71053,\n"))
    out = silver_items(spark, lake)
    assert out["85123A"]["available"] is False and out["85123A"]["price"] == 3.10
    assert out["71053"]["price"] == 3.39  # a blank value is not a change

    import_items(lake, _write(tmp_path, "on.csv", "item_id,available\n85123A,yes\n"))
    assert silver_items(spark, lake)["85123A"]["available"] is True
