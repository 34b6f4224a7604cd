"""Issue 20's simulation through the real parts: synthetic users whose click probability depends
on their arm ask the gateway for recommendations, click through `POST /v1/events` quoting the
responses, the stream worker lands impressions and events in the lake; the metrics endpoint
finds the lift (p < 0.05) and the hourly review (the experiments DAG's function) promotes the
winner. The label move itself is the registry's (tests/dags/test_experiments_dag.py); here the
review's `promote` records what it was asked to move."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

USERS = 700
CLICK_P = {"stable": 0.02, "canary": 0.06}  # per item shown: a known lift of 3x
ARMS = [{"name": "stable", "share": 50}, {"name": "canary", "share": 50, "models": {"ranking": "canary"}}]


@pytest.fixture
def client(bare_client) -> Any:
    return bare_client(experiment_min_users_per_arm=250, rate_limit_user=0, rate_limit_token=0)


def test_a_true_lift_is_found_and_promoted(client, gw) -> None:
    from experiments.lifecycle import decision_policy, review
    from experiments.store import ExperimentStore
    from serving.stream_worker.worker import open_worker
    from towerflow.lake import Lake

    settings = client.app.state.settings
    store = ExperimentStore.open(settings.experiments_db_url)
    created = store.create(name="simulated canary", arms=ARMS, salt="simulation")
    client.app.state.resources.refresh_experiments()  # now, not at the next background re-read
    assert client.app.state.resources.recommender.experiment().id == created.id
    rng = random.Random(11)
    events: list[dict] = []
    for n in range(USERS):
        user = f"sim{n}"
        response = client.get("/v1/recommendations", params={"user_id": user}, headers=gw.auth())
        body = response.json()
        arm = response.headers["x-experiment-arm"]
        assert body["experiment"] == {"id": created.id, "arm": arm}
        for item in body["items"]:
            if rng.random() < CLICK_P[arm]:
                events.append({"user_id": user, "item_id": item["item_id"], "action": "click",
                               "request_id": body["request_id"]})  # fmt: skip
    for start in range(0, len(events), 1000):
        posted = client.post(
            "/v1/events", json={"events": events[start : start + 1000]}, headers=gw.auth("events:write")
        )
        assert posted.status_code == 202, posted.text
    client.__exit__(None, None, None)  # the impressions onto the stream
    worker = open_worker(settings, online=False)
    try:
        while worker.step():
            pass
    finally:
        worker.close()
    client.__enter__()

    response = client.get(f"/v1/experiments/{created.id}/metrics", headers=gw.auth("experiments:read"))
    assert response.status_code == 200, response.text
    metrics = response.json()
    assert metrics["primary_metric"] == "ctr"
    (canary,) = [c for c in metrics["comparisons"] if c["arm"] == "canary" and c["metric"] == "ctr"]
    assert canary["p_value"] < 0.05 and canary["p_value_always_valid"] < 0.05, canary
    assert metrics["decision"]["action"] == "promote" and metrics["decision"]["arm"] == "canary"

    moved: list[str] = []
    reviews = review(
        store,
        Lake(settings.lake),
        datetime.now(UTC) + timedelta(seconds=1),
        decision_policy(settings),
        lambda experiment, arm: moved.append(arm.name) or f"stable -> {arm.name}",
    )
    assert [r.outcome for r in reviews] == ["promote"] and moved == ["canary"]
    stopped = store.get(created.id)
    assert stopped.status == "stopped" and stopped.decision == "promote"
    store.close()
