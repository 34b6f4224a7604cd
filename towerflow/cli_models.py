"""`towerflow train`, `evaluate`, `models list|promote|rollback` and `pipeline run`.
Heavy imports happen inside the commands."""

from __future__ import annotations

import json
import logging
from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

models_app = typer.Typer(help="Published model versions: list, promote, roll back.", no_args_is_help=True)
console = Console()


def register(app: typer.Typer) -> None:
    from towerflow.cli_pipeline import pipeline_app

    app.command("train")(train)
    app.command("tune")(tune)
    app.command("evaluate")(evaluate)
    app.add_typer(models_app, name="models")
    pipeline_app.command("run")(run)


def _date(text: str) -> str:
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        console.print(f"[bold red]error:[/] {text!r} is not a date (YYYY-MM-DD)")
        raise typer.Exit(2) from None


def _holdout(value: int | None) -> int:
    from towerflow.settings import get_settings

    return value or get_settings().holdout_days


def _progress_logging() -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.INFO, format="%(message)s", handlers=[RichHandler(console=console, show_path=False)]
    )


DateOption = Annotated[str, typer.Option("--date", help="Run date YYYY-MM-DD: train on data before it.")]
HoldoutOption = Annotated[
    int | None, typer.Option(min=1, help="Fewest days before the date held out (default: settings).")
]


def train(
    run_date: DateOption,
    epochs: Annotated[int | None, typer.Option(min=1, help="Epochs for both models (default: the model's).")] = None,
) -> None:
    """Train retrieval and ranking from Feast's training sets; export to $TOWERFLOW_HOME/runs/<date>/staged.

    The DAG's three training tasks in order; each skips when its outputs for these inputs exist.
    The holdout is the one the ETL split for that date (`pipeline etl` / `pipeline run`)."""
    from towerflow.tasks import build_training_set, train_ranking, train_retrieval

    _progress_logging()
    day = _date(run_date)
    build_training_set(day, epochs)
    train_retrieval(day, epochs)
    console.print(train_ranking(day, epochs))


def tune(
    run_date: DateOption,
    budget_minutes: Annotated[float, typer.Option(min=0.1, help="Time budget; no trial starts past it.")] = 30,
    epochs: Annotated[
        int | None, typer.Option(min=1, help="Epochs of the starting settings (default: the model's).")
    ] = None,
) -> None:
    """Choose training settings on a validation window just before the date's holdout (as long
    as the holdout), within a time budget; `towerflow train` and the pipeline's training steps
    for that date then use them. Report: $TOWERFLOW_HOME/runs/<date>/tuning/tuning.html."""
    from towerflow.tasks import tune_models

    _progress_logging()
    day = _date(run_date)
    try:
        summary = tune_models(day, True, budget_minutes, epochs)
    except (ValueError, FileNotFoundError) as err:
        console.print(f"[bold red]error:[/] {err}", highlight=False)
        raise typer.Exit(1) from None
    console.print(summary)


def evaluate(
    run_date: Annotated[
        str | None, typer.Option("--date", help="Run date YYYY-MM-DD: the holdout the ETL split for it.")
    ] = None,
    version: Annotated[
        int | None, typer.Option(help="Evaluate this published version instead of the run's staged models.")
    ] = None,
    start: Annotated[
        str | None, typer.Option(help="Instead of a run: score as of this day the users who bought from it ...")
    ] = None,
    end: Annotated[str | None, typer.Option(help="... to this day (included); the stable version by default.")] = None,
    served: Annotated[
        bool, typer.Option("--served", help="With --start/--end: also replay the users through the running gateway.")
    ] = False,
    url: Annotated[str | None, typer.Option(help="The gateway for --served (default: this machine's).")] = None,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="TOWERFLOW_TOKEN",
            help="A token with recommend:any and recommend:admin for --served (default: minted with this home's key).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
) -> None:
    """Evaluate on a holdout against production and the baselines; writes JSON and HTML reports.

    Models are scored on the lists the gateway would serve them (its binding and rules). With
    --start/--end: what users bought in that window, as of its first day; --served replays the
    same users through the running gateway, whose figures must equal the model's."""
    from models.evaluate import table, with_interval
    from towerflow.settings import get_settings
    from towerflow.tasks import evaluate_models, evaluate_version, evaluate_window

    if not as_json:
        _progress_logging()
    settings = get_settings()
    if (start is None) != (end is None) or (start is None and run_date is None):
        console.print("[bold red]error:[/] give --date, or both --start and --end")
        raise typer.Exit(2)
    if served and start is None:
        console.print("[bold red]error:[/] --served needs --start and --end")
        raise typer.Exit(2)
    if start is not None and end is not None:
        try:
            report = evaluate_window(
                _date(start), _date(end), version, served, url, token, progress=None if as_json else console.print
            )
        except (LookupError, ValueError, FileNotFoundError, RuntimeError, OSError) as err:
            console.print(f"[bold red]error:[/] {err}", highlight=False)
            raise typer.Exit(1) from None
        where = report["report_html"]
    else:
        day = _date(run_date or "")
        try:
            summary = evaluate_version(day, version) if version else evaluate_models(day)
        except (ValueError, FileNotFoundError) as err:
            console.print(f"[bold red]error:[/] {err}", highlight=False)
            raise typer.Exit(1) from None
        report = json.loads(Path(summary["json"]).read_text())
        where = summary["report"]
    if as_json:
        typer.echo(json.dumps(report["metrics"], indent=2))
        return
    grid = Table(title=f"holdout from {report['cutoff'][:10]}: {report['users']:,} users ({settings.home_dir})")
    columns = ("recall@10", "recall@50", "recall@100", "ndcg@10", "mrr", "coverage@10")
    for name in ("variant", "recommender", *columns):
        grid.add_column(name, justify="right" if name in columns else "left")
    for row in table(report):
        grid.add_row(row["variant"], row["recommender"], *(with_interval(row, c) for c in columns))
    console.print(grid)
    console.print("[low, high]: 95% bootstrap interval over users", markup=False)
    if "served_paths" in report:
        console.print(f"gateway answers by path: {report['served_paths']}")
    console.print(f"report: {where}")


@models_app.command("list")
def list_versions() -> None:
    """Every published version with its labels, metrics and data versions."""
    from models.registry import list_models
    from towerflow.settings import get_settings

    grid = Table(title="models")
    for name in ("model", "version", "labels", "run date", "all recall@100", "new recall@100", "gate"):
        grid.add_column(name)
    for info in list_models(get_settings().models_dir):
        metrics = info.metadata.get("metrics") or {}

        def recall(variant: str, metrics: dict = metrics) -> str:
            value = (metrics.get(variant) or {}).get("recall@100")
            return "" if value is None else f"{value:.4f}"

        grid.add_row(
            info.model,
            str(info.version),
            ", ".join(info.labels),
            str(info.metadata.get("run_date", "")),
            recall("all"),
            recall("new"),
            str((info.metadata.get("gate") or {}).get("reason", "")),
        )
    console.print(grid)


def _wait_for_server():
    """The publish task's wait for the model server, looked up only when a version must be loaded
    before its label moves (promoting a loaded version never touches the server)."""

    def wait(model: str, version: int) -> bool:
        from towerflow.settings import get_settings
        from towerflow.tasks import model_server_wait

        waiter = model_server_wait(get_settings())
        return waiter is None or waiter(model, version)

    return wait


@models_app.command("promote")
def promote(
    model: Annotated[str, typer.Argument(help="retrieval or ranking")],
    version: Annotated[int, typer.Argument(help="A published version.")],
    label: Annotated[str, typer.Option(help="Label to move.")] = "stable",
) -> None:
    """Point a label (default `stable`) at a published version; the server picks it up."""
    from models.registry import RegistryError
    from models.registry import promote as do_promote
    from towerflow.settings import get_settings

    try:
        labels = do_promote(get_settings().models_dir, model, version, label, _wait_for_server())
    except (RegistryError, ValueError, FileNotFoundError, KeyError, TimeoutError) as err:
        console.print(f"[bold red]error:[/] {err}")
        raise typer.Exit(1) from None
    console.print(f"{model}: {labels}")


@models_app.command("rollback")
def rollback(
    model: Annotated[str, typer.Argument(help="retrieval or ranking")],
    version: Annotated[int | None, typer.Argument(help="Version to go back to (default: the previous stable).")] = None,
) -> None:
    """Point `stable` back at an earlier version."""
    from models.registry import RegistryError
    from models.registry import rollback as do_rollback
    from towerflow.settings import get_settings

    try:
        labels = do_rollback(get_settings().models_dir, model, version, _wait_for_server())
    except (RegistryError, ValueError, FileNotFoundError, KeyError, TimeoutError) as err:
        console.print(f"[bold red]error:[/] {err}")
        raise typer.Exit(1) from None
    console.print(f"{model}: {labels}")


def run(
    run_date: Annotated[str, typer.Option("--date", help="Run date YYYY-MM-DD: process and train on data before it.")],
    holdout_days: HoldoutOption = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Training epochs (default: the model's).")] = None,
    force_publish: Annotated[bool, typer.Option(help="Publish even if not better (never on bad data).")] = False,
    tune: Annotated[
        bool, typer.Option("--tune", help="Choose training settings on a validation window first.")
    ] = False,
    tune_budget_minutes: Annotated[int, typer.Option(min=1, help="Time budget of --tune.")] = 30,
) -> None:
    """Run `towerflow_daily` for one date through Airflow (in process, `airflow dags test`)."""
    from towerflow.airflow_runner import run_dag, task_logs_dir
    from towerflow.settings import get_settings
    from towerflow.tasks import report

    settings = get_settings()
    day = _date(run_date)
    conf = {
        "date": day,
        "holdout_days": _holdout(holdout_days),
        "force_publish": force_publish,
        "tune": tune,
        "tune_budget_minutes": tune_budget_minutes,
    }
    if epochs:
        conf["epochs"] = epochs
    with console.status(f"towerflow_daily for {day} through Airflow (log: {settings.airflow_home}/runs/)"):
        ok, log = run_dag(settings, "towerflow_daily", day, conf)
    for line in log.read_text(errors="replace").splitlines():
        if "[DAG TEST] end task" in line:
            console.print("  done: " + line.split("task_id=", 1)[1].split()[0])
    if not ok:
        failed = [line for line in log.read_text(errors="replace").splitlines() if "Error" in line or "failed" in line]
        console.print("[bold red]the run failed[/]; last errors:\n" + "\n".join(failed[-8:]))
        console.print(f"full log: {log}; each task's log: {task_logs_dir(settings, 'towerflow_daily')}")
        raise typer.Exit(1)
    console.print(report(day))
