"""Exactly once through crashes: events posted through the gateway while the stream worker
process (`towerflow stream-worker`) is killed with SIGKILL at random moments and restarted;
afterwards `bronze/events` holds exactly the accepted event ids, once each."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]
EVENTS = 50_000
BATCH = 1_000
KILLS = 2
RECLAIM_S = 2.0


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "towerflow.cli", "stream-worker", "--no-online"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def test_sigkilled_workers_lose_nothing_and_land_nothing_twice(make_client, gw, tmp_path: Path) -> None:
    from towerflow.lake import Lake

    client = make_client(stream_reclaim_after_s=RECLAIM_S)
    settings = client.app.state.settings
    env = {
        **os.environ,
        "TOWERFLOW_HOME": str(settings.home),
        "TOWERFLOW_LAKE_URI": settings.lake,
        "TOWERFLOW_REDIS_URL": settings.redis_url,
        "TOWERFLOW_REDIS_PREFIX": settings.redis_prefix,
        "TOWERFLOW_FEAST_PROJECT": settings.feast_project,
        "TOWERFLOW_STREAM_RECLAIM_AFTER_S": str(RECLAIM_S),
    }
    log = tmp_path / "worker.log"
    rng = random.Random(7)
    kill_after = sorted(rng.sample(range(5, EVENTS // BATCH - 5), KILLS))  # batches posted before each kill
    lake, uri = Lake(settings.lake), settings.table_uri("bronze", "events")
    worker = start_worker(env, log)
    accepted: list[str] = []
    kills: list[int] = []  # events in the lake at each kill
    try:
        for n in range(EVENTS // BATCH):
            events = [
                {"user_id": f"u{rng.randrange(500)}", "item_id": f"i{rng.randrange(200)}", "action": "view"}
                for _ in range(BATCH)
            ]
            if n % 10 == 3:  # a client retry: ids the stream already has
                events[:50] = [{**e, "event_id": accepted[k]} for k, e in zip(range(50), events[:50], strict=True)]
            response = client.post("/v1/events", json={"events": events}, headers=gw.auth("events:write"))
            assert response.status_code == 202, response.text
            accepted += response.json()["event_ids"]
            if n in kill_after:  # once this worker is landing batches, somewhere inside one
                landed = lake.count(uri)
                while lake.count(uri) == landed:
                    assert worker.poll() is None, log.read_text()[-3000:]
                    time.sleep(0.05)
                time.sleep(rng.uniform(0.0, 0.5))
                kills.append(lake.count(uri))
                worker.send_signal(signal.SIGKILL)
                worker.wait()
                worker = start_worker(env, log)
        expected = set(accepted)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and lake.count(uri) < len(expected):
            assert worker.poll() is None, log.read_text()[-3000:]
            time.sleep(1.0)
        time.sleep(RECLAIM_S * 2)  # anything still redelivered after the count was reached
        ids = lake.read(uri, ["event_id"]).column("event_id").to_pylist()
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    assert len(kills) == KILLS and all(0 < k < len(expected) for k in kills), kills  # killed mid-stream
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} events landed twice"
    assert set(ids) == expected, f"missing {len(expected - set(ids))}, unexpected {len(set(ids) - expected)}"
    assert client.app.state.resources.events.lag("stream-worker") == 0
