"""Unit tests of the gateway's pure parts: business rules, model versions, input binding, the
TensorFlow-free protos, the breaker, the catalog, tokens, and the precomputed format."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from scoring import binding, rules
from scoring.catalog import Catalog
from serving.gateway.breaker import Breaker
from serving.gateway.recommender import version_spec
from serving.tfs_client import DT_FLOAT, DT_INT64, DT_STRING, InputSpec, tensor_proto, to_ndarray

# -- rules -------------------------------------------------------------------------------------


def test_purchased_uses_recent_items_and_the_purchase_history() -> None:
    user = {"user_recent__last_10_items": ["a", "b", None, ""], "user_history__items": np.array(["c", "d"]), "v": 3}
    assert rules.purchased(user) == {"a", "b", "c", "d"}
    assert rules.purchased({"user_recent__last_10_items": float("nan"), "user_history__items": None}) == set()
    assert rules.purchased({"user_recent__last_10_items": None}) == set()


def test_everything_bought_is_purchased_and_views_count_only_as_seen() -> None:
    user = {
        "user_recent__last_10_items": ["a"],
        "user_history__items": ["b"],  # the models' top items
        "user_seen__bought": ["b", "c"],  # every item bought in the year, beyond the models' top
        "user_seen__seen": ["b", "c", "v"],  # "v" was only viewed
    }
    assert rules.purchased(user) == {"a", "b", "c"}
    assert rules.seen(user) == {"a", "b", "c", "v"}
    ids, scores = ["v", "c", "n", "a", "b"], [5.0, 4.0, 3.0, 2.0, 1.0]
    served = {
        name: [i for i, _ in rules.apply_rules(ids, scores, {}, user, replace(rules.RuleConfig(count=5), **config))]
        for name, config in {
            "keep": {"exclude_purchased": False},
            "purchased": {},
            "seen": {"exclude_seen": True},
            "seen, even with purchases kept": {"exclude_seen": True, "exclude_purchased": False},
        }.items()
    }
    assert served == {
        "keep": ids,
        "purchased": ["v", "n"],
        "seen": ["n"],
        "seen, even with purchases kept": ["n"],
    }


def test_keep_mask_bans_unavailable_and_filters_category() -> None:
    ids = ["a", "b", "c", "d"]
    keep = rules.keep_mask(
        ids, banned={"a"}, available=[True, False, None, True], categories=["X", "x", "y", None], category="X"
    )
    assert keep.tolist() == [False, False, False, False]
    keep = rules.keep_mask(ids, banned=set(), available=[True, False, None, True])
    assert keep.tolist() == [True, False, True, True]


def test_freshness_boost_halves_per_half_life() -> None:
    out = rules.freshness(np.zeros(3), [0.0, 30.0, None], boost=1.0, half_life=30.0)
    assert out.tolist() == pytest.approx([1.0, 0.5, 0.0])
    assert rules.freshness(np.ones(2), None, boost=1.0, half_life=30.0).tolist() == [1.0, 1.0]


def test_rules_and_binding_take_the_snapshots_arrays_as_they_take_lists() -> None:
    from features.reader import as_array
    from testsupport.feature_reader import as_lists

    columns = {
        "item_features__category": ["x", None, "y", "x"],
        "item_features__age_days": [0.0, None, 30.0, 7],
        "item_features__available": [True, False, None, True],
    }
    arrays = {name: as_array(values) for name, values in columns.items()}
    assert arrays["item_features__age_days"].dtype == np.float64 and arrays["item_features__category"].dtype == object
    assert arrays["item_features__available"].dtype == object  # bools are not numbers here
    assert as_lists(arrays) == columns
    ids, scores = ["a", "b", "c", "d"], [1.0, 4.0, 3.0, 2.0]
    config = rules.RuleConfig(count=4, freshness_boost=5.0, category_cap=1.0)
    assert rules.apply_rules(ids, scores, arrays, {}, config) == rules.apply_rules(ids, scores, columns, {}, config)
    ages = rules.freshness(np.zeros(4), arrays["item_features__age_days"], boost=1.0, half_life=30.0)
    assert ages[1] == 0.0  # missing age: no boost, as with None
    age_spec = spec("item_features__age_days", DT_FLOAT, -1, -1)
    as_list = binding.item_column(columns["item_features__age_days"], age_spec)
    as_arr = binding.item_column(arrays["item_features__age_days"], age_spec)
    assert as_arr.dtype == as_list.dtype == np.float32 and as_arr.tolist() == as_list.tolist() == [
        [0.0, 0.0, 30.0, 7.0]
    ]


def test_category_cap_is_soft() -> None:
    cats = ["a", "a", "a", "b", "a"]
    assert rules.cap_per_category(range(5), cats, count=3, cap=2) == [0, 1, 3]
    assert rules.cap_per_category(range(5), cats, count=4, cap=1) == [0, 3, 1, 2]  # filled from overflow
    assert rules.cap_for(10, 0.4) == 4 and rules.cap_for(1, 0.4) == 1


def test_apply_rules_end_to_end() -> None:
    ids = ["a", "b", "c", "d", "e", "a"]
    scores = [5.0, 4.0, 3.0, 2.0, 1.0, 0.5]
    items = {
        "item_features__category": ["x", "x", "x", "y", "y", "x"],
        "item_features__age_days": [100.0, 100.0, 0.0, 100.0, 100.0, 100.0],
        "item_features__available": [True, True, True, True, False, True],
    }
    user = {"user_recent__last_10_items": ["b"]}
    config = rules.RuleConfig(count=3, category_cap=0.67, freshness_boost=10.0)
    assert [i for i, _ in rules.apply_rules(ids, scores, items, user, config)] == ["c", "a", "d"]
    again = rules.RuleConfig(count=3, exclude_purchased=False, exclude=frozenset({"c"}), category="X", category_cap=1)
    assert [i for i, _ in rules.apply_rules(ids, scores, items, user, again)] == ["a", "b"]
    assert rules.apply_rules([], [], {}, {}, config) == []


# -- model versions ------------------------------------------------------------------------------
# (Assignment to experiment arms: tests/experiments/test_assignment.py.)


def test_an_arm_names_a_version_by_number_or_by_label() -> None:
    assert version_spec("3") == {"version": 3} and version_spec("canary") == {"version_label": "canary"}


# -- binding -------------------------------------------------------------------------------------


def spec(name: str, dtype: int, *shape: int) -> InputSpec:
    return InputSpec(name, dtype, tuple(shape))


def test_bind_fills_inputs_by_feature_name() -> None:
    specs = {
        s.name: s
        for s in (
            spec("user_id", DT_STRING, -1),
            spec("user_recent__last_10_items", DT_STRING, -1, 10),
            spec("user_features__views_7d", DT_FLOAT, -1),
            spec("hour_of_day", DT_INT64, -1),
            spec("item_id", DT_STRING, -1, -1),
            spec("retrieval_score", DT_FLOAT, -1, -1),
            spec("item_features__popularity", DT_FLOAT, -1, -1),
            spec("item_embeddings__embedding", DT_FLOAT, -1, -1, 3),
        )
    }
    user = {"user_recent__last_10_items": ["a", "b"], "user_features__views_7d": None}
    items = {"item_features__popularity": [1.5, None], "item_embeddings__embedding": [[1.0, 2.0, 3.0], None]}
    x = binding.bind(
        specs,
        user_id="u1",
        user_features=user,
        ctx={"hour_of_day": 13, "day_of_week": 2},
        candidates=["a", "c"],
        retrieval_scores=[0.5, 0.25],
        item_features=items,
    )
    assert x["user_id"].tolist() == [b"u1"]
    assert x["user_recent__last_10_items"].shape == (1, 10) and x["user_recent__last_10_items"][0, :3].tolist() == [
        b"a",
        b"b",
        b"",
    ]
    assert x["user_features__views_7d"].dtype == np.float32 and x["user_features__views_7d"].tolist() == [0.0]
    assert x["hour_of_day"].tolist() == [13]
    assert x["item_id"].tolist() == [[b"a", b"c"]]
    assert x["retrieval_score"].shape == (1, 2)
    assert x["item_features__popularity"].tolist() == [[1.5, 0.0]]
    assert x["item_embeddings__embedding"].shape == (1, 2, 3)


def test_an_input_without_a_source_is_an_error_not_zeros() -> None:
    specs = {s.name: s for s in (spec("user_id", DT_STRING, -1), spec("brand_new_feature", DT_INT64, -1))}
    with pytest.raises(binding.UnboundInputError, match="brand_new_feature"):
        binding.bind(specs, user_id="u1", user_features={"user_features__views_7d": 1.0}, ctx={})
    assert binding.missing_sources(specs, user_columns=["user_features__views_7d"]) == ["brand_new_feature"]
    assert binding.missing_sources(specs, user_columns=["brand_new_feature"]) == []
    ranking = {**specs, "item_features__price": spec("item_features__price", DT_FLOAT, -1, -1)}
    sources = {"user_columns": ["brand_new_feature"], "item_columns": ["item_features__price"]}
    assert binding.missing_sources(ranking, **sources, ranks_candidates=True) == []
    # An item feature is a source only for a signature that scores candidates.
    assert binding.missing_sources(ranking, **sources) == ["item_features__price"]


def test_offline_missing_values_bind_as_the_online_ones() -> None:
    """A point-in-time frame says missing with NaN where the online store says None."""
    specs = {
        s.name: s
        for s in (
            spec("user_id", DT_STRING, -1),
            spec("user_features__views_7d", DT_FLOAT, -1),
            spec("user_recent__last_10_items", DT_STRING, -1, 3),
            spec("item_id", DT_STRING, -1, -1),
            spec("item_features__category", DT_STRING, -1, -1),
            spec("item_features__price", DT_FLOAT, -1, -1),
        )
    }

    def bound(missing: object) -> dict[str, np.ndarray]:
        return binding.bind(
            specs,
            user_id="u1",
            user_features={"user_features__views_7d": missing, "user_recent__last_10_items": missing},
            ctx={},
            candidates=["a", "b"],
            item_features={"item_features__category": ["x", missing], "item_features__price": [2.0, missing]},
        )

    online, offline = bound(None), bound(float("nan"))
    for name in specs:
        np.testing.assert_array_equal(online[name], offline[name], err_msg=name)
    # Offline frames hold lists as numpy arrays, the online store as lists.
    as_list = binding.user_value(["a", "b"], specs["user_recent__last_10_items"])
    as_array = binding.user_value(np.array(["a", "b"], dtype=object), specs["user_recent__last_10_items"])
    np.testing.assert_array_equal(as_list, as_array)
    assert offline["item_features__category"].tolist() == [[b"x", b""]]


# -- protos without TensorFlow -------------------------------------------------------------------


def test_lean_tensor_protos_match_tensorflow() -> None:
    import tensorflow as tf
    from tensorflow.core.framework import tensor_pb2

    cases = [
        np.array([[b"a", b"bb"], [b"", b"c"]], dtype=object),
        np.arange(6, dtype=np.float32).reshape(2, 3),
        np.array([1, 2], dtype=np.int64),
        np.array([True, False]),
    ]
    for value in cases:
        lean = tensor_proto(value)
        official = tensor_pb2.TensorProto.FromString(lean.SerializeToString())
        np.testing.assert_array_equal(tf.make_ndarray(official), value)
        back = tf.make_tensor_proto(value)
        np.testing.assert_array_equal(to_ndarray(type(lean).FromString(back.SerializeToString())), value)
    compact = tf.make_tensor_proto(7.0, shape=[3], dtype=tf.float32)  # one value, repeated
    assert to_ndarray(type(tensor_proto(0)).FromString(compact.SerializeToString())).tolist() == [7.0] * 3
    assert tensor_proto([1, 2], DT_FLOAT).dtype == DT_FLOAT


# -- breaker, catalog ----------------------------------------------------------------------------


def test_breaker_opens_then_probes() -> None:
    breaker = Breaker("x", threshold=2, cooldown_s=0.05)
    breaker.failure()
    assert breaker.allow()
    breaker.failure()
    assert not breaker.allow() and breaker.is_open
    time.sleep(0.06)
    assert breaker.allow() and not breaker.allow()  # one probe per cooldown
    breaker.success()
    assert breaker.allow() and not breaker.is_open


def test_catalog_popular_in_context(gw) -> None:
    catalog = Catalog.from_columns(gw.item_columns(), top=5)
    ids, popularity = catalog.popular()
    assert ids == ["i0", "i1", "i2", "i3", "i4"] and popularity.tolist() == [100, 99, 98, 97, 96]
    assert catalog.popular("TOYS")[0][:2] == ["i2", "i8"]
    assert catalog.popular("nothing")[0] == []
    assert catalog.features(["i8", "zz"])["catalog__available"] == [False, None]
    ids, _, features = catalog.popular_with_features("Toys")
    assert ids == catalog.popular("toys")[0] and features == catalog.features(ids)
    assert catalog.popular_with_features("TOYS")[2] is features  # computed once per category


# -- tokens --------------------------------------------------------------------------------------


def test_dev_secret_is_created_once_and_verifies_minted_tokens(tmp_path: Path) -> None:
    from serving.gateway.auth import AuthError, TokenVerifier, dev_secret, mint_token
    from towerflow.settings import Settings

    settings = Settings(home=tmp_path)
    secret = dev_secret(settings)
    assert dev_secret(settings) == secret and (settings.secrets_dir / "jwt-hs256.key").stat().st_mode & 0o077 == 0
    token = mint_token(secret, subject="alice", scopes=["recommend:read", "events:write"])
    principal = TokenVerifier(settings).verify(token)
    assert principal.subject == "alice" and principal.scopes == {"recommend:read", "events:write"}
    with pytest.raises(ValueError, match="unknown scope"):
        mint_token(secret, subject="a", scopes=["admin"])
    with pytest.raises(AuthError) as err:
        TokenVerifier(settings.model_copy(update={"jwt_issuer": "other"})).verify(token)
    assert err.value.status == 401 and "issuer" in err.value.message


def test_a_remembered_token_still_expires(tmp_path: Path) -> None:
    import serving.gateway.auth as auth
    from towerflow.settings import Settings

    settings = Settings(home=tmp_path)
    verifier = auth.TokenVerifier(settings)
    token = auth.mint_token(auth.dev_secret(settings), subject="carol", scopes=["recommend:read"], ttl_s=1)
    first = verifier.verify(token)
    assert verifier.verify(token) is first  # remembered, not decoded again
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    with pytest.raises(auth.AuthError):  # another string is verified on its own
        verifier.verify(forged)
    time.sleep(1.1)
    with pytest.raises(auth.AuthError) as err:
        verifier.verify(token)
    assert "expired" in err.value.message


def test_token_cli_prints_the_token_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from serving.gateway.auth import TokenVerifier
    from towerflow.cli import app
    from towerflow.settings import Settings

    monkeypatch.setenv("TOWERFLOW_HOME", str(tmp_path))
    monkeypatch.delenv("TOWERFLOW_JWT_KEY", raising=False)
    result = CliRunner().invoke(app, ["token", "--user", "bob", "--scopes", "recommend:read experiments:read"])
    assert result.exit_code == 0, result.output
    principal = TokenVerifier(Settings(home=tmp_path)).verify(result.stdout.strip().splitlines()[-1])
    assert principal.subject == "bob" and "experiments:read" in principal.scopes
    bad = CliRunner().invoke(app, ["token", "--user", "bob", "--scopes", "root"])
    assert bad.exit_code == 1


# -- precomputed format --------------------------------------------------------------------------


@pytest.mark.integration
def test_precomputed_round_trip_with_ttl(redis_url: str, redis_prefix: str) -> None:
    import redis

    from features.precomputed import decode, popular_key, recs_key, write_precomputed

    client = redis.Redis.from_url(redis_url)
    try:
        written = write_precomputed(
            client, {"u1": ["a", "b"], "u2": ["c"]}, "r=3,k=2", prefix=redis_prefix, ttl_s=120, popular=["p"]
        )
        assert written == 2
        stored = decode(client.hgetall(recs_key(redis_prefix, "u1")))
        assert stored.items == ["a", "b"] and stored.model_version == "r=3,k=2" and stored.generated_at
        assert 0 < client.ttl(recs_key(redis_prefix, "u1")) <= 120
        assert decode(client.hgetall(popular_key(redis_prefix))).items == ["p"]
        assert decode(client.hgetall(recs_key(redis_prefix, "nobody"))) is None
        write_precomputed(
            client, {"u1": ["z"]}, "r=4", prefix=redis_prefix, variants={"new": {"u1": ["y"]}, "unseen": {}}
        )
        again = decode(client.hgetall(recs_key(redis_prefix, "u1")))
        assert again.items == ["z"] and again.variants == {"new": ["y"]}
        assert (again.for_variant("new"), again.for_variant("unseen"), again.for_variant("all")) == (
            ["y"],
            ["z"],
            ["z"],
        )
        client.hset(recs_key(redis_prefix, "u1"), "items:unseen", "not json")  # ignored, the rest serves
        assert decode(client.hgetall(recs_key(redis_prefix, "u1"))).variants == {"new": ["y"]}
        write_precomputed(client, {"u1": ["x"]}, "r=5", prefix=redis_prefix)  # an older layout's fields go
        assert decode(client.hgetall(recs_key(redis_prefix, "u1"))).variants == {}
    finally:
        keys = list(client.scan_iter(match=f"{redis_prefix}*"))
        if keys:
            client.delete(*keys)


def test_rule_columns_are_the_item_features_the_rules_read() -> None:
    columns = ["item_features__category", "item_features__popularity", "item_flags__available", "age_days", "x__ctr"]
    assert rules.rule_columns(columns) == {"item_features__category", "item_flags__available", "age_days"}
