"""The generator: deterministic, funnel-shaped, with findable bots, one day at a time."""

from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from jobs.synth import SynthConfig, World, build_world, iter_days, write_landing

SMALL = SynthConfig(users=600, items=300, days=4, seed=3, start=date(2025, 3, 1))


def _bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.parquet"))}


def test_same_seed_gives_identical_bytes_and_another_seed_does_not(tmp_path: Path) -> None:
    first = write_landing(SMALL, tmp_path / "a")
    second = write_landing(SMALL, tmp_path / "b")
    write_landing(SynthConfig(**{**SMALL.__dict__, "seed": 4}), tmp_path / "c")
    assert first.events == second.events > 1000
    assert _bytes(tmp_path / "a") == _bytes(tmp_path / "b")
    assert _bytes(tmp_path / "a") != _bytes(tmp_path / "c")
    assert len(first.day_paths) == SMALL.days


@pytest.fixture(scope="module")
def days():
    world = build_world(SMALL)
    return world, [table for _, table in iter_days(SMALL, world)]


def test_each_day_holds_only_its_own_events_in_time_order(days) -> None:
    _, tables = days
    for offset, table in enumerate(tables):
        ts = table.column("timestamp")
        dates = set(pc.cast(ts, "date32").to_pylist())
        assert dates == {date(2025, 3, 1 + offset)}
        assert table.column("timestamp").to_numpy().tolist() == sorted(ts.to_numpy().tolist())
        assert len(set(table.column("event_id").to_pylist())) == len(table)


def test_funnel_narrows_from_views_to_purchases(days) -> None:
    _, tables = days
    counts: dict[str, int] = {}
    for table in tables:
        for action in table.column("action").to_pylist():
            counts[action] = counts.get(action, 0) + 1
    assert counts["view"] > counts["click"] > counts["add_to_cart"] > counts["purchase"] > 0


def test_bots_act_at_implausible_rates_and_humans_do_not(days) -> None:
    world, tables = days
    bots = set(world.user_ids[world.is_bot])
    assert len(bots) == SMALL.n_bots
    per_user: dict[str, int] = {}
    for user in tables[0].column("user_id").to_pylist():
        per_user[user] = per_user.get(user, 0) + 1
    bot_rates = [n for u, n in per_user.items() if u in bots]
    human_rates = [n for u, n in per_user.items() if u not in bots]
    assert min(bot_rates) >= 400
    assert np.percentile(human_rates, 99) < 200


def test_human_attention_follows_a_heavy_tailed_law(days) -> None:
    world, tables = days
    humans = world.user_ids[~world.is_bot].tolist()
    items = np.concatenate(
        [
            t.filter(pc.is_in(t.column("user_id"), value_set=pa.array(humans)))
            .column("item_id")
            .to_numpy(zero_copy_only=False)
            for t in tables
        ]
    )
    _, counts = np.unique(items, return_counts=True)
    counts = np.sort(counts)[::-1]
    top_decile = counts[: max(1, len(counts) // 10)].sum() / counts.sum()
    assert top_decile > 0.3  # uniform would be 0.1


def test_the_default_config_is_the_retail_profile() -> None:
    assert SynthConfig() == SynthConfig.of("retail") == SynthConfig.of("retail", users=None, items=None)
    assert SynthConfig.of("media", users=50).users == 50
    with pytest.raises(ValueError, match="unknown synth profile"):
        SynthConfig.of("films")


@pytest.mark.parametrize("profile", ["media", "sparse"])
def test_each_profile_gives_identical_bytes_for_the_same_seed(tmp_path: Path, profile: str) -> None:
    cfg = SynthConfig.of(profile, days=3, seed=3)
    write_landing(cfg, tmp_path / "a")
    write_landing(cfg, tmp_path / "b")
    assert _bytes(tmp_path / "a") == _bytes(tmp_path / "b")


def _profile_days(profile: str, days: int) -> tuple[SynthConfig, World, list[pa.Table]]:
    cfg = SynthConfig.of(profile, days=days, seed=3, start=date(2025, 3, 1))
    world = build_world(cfg)
    return cfg, world, [table for _, table in iter_days(cfg, world)]


def test_media_titles_are_acted_on_once_per_user() -> None:
    from jobs.synth import GENRES, items_table

    cfg, world, tables = _profile_days("media", 6)
    counts = [len(t) for t in tables]
    assert all(100 <= n <= 1000 for n in counts), counts  # a few hundred a day
    events = pa.concat_tables(tables)
    pairs = events.group_by(["user_id", "item_id"]).aggregate([("action", "count")])
    assert pc.max(pairs.column("action_count")).as_py() == 1  # never the same title twice
    actions = pc.value_counts(events.column("action")).to_pylist()
    assert {a["values"] for a in actions} == {"view", "click", "purchase"}  # purchase: watched
    assert set(pc.unique(events.column("quantity")).to_pylist()) <= {0, 1}
    catalog = items_table(cfg, world)
    assert set(catalog.column("category").to_pylist()) <= set(GENRES)
    assert all(title.startswith("THE ") for title in catalog.column("description").to_pylist())


def test_sparse_days_hold_tens_of_events_from_a_few_users_with_gaps() -> None:
    _, world, tables = _profile_days("sparse", 20)
    counts = [len(t) for t in tables]
    users = [len(set(t.column("user_id").to_pylist())) for t in tables]
    assert max(counts) <= 150 and 10 <= np.median(counts) <= 80, counts  # tens a day
    assert min(counts) <= 5, counts  # quiet days: none or a handful
    assert max(users) <= 20, users
    assert not world.is_bot.any()


def test_the_command_line_offers_every_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typing import get_args

    import pyarrow.parquet as pq
    from typer.testing import CliRunner

    from jobs.synth import GENRES, PROFILES
    from towerflow.cli import SynthProfile, app

    assert set(get_args(SynthProfile)) == set(PROFILES)
    monkeypatch.setenv("TOWERFLOW_HOME", str(tmp_path / "home"))
    out = tmp_path / "media"
    args = ["data", "synth", "--profile", "media", "--days", "2", "--no-import", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    items = pq.read_table(out / "items.parquet")
    assert len(items) == PROFILES["media"].defaults["items"]  # the profile's catalog size
    assert set(items.column("category").to_pylist()) <= set(GENRES)
    assert not any(pq.read_table(out / "users.parquet").column("is_bot").to_pylist())
    assert CliRunner().invoke(app, ["data", "synth", "--profile", "films", "--no-import"]).exit_code == 2
