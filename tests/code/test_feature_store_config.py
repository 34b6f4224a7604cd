"""Pure parts of the feature store: config per environment, Redis URLs, definitions, the fake."""

from __future__ import annotations

from pathlib import Path

import pytest

from features.reader import FeatureReader
from jobs import feature_store as fs
from testsupport.feature_reader import InMemoryFeatureReader
from towerflow.settings import Settings


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379/0", "127.0.0.1:6379"),
        ("redis://127.0.0.1:6379/5", "127.0.0.1:6379,db=5"),
        ("redis://:s3cret@cache:6380", "cache:6380,password=s3cret"),
        ("rediss://user:pw@cache/2", "cache:6379,db=2,username=user,password=pw,ssl=true"),
        ("redis://cache?db=3", "cache:6379,db=3"),
        ("127.0.0.1:6379,db=5", "127.0.0.1:6379,db=5"),
    ],
)
def test_redis_url_becomes_a_feast_connection_string(url: str, expected: str) -> None:
    assert fs.redis_connection_string(url) == expected


def test_other_schemes_are_refused() -> None:
    with pytest.raises(fs.FeatureStoreError, match="redis://"):
        fs.redis_connection_string("http://cache:6379")


def test_two_environments_differ_only_in_the_online_store(tmp_path: Path) -> None:
    from features.offline_store import STORE_TYPE as LAKE_STORE

    settings = Settings(home=tmp_path, redis_url="redis://cache:6379/4")
    embedded = fs.repo_config_dict(settings, "embedded")
    redis = fs.repo_config_dict(settings, "redis", project="p1")
    assert embedded["online_store"] == {"type": "sqlite", "path": str(tmp_path / "feast/embedded/online.db")}
    assert redis["online_store"] == {"type": fs_store_type(), "connection_string": "redis://cache:6379/4"}
    assert fs.repo_config(settings, "redis").online_store.connection_string == "cache:6379,db=4"
    lake = {"type": LAKE_STORE, "lake": str(tmp_path / "lake")}
    assert embedded["offline_store"] == redis["offline_store"] == lake
    assert embedded["project"] == "towerflow" and redis["project"] == "p1"
    assert embedded["registry"]["path"].startswith(str(settings.feature_registry_dir))


def test_the_lake_follows_the_settings(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, lake_uri="s3://bucket/lake")
    assert fs.repo_config_dict(settings, "embedded")["offline_store"]["lake"] == "s3://bucket/lake"


def fs_store_type() -> str:
    from features.redis_store import STORE_TYPE

    return STORE_TYPE


def test_redis_environment_needs_a_url(tmp_path: Path) -> None:
    with pytest.raises(fs.FeatureStoreError, match="REDIS_URL"):
        fs.repo_config_dict(Settings(home=tmp_path, redis_url=None), "redis")
    with pytest.raises(fs.FeatureStoreError, match="unknown feature environment"):
        fs.repo_config_dict(Settings(home=tmp_path), "cloud")


def test_auto_falls_back_to_embedded_when_redis_does_not_answer(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, redis_url="redis://127.0.0.1:1/0", feature_env="auto")
    assert fs.resolve_env(settings) == "embedded"
    assert fs.resolve_env(Settings(home=tmp_path, redis_url=None)) == "embedded"
    assert fs.resolve_env(Settings(home=tmp_path, feature_env="embedded")) == "embedded"


@pytest.mark.parametrize("env", fs.ENVIRONMENTS)
def test_committed_yaml_loads_as_the_feast_cli_loads_it(tmp_path: Path, monkeypatch, env: str) -> None:
    """`feast -f <yaml>` substitutes ${VAR}s from the environment; no path of a machine is committed."""
    from feast.repo_config import load_repo_config

    monkeypatch.setenv("TOWERFLOW_HOME", str(tmp_path))
    monkeypatch.setenv("TOWERFLOW_REDIS_URL", "redis://cache:6379/4")
    config = load_repo_config(fs.REPO_DIR, fs.yaml_path(env))
    assert config.offline_store.lake == f"{tmp_path}/lake"
    assert config.registry.path == f"{tmp_path}/feast/{env}/registry.db"
    if env == "redis":
        assert config.online_store.connection_string == "cache:6379,db=4"
    else:
        assert config.online_store.path == f"{tmp_path}/feast/embedded/online.db"
    assert "/work/" not in fs.yaml_path(env).read_text()


def test_unset_home_is_named_in_the_error(monkeypatch) -> None:
    from feast.repo_config import FeastConfigError, load_repo_config

    monkeypatch.delenv("TOWERFLOW_HOME", raising=False)
    with pytest.raises(FeastConfigError, match="export TOWERFLOW_HOME"):
        load_repo_config(fs.REPO_DIR, fs.yaml_path("embedded"))


def test_sources_are_relative_to_the_lake_the_config_names(tmp_path: Path) -> None:
    from feast import FeatureService, FeatureView, FileSource

    from features.offline_store import source_uri

    contents = fs.repo_contents("p1")
    views = {v.name: v for v in contents.feature_views}
    assert set(views) == {
        "user_features",
        "user_recent",
        "user_history",
        "user_seen",
        "user_embeddings",
        "item_features",
        "item_trending",
        "item_embeddings",
    }
    assert {s.name for s in contents.feature_services if isinstance(s, FeatureService)} == {"retrieval", "ranking"}
    files = [s for s in contents.data_sources if isinstance(s, FileSource)]
    assert {s.path for s in files} == {
        f"gold/{v}"
        for v in ("user_features", "item_features", "user_history", "user_seen", "user_embeddings", "item_embeddings")
    }
    config = fs.repo_config(Settings(home=tmp_path / "a"), "embedded")
    lake = str((tmp_path / "a").resolve() / "lake" / "gold")
    for view in views.values():
        assert isinstance(view, FeatureView)
        assert source_uri(config, view.batch_source).startswith(lake)
    # Each call is a fresh copy: planning one store's objects leaves the repository's as written.
    assert fs.repo_contents("p2").feature_views[0] is not contents.feature_views[0]


def test_views_cover_the_gold_contract_columns() -> None:
    """Every gold feature column is served by exactly one view of its entity (the history and
    seen views serve gold/user_history and gold/user_seen)."""
    from towerflow import schemas

    fields: dict[str, list[str]] = {"user_id": [], "item_id": []}
    for view in fs.repo_contents("p").feature_views:
        if view.name == "user_history":
            history = [f.name for f in view.features]
        elif view.name == "user_seen":
            seen = [f.name for f in view.features]
        elif "embeddings" not in view.name:
            fields[f"{view.entities[0]}_id"] += [f.name for f in view.features]
    meta = {"user_id", "item_id", "feature_date", "event_timestamp"}
    assert sorted(history) == sorted(set(schemas.GOLD_USER_HISTORY.names) - meta)
    assert sorted(seen) == sorted(set(schemas.GOLD_USER_SEEN.names) - meta)
    assert sorted(fields["user_id"]) == sorted(set(schemas.GOLD_USER_FEATURES.names) - meta)
    assert sorted(fields["item_id"]) == sorted(set(schemas.GOLD_ITEM_FEATURES.names) - meta)


def test_in_memory_reader_is_a_feature_reader() -> None:
    fake = InMemoryFeatureReader({"u1": {"a__x": 1}}, {"i1": {"b__y": 2.0}}, ["a__x"], ["b__y"])
    assert isinstance(fake, FeatureReader)
    assert fake.user_features("u1") == {"a__x": 1}
    assert fake.user_features("zz") == {"a__x": None}
    assert fake.item_features(["i1", "zz", "i1"]) == {"item_id": ["i1", "zz", "i1"], "b__y": [2.0, None, 2.0]}
