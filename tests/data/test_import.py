"""Imports through the real CLI into real Delta tables: counts, idempotence, bad input."""

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from towerflow.cli import app

runner = CliRunner()
GOOD = "user_id,item_id,action,timestamp,quantity,price\nu1,i1,view,2025-01-01 10:00:00,,\nu1,i1,purchase,2025-01-01 10:05:00,2,3.5\nu2,i2,click,2025-01-02T08:00:00Z,,\n"


def _invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_events_file_lands_once(home: Path, lake, tmp_path: Path) -> None:
    path = _write(tmp_path, "events.csv", GOOD)
    first = _invoke("data", "import", "events", str(path))
    assert first.exit_code == 0, first.output
    assert "rows read" in first.output and "events landed" in first.output
    events = lake.read(lake.uri("bronze", "events"))
    assert events.num_rows == 3
    assert set(events.column("import_batch").to_pylist()) == {events.column("import_batch")[0].as_py()}
    assert lake.read(lake.uri("bronze", "items")).num_rows == 2  # derived from the events
    version = lake.version(lake.uri("bronze", "events"))

    again = _invoke("data", "import", "events", str(path))
    assert again.exit_code == 0
    assert "imported before" in again.output
    assert lake.read(lake.uri("bronze", "events")).num_rows == 3
    assert lake.version(lake.uri("bronze", "events")) == version


def test_events_with_an_items_file(home: Path, lake, tmp_path: Path) -> None:
    events = _write(tmp_path, "events.csv", GOOD)
    items = _write(
        tmp_path,
        "items.csv",
        "item_id,description,category,price\ni1,Mug,kitchen,3.5\ni2,Lamp,lighting,20\ni3,Kite,toys,8\n",
    )
    result = _invoke("data", "import", "events", str(events), "--items", str(items))
    assert result.exit_code == 0, result.output
    catalog = lake.read(lake.uri("bronze", "items")).to_pylist()
    assert {r["item_id"]: r["category"] for r in catalog} == {"i1": "kitchen", "i2": "lighting", "i3": "toys"}


def test_parquet_events_are_read(home: Path, lake, tmp_path: Path) -> None:
    import pandas as pd

    path = tmp_path / "events.parquet"
    frame = pd.DataFrame(
        {
            "user_id": ["a"],
            "item_id": ["x"],
            "action": ["click"],
            "timestamp": pd.to_datetime(["2025-02-01 00:00:01"], utc=True),
        }
    )
    frame.to_parquet(path)
    result = _invoke("data", "import", "events", str(path))
    assert result.exit_code == 0, result.output
    assert lake.read(lake.uri("bronze", "events")).column("action").to_pylist() == ["click"]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("missing.csv", None, "no such file"),
        ("cols.csv", "user,item_id,when\nu,i,2025-01-01\n", "missing column(s) user_id, action, timestamp"),
        (
            "ts.csv",
            "user_id,item_id,action,timestamp\nu,i,view,2025-01-01\nu,i,view,31/31/2025 99:00\n",
            "timestamp is not a timestamp: 1 row(s), data rows 2",
        ),
        (
            "act.csv",
            "user_id,item_id,action,timestamp\nu,i,view,2025-01-01\nu,i,teleport,2025-01-01\n",
            "action is not one of",
        ),
        ("empty.csv", "", "empty"),
    ],
)
def test_bad_input_is_refused_and_nothing_lands(
    home: Path, lake, tmp_path: Path, name: str, text: str | None, message: str
) -> None:
    path = tmp_path / name if text is None else _write(tmp_path, name, text)
    result = _invoke("data", "import", "events", str(path))
    assert result.exit_code == 1
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert lake.table(lake.uri("bronze", "events")) is None
    assert lake.table(lake.uri("bronze", "items")) is None


def test_bad_rows_do_not_touch_an_existing_table(home: Path, lake, tmp_path: Path) -> None:
    assert _invoke("data", "import", "events", str(_write(tmp_path, "ok.csv", GOOD))).exit_code == 0
    before = lake.version(lake.uri("bronze", "events"))
    bad = _write(
        tmp_path,
        "bad.csv",
        "user_id,item_id,action,timestamp\nu9,i9,view,2025-01-03\nu9,i9,dance,2025-01-03\n",
    )
    assert _invoke("data", "import", "events", str(bad)).exit_code == 1
    assert lake.version(lake.uri("bronze", "events")) == before
    assert lake.read(lake.uri("bronze", "events")).num_rows == 3


def test_max_rejects_lands_the_rest_and_quarantines_the_bad_rows(home: Path, lake, tmp_path: Path) -> None:
    bad = _write(
        tmp_path,
        "bad.csv",
        "user_id,item_id,action,timestamp\nu9,i9,view,2025-01-03\nu9,i9,dance,2025-01-03\n",
    )
    result = _invoke("data", "import", "events", str(bad), "--max-rejects", "1")
    assert result.exit_code == 0, result.output
    assert lake.read(lake.uri("bronze", "events")).num_rows == 1
    quarantined = list((home / "quarantine").glob("*.csv"))
    assert len(quarantined) == 1 and "dance" in quarantined[0].read_text()


def test_online_retail_missing_columns(home: Path, tmp_path: Path) -> None:
    path = _write(tmp_path, "retail.csv", "InvoiceNo,StockCode\n1,2\n")
    result = _invoke("data", "import", "online-retail", str(path))
    assert result.exit_code == 1
    assert "missing column(s) Description" in " ".join(result.output.split())


@pytest.mark.integration
def test_the_whole_online_retail_file_lands_once(home: Path, lake, online_retail_file: Path) -> None:
    result = _invoke("data", "import", "online-retail", str(online_retail_file))
    assert result.exit_code == 0, result.output
    events = lake.dataset(lake.uri("bronze", "events"))
    assert events.count_rows() == 541_909
    assert lake.count(lake.uri("bronze", "items")) == 4_070
    again = _invoke("data", "import", "online-retail", str(online_retail_file))
    assert again.exit_code == 0
    assert lake.count(lake.uri("bronze", "events")) == 541_909
    assert lake.count(lake.uri("bronze", "items")) == 4_070


def test_synth_lands_the_same_tables_for_the_same_seed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from towerflow.lake import Lake

    tables = []
    for name in ("a", "b"):
        monkeypatch.setenv("TOWERFLOW_HOME", str(tmp_path / name))
        result = _invoke("data", "synth", "--users", "300", "--items", "120", "--days", "3", "--seed", "11")
        assert result.exit_code == 0, result.output
        lake = Lake(str(tmp_path / name / "lake"))
        events = lake.read(lake.uri("bronze", "events")).sort_by("event_id")
        items = lake.read(lake.uri("bronze", "items")).sort_by("item_id")
        tables.append((events, items))
    assert tables[0][0].num_rows > 0 and tables[0][1].num_rows == 120
    assert tables[0][0].equals(tables[1][0]) and tables[0][1].equals(tables[1][1])
    users = pq.read_table(tmp_path / "a" / "landing" / "synth" / "users.parquet")
    assert sum(users.column("is_bot").to_pylist()) >= 3
