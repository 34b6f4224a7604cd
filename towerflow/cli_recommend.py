"""`towerflow recommend`: what production would show a user, scored offline.

Heavy imports happen inside the command."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def register(app: typer.Typer) -> None:
    app.command("recommend")(recommend)


def _moment(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        console.print(f"[bold red]error:[/] --at {text!r} is not an ISO 8601 moment (e.g. 2011-11-01T00:00:00Z)")
        raise typer.Exit(2) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def recommend(
    users: Annotated[list[str], typer.Option("--user", help="A user id; repeat for several users.")],
    count: Annotated[int, typer.Option(min=1, max=100, help="Items per user (as the gateway's count).")] = 10,
    exclude_purchased: Annotated[
        bool,
        typer.Option(
            "--exclude-purchased/--no-exclude-purchased", help="Drop items the user already has (the default)."
        ),
    ] = True,
    exclude_seen: Annotated[
        bool,
        typer.Option("--exclude-seen", help="Also drop every item the user acted on, views included."),
    ] = False,
    at: Annotated[
        str | None, typer.Option("--at", help="The moment recommendations are for (ISO 8601; default now).")
    ] = None,
    version: Annotated[str, typer.Option(help="A version label or number of the published pair.")] = "stable",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Score users with the published models, the online features and the gateway's binding and
    rules: the list the gateway's model path returns for the same request."""
    from dataclasses import replace

    from scoring.batch import POPULAR_PATH, open_scorer, recommend_users
    from scoring.binding import UnboundInputError
    from scoring.rules import RuleConfig
    from towerflow.settings import get_settings

    settings = get_settings()
    moment = _moment(at)
    try:
        scorer = open_scorer(settings, version)
    except (LookupError, UnboundInputError) as err:
        console.print(f"[bold red]error:[/] {err}", highlight=False)
        raise typer.Exit(1) from None
    rules = replace(
        RuleConfig.from_settings(settings, count=count),
        exclude_purchased=exclude_purchased,
        exclude_seen=exclude_seen,
    )
    answers = recommend_users(scorer, users, moment, rules)
    versions = {model: str(v) for model, v in scorer.versions.items()}
    served_by = next((a.recommender for a in answers if a.recommender), None)
    if served_by:  # as the gateway's model_versions say it
        versions["recommender"] = served_by
    if as_json:
        body = {
            "moment": moment.isoformat(),
            "model_versions": versions,
            "exclude_purchased": exclude_purchased,
            "exclude_seen": exclude_seen,
            "users": [
                {
                    "user_id": a.user_id,
                    "path": a.path,
                    "items": [
                        {"item_id": item, "position": n, "score": score} for n, (item, score) in enumerate(a.items, 1)
                    ],
                }
                for a in answers
            ],
        }
        typer.echo(json.dumps(body, indent=2))
        return
    pair = f"retrieval {versions['retrieval']}, ranking {versions['ranking']}"
    if served_by:
        pair += f": {served_by}"
    for answer in answers:
        title = f"user {answer.user_id} at {moment.isoformat()} ({pair})"
        if answer.path == POPULAR_PATH:
            title += ": no online features (cold start), popular items"
        grid = Table(title=title)
        for name in ("position", "item", "score"):
            grid.add_column(name, justify="right" if name != "item" else "left")
        for n, (item, score) in enumerate(answer.items, 1):
            grid.add_row(str(n), item, f"{score:.6f}")
        console.print(grid)
