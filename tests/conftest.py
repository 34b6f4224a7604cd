"""Shared fixtures. Tests that need a service or ../shared/data skip with a reason on a developer
machine and fail under CI=true (see `need`)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
ONLINE_RETAIL = SHARED_DATA / "online_retail.csv.gz"


#: Per-test limit (s) for tests marked `training` or `slow`, or using a fixture of SLOW_FIXTURES:
#: those train models or run the daily pipeline, and pytest-timeout counts a fixture's setup in the
#: first test that uses it (setup.cfg's `timeout` holds for the others).
SLOW_TIMEOUT_S = 2400
SLOW_FIXTURES = frozenset({"daily_world", "trained", "tiny_models"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give slow tests SLOW_TIMEOUT_S, unless they set a timeout themselves or `--timeout` was
    given on the command line."""
    if config.getoption("timeout", None) is not None:
        return
    for item in items:
        marked = item.get_closest_marker("training") or item.get_closest_marker("slow")
        slow = marked or SLOW_FIXTURES & set(getattr(item, "fixturenames", ()))
        if slow and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT_S))


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(ok: bool, reason: str) -> None:
    """Skip with `reason` when `ok` is false; under CI the same situation is a failure."""
    if ok:
        return
    if in_ci():
        pytest.fail(f"required in CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def online_retail_file() -> Path:
    need(ONLINE_RETAIL.exists(), f"{ONLINE_RETAIL} is not there (the shared data set)")
    return ONLINE_RETAIL


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh TOWERFLOW_HOME for one test."""
    monkeypatch.setenv("TOWERFLOW_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def lake(home: Path):
    from towerflow.lake import Lake

    return Lake(str(home / "lake"))


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The shared Redis; tests must isolate themselves with `redis_prefix`, never flush it."""
    import redis

    url = os.environ.get("TOWERFLOW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError as err:
        need(False, f"Redis at {url} is not reachable: {err}")
    return url


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix of this test's own on the shared Redis."""
    return f"tftest:{uuid.uuid4().hex[:10]}:"


@pytest.fixture(scope="session")
def spark():
    """One local Spark session for the whole test run: 2 cores, a small heap, few partitions
    (the machine is shared). Tests that use it carry `@pytest.mark.spark`."""
    from jobs.spark import get_spark

    session = get_spark("local[2]", "2g", {"spark.sql.shuffle.partitions": "2"}, app_name="towerflow-tests")
    yield session
    session.stop()


# -- the session's small pipeline run ---------------------------------------------------------

#: A small synthetic world and one `towerflow_daily` run over it, shared by the end-to-end tests.
DAILY_RUN_DATE = "2025-01-22"  # the day after the last synthetic day
DAILY_CONF = {"holdout_days": 5, "epochs": 1}

#: `towerflow data synth` options of that world.
DAILY_SYNTH = {"users": 700, "items": 180, "days": 21, "seed": 9}


@dataclass
class DailyWorld:
    settings: Any  # towerflow.settings.Settings for the run's TOWERFLOW_HOME
    lake: Any  # towerflow.lake.Lake
    run_date: str
    started: datetime  # wall-clock time (UTC) just before the run


def failure_of(log: str, context: int = 4000) -> str:
    """The part of an Airflow run's log that says why it failed: from its first traceback (or
    error line) on, else its end."""
    at = log.find("Traceback")
    if at < 0:
        at = log.find("[error")
    return log[max(at - 500, 0) : at + context] if at >= 0 else log[-context:]


@pytest.fixture(scope="session")
def daily_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DailyWorld]:
    """Synthetic data imported and `towerflow_daily` run once through Airflow for the session:
    tables, features materialized up to the run date, models published as version 1."""
    from typer.testing import CliRunner

    from towerflow.airflow_runner import run_dag
    from towerflow.cli import app
    from towerflow.lake import Lake
    from towerflow.settings import Settings

    home = tmp_path_factory.mktemp("daily")
    old = os.environ.get("TOWERFLOW_HOME")
    os.environ["TOWERFLOW_HOME"] = str(home)
    try:
        options = [part for name, value in DAILY_SYNTH.items() for part in (f"--{name}", str(value))]
        result = CliRunner().invoke(app, ["data", "synth", *options])
        assert result.exit_code == 0, result.output
        settings = Settings()
        started = datetime.now(UTC)
        ok, log = run_dag(settings, "towerflow_daily", DAILY_RUN_DATE, DAILY_CONF)
        assert ok, failure_of(log.read_text())
        yield DailyWorld(settings, Lake(settings.lake), DAILY_RUN_DATE, started)
    finally:
        if old is None:
            os.environ.pop("TOWERFLOW_HOME", None)
        else:
            os.environ["TOWERFLOW_HOME"] = old
