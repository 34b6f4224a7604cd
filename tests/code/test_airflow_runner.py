"""Pure parts of towerflow.airflow_runner and towerflow.airflow_dags_test."""

import re
from datetime import UTC, datetime

from towerflow.airflow_dags_test import log_record, starting_now
from towerflow.airflow_runner import airflow_env, only_pattern
from towerflow.settings import Settings


def test_only_pattern_marks_every_other_task() -> None:
    pattern = re.compile(only_pattern(["ingest_landing", "etl.silver"]))
    assert not pattern.fullmatch("ingest_landing")
    assert not pattern.fullmatch("etl.silver")
    for other in ("train_retrieval", "ingest_landing_2", "etlXsilver", "etl"):
        assert pattern.fullmatch(other)


def test_airflow_env_uses_postgres_when_configured(tmp_path, monkeypatch) -> None:
    url = "postgresql+psycopg2://postgres@127.0.0.1:5432/airflow"
    monkeypatch.setenv("TOWERFLOW_AIRFLOW_DB_URL", url)
    env = airflow_env(Settings(home=tmp_path, airflow_parallelism=3))
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == url
    assert env["AIRFLOW_HOME"] == str(tmp_path.resolve() / "airflow")
    assert env["AIRFLOW__CORE__PARALLELISM"] == "3"


def test_airflow_db_url_from_airflow_variable(monkeypatch) -> None:
    url = "postgresql+psycopg2://postgres@127.0.0.1:5432/x"
    monkeypatch.delenv("TOWERFLOW_AIRFLOW_DB_URL", raising=False)
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", url)
    assert Settings().airflow_db_url == url
    monkeypatch.setenv("TOWERFLOW_AIRFLOW_DB_URL", "sqlite:////tmp/a.db")
    assert Settings().airflow_db_url == "sqlite:////tmp/a.db"  # the project's own name wins


def test_standalone_env_is_small_and_local(tmp_path, monkeypatch) -> None:
    import json

    from towerflow.airflow_runner import generated_password, standalone_env

    monkeypatch.delenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", raising=False)
    env = standalone_env(Settings(home=tmp_path, airflow_api_port=18123))
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__API__PORT"] == "18123" and env["AIRFLOW__API__WORKERS"] == "1"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:18123/execution/"
    assert env["AIRFLOW__CORE__PARALLELISM"] == "2"
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "admin:admin"
    assert generated_password(env) is None
    (tmp_path / "airflow").mkdir()
    (tmp_path / "airflow" / "simple_auth_manager_passwords.json.generated").write_text(json.dumps({"admin": "s3"}))
    assert generated_password(env) == "s3"


def test_a_console_line_becomes_a_task_log_record_with_its_own_time_and_level() -> None:
    line = "2026-12-06T16:26:05.253904Z [warning  ] gate bronze_events passed [jobs.quality] loc=quality.py:1"
    assert log_record(line) == {
        "timestamp": "2026-12-06T16:26:05.253904Z",
        "level": "warning",
        "event": "gate bronze_events passed [jobs.quality] loc=quality.py:1",
    }
    spark = log_record("26/12/06 16:26:07 WARN Utils: Your hostname resolves to a loopback address")
    assert spark["event"].startswith("26/12/06 16:26:07 WARN") and "level" not in spark
    assert datetime.fromisoformat(spark["timestamp"]) <= datetime.now(UTC)  # read time, as Airflow parses it


def test_a_dags_test_run_starts_at_the_wall_clock_not_its_logical_date() -> None:
    seen = {}
    create = starting_now(lambda **kwargs: seen.update(kwargs))
    before = datetime.now(UTC)
    create(logical_date=datetime(2011, 11, 1, tzinfo=UTC), start_date=datetime(2011, 11, 1, tzinfo=UTC))
    assert seen["logical_date"] == datetime(2011, 11, 1, tzinfo=UTC)
    assert before <= seen["start_date"] <= datetime.now(UTC)
