"""Availability through the real feature store and reader, on SQLite and on the shared Redis: an
item the catalog marks unavailable leaves the gateway's ranked and popular lists after the next
gold day is materialized."""

from __future__ import annotations

import time
from datetime import timedelta

import numpy as np
import pytest

from features.reader import FastFeatureReader, FeastFeatureReader
from jobs import feature_store as fs
from models.features import ITEM_NUMERIC
from scoring.catalog import Catalog
from scoring.rules import RuleConfig, apply_rules, rule_columns
from testsupport.feature_reader import as_lists
from testsupport.feature_samples import day_stamp, item_feature_rows
from towerflow.lake import Lake

pytestmark = pytest.mark.integration
AVAILABLE = "item_features__available"


def _reload(reader: FastFeatureReader, store) -> None:
    """Wait for the reader to load the snapshot of the store's latest marker, as the gateway's
    reader does on its own when it notices the marker."""
    want = fs.read_marker(store)["version"]
    deadline = time.monotonic() + 60
    while reader.snapshot.version != want and time.monotonic() < deadline:
        time.sleep(0.05)
    assert reader.snapshot.version == want, "the reader did not reload after the materialization"


def _served(reader: FastFeatureReader, items: list[str], target: str) -> tuple[list[str], list[str], Catalog]:
    """What the gateway would serve with `target` scored best: the ranked list, the popular
    fallback (the catalog's popular list through the rules), and the catalog itself."""
    wanted = rule_columns(reader.item_columns)  # the rules' columns; the gateway adds the ranker's
    features = reader.item_features_in_memory(items, wanted)
    assert features is not None, "the snapshot should answer every sampled id from memory"
    scores = np.linspace(1.0, 0.0, len(items))
    scores[items.index(target)] = 2.0
    rules = RuleConfig(count=len(items), category_cap=1.0)
    ranked = apply_rules(items, scores, features, {}, rules)
    catalog = Catalog.from_snapshot(reader.snapshot)
    ids, popularity, catalog_features = catalog.popular_with_features()
    fallback = apply_rules(ids, popularity, catalog_features, {}, rules)
    return [i for i, _ in ranked], [i for i, _ in fallback], catalog


@pytest.mark.parametrize("env", ["embedded", "redis"])
def test_an_item_marked_unavailable_stops_being_recommended(fx, tmp_path, env: str, request) -> None:
    redis_url = request.getfixturevalue("redis_url") if env == "redis" else None
    settings = fx.make_settings(tmp_path, redis_url)
    gold = fx.make_gold(tmp_path, users=6, items=15, days=2, examples_per_day=5, embeddings=False)
    items, target = gold.items, gold.items[4]
    lake = Lake(settings.lake)
    store = fx.open_store(settings, env)
    try:
        fs.materialize(store, fx.end_of(gold))
        reader = FastFeatureReader(store, "ranking", check_interval_s=0.0)
        assert AVAILABLE in reader.item_columns
        assert AVAILABLE in rule_columns(reader.item_columns) and AVAILABLE not in ITEM_NUMERIC  # rules, not model
        assert reader.item_features(items)[AVAILABLE] == [True] * len(items)
        ranked, popular, catalog = _served(reader, items, target)
        assert ranked[0] == target and target in popular
        assert catalog.features([target])["catalog__available"] == [True]

        # The catalog says `target` is gone; the next ETL day carries it into gold, then it is
        # materialized as of that day's end.
        next_day = gold.days[-1] + timedelta(days=1)
        rows = item_feature_rows(items, next_day, seed=7, unavailable={target})
        lake.write(lake.uri("gold", "item_features"), rows, mode="append", partition_by=["feature_date"])
        fs.materialize(store, day_stamp(next_day))
        _reload(reader, store)

        got = reader.item_features(items)
        assert got[AVAILABLE] == [item != target for item in items]
        assert got == FeastFeatureReader(store, "ranking").item_features(items)  # Feast's own values
        assert as_lists(reader.item_features_in_memory(items, {AVAILABLE}))[AVAILABLE] == got[AVAILABLE]
        ranked, popular, catalog = _served(reader, items, target)
        assert target not in ranked and len(ranked) == len(items) - 1
        assert target not in popular and len(popular) == len(items) - 1
        assert catalog.features([target])["catalog__available"] == [False]  # precomputed lists, too
    finally:
        fs.delete_online_project(store)
