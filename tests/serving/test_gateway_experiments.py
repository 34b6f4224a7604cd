"""The gateway serves the experiments of its store (experiments/): read at start and re-read in
the background, so one started or stopped with the store (or `towerflow experiments`) applies
within seconds, without a restart. Each test has an experiments database of its own (SQLite).

Most tests use a gateway without Redis and with an unreachable model server (popular items are
served, but every request is still assigned an arm); the one that checks an arm's models are the
ones served runs on the real hot path (tests/serving/conftest.py)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from experiments.store import ExperimentStore

#: A salt under which gw.USERS fall into both arms of a 50/50 split (checked where it matters).
SALT = "gateway-tests"
PINNED = {"retrieval": "1", "ranking": "1"}
HALVES = [{"name": "control", "share": 50}, {"name": "treatment", "share": 50, "models": PINNED}]


@pytest.fixture
def bare_settings(tmp_path: Path, gw, gateway_home) -> Any:
    return gateway_home.settings(
        lake_uri=gateway_home.own_lake(tmp_path),
        database_url=f"sqlite:///{tmp_path / 'experiments.sqlite3'}",
        experiments_refresh_s=0.2,
        redis_url=None,
        feature_env="embedded",
        model_server_target=f"127.0.0.1:{gw.free_port()}",
        jwt_key=gw.SECRET,
        impressions_flush_s=60,
    )


@pytest.fixture
def store(bare_settings) -> Iterator[ExperimentStore]:
    opened = ExperimentStore.open(bare_settings.experiments_db_url)
    yield opened
    opened.close()


@pytest.fixture
def start(bare_settings, gw) -> Iterator[Callable[..., Any]]:
    started: list[Any] = []

    def make(**overrides: Any) -> Any:
        client = gw.start_client(bare_settings.model_copy(update=overrides))
        started.append(client)
        return client

    yield make
    for client in started:
        client.__exit__(None, None, None)


def get(client, gw, user: str, *, scopes: str = "recommend:any", arm: str | None = None):
    headers = gw.auth(scopes) | ({"X-Experiment-Arm": arm} if arm is not None else {})
    return client.get("/v1/recommendations", params={"user_id": user}, headers=headers)


def served(client, gw, user: str, **kwargs: Any) -> tuple[dict, str]:
    """(the body's `experiment`, the `X-Experiment-Arm` header) of a 200 response."""
    response = get(client, gw, user, **kwargs)
    assert response.status_code == 200, response.text
    return response.json()["experiment"], response.headers["x-experiment-arm"]


def wait_for_experiment(client, gw, experiment_id: str, timeout_s: float = 10.0) -> float:
    """Seconds until a request is served by `experiment_id`."""
    started = time.monotonic()
    while served(client, gw, "u1")[0]["id"] != experiment_id:
        assert time.monotonic() - started < timeout_s, f"experiment {experiment_id} not served after {timeout_s} s"
        time.sleep(0.05)
    return time.monotonic() - started


def test_without_an_experiment_every_user_is_control(start, gw) -> None:
    client = start()
    for user in gw.USERS:
        assert served(client, gw, user) == ({"id": "default", "arm": "control"}, "control")


def test_an_experiment_started_or_stopped_applies_within_seconds(start, store, gw) -> None:
    client = start()
    assert served(client, gw, "u1")[0]["id"] == "default"

    created = store.create(name="pinned v1", arms=HALVES, salt=SALT)
    assert wait_for_experiment(client, gw, created.id) < 5
    arms = {}
    for user in gw.USERS:
        body, header = served(client, gw, user)
        assert body == {"id": created.id, "arm": header} and header == created.assign(user).name
        assert served(client, gw, user)[1] == header  # sticky
        arms[user] = header
    assert set(arms.values()) == {"control", "treatment"}

    store.stop(created.id, decision="inconclusive")
    assert wait_for_experiment(client, gw, "default") < 5
    assert served(client, gw, "u1") == ({"id": "default", "arm": "control"}, "control")


def test_an_experiment_running_at_start_serves_the_first_request(start, store, gw) -> None:
    created = store.create(name="pinned v1", arms=HALVES, salt=SALT)
    client = start(experiments_refresh_s=3600)  # no background re-read during the test
    assert served(client, gw, "u0")[0] == {"id": created.id, "arm": created.assign("u0").name}


def test_forcing_an_arm_needs_the_experiments_admin_scope(start, store, gw) -> None:
    created = store.create(name="pinned v1", arms=HALVES, salt=SALT)
    user = next(u for u in gw.USERS if created.assign(u).name == "control")
    client = start()
    pending = client.app.state.resources.impressions.pending

    refused = get(client, gw, user, arm="treatment")
    assert refused.status_code == 403, refused.text
    assert "experiments:admin" in refused.json()["message"]
    assert 'scope="experiments:admin"' in refused.headers["WWW-Authenticate"]

    admin = "recommend:any experiments:admin"
    assert served(client, gw, user, scopes=admin, arm="treatment") == (
        {"id": created.id, "arm": "treatment"},
        "treatment",
    )
    assert served(client, gw, user, scopes=admin) == ({"id": created.id, "arm": "control"}, "control")  # not sticky
    unknown = get(client, gw, user, scopes=admin, arm="canary")
    assert unknown.status_code == 422
    assert "x-experiment-arm" in unknown.json()["message"] and "control, treatment" in unknown.json()["message"]
    # Only the unforced request is an impression: a forced arm is no random assignment.
    assert client.app.state.resources.impressions.pending == pending + 1


def test_the_gateway_serves_on_while_its_experiments_store_is_down(start, gw) -> None:
    client = start(database_url="postgresql://towerflow@127.0.0.1:9/experiments")
    assert served(client, gw, "u1") == ({"id": "default", "arm": "control"}, "control")
    assert client.get("/healthz").status_code == 200


@pytest.mark.integration
def test_each_arm_is_served_by_its_models(make_client, gw, gateway_settings) -> None:
    """On the real hot path: an arm pinned to version 1 names it, and so does `stable` (the only
    version published), each user in the arm the experiment gives it, on every request."""
    with ExperimentStore.open(gateway_settings.experiments_db_url) as store:
        created = store.create(name="pinned v1", arms=HALVES, salt=SALT)
    client = make_client()
    seen = {}
    for user in gw.USERS:
        response = get(client, gw, user)
        body = response.json()
        assert body["path"] == "model", body
        assert body["model_versions"]["retrieval"] == body["model_versions"]["ranking"] == "1"
        assert body["experiment"] == {"id": created.id, "arm": created.assign(user).name}
        assert response.headers["x-experiment-arm"] == body["experiment"]["arm"]
        seen[user] = body["experiment"]["arm"]
    assert set(seen.values()) == {"control", "treatment"}
