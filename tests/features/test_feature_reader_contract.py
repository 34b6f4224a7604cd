"""One contract for every FeatureReader: Feast's, the project's fast reader (SQLite and Redis),
and the in-memory fake the gateway's route tests use. Expected values come from gold; the fake is
filled from gold too, so its values are checked against a real reader's answers instead."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from features.reader import FastFeatureReader, FeastFeatureReader, FeatureReader, service_reads
from testsupport.feature_reader import InMemoryFeatureReader, as_lists

pytestmark = pytest.mark.integration
SERVICE = "ranking"


def _fake(store: Any, gold: Any, fx: Any) -> InMemoryFeatureReader:
    at = fx.end_of(gold)
    reads = service_reads(store, SERVICE)
    user_cols = fx.expected_columns(store, SERVICE, "user_id", gold.users, at)
    item_cols = fx.expected_columns(store, SERVICE, "item_id", gold.items, at)
    users = {u: {c: v[n] for c, v in user_cols.items()} for n, u in enumerate(gold.users)}
    items = {i: {c: v[n] for c, v in item_cols.items()} for n, i in enumerate(gold.items)}
    return InMemoryFeatureReader(
        users,
        items,
        [c for r in reads["user_id"] for c in r.columns],
        [c for r in reads["item_id"] for c in r.columns],
    )


FACTORIES: dict[str, Callable[..., FeatureReader]] = {
    "fake": lambda store, gold, fx: _fake(store, gold, fx),
    "feast": lambda store, gold, fx: FeastFeatureReader(store, SERVICE),
    "fast": lambda store, gold, fx: FastFeatureReader(store, SERVICE),
}


@pytest.fixture(params=sorted(FACTORIES))
def reader(request: pytest.FixtureRequest, store: Any, gold_home: Any, fx: Any) -> FeatureReader:
    _, gold = gold_home
    return FACTORIES[request.param](store, gold, fx)


@pytest.fixture(params=["fast", "feast"])
def real_reader(request: pytest.FixtureRequest, store: Any, gold_home: Any, fx: Any) -> FeatureReader:
    """The readers over the store (not the fake, which holds gold's values by construction)."""
    _, gold = gold_home
    return FACTORIES[request.param](store, gold, fx)


def test_is_a_feature_reader(reader: FeatureReader) -> None:
    assert isinstance(reader, FeatureReader)


def test_user_features_match_gold(real_reader: FeatureReader, store: Any, gold_home: Any, fx: Any) -> None:
    _, gold = gold_home
    for user in gold.users[:: max(1, len(gold.users) // 8)]:
        want = {k: v[0] for k, v in fx.expected_columns(store, SERVICE, "user_id", [user], fx.end_of(gold)).items()}
        assert real_reader.user_features(user) == want


def test_unknown_user_gives_nones_in_the_same_shape(reader: FeatureReader, store: Any, gold_home: Any) -> None:
    _, gold = gold_home
    known = reader.user_features(gold.users[0])
    unknown = reader.user_features("no-such-user")
    assert set(unknown) == set(known)
    assert all(v is None for v in unknown.values())


def test_item_features_are_columns_aligned_with_the_ids(
    real_reader: FeatureReader, store: Any, gold_home: Any, fx: Any
) -> None:
    _, gold = gold_home
    ids = [gold.items[3], "no-such-item", *gold.items[10:40], gold.items[3]]
    got = real_reader.item_features(ids)
    assert got.pop("item_id") == ids
    assert got == fx.expected_columns(store, SERVICE, "item_id", ids, fx.end_of(gold))
    assert all(v is None for v in (col[1] for col in got.values()))


def test_the_fake_answers_as_a_real_reader_does(store: Any, gold_home: Any, fx: Any) -> None:
    """The fake stands in for the store's reader in route tests: same columns, same values, same
    Nones for what is unknown, same order and repeats."""
    _, gold = gold_home
    fake, real = _fake(store, gold, fx), FastFeatureReader(store, SERVICE)
    ids = [gold.items[3], "no-such-item", *gold.items[10:40], gold.items[3]]
    assert fake.item_features(ids) == real.item_features(ids)
    for user in [*gold.users[:: max(1, len(gold.users) // 8)], "no-such-user"]:
        assert fake.user_features(user) == real.user_features(user)


def test_no_items_gives_empty_columns(reader: FeatureReader, gold_home: Any) -> None:
    _, gold = gold_home
    empty = reader.item_features([])
    full = reader.item_features(gold.items[:2])
    assert set(empty) == set(full)
    assert all(v == [] for v in empty.values())


def test_one_item(reader: FeatureReader, gold_home: Any) -> None:
    _, gold = gold_home
    one = reader.item_features([gold.items[5]])
    assert all(len(v) == 1 for v in one.values())


def test_fast_reader_serves_feasts_values(store: Any, gold_home: Any) -> None:
    _, gold = gold_home
    fast, feast = FastFeatureReader(store, SERVICE), FeastFeatureReader(store, SERVICE)
    ids = gold.items[::-1] + ["unknown"]
    assert fast.item_features(ids) == feast.item_features(ids)
    for user in gold.users[:10]:
        assert fast.user_features(user) == feast.user_features(user)
    if fast.reads_users_async:  # the gateway's read on its event loop: same values
        for user in [*gold.users[:3], "nobody"]:
            assert asyncio.run(fast.user_features_async(user)) == feast.user_features(user)
    assert fast.snapshot.size == len(gold.items)
    known = gold.items[::-1]
    in_memory = fast.item_features_in_memory(known)
    assert as_lists(in_memory) == feast.item_features(known)
    numeric = [c for c, v in in_memory.items() if getattr(v, "dtype", None) is not None and v.dtype.kind == "f"]
    assert "item_features__popularity" in numeric  # numbers come as float arrays, ready to bind
    assert fast.item_features_in_memory(ids) is None  # "unknown" needs an online read: not from memory
    assert as_lists(fast.item_features_in_memory(known[:1])) == feast.item_features(known[:1])
    # Only the columns asked for (the gateway asks for what ranking and the rules read), same values.
    wanted = {"item_features__popularity", "item_features__category", "not_a_column"}
    some = fast.item_features_in_memory(known, wanted)
    assert set(some) == {"item_id", "item_features__popularity", "item_features__category"}
    assert as_lists(some) == {k: v for k, v in as_lists(in_memory).items() if k in some}
    assert set(fast.item_columns) == set(in_memory) - {"item_id"}
    # Catalog rows (a retrieval version's `item_rows`): same values, first by lookup, then remembered.
    catalog = gold.items[::-1]
    picks = [5, 0, 7, 3, 5]
    chosen = [catalog[n] for n in picks]
    expected = as_lists(fast.item_features_in_memory(chosen))
    for _ in range(2):
        assert as_lists(fast.item_features_in_memory(chosen, rows=(("retrieval", 1), picks))) == expected
    # A row's item is fixed per catalog key: the remembered position answers, not a new lookup.
    other = [catalog[1]] * len(picks)
    remembered = fast.item_features_in_memory(other, rows=(("retrieval", 1), picks))
    assert {k: v for k, v in as_lists(remembered).items() if k != "item_id"} == {
        k: v for k, v in expected.items() if k != "item_id"
    }
    # Rows that do not fit, and an id the snapshot lacks, go the lookup way.
    assert as_lists(fast.item_features_in_memory(chosen, rows=(("retrieval", 2), picks[:2]))) == expected
    assert fast.item_features_in_memory([*chosen[:2], "unknown"], rows=(("retrieval", 3), [1, 2, 9])) is None


def test_fast_reader_reloads_when_a_materialization_lands(store: Any, gold_home: Any, fx: Any) -> None:
    from jobs import feature_store as fs

    _, gold = gold_home
    fast = FastFeatureReader(store, SERVICE, check_interval_s=0.0)
    first = fast.snapshot
    fs.materialize(store, fx.end_of(gold), views=["item_features"])
    fast.item_features(gold.items[:3])  # notices the new marker, reloads in the background
    fast._loading.join(timeout=30)
    assert fast.snapshot is not first
    assert fast.snapshot.version == fs.read_marker(store)["version"]


def test_in_memory_reads_stay_in_memory_while_a_snapshot_check_runs(store: Any, gold_home: Any, fx: Any) -> None:
    """A due marker check runs in a thread; the gateway's request keeps its in-memory read (it
    used to return None, sending one request in every check interval down the I/O path)."""
    from jobs import feature_store as fs

    _, gold = gold_home
    fast = FastFeatureReader(store, SERVICE, check_interval_s=0.0)  # a check is due on every read
    first = fast.snapshot
    fs.materialize(store, fx.end_of(gold), views=["item_features"])
    got = fast.item_features_in_memory(gold.items[:3])
    assert got is not None and list(got["item_id"]) == gold.items[:3]
    deadline = time.monotonic() + 30
    while fast.snapshot is first and time.monotonic() < deadline:  # the background check reloads
        time.sleep(0.05)
    assert fast.snapshot.version == fs.read_marker(store)["version"] != first.version
