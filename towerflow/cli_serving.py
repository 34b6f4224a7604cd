"""`towerflow` commands for the serving part; registered by towerflow.cli. Keep imports light here."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console(stderr=True)


def register(app: typer.Typer) -> None:
    """Add this part's commands to the top-level app."""
    app.command("model-server")(model_server)


def model_server(
    port: Annotated[
        int | None, typer.Option(help="gRPC port (default 8500, or TOWERFLOW_MODEL_SERVER_PORT).")
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "0.0.0.0",
    model_base: Annotated[
        Path | None, typer.Option(help="Model base folder (default $TOWERFLOW_HOME/models).")
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="models.config to follow (default <model-base>/models.config).")
    ] = None,
    poll_seconds: Annotated[
        float | None, typer.Option(help="Re-read the config and rescan versions this often (default 2).")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Request threads (default 4).")] = None,
    allow_version_labels_for_unavailable_models: Annotated[
        bool,
        typer.Option(
            "--allow-version-labels-for-unavailable-models/--strict-version-labels",
            help="As TF Serving's flag: a new label may name a version that is not loaded yet.",
        ),
    ] = True,
) -> None:
    """Serve the model base over TF Serving's gRPC API, where tensorflow_model_server is not installed.

    Same folder, same models.config, same PredictionService/ModelService: new versions load
    without a restart, old ones unload per the version policy. Stops cleanly on Ctrl-C or SIGTERM.
    """
    from towerflow.settings import get_settings

    settings = get_settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    base = model_base or settings.models_dir
    with console.status("starting the model server (importing TensorFlow, loading models)"):
        from serving.model_server import ModelManager, ModelServer, ServingError

        manager = ModelManager(
            base,
            config,
            poll_seconds=poll_seconds if poll_seconds is not None else settings.model_server_poll_seconds,
            allow_version_labels_for_unavailable_models=allow_version_labels_for_unavailable_models,
        )
        server = ModelServer(
            manager,
            port=port if port is not None else settings.model_server_port,
            host=host,
            max_workers=workers or settings.model_server_workers,
        )
        stop = threading.Event()
        # Handlers first, so a SIGTERM during start-up still ends in a clean stop.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        try:
            bound = server.start()
        except (ServingError, RuntimeError) as err:
            manager.stop()
            console.print(f"[bold red]error:[/] {getattr(err, 'message', err)}", highlight=False)
            raise typer.Exit(1) from None
    console.print(
        f"model server on {host}:{bound}: {base} (config {manager.config_path}); Ctrl-C to stop",
        highlight=False,
        soft_wrap=True,
    )
    stop.wait()
    console.print("stopping: finishing in-flight requests")
    server.stop(grace=5.0)
    console.print("model server stopped")
