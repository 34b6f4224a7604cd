"""The daily ETL on a real local Spark session and real Delta tables (jobs/etl.py)."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tests.data.etl_tasks import run_etl_tasks
from towerflow import schemas as S
from towerflow.lake import Lake

pytestmark = pytest.mark.spark

FIRST, LAST = date(2025, 1, 1), date(2025, 1, 3)
TABLES = [
    ("silver", "interactions"),
    ("silver", "items"),
    ("gold", "user_features"),
    ("gold", "item_features"),
    ("gold", "training_examples"),
    ("gold", "holdout"),
]
SORT_KEYS = {
    "interactions": ["event_id"],
    "items": ["item_id"],
    "user_features": ["feature_date", "user_id"],
    "item_features": ["feature_date", "item_id"],
    "training_examples": ["event_timestamp", "user_id", "item_id", "action"],
    "holdout": ["event_timestamp", "user_id", "item_id", "action"],
}


def _per_day(table: pa.Table) -> dict[str, int]:
    """Rows per `event_date` (ISO dates)."""
    counts = pc.value_counts(table.column("event_date")).to_pylist()
    return {c["values"].isoformat(): c["counts"] for c in counts}


def content(lake: Lake, layer: str, table: str) -> pa.Table:
    """A table's rows in a fixed order (files and row order may differ between writes)."""
    rows = lake.read(lake.uri(layer, table))
    keys = SORT_KEYS[table]
    return rows.sort_by([(k, "ascending") for k in keys]).select(sorted(rows.column_names))


@pytest.fixture(scope="module")
def synth_home(tmp_path_factory: pytest.TempPathFactory, spark) -> Path:
    """A small synthetic world (3 bots among 300 users) through bronze and three ETL days."""
    from jobs.ingest import import_events, import_items
    from jobs.synth import SynthConfig, write_landing

    home = tmp_path_factory.mktemp("synth_home")
    cfg = SynthConfig(users=300, items=120, days=3, seed=5, start=FIRST, sessions_per_user_day=0.5)
    landing = write_landing(cfg, home / "landing")
    lake = Lake(str(home / "lake"))
    import_items(lake, landing.items_path, source="synth")
    for path in landing.day_paths:
        import_events(lake, path, source="synth", derive_items=False)
    run_etl_tasks(lake, FIRST, LAST)
    return home


def test_bots_are_filtered_and_people_kept(synth_home: Path) -> None:
    lake = Lake(str(synth_home / "lake"))
    users = pq.read_table(synth_home / "landing" / "users.parquet").to_pandas()
    bots = set(users.loc[users["is_bot"], "user_id"])
    assert len(bots) == 3
    bronze = set(lake.read(lake.uri("bronze", "events"), columns=["user_id"]).column("user_id").to_pylist())
    silver = set(lake.read(lake.uri("silver", "interactions"), columns=["user_id"]).column("user_id").to_pylist())
    assert bots <= bronze and not bots & silver
    assert silver == bronze - bots  # every real user kept
    features = lake.read(lake.uri("gold", "user_features"), columns=["user_id"]).column("user_id").to_pylist()
    assert not bots & set(features)
    commit = lake.history(lake.uri("silver", "interactions"), 1)[0]
    assert "bronze/events" in commit["towerflow.inputs"] and "bot_rate" in commit["towerflow.removed"]


def test_silver_and_gold_follow_the_contract(synth_home: Path) -> None:
    lake = Lake(str(synth_home / "lake"))
    contracts = {
        ("silver", "interactions"): S.SILVER_INTERACTIONS,
        ("silver", "items"): S.SILVER_ITEMS,
        ("gold", "user_features"): S.GOLD_USER_FEATURES,
        ("gold", "item_features"): S.GOLD_ITEM_FEATURES,
        ("gold", "training_examples"): S.GOLD_EXAMPLES,
        ("gold", "holdout"): S.GOLD_EXAMPLES,
    }
    for (layer, table), schema in contracts.items():
        rows = lake.read(lake.uri(layer, table))
        assert rows.num_rows > 0, f"{layer}/{table} is empty"
        assert rows.schema.names == schema.names or set(rows.schema.names) == set(schema.names)
        for field in schema:
            assert rows.schema.field(field.name).type == field.type, f"{layer}/{table}.{field.name}"
    holdout = lake.read(lake.uri("gold", "holdout"))
    train = lake.read(lake.uri("gold", "training_examples"))
    assert pc.min(holdout.column("event_date")).as_py() == LAST
    assert pc.max(train.column("event_date")).as_py() < LAST
    assert set(train.column("action").to_pylist()) <= {"click", "add_to_cart", "purchase"}


def test_rerunning_a_day_leaves_the_same_content(synth_home: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    shutil.copytree(synth_home / "lake", home / "lake")
    lake = Lake(str(home / "lake"))
    before = {t: content(lake, *t) for t in TABLES}
    versions = {t: lake.version(lake.uri(*t)) for t in TABLES}
    run_etl_tasks(lake, date(2025, 1, 2), LAST)  # the last two days again
    run_etl_tasks(lake, LAST, LAST)  # and the last day once more
    for t in TABLES:
        assert content(lake, *t).equals(before[t]), f"{'/'.join(t)} changed on rerun"
    assert lake.version(lake.uri("silver", "interactions")) > versions[("silver", "interactions")]


def test_a_corrupt_day_is_stopped_by_the_gate(synth_home: Path, tmp_path: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from towerflow.cli import app

    home = tmp_path / "home"
    shutil.copytree(synth_home / "lake", home / "lake")
    monkeypatch.setenv("TOWERFLOW_HOME", str(home))
    monkeypatch.setenv("TOWERFLOW_SPARK_MASTER", "local[2]")
    lake = Lake(str(home / "lake"))
    # Land day 4: a copy of day 3 a day later, with 5% null users and 5% unknown actions.
    day3 = lake.read(lake.uri("bronze", "events"), filter=pc.field("event_date") == pa.scalar(LAST))
    frame = day3.to_pandas()
    frame["event_id"] = "bad-" + frame["event_id"]
    frame["timestamp"] = frame["timestamp"] + pd.Timedelta(days=1)
    frame["event_date"] = date(2025, 1, 4)
    n = len(frame) // 20
    frame.loc[frame.index[:n], "user_id"] = None
    frame.loc[frame.index[n : 2 * n], "action"] = "hover"
    lake.write(
        lake.uri("bronze", "events"), S.as_schema(pa.Table.from_pandas(frame, preserve_index=False), S.BRONZE_EVENTS)
    )
    versions = {t: lake.version(lake.uri(*t)) for t in TABLES}

    result = CliRunner().invoke(app, ["pipeline", "etl", "--date", "2025-01-04"])

    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    text = " ".join(result.output.split())
    assert "bronze_events" in text
    assert "expect_column_values_to_not_be_null on user_id" in text
    assert "expect_column_values_to_be_in_set on action" in text and "'hover'" in text
    assert {t: lake.version(lake.uri(*t)) for t in TABLES} == versions
    assert list((home / "reports" / "data_docs").rglob("*.html"))


def test_an_item_marked_unavailable_by_import_is_unavailable_in_gold_after_the_next_run(
    synth_home: Path, tmp_path: Path, monkeypatch
) -> None:
    from typer.testing import CliRunner

    from towerflow.cli import app

    home = tmp_path / "home"
    shutil.copytree(synth_home / "lake", home / "lake")
    monkeypatch.setenv("TOWERFLOW_HOME", str(home))
    lake = Lake(str(home / "lake"))
    features = lake.read(lake.uri("gold", "item_features"), filter=pc.field("feature_date") == pa.scalar(LAST))
    before = dict(zip(features.column("item_id").to_pylist(), features.to_pylist(), strict=True))
    gone = sorted(i for i, row in before.items() if row["available"])[:2]
    assert len(gone) == 2 and not all(row["available"] for row in before.values())  # synth has both kinds
    catalog = tmp_path / "availability.csv"
    catalog.write_text("item_id,available\n" + "".join(f"{i},false\n" for i in gone))

    imported = CliRunner().invoke(app, ["data", "import", "items", str(catalog)])
    assert imported.exit_code == 0, imported.output
    run_etl_tasks(lake, LAST, LAST)

    items = {r["item_id"]: r for r in lake.read(lake.uri("silver", "items")).to_pylist()}
    features = lake.read(lake.uri("gold", "item_features"), filter=pc.field("feature_date") == pa.scalar(LAST))
    after = dict(zip(features.column("item_id").to_pylist(), features.to_pylist(), strict=True))
    assert set(after) == set(before)
    for item, row in after.items():
        assert row["available"] is (False if item in gone else before[item]["available"]), item
        assert items[item]["available"] is row["available"]
    for item in gone:  # the file named availability only: the rest of the item is as it was
        assert (after[item]["price"], after[item]["category"]) == (before[item]["price"], before[item]["category"])


def test_online_retail_counts_add_up(online_retail_file: Path, tmp_path: Path, spark) -> None:
    from jobs.clean import RULES
    from jobs.ingest import import_online_retail

    lake = Lake(str(tmp_path / "lake"))
    import_online_retail(lake, online_retail_file)
    first, last = date(2010, 12, 1), date(2010, 12, 3)
    result = run_etl_tasks(lake, first, last, examples=False)
    bronze = lake.read(
        lake.uri("bronze", "events"),
        filter=(pc.field("event_date") >= pa.scalar(first)) & (pc.field("event_date") <= pa.scalar(last)),
    )
    silver = lake.read(lake.uri("silver", "interactions"))
    removed = result.removed()
    assert set(removed) == set(RULES)
    assert bronze.num_rows - sum(removed.values()) == silver.num_rows > 0
    # Per day, as the run reports it: the bronze rows it read and the silver rows it kept.
    steps = {s.interval: s for s in result.steps if s.name == "silver/interactions"}
    assert {d: s.detail["bronze_rows"] for d, s in steps.items()} == _per_day(bronze)
    assert {d: s.rows for d, s in steps.items()} == _per_day(silver)
    assert removed["guest_user"] > 0 and removed["non_product"] > 0
    assert removed["bot_rate"] == removed["bot_pattern"] == 0  # retail invoices are not bots
    assert set(silver.column("action").to_pylist()) == {"purchase", "cancellation"}
    assert lake.count(lake.uri("gold", "user_features")) > 0
    assert lake.count(lake.uri("gold", "item_features")) > 0
    categories = set(lake.read(lake.uri("silver", "items"), columns=["category"]).column("category").to_pylist())
    assert {"christmas", "bags", "kitchen", "other"} <= categories
