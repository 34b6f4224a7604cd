"""`towerflow experiments create|list|show|stop|import`: the A/B experiments the gateway serves.

They live in the experiments database (`TOWERFLOW_DATABASE_URL`, else SQLite under
$TOWERFLOW_HOME); a running gateway picks a change up within `TOWERFLOW_EXPERIMENTS_REFRESH_S`.
SQLAlchemy and Alembic are imported inside the commands."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from experiments.domain import Experiment
    from experiments.store import ExperimentStore

experiments_app = typer.Typer(
    help="A/B experiments: which model versions each share of a surface's users gets.", no_args_is_help=True
)
console = Console()
errors = Console(stderr=True)
ARM_FORMAT = "NAME:SHARE[:retrieval=LABEL,ranking=LABEL]"
DecisionChoice = Literal["promote", "rollback", "inconclusive"]
StatusChoice = Literal["running", "stopped"]


def register(app: typer.Typer) -> None:
    app.add_typer(experiments_app, name="experiments")


@contextmanager
def _store() -> Iterator[ExperimentStore]:
    """The experiments store of the settings; an experiments error ends the command with its
    message and exit code 1, not a stack trace."""
    from experiments.domain import ExperimentError
    from experiments.store import ExperimentStore
    from towerflow.settings import get_settings

    try:
        store = ExperimentStore.open(get_settings().experiments_db_url)
        try:
            yield store
        finally:
            store.close()
    except ExperimentError as err:
        errors.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


def parse_arm(spec: str) -> dict[str, Any]:
    """`treatment:10:ranking=canary` -> `{"name": "treatment", "share": "10", "models": {...}}`
    (the store validates the values).

    Raises:
        InvalidExperiment: not NAME:SHARE[:MODEL=LABEL,...].
    """
    from experiments.domain import InvalidExperiment

    parts = spec.split(":")
    if len(parts) not in (2, 3) or not parts[0].strip():
        raise InvalidExperiment("--arm", f"{spec!r} is not {ARM_FORMAT} (e.g. treatment:10:ranking=canary)")
    models: dict[str, str] = {}
    for pair in parts[2].split(",") if len(parts) == 3 else []:
        model, sep, label = pair.partition("=")
        if not sep or not model.strip() or model.strip() in models:
            raise InvalidExperiment("--arm", f"{spec!r}: {pair!r} is not MODEL=LABEL (e.g. ranking=canary)")
        models[model.strip()] = label.strip()
    return {"name": parts[0].strip(), "share": parts[1].strip().removesuffix("%"), "models": models}


def _arms(experiment: Experiment) -> str:
    """`control 90%, treatment 10% (ranking canary)`: the models an arm does not serve on stable."""
    parts = []
    for arm in experiment.arms:
        moved = ", ".join(f"{m} {v}" for m, v in arm.models.items() if v != "stable")
        parts.append(f"{arm.name} {arm.share:g}%" + (f" ({moved})" if moved else ""))
    return ", ".join(parts)


def _when(experiment: Experiment, timespec: str = "seconds") -> tuple[str, str]:
    ended = experiment.ended_at.isoformat(timespec=timespec) if experiment.ended_at else ""
    return experiment.started_at.isoformat(timespec=timespec), ended


def print_experiment(experiment: Experiment) -> None:
    """One experiment: its fields, then its arms in assignment order."""
    started, ended = _when(experiment)
    table = Table(title=f"experiment {experiment.id}: {experiment.name}", show_header=False)
    table.add_row("surface", experiment.surface)
    table.add_row("status", experiment.status)
    table.add_row("started", started)
    if ended:
        table.add_row("ended", ended)
    table.add_row("decision", experiment.decision or "")
    if experiment.decision_reason:
        table.add_row("why", experiment.decision_reason)
    table.add_row("salt", experiment.salt)
    if experiment.canary_version is not None:
        table.add_row("started by", f"publishing version {experiment.canary_version} as canary")
    console.print(table)
    arms = Table(title="arms (in assignment order)")
    for column in ("arm", "share %", "retrieval", "ranking"):
        arms.add_column(column)
    for arm in experiment.arms:
        arms.add_row(arm.name, f"{arm.share:g}", arm.models["retrieval"], arm.models["ranking"])
    console.print(arms)


def _print(experiment: Experiment, as_json: bool) -> None:
    if as_json:
        typer.echo(experiment.model_dump_json(indent=2))
    else:
        print_experiment(experiment)


JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


@experiments_app.command("create")
def create(
    name: Annotated[str, typer.Option(help="What the experiment tests, for people.")],
    arms: Annotated[
        list[str],
        typer.Option(
            "--arm",
            help=f"{ARM_FORMAT}, repeated, in assignment order: a name, the share of users in percent (the shares "
            "sum to 100), and the model versions it serves (a label of models.config or a version number; a "
            "model not named serves stable). E.g. --arm control:90 --arm treatment:10:ranking=canary",
        ),
    ],
    surface: Annotated[str, typer.Option(help="Where it runs; the recommendations route is `home`.")] = "home",
    salt: Annotated[
        str | None,
        typer.Option(help="Hash salt; reuse an earlier experiment's to keep users in their arms (default: new)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Start an experiment on a surface (one running per surface); running gateways serve it
    within seconds."""
    with _store() as store:
        experiment = store.create(name=name, surface=surface, arms=[parse_arm(a) for a in arms], salt=salt)
    _print(experiment, as_json)


@experiments_app.command("list")
def list_experiments(
    status: Annotated[StatusChoice | None, typer.Option(help="Only running or only stopped ones.")] = None,
    surface: Annotated[str | None, typer.Option(help="Only this surface's.")] = None,
    as_json: JsonOption = False,
) -> None:
    """The experiments, newest first."""
    with _store() as store:
        found = store.list(status=status, surface=surface)
    if as_json:
        typer.echo(json.dumps([e.model_dump(mode="json") for e in found], indent=2))
        return
    table = Table(title="experiments (times UTC)")
    for column in ("id", "name", "surface", "status", "arms", "started", "ended", "decision"):
        table.add_column(column, no_wrap=column in ("id", "status"), overflow="fold")
    for experiment in found:
        table.add_row(
            experiment.id,
            experiment.name,
            experiment.surface,
            experiment.status,
            _arms(experiment),
            *(t.removesuffix("+00:00").replace("T", " ") for t in _when(experiment, "minutes")),
            experiment.decision or "",
        )
    console.print(table if found else "no experiments yet: towerflow experiments create --help")


@experiments_app.command("show")
def show(
    experiment_id: Annotated[str, typer.Argument(metavar="ID", help="The experiment's id (experiments list).")],
    as_json: JsonOption = False,
) -> None:
    """One experiment and its arms."""
    with _store() as store:
        experiment = store.get(experiment_id)
    _print(experiment, as_json)


@experiments_app.command("stop")
def stop(
    experiment_id: Annotated[str, typer.Argument(metavar="ID", help="The experiment's id (experiments list).")],
    decision: Annotated[
        DecisionChoice | None,
        typer.Option(help="What was decided: promote (the variant won), rollback (it lost), inconclusive."),
    ] = None,
    reason: Annotated[str | None, typer.Option(help="Why, in words (kept with the experiment).")] = None,
    as_json: JsonOption = False,
) -> None:
    """End an experiment: its surface serves every user on `stable` again within seconds.
    Moving the labels is separate: `towerflow models promote` / `rollback`."""
    with _store() as store:
        experiment = store.stop(experiment_id, decision=decision, reason=reason)
    _print(experiment, as_json)


@experiments_app.command("import")
def import_file(
    path: Annotated[Path, typer.Argument(help="An experiments.json the gateway used to read at start.")],
    surface: Annotated[str, typer.Option(help="The surface it ran on.")] = "home",
    name: Annotated[str | None, typer.Option(help="Its name (default: the file's id).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Start the experiment of an old experiments.json: weights become percent shares, and its id
    the salt, so every user keeps the arm the file gave them."""
    from experiments.domain import ExperimentError, from_legacy_json

    try:
        text = path.read_text()
    except OSError as err:
        errors.print(f"[bold red]error:[/] cannot read {path}: {err.strerror or err}", highlight=False)
        raise typer.Exit(1) from None
    with _store() as store:
        try:
            new = from_legacy_json(text, surface=surface, name=name)
            arms = [a.model_dump() for a in new.arms]
            experiment = store.create(name=new.name, surface=new.surface, arms=arms, salt=new.salt)
        except ExperimentError as err:
            errors.print(f"[bold red]error:[/] {path}: {err}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
    _print(experiment, as_json)
