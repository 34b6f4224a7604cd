"""The gateway feeds a model only inputs it has a source for, and only an admin token may set the
moment a request is for."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration
#: An item feature the exported ranking signature reads, which the `retrieval` feature service
#: (category, price and age of items only) does not serve.
RANKING_INPUT = "item_features__popularity"


def _reader_without(gw, settings, column: str):
    """The real reader over the `retrieval` feature service: the same user features as the
    gateway's, fewer item features."""
    reader = gw.open_reader(settings, "retrieval")
    assert column not in reader.item_columns, f"the retrieval service serves {column}"
    assert column in gw.open_reader(settings).item_columns, f"the gateway's reader does not serve {column}"
    return reader


def _unbound_count(client, column: str) -> float:
    metrics = client.app.state.metrics
    return (
        metrics.registry.get_sample_value(
            "towerflow_gateway_unbound_inputs_total", {"model": "ranking", "version": "1", "input": column}
        )
        or 0.0
    )


def test_a_version_asking_for_an_input_without_a_source_is_refused_not_fed_zeros(
    make_client, gw, gateway_settings
) -> None:
    client = make_client(reader=_reader_without(gw, gateway_settings, RANKING_INPUT))
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
    """The context the models get is the request's moment, hour, weekday and day included: the
    same request at two moments reaches the model server with different context inputs."""
    from datetime import datetime

    from scoring.context import CONTEXT, request_context

    client = make_client()
    runner = client.app.state.resources.recommender.runner
    seen: list[tuple[str, dict]] = []
    predict = runner.client.predict

    async def recording(model, inputs, **kwargs):
        seen.append((model, {k: inputs[k].tolist()[0] for k in CONTEXT if k in inputs}))
        return await predict(model, inputs, **kwargs)

    runner.client.predict = recording
    admin = gw.auth("recommend:any recommend:admin")
    moments = ("2025-01-22T13:00:00Z", "2025-01-25T03:00:00+00:00")
    for moment in moments:
        answer = client.get(
            "/v1/recommendations", params={"user_id": "u1"}, headers={**admin, "X-Request-Time": moment}
        )
        assert answer.json()["path"] == "model"
    assert [model for model, _ in seen] == ["retrieval", "ranking"] * 2, seen
    for n, moment in enumerate(moments):
        want = request_context(datetime.fromisoformat(moment))
        for model, got in seen[2 * n : 2 * n + 2]:  # each model gets the context inputs it asks for
            assert got and got == pytest.approx({k: want[k] for k in got}), (model, got, want)
    assert seen[0][1]["hour_of_day"] == 13 and seen[0][1]["day_of_week"] == 2, seen
    assert seen[2][1]["hour_of_day"] == 3 and seen[2][1]["day_of_week"] == 5, seen
    assert seen[1][1]["request_day"] != seen[3][1]["request_day"], seen
