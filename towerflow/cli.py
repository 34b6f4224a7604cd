"""The `towerflow` command line. Commands import their heavy dependencies when they run."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.table import Table

from towerflow.settings import Settings, get_settings

app = typer.Typer(help="towerflow: an end-to-end product recommender.", no_args_is_help=True)
data_app = typer.Typer(help="Make or import data into the lake.", no_args_is_help=True)
import_app = typer.Typer(help="Import files into bronze/events and bronze/items.", no_args_is_help=True)
app.add_typer(data_app, name="data")
data_app.add_typer(import_app, name="import")
console = Console()
#: `towerflow data synth --profile` values: the keys of jobs.synth.PROFILES (named here so the
#: command line does not import numpy to build its help).
SynthProfile = Literal["retail", "media", "sparse"]


def _register_parts() -> None:
    from towerflow import (
        cli_airflow,
        cli_experiments,
        cli_features,
        cli_models,
        cli_monitor,
        cli_pipeline,
        cli_recommend,
        cli_serving,
    )

    for part in (cli_pipeline, cli_features, cli_serving, cli_airflow, cli_models, cli_recommend, cli_experiments):
        part.register(app)
    cli_monitor.register(app)


@contextmanager
def user_errors() -> Iterator[None]:
    """Bad input ends the command with its message and exit code 1, not a stack trace."""
    from jobs.ingest import InputError

    try:
        yield
    except InputError as err:
        console.print(f"[bold red]error:[/] {err}", highlight=False)
        raise typer.Exit(1) from None


def _lake(settings: Settings):
    from towerflow.lake import Lake

    return Lake(settings.lake, settings.storage_options or None)


def print_import(report) -> None:
    """Rows read, landed and rejected for one import."""
    table = Table(title=f"import {report.source} (batch {report.batch})", show_header=False)
    table.add_row("rows read", f"{report.rows_read:,}")
    table.add_row("events landed", f"{report.events_landed:,}")
    table.add_row("items landed", f"{report.items_landed:,}")
    for reason, n in report.rejected.items():
        table.add_row(f"rejected: {reason}", f"{n:,}")
    if not report.rejected:
        table.add_row("rows rejected", "0")
    if report.already_imported:
        table.add_row("note", "this file was imported before; nothing new landed")
    if report.quarantine:
        table.add_row("rejected rows written to", report.quarantine)
    console.print(table)


def print_lake(settings: Settings) -> None:
    """What the bronze tables hold now."""
    from jobs.ingest import summarize

    summary = summarize(_lake(settings))
    table = Table(title=f"lake: {settings.lake}")
    for column in ("table", "rows", "delta version", "detail"):
        table.add_column(column)
    for name, entry in summary.items():
        detail = ""
        if "actions" in entry:
            actions = ", ".join(f"{k} {v:,}" for k, v in sorted(entry["actions"].items()))
            detail = f"{actions}\n{entry['first']} .. {entry['last']}"
        table.add_row(f"bronze/{name}", f"{entry['rows']:,}", str(entry["version"]), detail)
    console.print(table)


@import_app.command("online-retail")
def import_online_retail(
    path: Annotated[Path, typer.Argument(help="UCI Online Retail file: .csv, .csv.gz or .xlsx")],
    max_rejects: Annotated[
        int, typer.Option(help="Land the file even if up to N rows are rejected (quarantined).")
    ] = 0,
) -> None:
    """Import the UCI Online Retail file: each invoice line -> an event, StockCodes -> items."""
    from jobs.ingest import import_online_retail as run

    settings = get_settings()
    with user_errors(), console.status(f"importing {path}"):
        report = run(_lake(settings), path, max_rejects=max_rejects, quarantine_dir=settings.quarantine_dir)
    print_import(report)


@import_app.command("events")
def import_events(
    path: Annotated[Path, typer.Argument(help="CSV or Parquet: user_id,item_id,action,timestamp[,quantity,price]")],
    items: Annotated[
        Path | None,
        typer.Option("--items", help="Items file: item_id[,description,category,price,created_at,available]"),
    ] = None,
    source: Annotated[str, typer.Option(help="Source name recorded with each row.")] = "events",
    max_rejects: Annotated[
        int, typer.Option(help="Land the file even if up to N rows are rejected (quarantined).")
    ] = 0,
) -> None:
    """Import your own events file (and optionally its items file)."""
    from jobs.ingest import import_events as run

    settings = get_settings()
    with user_errors(), console.status(f"importing {path}"):
        report = run(
            _lake(settings),
            path,
            items_path=items,
            source=source,
            max_rejects=max_rejects,
            quarantine_dir=settings.quarantine_dir,
        )
    print_import(report)


@import_app.command("items")
def import_items(
    path: Annotated[Path, typer.Argument(help="Items file: item_id[,description,category,price,created_at,available]")],
    source: Annotated[str, typer.Option(help="Source name recorded with each row.")] = "items",
) -> None:
    """Import a catalog file alone (new items, price or availability changes)."""
    from jobs.ingest import import_items as run

    settings = get_settings()
    with user_errors():
        report = run(_lake(settings), path, source=source)
    print_import(report)


@data_app.command("synth")
def synth(
    users: Annotated[
        int | None, typer.Option(min=10, help="Number of users (retail: 5,000, a few of them bots).")
    ] = None,
    items: Annotated[int | None, typer.Option(min=10, help="Number of catalog items (retail: 2,000).")] = None,
    days: Annotated[int, typer.Option(min=1, help="Days of events.")] = 30,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same bytes.")] = 42,
    start: Annotated[str, typer.Option(help="First day, YYYY-MM-DD (UTC).")] = "2025-01-01",
    profile: Annotated[
        SynthProfile,
        typer.Option(
            help="Shape of the data. retail: a gift shop's funnel with repeat purchases and a few bots, "
            "thousands of events a day. media: titles in genres, each acted on once per user (view, "
            "click, or purchase meaning watched), a few hundred events a day. sparse: a small shop, "
            "tens of events a day from a handful of users, with quiet days of none or a handful.",
        ),
    ] = "retail",
    out: Annotated[Path | None, typer.Option(help="Landing folder (default $TOWERFLOW_HOME/landing/synth).")] = None,
    land: Annotated[bool, typer.Option("--import/--no-import", help="Import into bronze after writing.")] = True,
) -> None:
    """Generate seeded synthetic behaviour (retail, media or sparse) as daily landing files, then
    import them. --users and --items default to the profile's."""
    from jobs.synth import SynthConfig

    settings = get_settings()
    with user_errors():
        first = _parse_date(start, "--start")
    cfg = SynthConfig.of(profile, users=users, items=items, days=days, seed=seed, start=first)
    target = out or settings.landing_dir / "synth"
    result = run_synth(cfg, target)
    console.print(f"wrote {result.events:,} events over {days} day(s) to {target}")
    if land:
        import_synth_landing(settings, target)
        print_lake(settings)


def _parse_date(text: str, name: str) -> date:
    from jobs.ingest import InputError

    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InputError(f"{name}: {text!r} is not a date (YYYY-MM-DD)") from None


def run_synth(cfg, target: Path):
    from rich.progress import Progress

    from jobs.synth import write_landing

    with Progress(console=console, transient=False) as progress:
        task = progress.add_task("synthesizing days", total=cfg.days)
        return write_landing(cfg, target, on_day=lambda day, n: progress.advance(task))


def import_synth_landing(settings: Settings, folder: Path) -> tuple[int, int]:
    """Import a synth landing folder: its items once, then each day's events file."""
    from rich.progress import Progress

    from jobs.ingest import import_events, import_items

    lake = _lake(settings)
    items = import_items(lake, folder / "items.parquet", source="synth")
    landed = 0
    day_files = sorted((folder / "events").glob("event_date=*/events.parquet"))
    with user_errors(), Progress(console=console) as progress:
        task = progress.add_task("importing days into bronze/events", total=len(day_files))
        for path in day_files:
            report = import_events(lake, path, source="synth", derive_items=False)
            landed += report.events_landed
            progress.advance(task)
    console.print(
        f"bronze: {items.items_landed:,} items and {landed:,} events landed "
        f"({len(day_files)} day file(s); files imported before are skipped)"
    )
    return items.items_landed, landed


@data_app.command("show")
def show() -> None:
    """Print what the bronze tables hold."""
    print_lake(get_settings())


@app.command()
def demo(
    users: Annotated[int, typer.Option(help="Synthetic users.")] = 5_000,
    items: Annotated[int, typer.Option(help="Synthetic items.")] = 2_000,
    days: Annotated[int, typer.Option(help="Synthetic days.")] = 30,
    holdout_days: Annotated[int, typer.Option(help="Days held out for evaluation.")] = 7,
    serve: Annotated[bool, typer.Option("--serve/--no-serve", help="Start the gateway at the end.")] = True,
) -> None:
    """The whole job on the embedded default: synthetic data -> lake -> towerflow_daily through
    Airflow -> model server + gateway answering a sample request."""
    from towerflow.demo import run

    console.rule("[bold]towerflow demo")
    raise typer.Exit(run(get_settings(), console, users, items, days, holdout_days, serve))


def _source_checkout() -> Path | None:
    """The repository `towerflow` was installed from in development mode (`pip install -e .`),
    or None for an installed package (a wheel ships no `bench/`)."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "setup.cfg").is_file() and (root / "bench" / "__init__.py").is_file() else None


def _source_checkout_on_path() -> None:
    """Make `bench/` (and the `testsupport/` it builds data with) importable: they are development
    tools that live in the source checkout and are not part of the installed package."""
    root = _source_checkout()
    if root is None:
        console.print(
            "[red]error:[/] benchmarks run from a source checkout (bench/ is not part of the installed"
            " package): clone the repository and `pip install -e .` it",
            highlight=False,
        )
        raise typer.Exit(2)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))


@app.command()
def bench(
    name: Annotated[str, typer.Argument(help="Benchmark name, or `all`.")],
    out: Annotated[Path | None, typer.Option(help="Append the JSON figures to this file.")] = None,
) -> None:
    """Run a benchmark: a human table, then one JSON line of figures last."""
    _source_checkout_on_path()
    from bench import BENCHMARKS, run

    if name != "all" and name not in BENCHMARKS:
        console.print(f"[red]error:[/] unknown benchmark {name!r}; choose from all, {', '.join(BENCHMARKS)}")
        raise typer.Exit(2)
    for bench_name in BENCHMARKS if name == "all" else [name]:
        run(bench_name, out)


@app.command("bench-report")
def bench_report(
    results: Annotated[Path, typer.Argument(help="Results file written by `towerflow bench ... --out`.")],
    out: Annotated[Path | None, typer.Option(help="Write the markdown here instead of printing it.")] = None,
) -> None:
    """Render the performance table of docs/performance.md (markdown) from a benchmark results file."""
    _source_checkout_on_path()
    from bench.report import load, render

    if not results.exists():
        console.print(f"[red]error:[/] {results} does not exist; run `make bench` first", highlight=False)
        raise typer.Exit(1)
    try:
        text = render(load(results))
    except ValueError as err:
        console.print(f"[red]error:[/] {err}", highlight=False)
        raise typer.Exit(1) from None
    if out is None:
        print(text, end="")  # noqa: T201 - the markdown is the command's output
    else:
        out.write_text(text)
        console.print(f"wrote {out}", highlight=False)


def main() -> None:
    app()


_register_parts()


if __name__ == "__main__":
    main()
