"""Feature-store fixtures: small gold tables and materialized stores, built once per session.

Each store gets a unique Feast project, which suffixes every online key, and deletes only its own
keys afterwards; the shared Redis is never flushed.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable

from testsupport.feature_samples import SampleGold, day_stamp
from towerflow.settings import Settings


def make_settings(home: Path, redis_url: str | None = None) -> Settings:
    return Settings(home=home, redis_url=redis_url, feature_env="auto")


def make_gold(home: Path, **kwargs: Any) -> SampleGold:
    from testsupport.feature_samples import write_sample_gold
    from towerflow.lake import Lake

    return write_sample_gold(Lake(str(home / "lake")), **kwargs)


def end_of(gold: SampleGold) -> datetime:
    """The materialization end that makes the last sample day's rows current."""
    return day_stamp(gold.days[-1])


def open_store(settings: Settings, env: str):
    from jobs import feature_store as fs

    store = fs.feature_store(settings, env, project=f"tft_{uuid.uuid4().hex[:10]}")
    fs.apply(store)
    return store


def current_rows(store: Any, view: str, at: datetime) -> dict[str, dict[str, Any]]:
    """id -> gold row (as a dict) with the latest event_timestamp <= `at` within the view's TTL."""
    from features.offline_store import source_uri

    fv = store.get_feature_view(view)
    key = fv.join_keys[0]
    table = DeltaTable(source_uri(store.config, fv.batch_source)).to_pyarrow_table()
    ts = table.column("event_timestamp")
    table = table.filter(pc.and_(pc.less_equal(ts, at), pc.greater_equal(ts, at - fv.ttl)))
    rows: dict[str, dict[str, Any]] = {}
    for row in table.sort_by("event_timestamp").to_pylist():
        rows[row[key]] = row  # later rows replace earlier ones
    return rows


def expected_columns(store: Any, service: str, join_key: str, ids: list[str], at: datetime) -> dict[str, list]:
    """`{"<view>__<feature>": [value per id]}` for the service's views keyed by `join_key`."""
    from features.reader import service_reads

    out: dict[str, list] = {}
    for read in service_reads(store, service).get(join_key, []):
        rows = current_rows(store, read.view, at)
        for feature, column in zip(read.features, read.columns, strict=True):
            out[column] = [rows.get(i, {}).get(feature) for i in ids]
    return out


@pytest.fixture(scope="session")
def fx() -> SimpleNamespace:
    """This folder's helpers (test modules cannot import each other under --import-mode=importlib)."""
    return SimpleNamespace(
        make_settings=make_settings,
        make_gold=make_gold,
        end_of=end_of,
        open_store=open_store,
        current_rows=current_rows,
        expected_columns=expected_columns,
    )


@pytest.fixture(scope="session")
def gold_home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SampleGold]:
    home = tmp_path_factory.mktemp("features-home")
    return home, make_gold(home)


def _materialized(settings: Settings, env: str, gold: SampleGold) -> Iterator[Any]:
    from jobs import feature_store as fs

    store = open_store(settings, env)
    try:
        fs.materialize(store, end_of(gold))
        yield store
    finally:
        fs.delete_online_project(store)


@pytest.fixture(scope="session")
def sqlite_store(gold_home) -> Iterator[Any]:
    home, gold = gold_home
    yield from _materialized(make_settings(home), "embedded", gold)


@pytest.fixture(scope="session")
def redis_store(gold_home, redis_url: str) -> Iterator[Any]:
    home, gold = gold_home
    yield from _materialized(make_settings(home, redis_url), "redis", gold)


@pytest.fixture(scope="session", params=["embedded", "redis"])
def store(request: pytest.FixtureRequest) -> Any:
    """Each materialized store in turn: SQLite, then Redis."""
    return request.getfixturevalue("sqlite_store" if request.param == "embedded" else "redis_store")
