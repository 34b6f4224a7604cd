"""`towerflow` commands for the features part; registered by towerflow.cli. Keep imports light here."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

console = Console()

EnvOption = Annotated[
    str | None,
    typer.Option("--env", help="embedded (SQLite) or redis; default: Redis when reachable, else embedded."),
]


def parse_ts(text: str, name: str) -> datetime:
    """An ISO date or timestamp; naive values are UTC (`2025-03-04` = midnight UTC)."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        console.print(f"[bold red]error:[/] {name}: {text!r} is not an ISO date or timestamp")
        raise typer.Exit(1) from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _store(env: str | None):
    from jobs import feature_store as fs
    from towerflow.settings import get_settings

    settings = get_settings()
    try:
        return settings, fs.feature_store(settings, env)
    except fs.FeatureStoreError as err:
        console.print(f"[bold red]error:[/] {err}")
        raise typer.Exit(1) from None


def plan_command(env: EnvOption = None) -> None:
    """Show what `apply` would change in the registry (Feast's plan), changing nothing.

    The same as `feast plan` in feature_repo/ with the environment's feature_store.yaml
    (`feast -f redis/feature_store.yaml plan` for redis), with paths from towerflow's settings.
    """
    from jobs import feature_store as fs

    _, store = _store(env)
    with console.status(f"feast plan ({fs.env_of(store)}, project {store.project})"):
        changes = fs.plan(store)
    console.print(f"feast plan: {fs.env_of(store)}, project {store.project}, registry {store.config.registry.path}")
    for change in changes:
        console.print(f"  {change}")
    console.print(f"{len(changes)} change(s)" if changes else "no changes (already applied)")


def apply_command(env: EnvOption = None) -> None:
    """Register feature_repo/ (entities, sources, views, services) and create online tables.

    Feast's own plan and apply over the environment's feature_store.yaml (feature_repo/), so the
    result is the same as `feast apply`; unchanged definitions are not re-applied.
    """
    from jobs import feature_store as fs

    _, store = _store(env)
    with console.status(f"feast apply ({fs.env_of(store)}, project {store.project})"):
        report = fs.apply(store)
    table = Table(title=f"feast apply: {report.env}, project {report.project}", show_header=False)
    for kind, n in report.objects.items():
        table.add_row(kind, str(n))
    table.add_row("changed", ", ".join(report.changed) if report.changed else "nothing (already applied)")
    table.add_row("seconds", f"{report.seconds:.1f}")
    table.add_row("feature_store.yaml", str(fs.yaml_path(report.env)))
    console.print(table)


def materialize_command(
    end: Annotated[str, typer.Option("--end", help="Values valid at this instant (ISO, UTC).")],
    start: Annotated[
        str | None, typer.Option("--start", help="Window start for every view (default: end - view TTL).")
    ] = None,
    view: Annotated[list[str] | None, typer.Option("--view", help="Only this feature view (repeatable).")] = None,
    env: EnvOption = None,
) -> None:
    """Load feature values as of --end into the online store (Redis or SQLite).

    Each view reads its TTL window ending at --end, so a rerun (or an ETL rerun of a day in the
    window) gives the same online values. Readers reload when the new marker lands.
    """
    from jobs import feature_store as fs

    end_ts = parse_ts(end, "--end")
    start_ts = parse_ts(start, "--start") if start else None
    _, store = _store(env)
    title = f"materialize to {fs.env_of(store)} (project {store.project}) up to {end_ts:%Y-%m-%d %H:%M} UTC"
    table = Table(title=title)
    for column in ("feature view", "window", "entities", "seconds"):
        table.add_column(column, justify="right" if column in ("entities", "seconds") else "left")

    def on_view(entry) -> None:
        if entry.skipped:
            console.print(f"  {entry.view}: skipped ({entry.skipped})")
            table.add_row(entry.view, "skipped: no table yet", "0", "")
        else:
            console.print(f"  {entry.view}: {entry.entities:,} entities in {entry.seconds:.1f} s")
            window = f"{entry.start:%Y-%m-%d %H:%M} .. {entry.end:%Y-%m-%d %H:%M}"
            table.add_row(entry.view, window, f"{entry.entities:,}", f"{entry.seconds:.1f}")

    report = fs.materialize(store, end_ts, start=start_ts, views=view, on_view=on_view)
    console.print(table)
    console.print(f"{report.entities:,} entity rows in {report.seconds:.1f} s; marker {report.marker}")


def register(app: typer.Typer) -> None:
    """Add this part's commands to the top-level app."""
    features = typer.Typer(
        help="Feature store (Feast over gold Delta tables): plan, apply, materialize.", no_args_is_help=True
    )
    features.command("plan")(plan_command)
    features.command("apply")(apply_command)
    features.command("materialize")(materialize_command)
    app.add_typer(features, name="features")
