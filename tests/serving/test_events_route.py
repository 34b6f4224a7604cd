"""`POST /v1/events` through the real app: validation, scopes, the stream it appends to (the
shared Redis under the test's own prefix), and a stream that does not answer."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from streams.events import Event

pytestmark = pytest.mark.integration
WRITER = "events:write"


def post(client, gw, body, scopes: str = WRITER, **kwargs):
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    headers = {**gw.auth(scopes), "Content-Type": "application/json", **kwargs.pop("headers", {})}
    return client.post("/v1/events", content=data, headers=headers, **kwargs)


def drain(client) -> list[Event]:
    """Everything on the gateway's event stream, read by a group of this test's own."""
    stream = client.app.state.resources.events
    records = stream.read("test-reader", "t1", 5000, 0.5)
    stream.ack("test-reader", records)
    return [Event.decode(r.value) for r in records]


def test_a_batch_is_accepted_with_ids_assigned_where_missing_and_lands_on_the_stream(client, gw) -> None:
    at = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    events = [
        {"user_id": "u1", "item_id": "i1", "action": "view"},
        {"user_id": "u1", "item_id": "i2", "action": "click", "request_id": "r-1", "event_id": "app-7"},
        {"user_id": "u2", "item_id": "i3", "action": "purchase", "quantity": 2, "price": 3.5,
         "timestamp": at.isoformat()},
    ]  # fmt: skip
    response = post(client, gw, {"events": events})
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["accepted"] == 3 and body["event_ids"][1] == "app-7"
    assert len(set(body["event_ids"])) == 3
    streamed = drain(client)
    assert [e.event_id for e in streamed] == body["event_ids"]
    assert [(e.user_id, e.item_id, e.action) for e in streamed] == [("u1", "i1", "view"), ("u1", "i2", "click"),
                                                                    ("u2", "i3", "purchase")]  # fmt: skip
    assert streamed[1].request_id == "r-1" and streamed[2].timestamp == at and streamed[2].quantity == 2
    assert abs(streamed[0].timestamp - datetime.now(UTC)) < timedelta(seconds=30)


def test_one_event_alone_and_a_repeated_event_id_are_accepted(client, gw) -> None:
    one = {"user_id": "u1", "item_id": "events", "action": "click", "event_id": "dup-1"}  # an item named "events"
    for _ in range(2):
        response = post(client, gw, one)
        assert response.status_code == 202, response.text
        assert response.json() == {"accepted": 1, "event_ids": ["dup-1"]}
    assert [e.event_id for e in drain(client)] == ["dup-1", "dup-1"]  # the stream keeps both; the lake one


def ok(n: int = 1) -> list[dict]:
    return [{"user_id": "u1", "item_id": f"i{k}", "action": "view"} for k in range(n)]


BAD = {
    "a wrong type": ({"events": [*ok(2), {"user_id": 5, "item_id": "i1", "action": "view"}]}, 422, "events.2.user_id"),
    "an unknown action": ({"events": [{"user_id": "u", "item_id": "i", "action": "like"}]}, 422, "events.0.action"),
    "an empty batch": ({"events": []}, 422, "events"),
    "1,001 events": ({"events": ok(1001)}, 422, "events"),
    "an unknown field": ({"user_id": "u", "item_id": "i", "action": "view", "rating": 5}, 422, "rating"),
    "a future timestamp": (
        {"user_id": "u", "item_id": "i", "action": "view", "timestamp": "2999-01-01T00:00:00Z"},
        422,
        "in the future",
    ),
    "a bad event id": ({"user_id": "u", "item_id": "i", "action": "view", "event_id": "a b"}, 422, "event_id"),
    "bad JSON": ('{"user_id": "u", "item_id": ', 422, "not JSON"),
    "an oversize body": ("x" * (1024 * 1024 + 1), 413, "bytes"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_a_4xx_naming_the_place_and_nothing_of_it_enters_the_stream(client, gw, case: str) -> None:
    body, status, named = BAD[case]
    response = post(client, gw, body)
    assert response.status_code == status, response.text
    assert named in response.json()["message"]
    assert drain(client) == []


def test_the_scope_is_required(client, gw) -> None:
    assert post(client, gw, ok()[0], scopes="recommend:any").status_code == 403
    assert client.post("/v1/events", json=ok()[0]).status_code == 401
    assert drain(client) == []


def test_a_stream_that_does_not_answer_is_a_503_with_retry_after(make_client, gw, redis_prefix: str) -> None:
    from streams.redis_streams import RedisEventStream

    client = make_client()
    resources = client.app.state.resources
    resources.events = RedisEventStream("redis://127.0.0.1:1/0", name="events", prefix=redis_prefix, timeout_s=0.5)
    response = post(client, gw, {"events": ok(3)})
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert "retry" in response.json()["message"]
