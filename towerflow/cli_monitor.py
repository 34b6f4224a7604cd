"""`towerflow monitor report`: the daily monitoring report (drift, CTR and conversion per model
version) of one day; registered by towerflow.cli. The lake and matplotlib are imported inside the
command."""

from __future__ import annotations

from datetime import date
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def _day(text: str, name: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        console.print(f"[bold red]error:[/] {name}: {text!r} is not a date (YYYY-MM-DD)")
        raise typer.Exit(1) from None


def report_command(
    day: Annotated[str, typer.Option("--date", help="The day to report (YYYY-MM-DD, UTC).")],
    reference_start: Annotated[
        str | None,
        typer.Option(
            "--reference-start", help="First reference day (default: the serving model's last training days)."
        ),
    ] = None,
    reference_end: Annotated[
        str | None, typer.Option("--reference-end", help="Last reference day (with --reference-start).")
    ] = None,
) -> None:
    """Measure one day: PSI of key gold features and of each ranking version's scores against a
    reference, CTR and conversion per model version; writes
    `$TOWERFLOW_HOME/reports/monitoring/<date>.html` and `<date>.json` (what the gateway's /metrics
    exposes). Exits 2 when a drift is at the alert level.

    Thresholds and the reference length: TOWERFLOW_DRIFT_WARN_PSI, TOWERFLOW_DRIFT_ALERT_PSI,
    TOWERFLOW_DRIFT_REFERENCE_DAYS.
    """
    from monitoring.drift import Thresholds, Window
    from monitoring.report import monitor_day
    from towerflow.lake import Lake
    from towerflow.settings import get_settings

    when = _day(day, "--date")
    reference = None
    if reference_start or reference_end:
        if not (reference_start and reference_end):
            console.print("[bold red]error:[/] give both --reference-start and --reference-end, or neither")
            raise typer.Exit(1)
        first, last = _day(reference_start, "--reference-start"), _day(reference_end, "--reference-end")
        if last < first:
            console.print("[bold red]error:[/] --reference-end is before --reference-start")
            raise typer.Exit(1)
        reference = Window(first, last, f"{first} .. {last} (given on the command line)")
    settings = get_settings()
    try:
        thresholds = Thresholds(settings.drift_warn_psi, settings.drift_alert_psi)
    except ValueError as err:
        console.print(f"[bold red]error:[/] {err} (TOWERFLOW_DRIFT_WARN_PSI / TOWERFLOW_DRIFT_ALERT_PSI)")
        raise typer.Exit(1) from None
    with console.status(f"measuring {when}"):
        paths, summary = monitor_day(
            Lake(settings.lake, settings.storage_options or None),
            settings.models_dir,
            when,
            settings.monitoring_reports_dir,
            thresholds=thresholds,
            reference_days=settings.drift_reference_days,
            reference=reference,
        )
    ref = summary["reference"]
    console.print(f"reference {ref['first']} .. {ref['last']}: {ref['source']}", highlight=False)
    table = Table(title=f"drift on {when} (PSI; warn {thresholds.warn:g}, alert {thresholds.alert:g})")
    for column in ("feature", "PSI", "level", "rows"):
        table.add_column(column, justify="left" if column in ("feature", "level") else "right")
    for row in summary["drift"]:
        name = f"score (ranking {row['model_version']})" if row["table"] == "impressions" else row["feature"]
        psi = "n/a" if row["psi"] is None else f"{row['psi']:.4f}"
        label = f"{row['table']}.{name}" if row["table"] != "impressions" else name
        table.add_row(label, psi, row["level"], f"{row['rows']:,}")
    console.print(table)
    outcomes = Table(title=f"outcomes on {when} per model version")
    for column in ("path", "retrieval", "ranking", "impressions", "CTR", "conversion"):
        outcomes.add_column(column, justify="left" if column == "path" else "right")
    for o in summary["outcomes"]:
        rates = ["n/a" if o[k] is None else f"{o[k]:.4f}" for k in ("ctr", "conversion")]
        outcomes.add_row(o["path"], o["retrieval_version"], o["ranking_version"], f"{o['impressions']:,}", *rates)
    console.print(outcomes)
    console.print(f"report: {paths.html}", highlight=False)
    if any(f["level"] == "alert" for f in summary["flagged"]):
        raise typer.Exit(2)


def register(app: typer.Typer) -> None:
    """Add this part's commands to the top-level app."""
    monitor = typer.Typer(help="Monitoring: the daily drift and outcomes report.", no_args_is_help=True)
    monitor.command("report")(report_command)
    app.add_typer(monitor, name="monitor")
