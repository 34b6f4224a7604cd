"""`towerflow` commands for the pipeline part; registered by towerflow.cli. Keep imports light here."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this part's commands to the top-level app."""
