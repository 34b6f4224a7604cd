"""Gateway fixtures: a small catalog in an in-memory feature reader, contract toy models behind an
in-process model server, and apps built against the shared Redis under a unique key prefix.

Users `u0`..`u9` have features (u0 has acted on i0..i4); `nobody` has none (cold start). Items
`i0`..`i59` span six categories; i7 and i8 are unavailable.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

CATEGORIES = ("garden", "kitchen", "toys", "books", "lighting", "gifts")
ITEMS = [f"i{n}" for n in range(60)]
USERS = [f"u{n}" for n in range(10)]
UNAVAILABLE = {"i7", "i8"}
SECRET = "test-secret-for-gateway-tests-0123456789"
USER_COLUMNS = ["user_features__views_7d", "user_features__purchases_30d", "user_recent__last_10_items"]
ITEM_COLUMNS = [
    "item_features__popularity",
    "item_features__age_days",
    "item_features__category",
    "item_features__available",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sample_users() -> dict[str, dict[str, Any]]:
    users = {}
    for n, user in enumerate(USERS):
        recent = [f"i{(n * 5 + j) % 60}" for j in range(5)]
        users[user] = {
            "user_features__views_7d": 3 * n,
            "user_features__purchases_30d": n % 4,
            "user_recent__last_10_items": recent,
        }
    return users


def sample_items() -> dict[str, dict[str, Any]]:
    return {
        item: {
            "item_features__popularity": float(100 - n),
            "item_features__age_days": float(n * 7),
            "item_features__category": CATEGORIES[n % len(CATEGORIES)],
            "item_features__available": item not in UNAVAILABLE,
        }
        for n, item in enumerate(ITEMS)
    }


def fake_reader():
    from serving.feature_reader import InMemoryFeatureReader

    return InMemoryFeatureReader(sample_users(), sample_items(), USER_COLUMNS, ITEM_COLUMNS)


def catalog_of(reader) -> Any:
    from serving.catalog import Catalog

    return Catalog.from_columns(reader.item_features(ITEMS))


def token(scopes: str = "recommend:any", *, subject: str = "app", key: str = SECRET, **kwargs: Any) -> str:
    """A service token by default (it reads any user's recommendations); pass `subject=<user>`
    and `"recommend:read"` for a user token."""
    from serving.auth import mint_token

    return mint_token(key, subject=subject, scopes=scopes.split(), **kwargs)


def auth(scopes: str = "recommend:any", **kwargs: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(scopes, **kwargs)}"}


@pytest.fixture(scope="session")
def gw() -> SimpleNamespace:
    """This folder's helpers (test modules cannot import each other under --import-mode=importlib)."""
    return SimpleNamespace(
        ITEMS=ITEMS,
        USERS=USERS,
        UNAVAILABLE=UNAVAILABLE,
        CATEGORIES=CATEGORIES,
        SECRET=SECRET,
        free_port=free_port,
        sample_users=sample_users,
        sample_items=sample_items,
        fake_reader=fake_reader,
        catalog_of=catalog_of,
        token=token,
        auth=auth,
    )


@pytest.fixture(scope="session")
def contract_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Contract toy models (retrieval over ITEMS, ranking) published under a model base."""
    from serving.toy_models import publish_contract_pair

    base = tmp_path_factory.mktemp("gateway-models") / "models"
    publish_contract_pair(base, ITEMS, dim=8, k=1000)
    return base


@pytest.fixture(scope="session")
def model_server(contract_models: Path) -> Iterator[str]:
    """An in-process model server over the contract toys; yields its `host:port`."""
    from serving.model_server import ModelManager, ModelServer

    server = ModelServer(ModelManager(contract_models, poll_seconds=30), port=0, host="127.0.0.1", max_workers=4)
    port = server.start()
    warm_up(f"127.0.0.1:{port}")
    yield f"127.0.0.1:{port}"
    server.stop(grace=1)


def warm_up(target: str) -> None:
    """One Predict per model, so the first request of a test does not pay TF's first-call cost
    (a cold call can exceed the gateway's stage budget and degrade that request)."""
    import numpy as np

    from serving.model_client import ModelClient

    with ModelClient(target, timeout=60) as client:
        for model in ("retrieval", "ranking"):
            client.wait_until_available(model, timeout=120)
        client.predict(
            "retrieval",
            {
                "user_id": np.array([b"u0"], dtype=object),
                "user_recent__last_10_items": np.array([[b""] * 10], dtype=object),
                "user_features__views_7d": np.zeros(1, np.float32),
                "hour_of_day": np.zeros(1, np.int64),
            },
        )
        client.predict(
            "ranking",
            {
                "user_id": np.array([b"u0"], dtype=object),
                "item_id": np.array([[b"i0", b"i1"]], dtype=object),
                "retrieval_score": np.zeros((1, 2), np.float32),
                "user_features__purchases_30d": np.zeros(1, np.int64),
                "item_features__popularity": np.zeros((1, 2), np.float32),
                "item_features__age_days": np.zeros((1, 2), np.float64),
                "item_features__category": np.array([[b"a", b"b"]], dtype=object),
                "day_of_week": np.zeros(1, np.int64),
            },
        )


@pytest.fixture
def gateway_settings(tmp_path: Path, redis_url: str, redis_prefix: str, model_server: str):
    from towerflow.settings import Settings

    return Settings(
        home=tmp_path / "home",
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        model_server_target=model_server,
        jwt_key=SECRET,
        impressions_flush_s=60,
    )


@pytest.fixture
def make_client(gateway_settings, redis_url: str, redis_prefix: str):
    """Build a TestClient over `create_app(settings)` with the fake reader (or `reader=`); settings
    overridable."""
    from fastapi.testclient import TestClient

    from serving.deps import get_reader
    from serving.main import create_app

    opened: list[TestClient] = []

    def make(reader: Any = None, **overrides: Any) -> TestClient:
        settings = gateway_settings.model_copy(update=overrides)
        reader = reader if reader is not None else fake_reader()
        app = create_app(settings, open_feature_store=False)
        app.dependency_overrides[get_reader] = lambda: reader
        client = TestClient(app)
        client.__enter__()
        app.state.resources.recommender.catalog = catalog_of(reader)
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
