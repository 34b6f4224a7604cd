"""Gateway routes through TestClient on the real hot path: `FastFeatureReader` over the world's
features in the shared Redis, the tiny model trained on that world behind a real (in-process) model
server, the gateway's own keys under a unique prefix (tests/serving/conftest.py)."""

from __future__ import annotations

import pytest

from serving.gateway.schemas import RecommendationResponse

pytestmark = pytest.mark.integration


def recs(client, gw, user: str = "u1", **params) -> dict:
    response = client.get("/v1/recommendations", params={"user_id": user, **params}, headers=gw.auth())
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    RecommendationResponse.model_validate_json(response.content)  # the route serializes by hand
    return response.json()


def test_model_path_returns_count_distinct_known_unpurchased_items(client, gw) -> None:
    body = recs(client, gw, "u1", count=10)
    ids = [item["item_id"] for item in body["items"]]
    assert body["path"] == "model", body
    assert len(ids) == 10 and len(set(ids)) == 10
    assert set(ids) <= set(gw.ITEMS)
    assert not set(ids) & gw.owned("u1")
    assert not set(ids) & gw.UNAVAILABLE
    assert [item["position"] for item in body["items"]] == list(range(1, 11))
    assert body["model_versions"] == {"retrieval": "1", "ranking": "1", "recommender": "two_stage"}
    assert body["sources"] == {"model": 10}
    assert body["experiment"] == {"id": "default", "arm": "control"}
    assert len(body["request_id"]) == 32


def test_the_request_id_is_the_callers_when_sane_and_echoed_in_a_header(client, gw) -> None:
    headers = {**gw.auth(), "X-Request-ID": "lb-4f2a-0001"}
    given = client.get("/v1/recommendations", params={"user_id": "u1"}, headers=headers)
    assert given.json()["request_id"] == given.headers["x-request-id"] == "lb-4f2a-0001"
    for sent in ({}, {"X-Request-ID": "not sane; id"}):
        response = client.get("/v1/recommendations", params={"user_id": "u1"}, headers={**gw.auth(), **sent})
        assert response.json()["request_id"] == response.headers["x-request-id"]
        assert len(response.headers["x-request-id"]) == 32
    assert client.get("/healthz").headers["x-request-id"]


def test_the_embedded_store_serves_the_same_model_path_without_redis(client, gw, gateway_home, tmp_path) -> None:
    """The gateway over the embedded (SQLite) online store, with no Redis at all, reads the same
    features as over Redis: the same list for the same user and moment."""
    settings = client.app.state.settings.model_copy(
        update={"redis_url": None, "feature_env": "embedded", "lake_uri": gateway_home.own_lake(tmp_path / "sqlite")}
    )
    embedded = gw.start_client(settings)
    try:
        headers = {**gw.auth("recommend:any recommend:admin"), "X-Request-Time": "2025-03-15T09:00:00Z"}
        lists = []
        for app in (client, embedded):
            response = app.get("/v1/recommendations", params={"user_id": "u1", "count": 10}, headers=headers)
            body = response.json()
            assert response.status_code == 200 and body["path"] == "model", body
            lists.append([(i["item_id"], round(i["score"], 5)) for i in body["items"]])
        assert lists[0] == lists[1]
        ready = embedded.get("/readyz").json()
        assert ready["checks"]["online_store"] == "ok" and ready["checks"]["redis"].startswith("not configured")
    finally:
        embedded.__exit__(None, None, None)


def test_rules_reach_the_response(client, gw) -> None:
    bought = gw.owned("u2")
    body = recs(client, gw, "u2", count=5, category="Kitchen", exclude="i1,i7", exclude_purchased="false")
    ids = [i["item_id"] for i in body["items"]]
    kitchen = {i for i in gw.ITEMS if gw.category_of(i) == "kitchen"}
    assert body["path"] == "model" and ids and set(ids) <= kitchen - {"i1", "i7"}
    again = recs(client, gw, "u2", count=60, exclude_purchased="true")
    assert again["path"] == "model" and not {i["item_id"] for i in again["items"]} & bought
    diverse = recs(client, gw, "u3", count=10)
    per_category: dict[str, int] = {}
    for item in diverse["items"]:
        cat = gw.category_of(item["item_id"])
        per_category[cat] = per_category.get(cat, 0) + 1
    assert max(per_category.values()) <= 4  # category_cap 0.4 of 10


def test_cold_start_gets_popular_in_context(client, gw) -> None:
    body = recs(client, gw, "nobody", count=3, category="toys")
    assert body["path"] == "fallback_popular" and body["reason"] == "cold_start"
    # toys are i2, i8, i14, ...; i8 is unavailable; popularity falls with the index
    assert [i["item_id"] for i in body["items"]] == ["i2", "i14", "i20"]


@pytest.mark.parametrize(
    ("count", "needle"),
    [("0", "greater than or equal to 1"), ("1000", "less than or equal to 100"), ("abc", "valid integer")],
)
def test_bad_count_is_422_with_a_message(client, gw, count: str, needle: str) -> None:
    response = client.get("/v1/recommendations", params={"user_id": "u1", "count": count}, headers=gw.auth())
    assert response.status_code == 422
    assert response.json()["message"].startswith("count: ") and needle in response.json()["message"]


def test_missing_user_is_422(client, gw) -> None:
    response = client.get("/v1/recommendations", headers=gw.auth())
    assert response.status_code == 422 and "user_id" in response.json()["message"]


def test_auth_errors(client, gw) -> None:
    url = "/v1/recommendations?user_id=u1"
    missing = client.get(url)
    assert missing.status_code == 401 and "missing bearer token" in missing.json()["message"]
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    bad = client.get(url, headers={"Authorization": "Bearer not.a.jwt"})
    assert bad.status_code == 401 and "invalid token" in bad.json()["message"]
    forged = client.get(url, headers=gw.auth(key="another-secret-of-sufficient-length-xx"))
    assert forged.status_code == 401 and "signature" in forged.json()["message"].lower()
    expired = client.get(url, headers=gw.auth(ttl_s=-10))
    assert expired.status_code == 401 and "expired" in expired.json()["message"]
    audience = client.get(url, headers=gw.auth(audience="someone-else"))
    assert audience.status_code == 401 and "audience" in audience.json()["message"]
    scope = client.get(url, headers=gw.auth("events:write"))
    assert scope.status_code == 403 and "recommend:read" in scope.json()["message"]
    assert 'error="insufficient_scope"' in scope.headers["WWW-Authenticate"]


def test_rate_limit_per_user_is_429_with_retry_after(make_client, gw) -> None:
    client = make_client(rate_limit_user=3, rate_limit_window_s=60)
    codes = [client.get("/v1/recommendations?user_id=u4", headers=gw.auth()).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    refused = client.get("/v1/recommendations?user_id=u4", headers=gw.auth())
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert "user" in refused.json()["message"]
    assert client.get("/v1/recommendations?user_id=u5", headers=gw.auth()).status_code == 200
    # Only served requests count a user lookup, though refused ones may have read the user already.
    lookups = client.get("/metrics").text
    assert 'towerflow_gateway_feature_lookups_total{entity="user",result="hit"} 4.0' in lookups


def test_rate_limit_per_token(make_client, gw) -> None:
    client = make_client(rate_limit_token=2, rate_limit_window_s=60)
    headers = gw.auth()
    codes = [client.get(f"/v1/recommendations?user_id=u{n}", headers=headers).status_code for n in range(3)]
    assert codes == [200, 200, 429]
    assert client.get("/v1/recommendations?user_id=u0", headers=gw.auth()).status_code == 200  # new token


def test_model_server_down_serves_precomputed_then_popular(make_client, gw, redis_url, redis_prefix) -> None:
    from features.precomputed import write_precomputed

    write_precomputed(
        redis_url, {"u1": ["i30", "i8", "i31", "i6", "i32"]}, "retrieval=1,ranking=1", prefix=redis_prefix
    )
    client = make_client(model_server_target=f"127.0.0.1:{gw.free_port()}", retrieval_timeout_ms=200)
    body = recs(client, gw, "u1", count=3)
    assert body["path"] == "cached" and body["reason"] in ("model_unavailable", "model_timeout")
    assert [i["item_id"] for i in body["items"]] == ["i30", "i31", "i32"]  # i8 unavailable, i6 bought
    assert body["model_versions"] == {"precomputed": "retrieval=1,ranking=1"}
    other = recs(client, gw, "u2", count=3)
    assert other["path"] == "fallback_popular" and len(other["items"]) == 3
    # Once the model server's breaker is open, the precomputed list is read alongside the user's
    # features (not after them): same answer, and still popular items for a user without one.
    skipped = [recs(client, gw, "u1", count=3) for _ in range(4)][-1]
    assert (skipped["path"], skipped["reason"]) == ("cached", "model_server_unavailable")
    assert [i["item_id"] for i in skipped["items"]] == ["i30", "i31", "i32"]
    other = recs(client, gw, "u2", count=3)
    assert (other["path"], other["reason"]) == ("fallback_popular", "model_server_unavailable")


def test_a_short_precomputed_list_is_topped_up_and_says_so(make_client, gw, redis_url, redis_prefix) -> None:
    from features.precomputed import write_precomputed

    write_precomputed(redis_url, {"u1": ["i30", "i8", "i31", "i6", "i32"]}, "r=1", prefix=redis_prefix)
    client = make_client(model_server_target=f"127.0.0.1:{gw.free_port()}", retrieval_timeout_ms=200)
    body = recs(client, gw, "u1", count=5)
    assert body["path"] == "cached"
    ids = [i["item_id"] for i in body["items"]]
    assert ids[:3] == ["i30", "i31", "i32"] and len(ids) == 5  # i8 unavailable, i6 bought
    assert body["sources"] == {"cached": 3, "fallback_popular": 2}


def test_a_precomputed_list_per_variant_serves_its_own_variant(make_client, gw, redis_url, redis_prefix) -> None:
    # A pair published per variant stores each variant's list: the cached answer to a request is
    # its variant's list, the whole one where none was stored for it.
    from features.precomputed import write_precomputed

    write_precomputed(
        redis_url,
        {"u1": ["i30", "i6", "i31"]},
        "r=1",
        prefix=redis_prefix,
        variants={"new": {"u1": ["i33", "i34", "i35"]}},
    )
    client = make_client(model_server_target=f"127.0.0.1:{gw.free_port()}", retrieval_timeout_ms=200)
    default = recs(client, gw, "u1", count=3)
    assert default["path"] == "cached" and [i["item_id"] for i in default["items"]] == ["i33", "i34", "i35"]
    kept = recs(client, gw, "u1", count=3, exclude_purchased="false")
    assert kept["path"] == "cached" and [i["item_id"] for i in kept["items"]] == ["i30", "i6", "i31"]
    unseen = recs(client, gw, "u1", count=2, exclude_seen="true")  # nothing stored for `unseen`
    assert unseen["path"] == "cached" and [i["item_id"] for i in unseen["items"]] == ["i30", "i31"]


def test_health_ready_metrics_docs(client, gw) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "checks": {}}
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.json()
    recs(client, gw, "u1")
    recs(client, gw, "nobody")
    text = client.get("/metrics").text
    assert 'towerflow_gateway_recommendations_total{path="model",reason=""} 1.0' in text
    assert 'towerflow_gateway_recommendations_total{path="fallback_popular",reason="cold_start"} 1.0' in text
    for stage in ("user_features", "retrieval", "item_features", "ranking", "rules", "rate_limit"):
        assert f'towerflow_gateway_stage_seconds_count{{stage="{stage}"}}' in text
    assert 'towerflow_gateway_feature_lookups_total{entity="user",result="hit"} 1.0' in text
    assert "towerflow_gateway_http_request_seconds_bucket" in text
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    assert "/v1/recommendations" in schema["paths"] and "bearer" in schema["components"]["securitySchemes"]


def test_not_ready_when_model_server_is_down(make_client, gw) -> None:
    client = make_client(model_server_target=f"127.0.0.1:{gw.free_port()}")
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["retrieval"].startswith("unreachable")


def test_impressions_go_onto_the_stream_on_shutdown_and_the_worker_lands_them(
    make_client, gw, gateway_settings
) -> None:
    from serving.stream_worker.worker import open_worker
    from towerflow.lake import Lake

    client = make_client()
    body = recs(client, gw, "u6", count=4)
    client.__exit__(None, None, None)  # lifespan shutdown flushes
    worker = open_worker(gateway_settings, online=False)
    worker.poll_s = 0.1
    try:
        while worker.step():
            pass
    finally:
        worker.close()
    table = Lake(gateway_settings.lake).read(gateway_settings.table_uri("bronze", "impressions"))
    rows = sorted(table.to_pylist(), key=lambda r: r["position"])
    assert [r["item_id"] for r in rows] == [i["item_id"] for i in body["items"]]
    assert {r["request_id"] for r in rows} == {body["request_id"]}
    assert [r["position"] for r in rows] == [1, 2, 3, 4]
    assert rows[0]["served_path"] == "model" and rows[0]["retrieval_version"] == "1"
    assert rows[0]["arm"] == "control" and rows[0]["user_id"] == "u6"


def test_a_published_baseline_serves_by_the_model_path_and_says_so(make_client, gw, gateway_home, tmp_path) -> None:
    """What the gate publishes when no trained model beats a baseline: the baseline's pair
    (ALS + a pass-through ranker) behind a model server, named in `model_versions`."""
    import numpy as np

    from models.baselines import TrainInteractions, fit_baselines
    from models.export import export_baselines
    from models.registry import publish
    from serving.model_server import ModelManager, ModelServer
    from serving.tfs_client import ModelClient

    examples = gateway_home.world.examples()
    items = sorted(gateway_home.world.items["item_id"])
    users = sorted(examples["user_id"].unique())
    data = TrainInteractions(
        users=examples["user_id"].map({u: n for n, u in enumerate(users)}).to_numpy(),
        items=examples["item_id"].map({i: n for n, i in enumerate(items)}).to_numpy(),
        age_days=np.zeros(len(examples)),
        weights=np.ones(len(examples)),
        n_users=len(users),
        n_items=len(items),
    )
    pairs = export_baselines(fit_baselines(data), items, users, tmp_path / "staged", {})
    models_dir = tmp_path / "models"
    publish(models_dir, pairs["als"], {"fingerprint": "baseline-als", "recommender": "als"})
    server = ModelServer(ModelManager(models_dir, poll_seconds=30), port=0, host="127.0.0.1", max_workers=2)
    target = f"127.0.0.1:{server.start()}"
    try:
        with ModelClient(target, timeout=60) as model_client:
            for model in ("retrieval", "ranking"):
                model_client.wait_until_available(model, timeout=120)
        client = make_client(model_server_target=target)
        body = recs(client, gw, "u1", count=10)
        assert body["path"] == "model", body
        assert body["model_versions"] == {"retrieval": "1", "ranking": "1", "recommender": "als"}
        assert not {i["item_id"] for i in body["items"]} & gw.owned("u1")
    finally:
        server.stop(grace=1)
