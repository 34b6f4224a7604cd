"""`towerflow` commands for the pipeline part; registered by towerflow.cli. Keep imports light here."""

from __future__ import annotations

from datetime import date
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

pipeline_app = typer.Typer(help="Run the batch pipeline: bronze -> silver -> gold.", no_args_is_help=True)
console = Console()


def register(app: typer.Typer) -> None:
    """Add this part's commands to the top-level app."""
    app.add_typer(pipeline_app, name="pipeline")


def _day(text: str | None, name: str) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        console.print(f"[bold red]error:[/] {name}: {text!r} is not a date (YYYY-MM-DD)", highlight=False)
        raise typer.Exit(2) from None


@pipeline_app.command("etl")
def etl(
    day: Annotated[str | None, typer.Option("--date", help="The one day to process, YYYY-MM-DD.")] = None,
    start: Annotated[str | None, typer.Option(help="First day of a backfill, YYYY-MM-DD.")] = None,
    end: Annotated[str | None, typer.Option(help="Last day of a backfill (inclusive), YYYY-MM-DD.")] = None,
    cutoff: Annotated[
        str | None, typer.Option(help="First holdout day (default: sized by --holdout-days and the settings).")
    ] = None,
    holdout_days: Annotated[
        int | None, typer.Option(min=1, help="Fewest days held out for evaluation (default: settings).")
    ] = None,
    examples: Annotated[
        bool, typer.Option("--examples/--no-examples", help="Rewrite gold/training_examples and holdout.")
    ] = True,
    data_docs: Annotated[
        str, typer.Option(help="Data Docs HTML for `failures`, `all` validations, or `never`.")
    ] = "failures",
) -> None:
    """Clean, featurize and split one day (--date) or a range (--start/--end), behind quality gates.

    A failed data-quality suite stops the run before anything downstream is written; the command
    then exits with code 1, naming the failed expectations, and writes the GX report.
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from jobs.etl import day_range, run_etl
    from jobs.quality import QualityGateError
    from towerflow.lake import Lake
    from towerflow.settings import get_settings

    first, last = _day(day, "--date"), _day(day, "--date")
    if day is None:
        first, last = _day(start, "--start"), _day(end or start, "--end")
    elif start or end:
        console.print("[bold red]error:[/] give --date or --start/--end, not both")
        raise typer.Exit(2)
    if first is None or last is None:
        console.print("[bold red]error:[/] give --date YYYY-MM-DD, or --start (and --end) for a backfill")
        raise typer.Exit(2)
    if data_docs not in ("failures", "all", "never"):
        console.print("[bold red]error:[/] --data-docs is one of failures, all, never")
        raise typer.Exit(2)
    try:
        n_days = len(day_range(first, last))
    except ValueError as err:
        console.print(f"[bold red]error:[/] {err}")
        raise typer.Exit(2) from None
    settings = get_settings()
    lake = Lake(settings.lake, settings.storage_options or None)
    summary = Table(title=f"pipeline etl {first} .. {last}")
    for column in ("day", "step", "rows", "delta version", "seconds", "detail"):
        summary.add_column(column, justify="right" if column in ("rows", "delta version", "seconds") else "left")

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} days"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("starting Spark", total=n_days)

        def on_day(current: date) -> None:
            progress.update(task, description=f"processing days up to {current}")

        def on_step(step) -> None:
            detail = step.note or _detail(step.detail)
            if n_days <= 7 or step.name.startswith("gold/t") or step.name.startswith("gold/h"):
                summary.add_row(
                    step.interval,
                    step.name,
                    f"{step.rows:,}",
                    "" if step.version is None else str(step.version),
                    f"{step.seconds:.1f}",
                    detail,
                )
            if step.name == "gold/item_features":
                progress.advance(task)
                if n_days > 7:
                    progress.console.print(f"{step.interval}: done", highlight=False)

        try:
            run = run_etl(
                first,
                last,
                lake=lake,
                spark_master=settings.spark_master,
                spark_driver_memory=settings.spark_driver_memory,
                spark_conf=settings.spark_conf,
                delta_engine=settings.delta_engine,
                staging_dir=settings.staging_dir,
                docs_dir=settings.data_docs_dir,
                data_docs=data_docs,
                cutoff=_day(cutoff, "--cutoff"),
                holdout=settings.holdout_size(holdout_days),
                examples=examples,
                max_day_ratio=settings.dq_max_day_ratio,
                on_step=on_step,
                on_day=on_day,
            )
        except QualityGateError as err:
            progress.stop()
            console.print(summary)
            console.print(f"[bold red]stopped:[/] {err}", highlight=False)
            console.print("nothing downstream of the failing data was written", highlight=False)
            raise typer.Exit(1) from None
        except ValueError as err:
            progress.stop()
            console.print(f"[bold red]error:[/] {err}", highlight=False)
            raise typer.Exit(2) from None
    console.print(summary)
    removed = run.removed()
    rules = Table(title=f"cleaning rules, {first} .. {last}: rows removed from bronze/events")
    rules.add_column("rule")
    rules.add_column("rows", justify="right")
    for rule, n in removed.items():
        rules.add_row(rule, f"{n:,}")
    console.print(rules)
    console.print(f"done in {run.seconds:.1f} s; lake: {settings.lake}", highlight=False)


def _detail(detail: dict) -> str:
    if "removed" in detail:
        removed = {k: v for k, v in detail["removed"].items() if v}
        parts = ", ".join(f"{k} {v:,}" for k, v in removed.items()) or "none"
        return f"from {detail['bronze_rows']:,} bronze rows; removed: {parts}"
    if "expectations" in detail:
        return f"{detail['expectations']} expectations passed"
    return ""
