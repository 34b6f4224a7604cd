"""Run the project's DAGs through Airflow: in process (`airflow dags test`, the embedded default)
or against a deployment's metadata DB (PostgreSQL when `airflow_db_url` is set)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from towerflow.settings import AirflowSettings


def dags_folder() -> Path:
    import dags

    return Path(dags.__file__).resolve().parent


def airflow_env(settings: AirflowSettings) -> dict[str, str]:
    """Environment for an Airflow process that sees the project's DAGs and settings."""
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(settings.airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder()),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": str(settings.airflow_parallelism),
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(settings.airflow_parallelism),
        "TOWERFLOW_HOME": str(settings.home_dir),
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    if settings.airflow_db_url:
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = settings.airflow_db_url
    return env


SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"


def standalone_env(settings: AirflowSettings) -> dict[str, str]:
    """Environment for `airflow standalone`: the project's DAGs, a LocalExecutor, one API worker
    and one DAG-parsing process (a 2-core machine), and the simple auth manager's `admin` user,
    whose password Airflow generates into `password_file`."""
    env = airflow_env(settings)
    host, port = settings.airflow_api_host, settings.airflow_api_port
    env.update(
        {
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
            "AIRFLOW__API__HOST": host,
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://{_local(host)}:{port}/execution/",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        }
    )
    env.setdefault("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "admin:admin")
    # standalone starts each component as `airflow <component>` from PATH: use this environment's.
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bin_dir, *(p for p in env.get("PATH", "").split(os.pathsep) if p != bin_dir)])
    return env


def _local(host: str) -> str:
    """An address this machine can call for a server bound to `host`."""
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def api_url(settings: AirflowSettings) -> str:
    return f"http://{_local(settings.airflow_api_host)}:{settings.airflow_api_port}"


def password_file(env: dict[str, str]) -> Path:
    """Where Airflow 3's simple auth manager keeps generated passwords (JSON: user -> password)."""
    if configured := env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"):
        return Path(configured)
    return Path(env["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated"


def generated_password(env: dict[str, str], user: str = "admin") -> str | None:
    """The generated password of `user`, or None before Airflow has generated one."""
    try:
        return json.loads(password_file(env).read_text()).get(user)
    except (OSError, ValueError):
        return None


def _airflow(
    args: list[str], env: dict[str, str], log: Path | None = None, module: str = "airflow"
) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", module, *args]
    if log is None:
        return subprocess.run(command, env=env, capture_output=True, text=True)
    with log.open("w") as handle:
        return subprocess.run(command, env=env, stdout=handle, stderr=subprocess.STDOUT, text=True)


def ensure_db(settings: AirflowSettings) -> None:
    """Create or upgrade Airflow's metadata DB (idempotent; a few seconds the first time)."""
    settings.airflow_home.mkdir(parents=True, exist_ok=True)
    marker = settings.airflow_home / ".migrated"
    url = settings.airflow_db_url or "sqlite"
    if marker.exists() and marker.read_text() == url:
        return
    proc = _airflow(["db", "migrate"], airflow_env(settings))
    if proc.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    marker.write_text(url)


def task_logs_dir(settings: AirflowSettings, dag_id: str) -> Path:
    """Where a DAG's task logs are, one file per try: `run_id=<run>/task_id=<task>/attempt=<n>.log`
    (Airflow's default `base_log_folder` and `log_filename_template`)."""
    return settings.airflow_home / "logs" / f"dag_id={dag_id}"


def only_pattern(task_ids: Sequence[str]) -> str:
    """`--mark-success-pattern` that matches every task id except `task_ids` (fullmatch)."""
    return "(?!(?:" + "|".join(re.escape(t) for t in task_ids) + ")$).+"


def run_dag(
    settings: AirflowSettings,
    dag_id: str,
    run_date: str,
    conf: dict | None = None,
    only: Sequence[str] | None = None,
) -> tuple[bool, Path]:
    """Run one DAG run in process for `run_date`; returns (succeeded, the run's combined log).

    The run is recorded in the metadata DB as a manual run, and each task's log lands where the
    Airflow UI reads it (`task_logs_dir`; see `towerflow.airflow_dags_test`).

    Args:
        conf: the run's conf (DAG params), as `Trigger DAG w/ config` would pass it.
        only: run just these task ids; every other task is marked successful without running
            (`airflow dags test --mark-success-pattern`), e.g. to check the orchestration
            against a metadata DB without training models.
    """
    ensure_db(settings)
    logs = settings.airflow_home / "runs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{dag_id}-{run_date}.log"
    args = [dag_id, run_date]
    if conf:
        args += ["-c", json.dumps(conf)]
    if only:
        args += ["--mark-success-pattern", only_pattern(only)]
    proc = _airflow(args, airflow_env(settings), log, module="towerflow.airflow_dags_test")
    text = log.read_text(errors="replace")
    # A run whose tasks never ran (e.g. a date before the DAG's start_date) still ends "success".
    ran = "[DAG TEST] end task" in text
    ok = proc.returncode == 0 and ran and "state=success" in text.rsplit("DagRun Finished", 1)[-1]
    if proc.returncode == 0 and not ran:
        with log.open("a") as handle:  # say why, for readers that show the log's error lines
            handle.write(f"towerflow: the run failed: Airflow created no task of {dag_id} for {run_date}\n")
    return ok, log
