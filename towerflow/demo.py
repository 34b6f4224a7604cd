"""`make demo`: the whole job on the embedded default, one progress line per stage.

Synthetic data -> the lake -> `towerflow_daily` through Airflow (ETL behind quality gates,
features, training, evaluation, gate, publish) -> model server + gateway -> a sample request with
a development token. Then the gateway keeps answering until Ctrl-C.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta

import httpx
from rich.console import Console
from rich.table import Table

from towerflow.settings import Settings


def _stage(console: Console, n: int, total: int, text: str) -> float:
    console.rule(f"[bold]{n}/{total} {text}")
    return time.perf_counter()


def _done(console: Console, started: float, text: str) -> None:
    console.print(f"[green]done[/] in {time.perf_counter() - started:.0f} s: {text}")


def _wait_ready(url: str, process: subprocess.Popen, timeout: float = 180.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(1.0)
    return False


def run(
    settings: Settings, console: Console, users: int, items: int, days: int, holdout_days: int, serve: bool = True
) -> int:
    """Run the demo; returns the process exit code."""
    from jobs.ingest import summarize
    from jobs.synth import SynthConfig
    from models.registry import labels
    from towerflow.airflow_runner import run_dag, task_logs_dir
    from towerflow.cli import import_synth_landing, run_synth
    from towerflow.lake import Lake

    total = 4 if serve else 3
    console.print(f"TOWERFLOW_HOME = {settings.home_dir}")
    started = _stage(console, 1, total, "synthetic data -> landing files -> bronze")
    cfg = SynthConfig(users=users, items=items, days=days)
    result = run_synth(cfg, settings.landing_dir / "synth")
    import_synth_landing(settings, settings.landing_dir / "synth")
    bronze = summarize(Lake(settings.lake))
    _done(console, started, f"{result.events:,} events; bronze/events holds {bronze['events']['rows']:,} rows")

    run_date = (cfg.start + timedelta(days=days)).isoformat()
    started = _stage(console, 2, total, f"towerflow_daily for {run_date} through Airflow (holdout {holdout_days} days)")
    with console.status("ETL behind quality gates, Feast, training, evaluation, gate, publish ..."):
        ok, log = run_dag(settings, "towerflow_daily", run_date, {"date": run_date, "holdout_days": holdout_days})
    for line in log.read_text(errors="replace").splitlines():
        if "[DAG TEST] end task" in line:
            console.print("  task done: " + line.split("task_id=", 1)[1].split()[0])
    if not ok:
        console.print(f"[bold red]the daily run failed[/]; log: {log}")
        return 1
    _done(console, started, f"log {log}; each task's log: {task_logs_dir(settings, 'towerflow_daily')}")

    started = _stage(console, 3, total, "evaluation and published models")
    run_dir = settings.home_dir / "runs" / run_date
    report = json.loads((run_dir / "evaluation" / "evaluation.json").read_text())
    for variant in ("all", "new"):
        m = report["metrics"][variant]
        shown = ", ".join(f"{name} {m[name]['recall@10']:.3f}" for name in m)
        console.print(f"  recall@10 ({variant}): {shown}")
    console.print(f"  gate: {json.loads((run_dir / 'gate.json').read_text())['reason']}")
    console.print(
        f"  labels: retrieval {labels(settings.models_dir, 'retrieval')}, "
        f"ranking {labels(settings.models_dir, 'ranking')}"
    )
    console.print(f"  report: {run_dir / 'evaluation' / 'evaluation.html'}")
    _done(console, started, "see the HTML report for recall@K curves")
    if not serve:
        return 0

    started = _stage(console, 4, total, "model server + gateway")
    env = {**os.environ, "TOWERFLOW_HOME": str(settings.home_dir), "TF_CPP_MIN_LOG_LEVEL": "3"}
    gateway = f"http://{settings.gateway_host}:{settings.gateway_port}"
    process = subprocess.Popen([sys.executable, "-m", "towerflow.cli", "serve"], env=env)
    try:
        if not _wait_ready(f"{gateway}/readyz", process):
            console.print("[bold red]the gateway did not become ready[/]")
            return 1
        token = (
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "towerflow.cli",
                    "token",
                    "--service",
                    "demo",
                    "--scopes",
                    "recommend:any events:write",
                ],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        user = _a_user(settings)
        url = f"{gateway}/v1/recommendations?user_id={user}&count=10"
        for _ in range(5):  # the first calls warm the model server up and may take the fallback path
            answer = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10.0)
            if answer.status_code != 200 or answer.json().get("path") == "model":
                break
            time.sleep(1.0)
        _done(console, started, f"GET {url} -> {answer.status_code}")
        console.print_json(answer.text)
        if answer.status_code == 200:
            _show_freshness(console, gateway, token, url, answer.json())
        console.print(
            f"\ngateway docs: {gateway}/docs   metrics: {gateway}/metrics\n"
            f"try it:  curl -H 'Authorization: Bearer {token}' '{url}'\n"
            "Airflow UI: `make airflow` (prints the URL and admin password)\n"
            "Ctrl-C stops the model server, the gateway and the stream worker."
        )
        process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
    return 0


def _a_user(settings: Settings) -> str:
    """A user with recent activity, so the sample shows personalised recommendations."""
    from towerflow.lake import Lake

    lake = Lake(settings.lake)
    uri = lake.uri("gold", "user_features")
    table = lake.read(uri, columns=["user_id", "feature_date"])
    if table is None:
        raise FileNotFoundError(f"no user features at {uri}: the daily pipeline has not run")
    frame = table.to_pandas()
    latest = frame[frame["feature_date"] == frame["feature_date"].max()]
    return str(sorted(latest["user_id"])[0]) if len(latest) else str(frame["user_id"].iloc[0])


def _show_freshness(console: Console, gateway: str, token: str, url: str, before: dict) -> None:
    """Post clicks on the last three recommended items as events, then ask again: the stream
    worker puts them in the user's recent actions within a second, and the answer changes."""
    headers = {"Authorization": f"Bearer {token}"}
    clicked = [item["item_id"] for item in before["items"][-3:]]
    events = [
        {"user_id": before["user_id"], "item_id": item, "action": "click", "request_id": before["request_id"]}
        for item in clicked
    ]
    posted = httpx.post(f"{gateway}/v1/events", json={"events": events}, headers=headers, timeout=10.0)
    console.print(f"\nPOST /v1/events (clicks on {', '.join(clicked)}) -> {posted.status_code} {posted.text}")
    time.sleep(1.0)
    after = httpx.get(url, headers=headers, timeout=10.0).json()
    table = Table(title=f"user {before['user_id']}: top 10 before and 1 s after the clicks")
    table.add_column("#", justify="right")
    table.add_column(f"before ({before['path']})")
    table.add_column(f"after ({after.get('path')})")
    for n, (old, new) in enumerate(zip(before["items"], after.get("items", []), strict=False), 1):
        table.add_row(str(n), old["item_id"], new["item_id"])
    console.print(table)
