"""Slow, not dead, dependencies: the gateway app with the shared Redis and the model server each
behind a proxy that adds latency per chunk (`delay_proxy`, tests/serving/tcp_proxy.py).

With a delay far above the stage budgets every request still answers 200 within what its budgets
allow (plus slack for a shared machine: a bound, not a latency benchmark) and is served by a path
that does not wait for the slow dependency: a slow model server gives `cached` (or
`fallback_popular` when Redis is slow too, or the user has no stored list) with a `reason` naming
the model server; a slow Redis alone costs the rate limit only, which lets requests through. Once
the delay is gone the breakers close and the model path is back without a restart.

The online store (the world's features in the same shared Redis) is read past the proxy, so the
slow Redis is the gateway's own (rate limits, precomputed lists), except in the test where one
Redis holds both, as in the default deployment.
"""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest

pytestmark = pytest.mark.integration

SLOW_S = 5.0  # per chunk and direction: far above every stage budget
#: Above the defaults (tens of ms), so that the dependencies that are not slow stay within theirs
#: on a busy shared machine; still far below SLOW_S.
BUDGETS_MS = {
    "retrieval_timeout_ms": 300,
    "ranking_timeout_ms": 300,
    "features_timeout_ms": 300,
    "redis_timeout_ms": 300,
}
#: The longest chain of budgets one request can spend in turn: the rate-limit check in Redis (the
#: user's features are read meanwhile), retrieval, item features, ranking, the precomputed list
#: in Redis. The bound adds 2 s of slack for a shared machine: a bound, not a latency benchmark.
WORST_CASE_S = (
    BUDGETS_MS["redis_timeout_ms"]
    + BUDGETS_MS["retrieval_timeout_ms"]
    + BUDGETS_MS["features_timeout_ms"]
    + BUDGETS_MS["ranking_timeout_ms"]
    + BUDGETS_MS["redis_timeout_ms"]
) / 1000
BOUND_S = WORST_CASE_S + 2.0
COOLDOWN_S = 2.0  # longer than a few requests at full budget: some of them find the breaker open
MODEL_DOWN = {"model_timeout", "model_server_unavailable"}
#: u1 has bought i5..i9; none of these, and they span the six categories.
STORED = [f"i{n}" for n in range(30, 42)]


@pytest.fixture
def slow(make_client, delay_proxy, model_server: str, redis_url: str, redis_prefix: str, gateway_settings, gw):
    """`slow(online_store_slow=False, **settings)`: a gateway whose Redis and model server sit
    behind delay proxies (`.redis`, `.model`), with u1's precomputed list stored, warmed up on the
    model path. Its feature reader reads the online store past the proxy, unless
    `online_store_slow` (then the app opens it over the proxied Redis, as it would in production)."""
    from features.precomputed import write_precomputed

    write_precomputed(redis_url, {"u1": STORED}, "retrieval=1,ranking=1", prefix=redis_prefix)
    redis_at = urlsplit(redis_url)
    credentials = redis_at.netloc.rpartition("@")[0]
    model_host, model_port = model_server.rsplit(":", 1)

    def build(online_store_slow: bool = False, **settings) -> SimpleNamespace:
        redis = delay_proxy(redis_at.hostname, redis_at.port or 6379)
        model = delay_proxy(model_host, int(model_port))
        netloc = f"{credentials}@{redis.address}" if credentials else redis.address
        client = make_client(
            reader=None if online_store_slow else gw.open_reader(gateway_settings),
            redis_url=redis_at._replace(netloc=netloc).geturl(),
            model_server_target=model.address,
            breaker_cooldown_s=COOLDOWN_S,
            **{**BUDGETS_MS, **settings},
        )
        stack = SimpleNamespace(client=client, redis=redis, model=model)
        stack.breakers = client.app.state.resources.breakers
        stack.auth = gw.auth
        stack.get = lambda user, **params: get(stack, gw, user, **params)
        stack.until_model = lambda user, timeout_s: until_model(stack, gw, user, timeout_s)
        stack.until_closed = lambda breaker, timeout_s: until_closed(stack, gw, breaker, timeout_s)
        until_model(stack, gw, "u0", 30)  # signatures fetched, connections open
        return stack

    return build


def get(stack, gw, user: str, **params) -> dict:
    """One request: 200 within BOUND_S, or the test fails."""
    started = time.perf_counter()
    response = stack.client.get("/v1/recommendations", params={"user_id": user, **params}, headers=gw.auth())
    took = time.perf_counter() - started
    assert response.status_code == 200, response.text
    assert took < BOUND_S, f"{took:.2f} s > {BOUND_S:.2f} s for {response.json()}"
    return response.json()


def until_model(stack, gw, user: str, timeout_s: float) -> dict:
    """Requests until one is served by the model path (each still 200 within BOUND_S)."""
    deadline = time.monotonic() + timeout_s
    seen = []
    while time.monotonic() < deadline:
        body = get(stack, gw, user)
        if body["path"] == "model":
            return body
        seen.append((body["path"], body["reason"]))
        time.sleep(0.05)
    raise AssertionError(f"no model-path response within {timeout_s} s; got {seen[-5:]}")


def until_closed(stack, gw, breaker: str, timeout_s: float) -> None:
    """Requests until `breaker` closes (some request's call to the dependency probes it again);
    for the cold-start user `nobody`, so no user's rate-limit count or model path is involved."""
    deadline = time.monotonic() + timeout_s
    while stack.breakers[breaker].is_open:
        assert time.monotonic() < deadline, f"the {breaker} breaker is still open after {timeout_s} s"
        get(stack, gw, "nobody")
        time.sleep(0.05)


def test_the_proxy_holds_each_chunk_and_lets_go_when_the_delay_drops(delay_proxy, redis_url, redis_prefix) -> None:
    import os

    import redis

    at = urlsplit(redis_url)
    proxy = delay_proxy(at.hostname, at.port or 6379)
    client = redis.Redis(host="127.0.0.1", port=proxy.port, socket_timeout=60)
    key, value = f"{redis_prefix}proxy", os.urandom(300_000)  # many chunks, which must stay in order
    try:
        assert client.set(key, value) and client.get(key) == value
        proxy.delay = 0.3
        started = time.perf_counter()
        assert client.ping()
        assert time.perf_counter() - started >= 0.6  # held on the way there and on the way back
        proxy.delay = 60.0
        answered = threading.Event()
        pinging = threading.Thread(target=lambda: client.ping() and answered.set(), daemon=True)
        pinging.start()
        time.sleep(0.2)
        proxy.delay = 0.0  # releases what is held, rather than after the 60 s it arrived with
        pinging.join(10)
        assert answered.is_set()
        assert proxy.connections == 1
    finally:
        proxy.delay = 0.0
        redis.Redis.from_url(redis_url).delete(key)


def test_a_slow_model_server_serves_precomputed_within_budget_then_recovers(slow) -> None:
    stack = slow()
    stack.model.delay = SLOW_S
    bodies = [stack.get("u1", count=5) for _ in range(8)]
    assert [b["path"] for b in bodies] == ["cached"] * 8, bodies
    reasons = [b["reason"] for b in bodies]
    assert reasons[0] == "model_timeout" and set(reasons) <= MODEL_DOWN, reasons
    assert "model_server_unavailable" in reasons, reasons  # the breaker opened: later ones skip it
    assert [i["item_id"] for i in bodies[-1]["items"]] == STORED[:5]
    assert bodies[-1]["model_versions"] == {"precomputed": "retrieval=1,ranking=1"}
    nothing_stored = stack.get("u2", count=5)
    assert nothing_stored["path"] == "fallback_popular" and nothing_stored["reason"] in MODEL_DOWN

    stack.model.delay = 0.0
    stack.until_model("u1", 15)
    assert not stack.breakers["model_server"].is_open


def test_a_slow_redis_lets_requests_through_within_budget_then_recovers(slow) -> None:
    """Redis holds the rate limits and the precomputed lists; with the model path healthy, a slow
    Redis costs the rate limit only, which lets requests through rather than wait (fail open)."""
    stack = slow(rate_limit_user=3)
    stack.redis.delay = SLOW_S
    bodies = [stack.get("u3") for _ in range(6)]  # twice the user's limit
    assert [(b["path"], b["reason"]) for b in bodies] == [("model", None)] * 6, bodies
    assert stack.breakers["redis"].is_open

    stack.redis.delay = 0.0
    stack.until_closed("redis", 15)
    codes = [stack.client.get("/v1/recommendations?user_id=u5", headers=stack.auth()).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]  # counted in Redis again


def test_slow_redis_and_model_server_serve_popular_within_budget_then_recover(slow) -> None:
    stack = slow()
    stack.model.delay = stack.redis.delay = SLOW_S
    bodies = [stack.get("u1", count=5) for _ in range(8)]
    # u1 has a precomputed list, but reading it is over the Redis budget too: popular items.
    assert [b["path"] for b in bodies] == ["fallback_popular"] * 8, bodies
    assert {b["reason"] for b in bodies} <= MODEL_DOWN, bodies
    assert all(len(b["items"]) == 5 for b in bodies)

    stack.model.delay = stack.redis.delay = 0.0
    stack.until_model("u1", 15)
    stack.until_closed("redis", 15)
    stack.model.delay = SLOW_S  # Redis is back too: the precomputed list serves again
    cached = stack.get("u1", count=5)
    assert cached["path"] == "cached" and [i["item_id"] for i in cached["items"]] == STORED[:5], cached


def test_a_slow_redis_holding_the_online_store_serves_popular_within_budget_then_recovers(slow) -> None:
    """One Redis for the online store, the rate limits and the precomputed lists: with it slow,
    the user's features miss their budget, so requests serve popular items (the model path needs
    the features, and the rate limit lets them through), until Redis is back."""
    stack = slow(online_store_slow=True)
    stack.redis.delay = SLOW_S
    bodies = [stack.get("u1", count=5) for _ in range(6)]
    assert [(b["path"], b["reason"]) for b in bodies] == [("fallback_popular", "online_store_unavailable")] * 6
    assert all(len(b["items"]) == 5 for b in bodies)
    assert stack.breakers["online_store"].is_open

    stack.redis.delay = 0.0
    stack.until_model("u1", 15)
    assert not stack.breakers["online_store"].is_open


def test_a_slow_signature_fetch_stays_within_the_ranking_budget(make_client, gw) -> None:
    """The ranking signature is fetched before item features are gathered from memory (the
    production reader's path); when its cache has expired and the model server is slow to answer
    it, the request still degrades within the ranking budget."""
    import asyncio

    client = make_client(**BUDGETS_MS)
    headers = gw.auth()
    assert client.get("/v1/recommendations", params={"user_id": "u1"}, headers=headers).json()["path"] == "model"

    runner = client.app.state.resources.recommender.runner
    fetch = runner.client.signature_defs

    async def slow_ranking(model, **kwargs):
        if model == "ranking":
            await asyncio.sleep(SLOW_S)
        return await fetch(model, **kwargs)

    runner.client.signature_defs = slow_ranking
    runner._cache.pop(("ranking", "stable"), None)  # expired: the next request asks the server
    started = time.monotonic()
    body = client.get("/v1/recommendations", params={"user_id": "u1"}, headers=headers).json()
    took = time.monotonic() - started
    assert body["path"] != "model" and body["reason"] == "model_timeout", body
    assert took < BOUND_S, f"{took:.2f} s: the signature fetch was not bounded by the ranking budget"
