"""feature_repo/ as a Feast user runs it: `feast plan` / `feast apply` in the folder, with only
TOWERFLOW_HOME set (a new home: nothing under it made beforehand), and
`FeatureStore(repo_path=...)`; towerflow's own commands see the same registry."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from jobs import feature_store as fs
from towerflow.settings import Settings

pytestmark = pytest.mark.integration

VIEWS = {
    "user_features",
    "user_recent",
    "user_history",
    "user_seen",
    "user_embeddings",
    "item_features",
    "item_trending",
    "item_embeddings",
}
SERVICES = {"retrieval", "ranking"}


def feast(home: Path, *args: str, **env: str) -> str:
    """Run the `feast` CLI in feature_repo/ as a user would; its output (stdout and stderr)."""
    cli = Path(sys.executable).with_name("feast")
    result = subprocess.run(
        [str(cli), *args],
        cwd=fs.REPO_DIR,
        env={**os.environ, "TOWERFLOW_HOME": str(home), **env},
        capture_output=True,
        text=True,
        timeout=240,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


@pytest.fixture(scope="module")
def cli_home(tmp_path_factory: pytest.TempPathFactory, fx) -> SimpleNamespace:
    """A home with sample gold tables (as after `make demo`), planned, applied and planned again
    with the `feast` CLI."""
    home = tmp_path_factory.mktemp("feast-cli-home").resolve()
    gold = fx.make_gold(home, users=6, items=8, days=2, examples_per_day=5)
    assert not (home / "feast").exists()  # a new home: the yaml's registry store makes the folders
    first = feast(home, "plan")
    applied = feast(home, "apply")
    again = feast(home, "plan")
    return SimpleNamespace(home=home, gold=gold, first=first, applied=applied, again=again)


def test_feast_plan_shows_every_view_and_service(cli_home) -> None:
    for view in VIEWS:
        assert f"Created feature view {view}" in cli_home.first
        assert f"Created sqlite table towerflow_{view}" in cli_home.first
    for service in SERVICES:
        assert f"Created feature service {service}" in cli_home.first


def test_feast_apply_registers_them_and_a_second_plan_is_empty(cli_home) -> None:
    assert "Created feature view user_features" in cli_home.applied
    assert "Created" not in cli_home.again


def test_feature_store_from_the_repo_path_reads_what_towerflow_materialized(cli_home, fx, monkeypatch) -> None:
    from feast import FeatureStore

    monkeypatch.setenv("TOWERFLOW_HOME", str(cli_home.home))
    native = FeatureStore(repo_path=str(fs.REPO_DIR))
    assert {v.name for v in native.list_feature_views()} == VIEWS
    assert {s.name for s in native.list_feature_services()} == SERVICES

    # towerflow opens the same registry through its settings and finds nothing to change.
    store = fs.feature_store(Settings(home=cli_home.home), "embedded")
    assert fs.plan(store) == []
    assert fs.apply(store).changed == []
    fs.materialize(store, fx.end_of(cli_home.gold))

    user = cli_home.gold.users[2]
    online = native.get_online_features(features=["user_features:views_7d"], entity_rows=[{"user_id": user}]).to_dict()
    want = fx.current_rows(store, "user_features", fx.end_of(cli_home.gold))[user]["views_7d"]
    assert online["views_7d"] == [want]


def test_redis_environment_plans_from_its_own_yaml(tmp_path: Path, redis_url: str) -> None:
    home = tmp_path.resolve() / "new-home"  # not there yet
    output = feast(home, "-f", "redis/feature_store.yaml", "plan", TOWERFLOW_REDIS_URL=redis_url)
    for view in VIEWS:
        assert f"Created feature view {view}" in output
    assert "sqlite" not in output
