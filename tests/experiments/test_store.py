"""The experiments store on each backend: SQLite in the test's folder, and a schema of the
test's own on the shared PostgreSQL (127.0.0.1:5432, trust auth, database `test`; override with
TOWERFLOW_TEST_POSTGRES_URL), created here and dropped afterwards. PostgreSQL unreachable: its
tests skip with the reason, and fail under CI=true.

Each test starts from an empty database, so every one also runs the migrations from nothing."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import pytest

from experiments.domain import (
    AlreadyStopped,
    ExperimentConflict,
    ExperimentNotFound,
    InvalidExperiment,
    StoreUnavailable,
    SurfaceBusy,
)
from experiments.store import ExperimentStore
from tests.conftest import need

POSTGRES_URL = os.environ.get("TOWERFLOW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)]
CANARY = [{"name": "control", "share": 90}, {"name": "treatment", "share": 10, "models": {"ranking": "canary"}}]


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """The URL of an empty schema of this test's own (its connections' search_path)."""
    import psycopg2

    try:
        admin = psycopg2.connect(POSTGRES_URL, connect_timeout=2)
    except psycopg2.OperationalError as err:
        need(False, f"PostgreSQL at {POSTGRES_URL} is not reachable: {err}")
    admin.autocommit = True
    schema = f"tfexp_{uuid.uuid4().hex[:10]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{separator}options={quote(f'-csearch_path={schema}')}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.close()


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database on each backend (SQLite: in a folder that does not exist yet)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'new' / 'experiments.sqlite3'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def store(database_url: str) -> Iterator[ExperimentStore]:
    opened = ExperimentStore.open(database_url)
    yield opened
    opened.close()


def test_opening_an_empty_database_migrates_it_to_the_models(store: ExperimentStore) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy import inspect

    from experiments.store import VERSION_TABLE, Base, alembic_config

    tables = set(inspect(store.engine).get_table_names())
    assert {"experiments", "experiment_arms", VERSION_TABLE} <= tables
    with store.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        assert context.get_current_revision() == ScriptDirectory.from_config(alembic_config()).get_current_head()
        assert compare_metadata(context, Base.metadata) == [], "the migrations and experiments/store.py differ"
    assert store.list() == [] and store.running() == {}


def test_reopening_a_migrated_database_keeps_its_experiments(database_url: str) -> None:
    first = ExperimentStore.open(database_url)
    created = first.create(name="ranker", arms=CANARY)
    first.close()
    again = ExperimentStore.open(database_url)
    try:
        assert again.get(created.id) == created
    finally:
        again.close()


def test_an_experiment_round_trips_with_its_arms_in_order(store: ExperimentStore) -> None:
    started = datetime(2026, 12, 1, 9, 30, 15, 123456, tzinfo=UTC)
    arms = [
        {"name": "b", "share": 20, "models": {"retrieval": "7"}},
        {"name": "a", "share": 30.5},
        {"name": "control", "share": 49.5, "models": {"retrieval": "stable", "ranking": "stable"}},
    ]
    created = store.create(name="three arms", surface="email", arms=arms, salt="s1", at=started)
    assert created.status == "running" and created.started_at == started and created.started_at.tzinfo is not None
    assert [(a.name, a.share) for a in created.arms] == [("b", 20), ("a", 30.5), ("control", 49.5)]
    assert created.arms[0].models == {"retrieval": "7", "ranking": "stable"}
    assert store.get(created.id) == created == store.get(int(created.id))
    assert store.running() == {"email": created}

    ended = started + timedelta(days=3)
    stopped = store.stop(created.id, decision="promote", reason="b won: +4% CTR, p=0.01", at=ended)
    assert (stopped.status, stopped.ended_at, stopped.decision) == ("stopped", ended, "promote")
    assert stopped.decision_reason == "b won: +4% CTR, p=0.01"
    assert store.get(created.id) == stopped and store.running() == {}
    assert store.list(status="stopped") == [stopped] and store.list(status="running") == []


def test_a_new_experiment_gets_a_salt_of_its_own(store: ExperimentStore) -> None:
    first = store.create(name="one", arms=CANARY)
    store.stop(first.id)
    second = store.create(name="two", arms=CANARY)
    assert first.salt and second.salt and first.salt != second.salt
    assert [e.id for e in store.list()] == [second.id, first.id]  # newest first


@pytest.mark.parametrize("experiment_id", ["999", "abc", "", "1e3", "99999999999999999999999"])
def test_an_unknown_id_is_not_found(store: ExperimentStore, experiment_id: str) -> None:
    with pytest.raises(ExperimentNotFound, match="no experiment has the id"):
        store.get(experiment_id)
    with pytest.raises(ExperimentNotFound):
        store.stop(experiment_id)


def test_shares_must_sum_to_100(store: ExperimentStore) -> None:
    with pytest.raises(InvalidExperiment) as err:
        store.create(name="x", arms=[{"name": "control", "share": 90}, {"name": "treatment", "share": 20}])
    assert err.value.field == "arms"
    assert "sum to 100" in str(err.value) and "110" in str(err.value)
    assert store.list() == []  # nothing written


def test_invalid_fields_are_named(store: ExperimentStore) -> None:
    with pytest.raises(InvalidExperiment) as err:
        store.create(name="x", arms=[{"name": "control", "share": 100, "models": {"rankng": "canary"}}])
    assert err.value.field == "arms.control.models" and "rankng" in str(err.value)
    with pytest.raises(InvalidExperiment, match=r"arms\.treatment\.share"):
        store.create(name="x", arms=[{"name": "control", "share": 100}, {"name": "treatment", "share": 0}])
    with pytest.raises(InvalidExperiment, match="surface"):
        store.create(name="x", surface="home page", arms=CANARY)
    with pytest.raises(InvalidExperiment, match="distinct"):
        store.create(name="x", arms=[{"name": "a", "share": 50}, {"name": "a", "share": 50}])
    with pytest.raises(InvalidExperiment, match=r"arms: .*at least 1"):
        store.create(name="x", arms=[])
    created = store.create(name="x", arms=CANARY)
    with pytest.raises(InvalidExperiment, match="decision"):
        store.stop(created.id, decision="won")
    assert store.get(created.id).status == "running"


def test_one_running_experiment_per_surface(store: ExperimentStore) -> None:
    running = store.create(name="first", arms=CANARY)
    with pytest.raises(SurfaceBusy) as err:
        store.create(name="second", arms=CANARY)
    assert isinstance(err.value, ExperimentConflict) and err.value.running == running
    assert f"towerflow experiments stop {running.id}" in str(err.value)
    other = store.create(name="elsewhere", surface="email", arms=CANARY)  # another surface: fine
    assert store.running() == {"home": running, "email": other}
    store.stop(running.id, decision="inconclusive")
    with pytest.raises(AlreadyStopped):
        store.stop(running.id)
    assert store.create(name="second", arms=CANARY).status == "running"


def test_racing_creators_start_one_experiment(database_url: str) -> None:
    """Each thread has a store (a connection pool) of its own, as separate processes would; the
    database, not the check in `create`, decides."""
    stores = [ExperimentStore.open(database_url) for _ in range(4)]
    barrier = threading.Barrier(len(stores))
    outcomes: list[str] = []

    def start(store: ExperimentStore, n: int) -> None:
        barrier.wait()
        try:
            store.create(name=f"racer {n}", arms=CANARY)
            outcomes.append("created")
        except SurfaceBusy:
            outcomes.append("busy")

    threads = [threading.Thread(target=start, args=(s, n)) for n, s in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for store in stores:
        store.close()
    assert sorted(outcomes) == ["busy", "busy", "busy", "created"]


def test_a_database_migrated_by_a_newer_towerflow_is_refused_plainly(store: ExperimentStore) -> None:
    from sqlalchemy import text

    with store.engine.begin() as connection:
        connection.execute(text("UPDATE experiments_alembic_version SET version_num = 'from_the_future'"))
    with pytest.raises(StoreUnavailable, match="newer towerflow"):
        ExperimentStore.open(str(store.engine.url.render_as_string(hide_password=False)))


def test_a_database_with_another_alembic_history_is_shared(database_url: str) -> None:
    """E.g. Airflow's metadata DB: its `alembic_version` is not ours."""
    from sqlalchemy import text

    from experiments.store import make_engine

    engine = make_engine(database_url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)"))
        connection.execute(text("INSERT INTO alembic_version VALUES ('airflow_rev_29')"))
    engine.dispose()
    with ExperimentStore.open(database_url) as store:
        assert store.create(name="x", arms=CANARY).status == "running"
        with store.engine.connect() as connection:
            assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == "airflow_rev_29"


def test_an_unreachable_database_is_an_error_naming_it() -> None:
    with pytest.raises(StoreUnavailable, match=r"127\.0\.0\.1:9/nowhere.*failed") as err:
        ExperimentStore.open("postgresql://towerflow:secret@127.0.0.1:9/nowhere")
    assert "secret" not in str(err.value)
