"""Online feature reads, side by side in one run: Feast's `get_online_features`, raw pipelined
redis-py HGETALL, and the project's `FastFeatureReader`, for 1 user and for 1000 candidate items.

Sample gold tables (20k items, 5k users) are written to a temporary home, applied and materialized
to the real Redis under a unique Feast project, read, and the project's keys deleted afterwards.
Also checks that the project's reader returns exactly Feast's values.
"""

from __future__ import annotations

import gc
import random
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

USERS, ITEMS, CANDIDATES, ROUNDS = 5_000, 20_000, 1_000, 200
SERVICE = "ranking"


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50": pick(0.50) * 1e3, "p95": pick(0.95) * 1e3, "p99": pick(0.99) * 1e3}


def _time(fn: Callable[[Any], Any], inputs: list[Any]) -> dict[str, float]:
    for x in inputs[:10]:  # warm up connections and caches
        fn(x)
    samples = []
    for x in inputs:
        start = time.perf_counter()
        fn(x)
        samples.append(time.perf_counter() - start)
    return _percentiles(samples)


def _raw_hgetall(store: Any, client: Any, join_key: str) -> Callable[[list[str]], list[dict]]:
    """Pipelined HGETALL of Feast's keys for these ids: the floor a Redis-backed read can reach."""
    from features.feast_compat import redis_key
    from features.reader import _entity_key

    version = store.config.entity_key_serialization_version

    def read(ids: list[str]) -> list[dict]:
        with client.pipeline(transaction=False) as pipe:
            for i in ids:
                pipe.hgetall(redis_key(store.project, _entity_key(join_key, i), version))
            return pipe.execute()

    return read


def run() -> dict[str, object]:
    from features.reader import FastFeatureReader, FeastFeatureReader
    from jobs import feature_store as fs
    from testsupport.feature_samples import day_stamp, write_sample_gold
    from towerflow.lake import Lake
    from towerflow.settings import get_settings

    redis_url = get_settings().redis_url or "redis://127.0.0.1:6379/0"
    if not fs.redis_reachable(redis_url):
        raise RuntimeError(f"the features benchmark needs Redis; {redis_url} does not answer")
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        from towerflow.settings import Settings

        settings = Settings(home=Path(tmp), redis_url=redis_url)
        with console.status("writing sample gold tables"):
            gold = write_sample_gold(
                Lake(settings.lake), users=USERS, items=ITEMS, days=2, examples_per_day=10, embedding_dim=32
            )
        store = fs.feature_store(settings, "redis", project=f"tfbench_{uuid.uuid4().hex[:8]}")
        try:
            with console.status("feast apply + materialize to Redis"):
                apply_s = fs.apply(store).seconds
                mat = fs.materialize(store, day_stamp(gold.days[-1]))
            feast = FeastFeatureReader(store, SERVICE)
            fast = FastFeatureReader(store, SERVICE, check_interval_s=1.0)
            snapshot = fast.refresh()
            client = fs.redis_client(store)
            raw_items = _raw_hgetall(store, client, "item_id")
            raw_users = _raw_hgetall(store, client, "user_id")

            rng = random.Random(7)
            candidate_sets = [rng.sample(gold.items, CANDIDATES) for _ in range(ROUNDS)]
            users = [rng.choice(gold.users) for _ in range(ROUNDS * 5)]
            identical = all(fast.item_features(c) == feast.item_features(c) for c in candidate_sets[:5]) and all(
                fast.user_features(u) == feast.user_features(u) for u in users[:50]
            )

            gc.collect()
            gc.freeze()  # measure the reads, not collections of the setup's garbage
            results = {
                "feast": {
                    "user": _time(feast.user_features, users),
                    "items": _time(feast.item_features, candidate_sets),
                },
                "raw_redis": {
                    "user": _time(lambda u: raw_users([u]), users),
                    "items": _time(raw_items, candidate_sets),
                },
                "project": {
                    "user": _time(fast.user_features, users),
                    "items": _time(fast.item_features, candidate_sets),
                },
            }
            gc.unfreeze()
        finally:
            fs.delete_online_project(store)

    table = Table(title=f"online reads ({SERVICE} service): 1 user, {CANDIDATES} candidate items; ms")
    table.add_column("reader")
    for what in ("user", "items"):
        for q in ("p50", "p95", "p99"):
            table.add_column(f"{what} {q}", justify="right")
    for name, figures in results.items():
        cells = [f"{figures[w][q]:.3f}" for w in ("user", "items") for q in ("p50", "p95", "p99")]
        table.add_row(name, *cells)
    console.print(table)
    console.print(
        f"snapshot: {snapshot.size:,} items loaded in {snapshot.seconds:.2f} s; "
        f"apply {apply_s:.1f} s, materialize {mat.entities:,} entity rows in {mat.seconds:.1f} s; "
        f"project reader values identical to Feast: {identical}"
    )
    figures: dict[str, object] = {
        f"{name}_{what}_{q}_ms": round(results[name][what][q], 3)
        for name in results
        for what in ("user", "items")
        for q in ("p50", "p95", "p99")
    }
    figures.update(
        {
            "candidates": CANDIDATES,
            "catalog_items": ITEMS,
            "rounds": ROUNDS,
            "snapshot_load_s": round(snapshot.seconds, 2),
            "materialize_entities": mat.entities,
            "materialize_s": round(mat.seconds, 1),
            "values_identical_to_feast": identical,
            "project_items_p50_at_or_below_raw": results["project"]["items"]["p50"]
            <= results["raw_redis"]["items"]["p50"],
        }
    )
    return figures
