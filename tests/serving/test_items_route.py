"""`POST /v1/items` through real gateways over the shared Redis: an item marked unavailable stops
being recommended by every instance within a second, a new item joins the catalog at once, bad
input is refused whole, and the stream worker lands the upserts in bronze/items."""

from __future__ import annotations

import json
import time

import pytest

pytestmark = pytest.mark.integration
WRITER = "catalog:write"
WITHIN_S = 1.0


def post(client, gw, body, scopes: str = WRITER):
    headers = {**gw.auth(scopes), "Content-Type": "application/json"}
    return client.post("/v1/items", content=body if isinstance(body, str) else json.dumps(body), headers=headers)


def recommended(client, gw, user: str, **params) -> list[str]:
    response = client.get("/v1/recommendations", params={"user_id": user, **params}, headers=gw.auth())
    assert response.status_code == 200, response.text
    return [i["item_id"] for i in response.json()["items"]]


def until(check, timeout_s: float = 10.0) -> float:
    """Seconds until `check()` holds (fails past `timeout_s`)."""
    started = time.perf_counter()
    while not check():
        assert time.perf_counter() - started < timeout_s, "never happened"
        time.sleep(0.02)
    return time.perf_counter() - started


def test_an_unavailable_item_leaves_every_gateways_answers_within_a_second(make_client, gw) -> None:
    writer, other = make_client(), make_client()  # two instances, one Redis
    body = other.get("/v1/recommendations", params={"user_id": "u1"}, headers=gw.auth()).json()
    assert body["path"] == "model", body
    withdrawn = body["items"][0]["item_id"]
    popular = recommended(other, gw, "nobody-at-all", count=20)  # cold user: popular items
    withdrawn_popular = popular[0]

    started = time.perf_counter()
    response = post(writer, gw, {"items": [{"item_id": withdrawn, "available": False},
                                           {"item_id": withdrawn_popular, "available": False}]})  # fmt: skip
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 2, "item_ids": [withdrawn, withdrawn_popular]}
    until(lambda: withdrawn not in recommended(other, gw, "u1"))
    seconds = time.perf_counter() - started
    assert withdrawn_popular not in recommended(other, gw, "nobody-at-all", count=20)
    assert withdrawn not in recommended(writer, gw, "u1")
    assert seconds < WITHIN_S, f"withdrawn after {seconds:.2f} s"

    assert post(writer, gw, {"item_id": withdrawn, "available": True}).status_code == 202
    until(lambda: withdrawn in recommended(other, gw, "u1"))  # its own exclusion lifted


def test_a_new_item_joins_the_catalog_and_its_category(make_client, gw) -> None:
    writer, other = make_client(), make_client()
    assert other.get("/v1/recommendations", params={"user_id": "u1", "category": "novelties"},
                     headers=gw.auth()).status_code == 422  # fmt: skip
    response = post(writer, gw, {"item_id": "brand-new-1", "category": "Novelties", "price": 3.5})
    assert response.status_code == 202, response.text
    until(lambda: "brand-new-1" in other.app.state.resources.recommender.catalog.index, WITHIN_S)
    assert recommended(other, gw, "u1", category="novelties") == ["brand-new-1"]


BAD = {
    "a wrong type": ({"items": [{"item_id": "i1", "available": "no"}]}, "items.0.available"),
    "a negative price": ({"item_id": "i1", "price": -1}, "price"),
    "an unknown field": ({"item_id": "i1", "colour": "red"}, "colour"),
    "an empty batch": ({"items": []}, "items"),
    "1,001 items": ({"items": [{"item_id": f"i{n}"} for n in range(1001)]}, "items"),
    "bad JSON": ('{"item_id": ', "not JSON"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_a_422_naming_the_place_and_changes_nothing(client, gw, case: str) -> None:
    body, named = BAD[case]
    stream = client.app.state.resources.events
    response = post(client, gw, body)
    assert response.status_code == 422, response.text
    assert named in response.json()["message"]
    assert stream.read("items-test", "t", 10, 0.2) == []
    assert client.app.state.resources.overrides.items == {}


def test_the_scope_is_required(client, gw) -> None:
    assert post(client, gw, {"item_id": "i1", "available": False}, scopes="events:write").status_code == 403


def test_without_redis_the_gateway_serves_its_own_upserts_at_once(client, gw, gateway_home, tmp_path) -> None:
    lake = gateway_home.own_lake(tmp_path / "sqlite")
    settings = client.app.state.settings.model_copy(
        update={"redis_url": None, "feature_env": "embedded", "lake_uri": lake, "stream_name": "items-embedded-test"}
    )
    embedded = gw.start_client(settings)
    try:
        body = embedded.get("/v1/recommendations", params={"user_id": "u2"}, headers=gw.auth()).json()
        first = body["items"][0]["item_id"]
        assert post(embedded, gw, {"item_id": first, "available": False}).status_code == 202
        assert first not in recommended(embedded, gw, "u2")  # the next request already
    finally:
        embedded.__exit__(None, None, None)


def test_the_worker_lands_the_upserts_in_bronze_items(client, gw, gateway_settings) -> None:
    from serving.stream_worker.worker import open_worker
    from towerflow.lake import Lake

    assert (
        post(client, gw, {"items": [{"item_id": "i3", "available": False}, {"item_id": "brand-new-2"}]}).status_code
        == 202
    )
    worker = open_worker(gateway_settings, online=False)
    try:
        while worker.step():
            pass
    finally:
        worker.close()
    rows = Lake(gateway_settings.lake).read(gateway_settings.table_uri("bronze", "items")).to_pylist()
    streamed = {r["item_id"]: r for r in rows if r["source"] == "stream"}
    assert set(streamed) == {"i3", "brand-new-2"}
    assert streamed["i3"]["available"] is False and streamed["brand-new-2"]["available"] is None
