"""`GET /v1/experiments/{id}/metrics` end to end: recommendations served under an experiment,
clicks and purchases posted as events quoting the responses, the stream worker landing both in
the lake, and the route measuring each arm from there. SQLite experiments database, a local
stream and a lake of the test's own."""

from __future__ import annotations

from typing import Any

import pytest

from experiments.store import ExperimentStore

ARMS = [{"name": "control", "share": 50}, {"name": "treatment", "share": 50}]
USERS = [f"u{n}" for n in range(40)]


@pytest.fixture
def client(bare_client) -> Any:
    return bare_client()


def test_each_arm_is_measured_from_its_impressions_and_attributed_events(client, gw) -> None:
    from serving.stream_worker.worker import open_worker

    settings = client.app.state.settings
    with ExperimentStore.open(settings.experiments_db_url) as store:
        created = store.create(name="metrics route", arms=ARMS, salt="metrics-test")
    client.app.state.resources.refresh_experiments()  # now, not at the next background re-read
    assert client.app.state.resources.recommender.experiment().id == created.id
    events = []
    for user in USERS:
        body = client.get("/v1/recommendations", params={"user_id": user, "count": 5}, headers=gw.auth()).json()
        assert body["experiment"] == {"id": created.id, "arm": created.assign(user).name}
        if body["experiment"]["arm"] == "treatment":  # a better arm: every treatment user clicks, one buys
            first = body["items"][0]["item_id"]
            events.append({"user_id": user, "item_id": first, "action": "click", "request_id": body["request_id"]})
            events.append({"user_id": user, "item_id": first, "action": "purchase", "quantity": 2, "price": 5.0,
                           "request_id": body["request_id"]})  # fmt: skip
    posted = client.post("/v1/events", json={"events": events}, headers=gw.auth("events:write"))
    assert posted.status_code == 202, posted.text
    client.__exit__(None, None, None)  # flushes the impressions onto the stream
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
    arms = {a["arm"]: a for a in metrics["arms"]}
    treated = [u for u in USERS if created.assign(u).name == "treatment"]
    assert arms["treatment"]["users"] == arms["treatment"]["responses"] == len(treated)
    assert arms["control"]["users"] == len(USERS) - len(treated)
    assert arms["treatment"]["impressions"] == 5 * len(treated)
    assert arms["treatment"]["clicks"] == arms["treatment"]["purchases"] == len(treated)
    assert arms["treatment"]["revenue"] == pytest.approx(10.0 * len(treated))
    assert arms["control"]["clicks"] == arms["control"]["purchases"] == 0
    assert metrics["decision"]["action"] == "continue"  # far below the minimum sample
    assert 0 < metrics["sample_progress"] < 1


def test_unknown_ids_and_missing_scopes_are_refused(client, gw) -> None:
    missing = client.get("/v1/experiments/999/metrics", headers=gw.auth("experiments:read"))
    assert missing.status_code == 404 and "999" in missing.json()["message"]
    assert client.get("/v1/experiments/1/metrics", headers=gw.auth("recommend:any")).status_code == 403
    assert client.get("/v1/experiments/1/metrics").status_code == 401


def test_experiments_are_created_read_and_stopped_over_http_with_clear_refusals(client, gw) -> None:
    admin, reader = gw.auth("experiments:admin"), gw.auth("experiments:read")
    body = {"name": "ranker v2", "arms": [{"name": "control", "share": 90}, {"name": "canary", "share": 10}]}
    assert client.post("/v1/experiments", json=body, headers=reader).status_code == 403
    created = client.post("/v1/experiments", json=body, headers=admin)
    assert created.status_code == 201, created.text
    experiment = created.json()
    assert experiment["surface"] == "home" and [a["share"] for a in experiment["arms"]] == [90, 10]
    # This gateway serves it at once.
    served = client.get("/v1/recommendations", params={"user_id": "u1"}, headers=gw.auth()).json()
    assert served["experiment"]["id"] == experiment["id"]

    uneven = {**body, "surface": "search", "arms": [{"name": "control", "share": 60}, {"name": "b", "share": 30}]}
    refused = client.post("/v1/experiments", json=uneven, headers=admin)
    assert refused.status_code == 422 and "share" in refused.json()["message"], refused.text
    busy = client.post("/v1/experiments", json=body, headers=admin)
    assert busy.status_code == 409 and "home" in busy.json()["message"], busy.text

    assert client.get(f"/v1/experiments/{experiment['id']}", headers=reader).json()["status"] == "running"
    stop = {"decision": "rollback", "reason": "guardrail"}
    stopped = client.post(f"/v1/experiments/{experiment['id']}/stop", json=stop, headers=admin)
    assert stopped.status_code == 200 and stopped.json()["decision"] == "rollback", stopped.text
    assert client.post(f"/v1/experiments/{experiment['id']}/stop", json=stop, headers=admin).status_code == 409
    assert client.post("/v1/experiments/999/stop", json=stop, headers=admin).status_code == 404
    served = client.get("/v1/recommendations", params={"user_id": "u1"}, headers=gw.auth()).json()
    assert served["experiment"]["id"] == "default"
