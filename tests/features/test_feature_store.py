"""Feast over gold Delta tables, materialized to SQLite and to the real Redis."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from features.reader import FastFeatureReader, FeastFeatureReader
from jobs import feature_store as fs
from testsupport.feature_samples import item_feature_rows, overwrite_day, user_feature_rows
from towerflow.lake import Lake

pytestmark = pytest.mark.integration
POISON = 1_000_000


def test_apply_twice_changes_nothing(store) -> None:
    again = fs.apply(store)
    assert again.changed == []
    assert again.objects == {"Entity": 2, "FileSource": 6, "PushSource": 2, "FeatureView": 8, "FeatureService": 2}


@pytest.mark.parametrize("service", ["ranking", "retrieval"])
def test_online_values_match_gold_for_sampled_ids(fx, store, gold_home, service: str) -> None:
    _, gold = gold_home
    at = fx.end_of(gold)
    reader = FeastFeatureReader(store, service)
    users = gold.users[::7]
    for user in users:
        want = {k: v[0] for k, v in fx.expected_columns(store, service, "user_id", [user], at).items()}
        assert reader.user_features(user) == want
    items = gold.items[::5]
    got = reader.item_features(items)
    assert got.pop("item_id") == items
    assert got == fx.expected_columns(store, service, "item_id", items, at)


def test_materialize_reports_counts_and_a_new_marker(fx, store, gold_home) -> None:
    _, gold = gold_home
    before = fs.read_marker(store)
    report = fs.materialize(store, fx.end_of(gold), views=["item_features"])
    assert [v.view for v in report.views] == ["item_features"]
    assert report.views[0].entities == len(gold.items)
    assert report.views[0].start == fx.end_of(gold) - timedelta(days=2)
    assert fs.read_marker(store)["version"] == report.marker != before["version"]


def test_views_without_a_table_are_skipped(fx, tmp_path) -> None:
    settings = fx.make_settings(tmp_path)
    fx.make_gold(tmp_path, users=5, items=5, days=1, embeddings=False)
    shutil.rmtree(Path(settings.table_uri("gold", "user_history")))  # a view the ranking service reads
    store = fx.open_store(settings, "embedded")
    report = fs.materialize(store, datetime(2025, 3, 2, tzinfo=UTC))
    skipped = {v.view for v in report.views if v.skipped}
    assert skipped == {"user_embeddings", "item_embeddings", "user_history"}
    with pytest.raises(fs.FeatureStoreError, match="does not exist yet"):
        fs.training_set(
            store, pd.DataFrame({"user_id": ["u1"], "item_id": ["i1"], "event_timestamp": [datetime.now(UTC)]})
        )


def test_training_set_is_point_in_time_and_leaks_nothing(fx, tmp_path) -> None:
    settings = fx.make_settings(tmp_path)
    gold = fx.make_gold(tmp_path, users=20, items=20, days=3, examples_per_day=30)
    lake = Lake(settings.lake)
    examples = lake.read(settings.table_uri("gold", "training_examples")).to_pandas()
    # A poisoned row per example, stamped 1 µs after it and marked with the example's number:
    # it may reach the same user's *later* examples, never this one or any earlier one.
    late = examples.copy()
    late["event_timestamp"] = late["event_timestamp"] + pd.Timedelta(microseconds=1)
    poison = []
    for n, ex in late.iterrows():
        rows = user_feature_rows([ex["user_id"]], ex["event_timestamp"].date(), seed=1).to_pandas()
        rows["event_timestamp"] = ex["event_timestamp"]
        rows["views_7d"] = POISON + n
        poison.append(rows)
    lake.write(settings.table_uri("gold", "user_features"), _arrow(pd.concat(poison), "user"), mode="append")
    store = fx.open_store(settings, "embedded")

    frame = fs.training_set(store, examples, "ranking")

    assert len(frame) == len(examples)
    assert list(frame["event_timestamp"]) == list(examples["event_timestamp"])
    seen = 0
    for n, row in frame.iterrows():
        value = row["user_features__views_7d"]
        if not pd.isna(value) and value >= POISON:
            seen += 1
            source = late.loc[int(value) - POISON]
            assert int(value) - POISON != n
            assert source["user_id"] == row["user_id"]
            assert source["event_timestamp"] <= row["event_timestamp"]
    assert seen > 0  # the join does pick up rows written before an example
    # Every row carries the latest gold row at or before its timestamp, within the 2-day TTL.
    for _, row in frame.iterrows():
        t = row["event_timestamp"].to_pydatetime()
        want = fx.current_rows(store, "user_features", t).get(row["user_id"])
        got = row["user_features__views_30d"]
        assert (pd.isna(got) and want is None) or got == want["views_30d"]
    first_day = frame[frame["event_timestamp"] < fx.end_of(gold) - timedelta(days=2)]
    assert first_day["item_features__views_30d"].isna().all()  # nothing known before day one


def _arrow(frame: pd.DataFrame, kind: str):
    import pyarrow as pa

    from towerflow import schemas

    schema = schemas.GOLD_USER_FEATURES if kind == "user" else schemas.GOLD_ITEM_FEATURES
    return pa.Table.from_pandas(frame, schema=schema, preserve_index=False)


@pytest.mark.parametrize("env", ["embedded", "redis"])
def test_etl_rerun_of_a_day_shows_only_the_new_snapshot(fx, tmp_path, env: str, request) -> None:
    redis_url = request.getfixturevalue("redis_url") if env == "redis" else None
    settings = fx.make_settings(tmp_path, redis_url)
    gold = fx.make_gold(tmp_path, users=12, items=15, days=2, examples_per_day=10)
    lake, last, end = Lake(settings.lake), gold.days[-1], fx.end_of(gold)
    store = fx.open_store(settings, env)
    try:
        fs.materialize(store, end)
        reader = FastFeatureReader(store, "ranking")
        old_items = reader.item_features(gold.items)
        new_users = user_feature_rows(gold.users, last, seed=7, bump=1000)
        new_items = item_feature_rows(gold.items, last, seed=7, bump=1000)
        overwrite_day(lake, "user_features", new_users, last)
        overwrite_day(lake, "item_features", new_items, last)

        fs.materialize(store, end)

        # Offline: the store reads the current Delta snapshot only (one row per user and day).
        probe = pd.DataFrame({"user_id": gold.users, "item_id": gold.items[: len(gold.users)], "event_timestamp": end})
        frame = fs.training_set(store, probe, "ranking")
        assert list(frame["user_features__views_7d"]) == new_users.column("views_7d").to_pylist()
        assert list(frame["item_features__views_7d"]) == new_items.column("views_7d").to_pylist()[: len(gold.users)]
        # Online: both readers serve the rerun's values; the snapshot reloaded on the new marker.
        feast_reader = FeastFeatureReader(store, "ranking")
        for n, user in enumerate(gold.users):
            assert feast_reader.user_features(user)["user_features__views_7d"] == new_users["views_7d"][n].as_py()
        reader.refresh()
        new_online = reader.item_features(gold.items)
        assert new_online["item_features__views_30d"] == new_items.column("views_30d").to_pylist()
        assert new_online != old_items
        assert new_online == feast_reader.item_features(gold.items)
    finally:
        fs.delete_online_project(store)


def test_pushed_recent_actions_are_readable_at_once(fx, redis_store, gold_home) -> None:
    _, gold = gold_home
    user = gold.users[1]
    now = datetime.now(UTC)
    pushed = pd.DataFrame(
        {
            "user_id": [user],
            "event_timestamp": [now],
            "last_10_items": [["i9", "i8", "i7"]],
            "last_10_actions": [["purchase", "click", "view"]],
            "views_1d": [41],
            "clicks_1d": [3],
            "carts_1d": [1],
            "purchases_1d": [0],
        }
    )
    redis_store.push("user_recent_push", pushed)

    fast = FastFeatureReader(redis_store, "ranking").user_features(user)
    assert fast["user_recent__last_10_items"] == ["i9", "i8", "i7"]
    assert fast["user_recent__last_10_actions"] == ["purchase", "click", "view"]
    assert fast["user_recent__views_1d"] == 41
    assert fast == FeastFeatureReader(redis_store, "ranking").user_features(user)
    # The nightly batch (older event time) does not overwrite what the stream pushed.
    fs.materialize(redis_store, fx.end_of(gold), views=["user_recent"])
    assert FastFeatureReader(redis_store, "ranking").user_features(user)["user_recent__views_1d"] == 41
