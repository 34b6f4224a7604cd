"""`towerflow airflow ...`: Airflow with the project's DAGs and settings; registered by towerflow.cli."""

from __future__ import annotations

import signal
import threading
from typing import Annotated

import typer
from rich.console import Console

airflow_app = typer.Typer(help="Airflow with the project's DAGs and settings.", no_args_is_help=True)
console = Console(stderr=True)
STOP_GRACE_S = 60


def register(app: typer.Typer) -> None:
    """Add this part's commands to the top-level app."""
    app.add_typer(airflow_app, name="airflow")


@airflow_app.command("standalone")
def standalone(
    port: Annotated[int | None, typer.Option(help="UI/API port (default 8080, TOWERFLOW_AIRFLOW_API_PORT).")] = None,
    host: Annotated[
        str | None, typer.Option(help="Interface to listen on (default 127.0.0.1, TOWERFLOW_AIRFLOW_API_HOST).")
    ] = None,
    ready_timeout: Annotated[float, typer.Option(help="Seconds to wait for the API server to answer.")] = 300,
) -> None:
    """Run `airflow standalone` (api-server, scheduler, dag-processor, triggerer) in the foreground.

    AIRFLOW_HOME is $TOWERFLOW_HOME/airflow, the DAGs are the project's `dags/`, the metadata DB is
    SQLite there unless TOWERFLOW_AIRFLOW_DB_URL (or AIRFLOW__DATABASE__SQL_ALCHEMY_CONN) names
    PostgreSQL, and parallelism is TOWERFLOW_AIRFLOW_PARALLELISM (default 2: at Airflow's defaults
    standalone takes about 5 GB). Once the API server is healthy, prints the UI URL and the `admin`
    password. Ctrl-C or SIGTERM stops every component.
    """
    import os
    import subprocess
    import sys

    from towerflow.airflow_runner import api_url, generated_password, password_file, standalone_env
    from towerflow.settings import get_settings

    settings = get_settings()
    updates = {"airflow_api_port": port, "airflow_api_host": host}
    settings = settings.model_copy(update={k: v for k, v in updates.items() if v is not None})
    env = standalone_env(settings)
    settings.airflow_home.mkdir(parents=True, exist_ok=True)
    url = api_url(settings)
    console.print(
        f"starting airflow standalone: AIRFLOW_HOME={settings.airflow_home}, DAGs {env['AIRFLOW__CORE__DAGS_FOLDER']}, "
        f"metadata DB {_db_kind(settings.airflow_db_url)}, "
        f"parallelism {settings.airflow_parallelism} (about 35 s to healthy)",
        highlight=False,
        soft_wrap=True,
    )
    # Own session: Ctrl-C reaches only this command, which then stops Airflow in order.
    # SIGINT back to its default in the child (a shell's `&` ignores it), so standalone's own
    # Ctrl-C handling, which stops each component, works when this command forwards it.
    proc = subprocess.Popen(
        [sys.executable, "-m", "airflow", "standalone"],
        env=env,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # no threads yet
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    ready, waited = False, 0.0
    while not stop.is_set() and proc.poll() is None:
        if not ready:
            health = _health(url)
            if health is not None:
                ready = True
                _banner(url, health, generated_password(env), password_file(env), env)
            elif waited > ready_timeout:
                console.print(f"[bold red]error:[/] the API server did not answer at {url} in {ready_timeout:.0f} s")
                stop.set()
                break
        stop.wait(1.0)
        waited += 1.0
    code = proc.poll()
    if code is None:
        console.print("stopping airflow standalone")
        proc.send_signal(signal.SIGINT)  # standalone stops its components on KeyboardInterrupt
        try:
            proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            console.print(f"airflow did not stop in {STOP_GRACE_S} s; killing it")
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        _kill_group(proc.pid)
        console.print("airflow stopped")
    else:
        console.print(f"[bold red]airflow standalone exited with code {code}[/]")
        raise typer.Exit(1)
    if not ready:
        raise typer.Exit(1)


def _db_kind(url: str | None) -> str:
    return "SQLite" if not url else url.split(":", 1)[0].split("+", 1)[0]


def _health(url: str) -> dict | None:
    """The API server's health JSON, or None while it does not answer."""
    import httpx

    try:
        response = httpx.get(f"{url}/api/v2/monitor/health", timeout=2.0)
    except httpx.HTTPError:
        return None
    return response.json() if response.status_code == 200 else None


def _kill_group(pgid: int) -> None:
    """Kill whatever is left in Airflow's process group (nothing, when it stopped cleanly)."""
    import os

    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _banner(url: str, health: dict, password: str | None, pw_file, env: dict[str, str]) -> None:
    parts = ", ".join(f"{name} {part.get('status', '?')}" for name, part in sorted(health.items()))
    users = env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "")
    console.rule("[bold]Airflow is up")
    console.print(f"UI        {url}", highlight=False)
    if users.split(":")[0] == "admin" and password:
        console.print(f"user      admin\npassword  {password}   (kept in {pw_file})", highlight=False, soft_wrap=True)
    else:
        console.print(f"users     {users or '?'}; passwords in {pw_file}", highlight=False, soft_wrap=True)
    console.print(f"health    {parts}", highlight=False, soft_wrap=True)
    console.print("Ctrl-C to stop.")
    console.rule()
