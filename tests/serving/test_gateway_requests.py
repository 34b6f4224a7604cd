"""What the gateway refuses, says or keeps without any service up: whose recommendations a token
reads, unknown categories, request sizes, validation messages, where a topped-up list came from,
readiness in plain words, and impression batches that land once across retries.

The app here has no Redis and an unreachable model server: it reads the world's features from the
embedded (SQLite) online store, and requests serve popular items."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest

from serving.tfs_client import VersionStatus


@pytest.fixture
def bare(tmp_path: Path, gw, gateway_home):
    settings = gateway_home.settings(
        lake_uri=gateway_home.own_lake(tmp_path),
        database_url=f"sqlite:///{tmp_path / 'experiments.sqlite3'}",
        redis_url=None,
        feature_env="embedded",
        model_server_target=f"127.0.0.1:{gw.free_port()}",
        jwt_key=gw.SECRET,
        impressions_flush_s=60,
    )
    client = gw.start_client(settings)
    yield client
    client.__exit__(None, None, None)


def get(client, headers, **params):
    return client.get("/v1/recommendations", params=params, headers=headers)


# -- whose recommendations a token reads ---------------------------------------------------------


def test_a_user_token_reads_only_its_own_user(bare, gw) -> None:
    own = gw.auth("recommend:read", subject="u1")
    assert get(bare, own, user_id="u1").status_code == 200
    other = get(bare, own, user_id="u2")
    assert other.status_code == 403, other.text
    message = other.json()["message"]
    assert "'u1'" in message and "'u2'" in message and "recommend:any" in message
    assert 'scope="recommend:any"' in other.headers["WWW-Authenticate"]
    service = gw.auth("recommend:any", subject="shop-frontend")
    assert get(bare, service, user_id="u2").status_code == 200
    assert get(bare, gw.auth("events:write", subject="u1"), user_id="u1").status_code == 403


def test_a_token_reads_its_subject_unless_it_may_read_anyone() -> None:
    from serving.gateway.auth import ANY_USER, AuthError, Principal, check_user

    user = Principal("u1", frozenset({"recommend:read"}), "t1")
    check_user(user, "u1")
    with pytest.raises(AuthError) as err:
        check_user(user, "u2")
    assert err.value.status == 403 and "recommend:any" in err.value.message
    check_user(Principal("shop", frozenset({ANY_USER}), "t2"), "u2")


def test_token_cli_mints_user_and_service_tokens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from serving.gateway.auth import TokenVerifier
    from towerflow.cli import app
    from towerflow.settings import Settings

    monkeypatch.setenv("TOWERFLOW_HOME", str(tmp_path))
    monkeypatch.delenv("TOWERFLOW_JWT_KEY", raising=False)
    verifier = TokenVerifier(Settings(home=tmp_path))

    def mint(*args: str) -> object:
        result = CliRunner().invoke(app, ["token", *args])
        assert result.exit_code == 0, result.output
        return verifier.verify(result.stdout.strip().splitlines()[-1])

    user = mint("--user", "bob")
    assert user.subject == "bob" and user.scopes == {"recommend:read"}
    service = mint("--service", "shop-frontend")
    assert service.subject == "shop-frontend" and service.scopes == {"recommend:any"}
    assert CliRunner().invoke(app, ["token"]).exit_code != 0
    assert CliRunner().invoke(app, ["token", "--user", "bob", "--service", "shop"]).exit_code != 0
    usage = CliRunner().invoke(app, ["token", "--help"], env={"COLUMNS": "200"}).output
    assert "recommend:any" in usage and "--service" in usage


# -- categories ------------------------------------------------------------------------------------


def test_an_unknown_category_is_422_naming_it(bare, gw) -> None:
    from scoring.catalog import EMPTY

    headers = gw.auth()
    unknown = get(bare, headers, user_id="nobody", category="Gardn")
    assert unknown.status_code == 422, unknown.text
    message = unknown.json()["message"]
    assert message.startswith("category: ") and "'Gardn'" in message and "garden" in message
    known = get(bare, headers, user_id="nobody", category="GARDEN", count=3)
    assert known.status_code == 200 and [i["item_id"] for i in known.json()["items"]] == ["i0", "i6", "i12"]
    bare.app.state.resources.recommender.catalog = EMPTY  # not loaded yet: nothing to judge by
    assert get(bare, headers, user_id="nobody", category="Gardn").status_code == 200


# -- sizes and messages ------------------------------------------------------------------------------


def test_each_validation_error_is_reported_once(bare, gw) -> None:
    one = get(bare, gw.auth(), user_id="u1", count=0)
    assert one.status_code == 422
    assert one.json()["message"] == "count: Input should be greater than or equal to 1"
    assert len(one.json()["detail"]) == 1
    two = get(bare, gw.auth(), count="abc")
    parts = two.json()["message"].split("; ")
    assert len(parts) == 2 and {p.split(":")[0] for p in parts} == {"user_id", "count"}


@pytest.mark.parametrize(
    ("params", "field", "needle"),
    [
        ({"user_id": "u" * 129}, "user_id", "128 characters"),
        ({"user_id": "u1", "category": "c" * 129}, "category", "128 characters"),
        ({"user_id": "u1", "exclude": ",".join(f"i{n}" for n in range(1001))}, "exclude", "1000"),
        ({"user_id": "u1", "exclude": [f"i{n}" for n in range(1001)]}, "exclude", "1000"),
        ({"user_id": "u1", "exclude": "i1," + "x" * 129}, "exclude", "128 characters"),
    ],
)
def test_request_sizes_are_bounded(bare, gw, params: dict, field: str, needle: str) -> None:
    response = get(bare, gw.auth(), **params)
    assert response.status_code == 422, response.text
    message = response.json()["message"]
    assert message.startswith(f"{field}: ") and message.count(f"{field}:") == 1 and needle in message


# -- where the items came from ---------------------------------------------------------------------


def test_a_topped_up_list_says_where_its_items_came_from(gw) -> None:
    from scoring.catalog import Catalog
    from serving.gateway.metrics import GatewayMetrics
    from serving.gateway.recommender import MODEL, POPULAR, Recommender, RuleConfig, Served, Timeouts

    recommender = Recommender(
        runner=None,
        redis=None,
        prefix="t:",
        rules=RuleConfig(count=10),
        timeouts=Timeouts(),
        metrics=GatewayMetrics(),
        executor=None,
        breakers={},
    )
    recommender.catalog = Catalog.from_columns(gw.item_columns())
    served = Served("r", "u1", [("i5", 0.9), ("i0", 0.8)], MODEL, None, "default", "control")
    done = recommender._done(served, {}, RuleConfig(count=5))
    assert [i for i, _ in done.items] == ["i5", "i0", "i1", "i2", "i3"]
    assert done.sources == {MODEL: 2, POPULAR: 3}
    full = Served("r", "u1", [(f"i{n}", 1.0) for n in range(5)], MODEL, None, "default", "control")
    assert recommender._done(full, {}, RuleConfig(count=5)).sources == {MODEL: 5}


def test_without_redis_configured_no_redis_errors_are_counted(bare, gw) -> None:
    """Embedded mode has no Redis by design: no rate limits and no precomputed lists, but no
    failures either (the model server, down in this fixture, is counted)."""
    from prometheus_client.parser import text_string_to_metric_families

    for n in range(5):
        assert bare.get("/v1/recommendations", params={"user_id": f"u{n}"}, headers=gw.auth()).status_code == 200
    errors = {
        sample.labels["dependency"]: sample.value
        for family in text_string_to_metric_families(bare.get("/metrics").text)
        for sample in family.samples
        if sample.name == "towerflow_gateway_dependency_errors_total"
    }
    assert errors.get("redis", 0) == 0 and errors.get("model_server", 0) > 0, errors


def test_the_response_counts_its_items_per_source(bare, gw) -> None:
    from serving.gateway.schemas import RecommendationResponse

    response = get(bare, gw.auth(), user_id="nobody", count=4)
    assert response.status_code == 200
    body = RecommendationResponse.model_validate_json(response.content)
    assert body.path == "fallback_popular" and body.sources == {"fallback_popular": 4}


# -- readiness in plain words ------------------------------------------------------------------------


def test_readiness_names_what_is_down_in_plain_words(bare) -> None:
    ready = bare.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["retrieval"] == "unreachable"
    assert ready.json()["checks"]["ranking"] == "unreachable"


class _Models:
    def __init__(self, answer) -> None:
        self.answer = answer

    async def status(self, name: str, timeout: float) -> list[VersionStatus]:
        if isinstance(self.answer, BaseException):
            raise self.answer
        return [VersionStatus(version, state) for version, state in self.answer]


class _Redis:
    def __init__(self, error: BaseException) -> None:
        self.error = error

    async def ping(self) -> None:
        raise self.error


class _SlowReader:
    def user_features(self, user_id: str) -> None:
        import time

        time.sleep(0.3)


class _BrokenReader:
    def user_features(self, user_id: str) -> None:
        raise ConnectionRefusedError(111, "Connection refused")


def test_readiness_checks_say_unreachable_timed_out_or_no_version(monkeypatch: pytest.MonkeyPatch) -> None:
    import grpc
    from redis.exceptions import ConnectionError as RedisConnectionError

    from serving.gateway.routes import health

    class Unavailable(grpc.RpcError):
        def code(self) -> grpc.StatusCode:
            return grpc.StatusCode.UNAVAILABLE

    class Deadline(grpc.RpcError):
        def code(self) -> grpc.StatusCode:
            return grpc.StatusCode.DEADLINE_EXCEEDED

    monkeypatch.setattr(health, "CHECK_TIMEOUT_S", 0.05)

    async def no_refusal(reader, name: str) -> None:
        return None

    def model(answer) -> str:
        resources = SimpleNamespace(model_client=_Models(answer), recommender=SimpleNamespace(refusal=no_refusal))
        return asyncio.run(health._model(resources, "retrieval", None))

    assert model([(1, "LOADING"), (2, "AVAILABLE")]) == "ok"
    assert model(Unavailable()) == "unreachable"
    assert model(Deadline()) == "timed out"
    assert model(TimeoutError()) == "timed out"
    assert model([(3, "LOADING")]) == "no version AVAILABLE (version 3 is LOADING)"
    assert model([]) == "no version AVAILABLE"
    assert model(ValueError("bad proto")) == "error (see the gateway log)"
    redis = SimpleNamespace(redis=_Redis(RedisConnectionError("Error 111 connecting")))
    assert asyncio.run(health._redis(redis)) == "unreachable"
    assert asyncio.run(health._redis(SimpleNamespace(redis=_Redis(TimeoutError())))) == "timed out"
    assert asyncio.run(health._online_store(None, _BrokenReader())) == "unreachable"
    assert asyncio.run(health._online_store(None, _SlowReader())) == "timed out"


# -- impressions -----------------------------------------------------------------------------------


class _FailingStream:
    """A real local stream whose first append fails: after the records landed (`landed=True`, as
    when the confirmation is lost) or before."""

    def __init__(self, stream, *, landed: bool) -> None:
        self.stream = stream
        self.landed = landed
        self.calls = 0

    def append(self, records):
        from streams.base import StreamError

        self.calls += 1
        if self.calls == 1 and not self.landed:
            raise StreamError("connection reset before the append")
        self.stream.append(records)
        if self.calls == 1:
            raise StreamError("connection reset after the append")


def _land(stream, tmp_path: Path) -> list[dict]:
    """What the stream worker lands in bronze/impressions from everything on `stream`."""
    from serving.stream_worker.sink import EventSink
    from serving.stream_worker.worker import StreamWorker
    from towerflow.lake import Lake

    lake = Lake(str(tmp_path / "lake"))
    sink = EventSink(lake, lake.uri("bronze", "events"), lake.uri("bronze", "impressions"))
    worker = StreamWorker(stream=stream, sink=sink, online=None, poll_s=0.05)
    while worker.step():
        pass
    table = lake.read(lake.uri("bronze", "impressions"))
    return [] if table is None else table.to_pylist()


def _log(logger, request_id: str, n: int) -> None:
    logger.log(
        request_id=request_id,
        user_id="u1",
        items=[(f"i{k}", float(k)) for k in range(n)],
        path="model",
        experiment_id="default",
        arm="control",
        model_versions={"retrieval": "1", "ranking": "1"},
    )


@pytest.mark.parametrize("landed", [True, False], ids=["fails-after-append", "fails-before-append"])
def test_a_retried_impression_batch_lands_once(tmp_path: Path, landed: bool) -> None:
    from serving.gateway.impressions import ImpressionLogger
    from streams.local import LocalEventStream

    stream = LocalEventStream(tmp_path / "streams", "events")
    logger = ImpressionLogger(_FailingStream(stream, landed=landed))

    async def run() -> list[int]:
        _log(logger, "first", 3)
        failed = await logger.flush()
        _log(logger, "second", 2)  # arrives while the first batch waits for its retry
        return [failed, logger.pending, await logger.flush(), logger.pending]

    assert asyncio.run(run()) == [0, 2, 2, 0]
    rows = _land(stream, tmp_path)
    assert sorted((r["request_id"], r["item_id"], r["position"]) for r in rows) == sorted(
        [("first", f"i{k}", k + 1) for k in range(3)] + [("second", f"i{k}", k + 1) for k in range(2)]
    )


def test_impressions_over_the_cap_drop_the_oldest(tmp_path: Path) -> None:
    from serving.gateway.impressions import ImpressionLogger
    from streams.local import LocalEventStream

    class Down:
        def append(self, records):
            from streams.base import StreamError

            raise StreamError("unreachable")

    logger = ImpressionLogger(Down(), max_records=2)

    async def run() -> None:
        for request in ("a", "b", "c"):
            _log(logger, request, 2)
            await logger.flush()
        logger.stream = LocalEventStream(tmp_path / "streams", "events")
        await logger.flush()

    asyncio.run(run())
    rows = _land(logger.stream, tmp_path)
    assert sorted({r["request_id"] for r in rows}) == ["b", "c"]
