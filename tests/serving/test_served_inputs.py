"""The gateway feeds a model only inputs it has a source for, and only an admin token may set the
moment a request is for."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration
#: A user feature the contract ranking model reads.
RANKING_INPUT = "user_features__purchases_30d"


def _reader_without(gw, column: str):
    from serving.feature_reader import InMemoryFeatureReader

    full = gw.fake_reader()
    kept = [c for c in full.user_columns if c != column]
    assert len(kept) < len(full.user_columns), f"{column} is not a column of the fake reader"
    return InMemoryFeatureReader(gw.sample_users(), gw.sample_items(), kept, full.item_columns)


def _unbound_count(client, column: str) -> float:
    metrics = client.app.state.metrics
    return (
        metrics.registry.get_sample_value(
            "towerflow_gateway_unbound_inputs_total", {"model": "ranking", "version": "1", "input": column}
        )
        or 0.0
    )


def test_a_version_asking_for_an_input_without_a_source_is_refused_not_fed_zeros(make_client, gw) -> None:
    client = make_client(reader=_reader_without(gw, RANKING_INPUT))
    before = _unbound_count(client, RANKING_INPUT)
    response = client.get("/v1/recommendations", params={"user_id": "u1"}, headers=gw.auth())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["path"] != "model" and body["reason"] == "model_unbound_input", body
    assert len(body["items"]) == 10  # degraded, not empty
    assert _unbound_count(client, RANKING_INPUT) == before + 1

    ready = client.get("/readyz")
    assert ready.status_code == 503
    check = ready.json()["checks"]["ranking"]
    assert "version 1" in check and RANKING_INPUT in check and "no serving source" in check, check
    assert ready.json()["checks"]["retrieval"] == "ok"  # retrieval's inputs all have sources


def test_with_every_source_the_version_serves_and_is_ready(client, gw) -> None:
    body = client.get("/v1/recommendations", params={"user_id": "u1"}, headers=gw.auth()).json()
    assert body["path"] == "model", body
    checks = client.get("/readyz").json()["checks"]
    assert checks["retrieval"] == "ok" and checks["ranking"] == "ok", checks


def test_only_an_admin_token_sets_the_request_moment(client, gw) -> None:
    moment = {"X-Request-Time": "2025-01-22T13:00:00Z"}
    refused = client.get("/v1/recommendations", params={"user_id": "u1"}, headers={**gw.auth(), **moment})
    assert refused.status_code == 403 and "recommend:admin" in refused.json()["message"]
    admin = gw.auth("recommend:any recommend:admin")
    answer = client.get("/v1/recommendations", params={"user_id": "u1"}, headers={**admin, **moment})
    assert answer.status_code == 200 and answer.json()["path"] == "model", answer.text
    bad = client.get("/v1/recommendations", params={"user_id": "u1"}, headers={**admin, "X-Request-Time": "noon"})
    assert bad.status_code == 422 and "x-request-time" in bad.json()["message"], bad.text


def test_the_request_moment_feeds_the_models_context(make_client, gw) -> None:
    """The context the models get is the request's moment, hour and weekday included: the same
    request at two moments reaches the model server with different context inputs."""
    client = make_client()
    runner = client.app.state.resources.recommender.runner
    seen: list[dict] = []
    predict = runner.client.predict

    async def recording(model, inputs, **kwargs):
        seen.append({k: inputs[k].tolist() for k in ("hour_of_day", "day_of_week") if k in inputs})
        return await predict(model, inputs, **kwargs)

    runner.client.predict = recording
    admin = gw.auth("recommend:any recommend:admin")
    for moment in ("2025-01-22T13:00:00Z", "2025-01-25T03:00:00+00:00"):
        answer = client.get(
            "/v1/recommendations", params={"user_id": "u1"}, headers={**admin, "X-Request-Time": moment}
        )
        assert answer.json()["path"] == "model"
    contexts = [s for s in seen if s]
    assert {"hour_of_day": [13]} in contexts and {"day_of_week": [2]} in contexts, contexts
    assert {"hour_of_day": [3]} in contexts and {"day_of_week": [5]} in contexts, contexts
