"""The daily DAG through Airflow with PostgreSQL as the metadata DB (as in docker-compose).

Uses a database of its own on the shared PostgreSQL (127.0.0.1:5432, trust auth; override with
TOWERFLOW_TEST_POSTGRES_URL), created here and dropped afterwards. Only the first task runs; the
others are marked successful, so the test checks the orchestration, not the training.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from importlib.util import find_spec
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from jobs.synth import SynthConfig, write_landing
from tests.conftest import need
from towerflow.airflow_runner import run_dag
from towerflow.settings import Settings

ADMIN_URL = os.environ.get("TOWERFLOW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _connect(url: str):
    import psycopg2

    connection = psycopg2.connect(url, connect_timeout=2)
    connection.autocommit = True
    return connection


@pytest.fixture
def airflow_postgres_url() -> Iterator[str]:
    """`postgresql+psycopg2://...` of a fresh database, dropped after the test."""
    import psycopg2

    need(find_spec("asyncpg") is not None, "asyncpg is not installed (Airflow 3 opens an async engine too)")
    try:
        admin = _connect(ADMIN_URL)
    except psycopg2.OperationalError as err:
        need(False, f"PostgreSQL at {ADMIN_URL} is not reachable: {err}")
    name = f"airflow_towerflow_test_{uuid.uuid4().hex[:10]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(ADMIN_URL)
    try:
        yield urlunsplit(("postgresql+psycopg2", parts.netloc, f"/{name}", parts.query, ""))
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def _dag_runs(url: str) -> list[tuple[str, str]]:
    with _connect(url.replace("+psycopg2", "")) as connection, connection.cursor() as cur:
        cur.execute("SELECT dag_id, state FROM dag_run")
        return list(cur.fetchall())


@pytest.mark.integration
def test_daily_run_on_postgres_metadata_db(
    home: Path, lake, airflow_postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_landing(SynthConfig(users=60, items=30, days=3, seed=7), home / "landing" / "synth")
    monkeypatch.setenv("TOWERFLOW_AIRFLOW_DB_URL", airflow_postgres_url)
    settings = Settings()
    assert settings.airflow_db_url == airflow_postgres_url

    ok, log = run_dag(settings, "towerflow_daily", "2025-01-04", only=["ingest_landing"])

    text = log.read_text(errors="replace")
    assert ok, text[-4000:]
    assert "sqlite" not in (settings.airflow_home / ".migrated").read_text()
    assert _dag_runs(airflow_postgres_url) == [("towerflow_daily", "success")]  # recorded in PostgreSQL
    landed = lake.read(lake.uri("bronze", "events"))
    assert landed.num_rows > 0
    assert {str(d) for d in landed.column("event_date").to_pylist()} == {"2025-01-01", "2025-01-02", "2025-01-03"}
