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
    app.command("token")(token)
    app.command("serve")(serve)
    app.command("stream-worker")(stream_worker)


def model_server(
    port: Annotated[int | None, typer.Option(help="gRPC port (default 8500, or TOWERFLOW_MODEL_SERVER_PORT).")] = None,
    host: Annotated[
        str | None,
        typer.Option(help="Interface to listen on (default 127.0.0.1, or TOWERFLOW_MODEL_SERVER_HOST; 0.0.0.0: all)."),
    ] = None,
    model_base: Annotated[Path | None, typer.Option(help="Model base folder (default $TOWERFLOW_HOME/models).")] = None,
    config: Annotated[
        Path | None, typer.Option(help="models.config to follow (default <model-base>/models.config).")
    ] = None,
    poll_seconds: Annotated[
        float | None, typer.Option(help="Re-read the config and rescan versions this often (default 2).")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Request threads (default 4).")] = None,
    tensorflow_intra_op_parallelism: Annotated[
        int | None, typer.Option(help="Threads one op may use (TF Serving's flag; default: one per core).")
    ] = None,
    tensorflow_inter_op_parallelism: Annotated[
        int | None, typer.Option(help="Ops run side by side (TF Serving's flag; default: one per core).")
    ] = None,
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
    host = host or settings.model_server_host
    with console.status("starting the model server (importing TensorFlow, loading models)"):
        from serving.model_server import ModelManager, ModelServer, ServingError, configure_threads

        threads = (
            tensorflow_intra_op_parallelism or settings.model_server_intra_op_threads,
            tensorflow_inter_op_parallelism or settings.model_server_inter_op_threads,
        )
        configure_threads(*threads)
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
            max_request_bytes=settings.model_server_max_request_bytes,
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


def token(
    user: Annotated[
        str | None,
        typer.Option(help="Mint a user token: it reads only this user's recommendations (`sub`; recommend:read)."),
    ] = None,
    service: Annotated[
        str | None,
        typer.Option(help="Mint a service token named NAME: it reads any user's recommendations (recommend:any)."),
    ] = None,
    scopes: Annotated[
        str | None,
        typer.Option(
            help="Space-separated, instead of the default (recommend:read with --user, recommend:any with "
            "--service): recommend:read (the token's own user), recommend:any (any user), events:write, "
            "experiments:read, experiments:admin (force an arm with X-Experiment-Arm)."
        ),
    ] = None,
    ttl: Annotated[int, typer.Option(help="Seconds until it expires.")] = 86_400,
) -> None:
    """Print a development bearer token (JWT) for the gateway; the token is the last line.

    `--user U` mints a user token: GET /v1/recommendations answers it for user_id=U only (scope
    recommend:read) and refuses other users with 403. `--service NAME` mints a service token
    (scope recommend:any), e.g. for a backend that asks on behalf of any of its users.

    Signed with TOWERFLOW_JWT_KEY when set (HS256), else with a secret generated under
    $TOWERFLOW_HOME/secrets/ on first run, which the gateway also uses.
    """
    from serving.gateway.auth import dev_secret, mint_token
    from towerflow.settings import get_settings

    subjects = [name for name in (user, service) if name is not None]
    if len(subjects) != 1:
        console.print("[bold red]error:[/] give either --user U (a user token) or --service NAME (a service token)")
        raise typer.Exit(2)
    subject = subjects[0]
    scopes = scopes or ("recommend:read" if user is not None else "recommend:any")
    settings = get_settings()
    if settings.jwt_jwks_url:
        console.print("[bold red]error:[/] the gateway verifies tokens from a JWKS URL; get one from that issuer")
        raise typer.Exit(1)
    algorithm = settings.jwt_algorithms[0]
    if not algorithm.startswith("HS"):
        console.print(f"[bold red]error:[/] the gateway expects {algorithm} tokens; mint them with your private key")
        raise typer.Exit(1)
    key = settings.jwt_key or dev_secret(settings)
    try:
        jwt_token = mint_token(
            key,
            subject=subject,
            scopes=scopes.replace(",", " ").split(),
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            ttl_s=ttl,
            algorithm=algorithm,
        )
    except ValueError as err:
        console.print(f"[bold red]error:[/] {err}", highlight=False)
        raise typer.Exit(1) from None
    kind = "user" if user is not None else "service"
    console.print(f"token for {kind} {subject!r}, scopes {scopes!r}, valid {ttl} s:", highlight=False)
    print(jwt_token)  # noqa: T201 - the token is the command's output (last line of stdout)


def stream_worker(
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus metrics on this port (default: none).")
    ] = None,
    online: Annotated[
        bool, typer.Option("--online/--no-online", help="Update online features (off: the lake only).")
    ] = True,
) -> None:
    """Consume the event stream: users' recent actions and counters online within a second,
    every event into the lake's bronze/events once. Ctrl-C or SIGTERM stops it after the batch in
    hand; a kill loses nothing (un-acked events are handed to the next worker)."""
    from serving.stream_worker.worker import open_worker
    from towerflow.logs import configure
    from towerflow.settings import get_settings

    settings = get_settings()
    configure(settings.log_format)
    worker = open_worker(settings, online=online)
    if metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, registry=worker.metrics.registry)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    console.print(
        f"stream worker: {type(worker.stream).__name__} {worker.stream.name!r} -> online features, "
        f"{worker.sink.uri}; Ctrl-C to stop",
        highlight=False,
        soft_wrap=True,
    )
    try:
        worker.run(stop)
    finally:
        worker.close()
    console.print("stream worker stopped")


def serve(
    port: Annotated[int | None, typer.Option(help="Gateway HTTP port (default 8000).")] = None,
    model_port: Annotated[int | None, typer.Option(help="Model server gRPC port (default 8500).")] = None,
    model_host: Annotated[
        str | None,
        typer.Option(help="Model server interface (default 127.0.0.1, or TOWERFLOW_MODEL_SERVER_HOST)."),
    ] = None,
    host: Annotated[str | None, typer.Option(help="Gateway interface (default 127.0.0.1).")] = None,
    model_server: Annotated[
        bool,
        typer.Option(
            "--model-server/--no-model-server",
            help="Start the built-in model server (off: use TOWERFLOW_MODEL_SERVER_TARGET, e.g. TF Serving).",
        ),
    ] = True,
    stream_worker: Annotated[
        bool,
        typer.Option(
            "--stream-worker/--no-stream-worker",
            help="Start the stream worker (off: run `towerflow stream-worker` elsewhere).",
        ),
    ] = True,
    access_log: Annotated[bool, typer.Option(help="Log every HTTP request.")] = False,
) -> None:
    """Run the model server, the gateway and the stream worker in the foreground; Ctrl-C or
    SIGTERM stops them.

    Each runs as a child process in its own session, so one Ctrl-C reaches only this command,
    which then stops the stream worker and the gateway first (in-flight requests finish,
    impressions flush) and the model server last. If a child dies, the others are stopped and the
    exit code is 1.
    """
    import os
    import subprocess
    import sys

    from towerflow.settings import get_settings

    settings = get_settings()
    port = port if port is not None else settings.gateway_port
    host = host or settings.gateway_host
    model_port = model_port if model_port is not None else settings.model_server_port
    model_host = model_host or settings.model_server_host
    env = dict(os.environ)
    children: list[tuple[str, subprocess.Popen]] = []
    if model_server:
        env["TOWERFLOW_MODEL_SERVER_TARGET"] = model_target(model_host, model_port)
        cmd = [
            sys.executable,
            "-m",
            "towerflow.cli",
            "model-server",
            "--port",
            str(model_port),
            "--host",
            model_host,
        ]
        children.append(("model server", subprocess.Popen(cmd, env=env, start_new_session=True)))
    gateway = [sys.executable, "-m", "uvicorn", "serving.gateway.main:serve_app", "--factory"]
    gateway += ["--host", host, "--port", str(port), "--loop", "uvloop", "--http", "httptools"]
    gateway += ["--timeout-graceful-shutdown", "10"] + ([] if access_log else ["--no-access-log"])
    children.append(("gateway", subprocess.Popen(gateway, env=env, start_new_session=True)))
    if stream_worker:
        worker = [sys.executable, "-m", "towerflow.cli", "stream-worker"]
        children.append(("stream worker", subprocess.Popen(worker, env=env, start_new_session=True)))
    target = env["TOWERFLOW_MODEL_SERVER_TARGET"] if model_server else settings.model_target
    console.print(
        f"gateway on http://{host}:{port} (docs at /docs), model server on {target}; Ctrl-C to stop",
        highlight=False,
        soft_wrap=True,
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    failed = None
    while not stop.is_set():
        failed = next((name for name, child in children if child.poll() is not None), None)
        if failed:
            break
        stop.wait(0.2)
    console.print(f"{failed} exited; stopping" if failed else "stopping")
    for name, child in reversed(children):  # gateway first: it still needs the model server to drain
        if child.poll() is None:
            child.terminate()
        try:
            child.wait(timeout=20)
        except subprocess.TimeoutExpired:
            console.print(f"{name} did not stop in 20 s; killing it")
            child.kill()
            child.wait()
    console.print("stopped")
    if failed:
        raise typer.Exit(1)


def model_target(host: str, port: int) -> str:
    """Where to reach a model server listening on `host:port`: loopback when it listens on every
    interface (`0.0.0.0`, `::`), else that address."""
    if host.strip("[]") in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
