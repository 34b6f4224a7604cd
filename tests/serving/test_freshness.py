"""Freshness: a click posted to the gateway is in the user's recent actions online within a
second, and the next recommendation reflects it (the query tower reads recent actions). The
real path: gateway -> event stream (the shared Redis) -> stream worker -> Feast push -> the
gateway's feature reader, under a Feast project of this test's own."""

from __future__ import annotations

import threading
import time

import pytest

pytestmark = pytest.mark.integration
FRESH_WITHIN_S = 1.0


def test_a_click_is_online_within_a_second_and_changes_the_next_answer(make_client, gw, own_project) -> None:
    from serving.stream_worker.worker import open_worker

    client = make_client(feast_project=own_project)
    settings = client.app.state.settings
    reader = client.app.state.resources.reader
    worker = open_worker(settings)
    worker.poll_s = 0.05
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        before = client.get("/v1/recommendations", params={"user_id": "u1"}, headers=gw.auth()).json()
        assert before["path"] == "model", before
        recent = reader.user_features("u1").get("user_recent__last_10_items") or []
        clicked = next(i for i in gw.ITEMS if i not in recent and i not in gw.UNAVAILABLE)
        lags = []
        clicks = [clicked, *[i for i in gw.ITEMS if i not in (clicked, *gw.UNAVAILABLE)][:2]]
        for item in clicks:
            started = time.perf_counter()
            event = {"user_id": "u1", "item_id": item, "action": "click", "request_id": before["request_id"]}
            response = client.post("/v1/events", json=event, headers=gw.auth("events:write"))
            assert response.status_code == 202, response.text
            while (reader.user_features("u1").get("user_recent__last_10_items") or [None])[0] != item:
                assert time.perf_counter() - started < 10, "the click never reached the online store"
                time.sleep(0.01)
            lags.append(time.perf_counter() - started)
        after = client.get("/v1/recommendations", params={"user_id": "u1"}, headers=gw.auth()).json()
    finally:
        stop.set()
        thread.join(timeout=10)
        worker.close()
    assert max(lags) < FRESH_WITHIN_S, f"post -> online took {lags}"
    features = reader.user_features("u1")
    assert features["user_recent__last_10_items"][:3] == clicks[::-1]
    assert features["user_recent__clicks_1d"] >= 3
    assert after["path"] == "model"
    scored = lambda body: [(i["item_id"], round(i["score"], 6)) for i in body["items"]]  # noqa: E731
    assert scored(after) != scored(before), "the recommendation did not change after three clicks"
