"""The model server process: both gRPC services on one port (`ModelServer`)."""

from __future__ import annotations

import logging
from concurrent import futures

import grpc
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from serving.model_server.codec import MAX_REQUEST_BYTES
from serving.model_server.manager import ModelManager
from serving.model_server.services import ModelServicer, PredictionServicer

log = logging.getLogger("towerflow.model_server")
DEFAULT_HOST = "127.0.0.1"


def grpc_options(max_request_bytes: int = MAX_REQUEST_BYTES) -> list[tuple[str, int]]:
    """The server's channel arguments: requests up to `max_request_bytes` (larger ones are
    refused with RESOURCE_EXHAUSTED before they are decoded), responses of any size."""
    return [
        ("grpc.max_send_message_length", -1),
        ("grpc.max_receive_message_length", max_request_bytes),
        # Fail to bind a port another server already holds instead of silently sharing it.
        ("grpc.so_reuseport", 0),
    ]


def address(host: str, port: int) -> str:
    """`host:port` as gRPC parses it (an IPv6 literal in brackets)."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


class ModelServer:
    """The gRPC server: both services on one port, a small thread pool.

    Args:
        manager: the started or unstarted ModelManager to serve.
        port: TCP port; 0 picks a free one (see `port` after `start`).
        host: interface to bind: loopback unless asked (TF Serving binds all, `0.0.0.0`), as the
            server takes any config pushed to it and has no authentication.
        max_workers: request threads. TF releases the GIL while a graph runs, so a few suffice.
        max_request_bytes: the largest request accepted (RESOURCE_EXHAUSTED beyond, before it is
            decoded); also the most values one Predict input may hold.
    """

    def __init__(
        self,
        manager: ModelManager,
        *,
        port: int = 8500,
        host: str = DEFAULT_HOST,
        max_workers: int = 4,
        max_request_bytes: int = MAX_REQUEST_BYTES,
    ) -> None:
        self.manager = manager
        self.host = host
        self.port = port
        self.max_workers = max_workers
        self.max_request_bytes = max_request_bytes
        self._server: grpc.Server | None = None

    def start(self) -> int:
        """Load the models (manager.start, if not started), then listen. Returns the bound port.

        Raises:
            RuntimeError: the port could not be bound.
        """
        if not self.manager.started:
            self.manager.start()
        server = grpc.server(
            futures.ThreadPoolExecutor(self.max_workers, thread_name_prefix="model-rpc"),
            options=grpc_options(self.max_request_bytes),
        )
        prediction = PredictionServicer(self.manager, max_values=self.max_request_bytes)
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(prediction, server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(self.manager), server)
        listen = address(self.host, self.port)
        try:
            bound = server.add_insecure_port(listen)
        except RuntimeError as err:
            raise RuntimeError(f"cannot listen on {listen}: {err}") from None
        if not bound:
            raise RuntimeError(f"cannot listen on {listen} (in use?)")
        server.start()
        self._server, self.port = server, bound
        log.info("model server listening on %s:%d", self.host, self.port)
        return self.port

    def stop(self, grace: float = 5.0) -> None:
        """Stop taking requests, let in-flight ones finish (up to `grace` s), then unload."""
        if self._server is not None:
            self._server.stop(grace).wait()
            self._server = None
        self.manager.stop()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server stops; True if it did within `timeout`."""
        return self._server.wait_for_termination(timeout) if self._server else True

    def __enter__(self) -> ModelServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
