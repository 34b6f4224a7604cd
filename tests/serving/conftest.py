"""Gateway fixtures: the real hot path. A small world's gold tables (testsupport.feature_samples)
applied and materialized through Feast, into the shared Redis (under a project of this session's
own) and into the embedded SQLite store; a tiny model trained on the same world with models.train
over Feast's point-in-time lookup, exported by models.export and published with models.registry,
behind an in-process model server; apps built by `create_app`, which open `FastFeatureReader` over
the online store themselves.

The world (`gw.world`): users `u0`..`u299`, items `i0`..`i59` in six categories (`i<n>` is in
`CATEGORIES[n % 6]`, and the n-th most popular); i7 and i8 are unavailable. Users `u0`..`u9` did
nothing but buy five items each (u0: i0..i4, u1: i5..i9, ...); `nobody` is unknown (cold start).
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from testsupport.feature_samples import SampleWorld, sample_world

N_USERS, N_ITEMS, DAYS = 300, 60, 14
USERS = [f"u{n}" for n in range(10)]
#: What each of USERS bought (and nothing else).
PLANTED = {user: [f"i{(5 * n + j) % N_ITEMS}" for j in range(5)] for n, user in enumerate(USERS)}
UNAVAILABLE = {"i7", "i8"}
SECRET = "test-secret-for-gateway-tests-0123456789"
#: Budgets no busy shared machine misses, so a request takes the path its test is about; tests
#: about budgets set their own.
BUDGETS_MS = {
    "retrieval_timeout_ms": 5000,
    "ranking_timeout_ms": 5000,
    "features_timeout_ms": 5000,
    "redis_timeout_ms": 2000,
}
#: Seconds each session fixture took to set up, for the summary at the end of the run.
SETUP_SECONDS: dict[str, float] = {}


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if SETUP_SECONDS:
        parts = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in SETUP_SECONDS.items())
        terminalreporter.write_line(f"gateway fixtures set up in: {parts}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def build_world() -> SampleWorld:
    return sample_world(users=N_USERS, items=N_ITEMS, days=DAYS, seed=7, planted=PLANTED, unavailable=UNAVAILABLE)


def item_columns(world: SampleWorld) -> dict[str, list[Any]]:
    """The world's items as the reader's item columns on the last day (for unit tests that need
    a catalog but no store)."""
    import pandas as pd

    items = world.items
    age = (pd.Timestamp(world.end) - pd.to_datetime(items["created_at"], utc=True)) / pd.Timedelta(days=1)
    return {
        "item_id": items["item_id"].tolist(),
        "item_features__popularity": items["popularity"].tolist(),
        "item_features__age_days": age.tolist(),
        "item_features__category": items["category"].tolist(),
        "item_features__available": items["available"].tolist(),
    }


def open_reader(settings: Any, service: str = "ranking") -> Any:
    """A `FastFeatureReader` over `settings`' online store (as the gateway opens it)."""
    from features.reader import FastFeatureReader
    from features.store import feature_store

    env = "redis" if settings.redis_url else "embedded"
    return FastFeatureReader(feature_store(settings, env), service)


def token(scopes: str = "recommend:any", *, subject: str = "app", key: str = SECRET, **kwargs: Any) -> str:
    """A service token by default (it reads any user's recommendations); pass `subject=<user>`
    and `"recommend:read"` for a user token."""
    from serving.gateway.auth import mint_token

    return mint_token(key, subject=subject, scopes=scopes.split(), **kwargs)


def auth(scopes: str = "recommend:any", **kwargs: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(scopes, **kwargs)}"}


@pytest.fixture(scope="session")
def gw() -> SimpleNamespace:
    """This folder's helpers and the world's truth (test modules cannot import each other under
    --import-mode=importlib)."""
    world = build_world()
    categories = dict(zip(world.items["item_id"], world.items["category"], strict=True))
    return SimpleNamespace(
        world=world,
        ITEMS=world.item_ids,
        USERS=USERS,
        UNAVAILABLE=UNAVAILABLE,
        SECRET=SECRET,
        category_of=categories.__getitem__,
        owned=world.owned,
        item_columns=lambda: item_columns(world),
        free_port=free_port,
        open_reader=open_reader,
        start_client=start_client,
        token=token,
        auth=auth,
    )


# -- the session's world: gold tables, online stores, the tiny model ---------------------------


@dataclass
class GatewayHome:
    """The session's TOWERFLOW_HOME: gold tables in its lake, Feast registries, the model base."""

    home: Path
    project: str  # the Feast project: suffixes every online key of this session
    world: SampleWorld

    def settings(self, **overrides: Any) -> Any:
        from towerflow.settings import Settings

        return Settings(**{"home": self.home, "feast_project": self.project, **overrides})

    def own_lake(self, folder: Path) -> str:
        """A lake of a test's own (its bronze/impressions) that reads the session's gold tables,
        where the gateway's item snapshot finds the catalog's ids."""
        lake = folder / "lake"
        lake.mkdir(parents=True, exist_ok=True)
        (lake / "gold").symlink_to(self.home / "lake" / "gold", target_is_directory=True)
        return str(lake)


@pytest.fixture(scope="session")
def gateway_home(tmp_path_factory: pytest.TempPathFactory, gw) -> Iterator[GatewayHome]:
    """The world's gold tables, applied and materialized into the embedded (SQLite) store."""
    from jobs import feature_store as fs
    from testsupport.feature_samples import write_world_gold
    from towerflow.lake import Lake

    started = time.perf_counter()
    found = GatewayHome(tmp_path_factory.mktemp("gateway-world") / "home", f"tfgw_{uuid.uuid4().hex[:10]}", gw.world)
    settings = found.settings(redis_url=None)
    write_world_gold(Lake(settings.lake), gw.world)
    store = fs.feature_store(settings, "embedded")
    fs.apply(store)
    fs.materialize(store, gw.world.end)
    SETUP_SECONDS["gold + SQLite store"] = time.perf_counter() - started
    yield found
    fs.delete_online_project(store)


@pytest.fixture(scope="session")
def redis_store(gateway_home: GatewayHome, redis_url: str) -> Iterator[Any]:
    """The world materialized into the shared Redis under the session's project (its keys are
    deleted afterwards; Redis is never flushed)."""
    from jobs import feature_store as fs

    started = time.perf_counter()
    settings = gateway_home.settings(redis_url=redis_url)
    store = fs.feature_store(settings, "redis")
    try:
        fs.apply(store)
        fs.materialize(store, gateway_home.world.end)
        SETUP_SECONDS["Redis store"] = time.perf_counter() - started
        yield store
    finally:
        fs.delete_online_project(store)


@dataclass
class TinyModels:
    models_dir: Path  # the model base, version 1 published (stable)
    staged: dict[str, Path]  # the exported SavedModels, to publish elsewhere too
    meta: dict[str, Any]


@pytest.fixture(scope="session")
def tiny_models(gateway_home: GatewayHome) -> TinyModels:
    """Retrieval and ranking trained once on the world (1 epoch, dim 8) with Feast's
    point-in-time lookup, exported and published as version 1."""
    from features.store import feature_store
    from models.data import catalog_from_frame
    from models.export import export
    from models.lookup import FeastLookup
    from models.registry import publish
    from models.train import TrainingData, TrainParams, train

    started = time.perf_counter()
    world = gateway_home.world
    settings = gateway_home.settings(redis_url=None)
    params = TrainParams(
        retrieval_epochs=1, ranking_epochs=1, dim=8, batch_size=256, rank_candidates=N_ITEMS, rank_rows=N_ITEMS, seed=3
    )
    data = TrainingData(
        world.examples(), catalog_from_frame(world.items), FeastLookup(feature_store(settings, "embedded"))
    )
    trained = train(data, world.end, 3, params)
    meta = {"fingerprint": f"gateway-tests-{gateway_home.project}"}
    staged = export(trained, gateway_home.home / "staged", world.end, meta)
    publish(settings.models_dir, staged, meta)
    SETUP_SECONDS["training + export"] = time.perf_counter() - started
    return TinyModels(settings.models_dir, staged, meta)


@pytest.fixture(scope="session")
def model_server(tiny_models: TinyModels) -> Iterator[str]:
    """An in-process model server over the tiny model (it warms each signature up before it
    says AVAILABLE); yields its `host:port`."""
    from serving.model_server import ModelManager, ModelServer
    from serving.tfs_client import ModelClient

    started = time.perf_counter()
    server = ModelServer(ModelManager(tiny_models.models_dir, poll_seconds=30), port=0, host="127.0.0.1", max_workers=4)
    target = f"127.0.0.1:{server.start()}"
    with ModelClient(target, timeout=60) as client:
        for model in ("retrieval", "ranking"):
            client.wait_until_available(model, timeout=120)
    SETUP_SECONDS["model server"] = time.perf_counter() - started
    yield target
    server.stop(grace=1)


@pytest.fixture
def own_project(gateway_home: GatewayHome, redis_url: str) -> Iterator[str]:
    """The world materialized into Redis under a Feast project of the test's own: a test whose
    stream worker pushes online features touches no other test's users."""
    from jobs import feature_store as fs

    project = f"tfown_{uuid.uuid4().hex[:8]}"
    store = fs.feature_store(gateway_home.settings(redis_url=redis_url, feast_project=project), "redis")
    fs.apply(store)
    fs.materialize(store, gateway_home.world.end)
    yield project
    fs.delete_online_project(store)


@pytest.fixture
def bare_client(tmp_path: Path, gw, gateway_home: GatewayHome) -> Iterator[Callable[..., Any]]:
    """`make(**settings)`: a started gateway of the test's own without Redis: SQLite experiments
    database, a local event stream and a lake of its own, an unreachable model server (popular
    items, every request still assigned an arm). For experiments and the stream worker."""
    started: list[Any] = []

    def make(**overrides: Any) -> Any:
        settings = gateway_home.settings(
            lake_uri=gateway_home.own_lake(tmp_path),
            database_url=f"sqlite:///{tmp_path / 'experiments.sqlite3'}",
            experiments_refresh_s=0.1,
            redis_url=None,
            feature_env="embedded",
            stream_name=f"events-{uuid.uuid4().hex[:8]}",  # the session's home is shared: a stream of its own
            model_server_target=f"127.0.0.1:{gw.free_port()}",
            jwt_key=gw.SECRET,
            impressions_flush_s=0.1,
            **overrides,
        )
        started.append(gw.start_client(settings))
        return started[-1]

    yield make
    for client in started:
        client.__exit__(None, None, None)


# -- apps ----------------------------------------------------------------------------------------


@pytest.fixture
def gateway_settings(
    tmp_path: Path, gateway_home: GatewayHome, redis_store, redis_url: str, redis_prefix: str, model_server: str
):
    """The session's home and Feast project with the shared Redis; a lake of this test's own
    (impressions), its own experiments database and Redis key prefix."""
    return gateway_home.settings(
        lake_uri=gateway_home.own_lake(tmp_path),
        database_url=f"sqlite:///{tmp_path / 'experiments.sqlite3'}",
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        feature_env="redis",
        model_server_target=model_server,
        jwt_key=SECRET,
        impressions_flush_s=60,
        **BUDGETS_MS,
    )


def start_client(settings: Any, reader: Any = None) -> Any:
    """A started TestClient over `create_app(settings)`: the app opens its own reader over the
    online store, or uses `reader`; either way its catalog is built from the reader's snapshot."""
    from fastapi.testclient import TestClient

    from serving.gateway.main import create_app

    app = create_app(settings, open_feature_store=reader is None)
    client = TestClient(app)
    client.__enter__()
    resources = app.state.resources
    if reader is not None:
        resources.reader = reader
        resources.refresh_catalog()
    if resources.reader is None or not len(resources.recommender.catalog):
        client.__exit__(None, None, None)
        raise AssertionError(f"the gateway did not open its online store ({settings.feast_project})")
    return client


@pytest.fixture
def make_client(gateway_settings, redis_url: str, redis_prefix: str):
    """`make(reader=None, **settings)`: a started TestClient over `create_app` with the gateway
    settings (overridable); `reader` replaces the reader the app would open."""
    opened: list[Any] = []

    def make(reader: Any = None, **overrides: Any) -> Any:
        client = start_client(gateway_settings.model_copy(update=overrides), reader)
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)
    _delete_prefix(redis_url, redis_prefix)


def _delete_prefix(url: str, prefix: str) -> None:
    """Remove this test's keys from the shared Redis (never a flush)."""
    import redis

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture
def client(make_client):
    return make_client()


@pytest.fixture
def delay_proxy():
    """Start a `DelayProxy` (tests/serving/tcp_proxy.py) in front of `host:port`: it forwards to
    the real service and holds each chunk `proxy.delay` seconds, settable at runtime. Every proxy
    started here is stopped after the test."""
    from tests.serving.tcp_proxy import DelayProxy

    started: list[DelayProxy] = []

    def start(host: str, port: int, delay: float = 0.0) -> DelayProxy:
        proxy = DelayProxy(host, port, delay=delay).start()
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()
