"""The generator: deterministic, funnel-shaped, with findable bots, one day at a time."""

from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from jobs.synth import SynthConfig, build_world, iter_days, write_landing

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
