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
) -> None:
    """Clean, featurize and split one day (--date) or a range (--start/--end), behind quality gates.

    Runs the DAG's ETL tasks (validate_raw, build_silver, build_gold, validate_features) in the
    DAG's order. A failed data-quality suite stops the run before anything downstream is written;
    the command then exits with code 1, naming the failed expectations, and writes the GX report.
    """
    import time

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from jobs import clean
    from jobs.etl import day_range
    from jobs.quality import QualityGateError
    from towerflow import tasks
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
    try:
        n_days = len(day_range(first, last))
    except ValueError as err:
        console.print(f"[bold red]error:[/] {err}")
        raise typer.Exit(2) from None
    settings = get_settings()
    summary = Table(title=f"pipeline etl {first} .. {last}")
    for column in ("day", "step", "rows", "delta version", "seconds", "detail"):
        summary.add_column(column, justify="right" if column in ("rows", "delta version", "seconds") else "left")
    removed = dict.fromkeys(clean.RULES, 0)
    started = time.perf_counter()

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} days"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("starting Spark", total=n_days)

        def on_step(step) -> None:
            progress.update(task, description=f"{step.name} {step.interval}")
            for rule, n in step.detail.get("removed", {}).items():
                removed[rule] += n
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
                bounds = [date.fromisoformat(d) for d in step.interval.split("..")]
                progress.advance(task, len(day_range(bounds[0], bounds[-1])))
                if n_days > 7:
                    progress.console.print(f"{step.interval}: gold written", highlight=False)

        days = {"start": first.isoformat(), "end": last.isoformat()}
        try:
            tasks.etl(days, holdout_days, cutoff=_day(cutoff, "--cutoff"), examples=examples, on_step=on_step)
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
    rules = Table(title=f"cleaning rules, {first} .. {last}: rows removed from bronze/events")
    rules.add_column("rule")
    rules.add_column("rows", justify="right")
    for rule, n in removed.items():
        rules.add_row(rule, f"{n:,}")
    console.print(rules)
    console.print(f"done in {time.perf_counter() - started:.1f} s; lake: {settings.lake}", highlight=False)


def _detail(detail: dict) -> str:
    if "removed" in detail:
        removed = {k: v for k, v in detail["removed"].items() if v}
        parts = ", ".join(f"{k} {v:,}" for k, v in removed.items()) or "none"
        return f"from {detail['bronze_rows']:,} bronze rows; removed: {parts}"
    if "expectations" in detail:
        return f"{detail['expectations']} expectations passed"
    return ""
