"""A small client for TF Serving's gRPC API (the official `tensorflow-serving-api` stubs).

It talks to the real `tensorflow_model_server` and to `towerflow model-server` alike. `ModelClient`
is blocking; `AsyncModelClient` (grpc.aio) is for the FastAPI gateway's event loop.

    client = ModelClient("127.0.0.1:8500")
    out = client.predict("retrieval", {"user_id": np.array([b"u1"])}, version_label="stable")
    out["item_ids"], out["scores"], out.version   # numpy arrays, and the version that answered

Errors are `grpc.RpcError`s carrying TF Serving's status codes (NOT_FOUND, INVALID_ARGUMENT, ...).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from towerflow import model_config as mc

DEFAULT_SIGNATURE = "serving_default"
# The model server's default request limit (serving.model_server.MAX_REQUEST_BYTES): a larger
# request fails here, RESOURCE_EXHAUSTED, instead of crossing the wire to be refused there.
MAX_REQUEST_BYTES = 64 * 1024 * 1024


def channel_options(max_request_bytes: int = MAX_REQUEST_BYTES) -> list[tuple[str, int]]:
    """Requests up to `max_request_bytes`; responses of any size (gRPC's 4 MB default is too
    small for a batch of top-1000 retrievals)."""
    return [("grpc.max_send_message_length", max_request_bytes), ("grpc.max_receive_message_length", -1)]


_STATE_NAMES = dict(get_model_status_pb2.ModelVersionStatus.State.items())
STATE_NAME = {number: name for name, number in _STATE_NAMES.items()}
_CODE_NAME = {code.value[0]: code.name for code in grpc.StatusCode}


class Prediction(dict):
    """Output name -> numpy array, plus which model version answered (for impression logs).

    Attributes:
        model: model name.
        version: the version that computed the outputs.
        signature_name: the signature that ran.
    """

    def __init__(self, outputs: dict[str, np.ndarray], model: str, version: int, signature_name: str):
        super().__init__(outputs)
        self.model = model
        self.version = version
        self.signature_name = signature_name


@dataclass(frozen=True)
class VersionStatus:
    """One row of GetModelStatus: `state` is START/LOADING/AVAILABLE/UNLOADING/END; `error_code`
    is `OK` or the load error's code name."""

    version: int
    state: str
    error_code: str
    error_message: str


def tensor_proto(value) -> tensor_pb2.TensorProto:
    """A TensorProto for a numpy array or nested list; text is sent as UTF-8 bytes.

    Strings take a direct path (about 4x faster than `tf.make_tensor_proto` for 1000 ids).
    """
    array = np.asarray(value)
    if array.dtype.kind in "USO":
        proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING)
        proto.tensor_shape.CopyFrom(
            tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=n) for n in array.shape])
        )
        proto.string_val.extend(v if isinstance(v, bytes) else str(v).encode() for v in array.ravel())
        return proto
    return tf.make_tensor_proto(array)


def predict_request(
    model: str,
    inputs: Mapping[str, object],
    *,
    version: int | None = None,
    version_label: str | None = None,
    signature_name: str = DEFAULT_SIGNATURE,
    output_filter: Iterable[str] = (),
) -> predict_pb2.PredictRequest:
    """Build a PredictRequest (a version and a label are mutually exclusive)."""
    request = predict_pb2.PredictRequest()
    _model_spec(request.model_spec, model, version, version_label)
    request.model_spec.signature_name = signature_name
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tensor_proto(value))
    request.output_filter.extend(output_filter)
    return request


def _model_spec(spec, model: str, version: int | None, version_label: str | None) -> None:
    if version is not None and version_label is not None:
        raise ValueError("give a version or a version_label, not both")
    spec.name = model
    if version is not None:
        spec.version.value = version
    elif version_label is not None:
        spec.version_label = version_label


def prediction(response: predict_pb2.PredictResponse) -> Prediction:
    """Decode a PredictResponse into numpy arrays (strings come back as bytes objects)."""
    outputs = {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}
    spec = response.model_spec
    return Prediction(outputs, spec.name, spec.version.value, spec.signature_name)


def _status_request(model: str, version: int | None, version_label: str | None):
    request = get_model_status_pb2.GetModelStatusRequest()
    _model_spec(request.model_spec, model, version, version_label)
    return request


def _statuses(response) -> list[VersionStatus]:
    return [
        VersionStatus(
            s.version,
            STATE_NAME.get(s.state, str(s.state)),
            _CODE_NAME.get(s.status.error_code, str(s.status.error_code)),
            s.status.error_message,
        )
        for s in response.model_version_status
    ]


def _metadata_request(model: str, version: int | None, version_label: str | None):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    _model_spec(request.model_spec, model, version, version_label)
    return request


def _signature_defs(response) -> dict:
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(sig_map)
    return dict(sig_map.signature_def)


def _reload_request(models: Iterable[mc.ModelEntry]):
    return model_management_pb2.ReloadConfigRequest(config=mc.to_proto(models))


def _available(statuses: list[VersionStatus], version: int | None) -> int | None:
    for s in statuses:  # newest first
        if s.state == "AVAILABLE" and (version is None or s.version == version):
            return s.version
    return None


def _not_available(model: str, version: int | None, timeout: float, last: object) -> str:
    return f"{model} version {version or 'any'} not AVAILABLE after {timeout}s; last status: {last}"


class ModelClient:
    """Blocking client over one channel (thread-safe; share one per process).

    Args:
        target: `host:port` of the model server.
        timeout: default deadline per call, in seconds.
        max_request_bytes: the largest request sent; match the server's limit.
    """

    def __init__(
        self, target: str = "127.0.0.1:8500", *, timeout: float = 5.0, max_request_bytes: int = MAX_REQUEST_BYTES
    ) -> None:
        self.target = target
        self.timeout = timeout
        self._channel = grpc.insecure_channel(target, options=channel_options(max_request_bytes))
        self._predict = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)

    def predict(
        self,
        model: str,
        inputs: Mapping[str, object],
        *,
        version: int | None = None,
        version_label: str | None = None,
        signature_name: str = DEFAULT_SIGNATURE,
        output_filter: Iterable[str] = (),
        timeout: float | None = None,
    ) -> Prediction:
        """Run a signature; returns output name -> array (and `.version`).

        Raises:
            grpc.RpcError: NOT_FOUND (model/version), INVALID_ARGUMENT (inputs, label),
                FAILED_PRECONDITION (signature), DEADLINE_EXCEEDED, UNAVAILABLE (server down).
        """
        request = predict_request(
            model,
            inputs,
            version=version,
            version_label=version_label,
            signature_name=signature_name,
            output_filter=output_filter,
        )
        return prediction(self._predict.Predict(request, timeout=timeout or self.timeout))

    def status(
        self, model: str, *, version: int | None = None, version_label: str | None = None
    ) -> list[VersionStatus]:
        """GetModelStatus: every version the server knows, newest first (or just the one asked)."""
        request = _status_request(model, version, version_label)
        return _statuses(self._models.GetModelStatus(request, timeout=self.timeout))

    def signature_defs(self, model: str, *, version: int | None = None, version_label: str | None = None) -> dict:
        """GetModelMetadata: signature name -> `SignatureDef` proto."""
        request = _metadata_request(model, version, version_label)
        return _signature_defs(self._predict.GetModelMetadata(request, timeout=self.timeout))

    def reload_config(self, models: Iterable[mc.ModelEntry], timeout: float = 60.0) -> None:
        """HandleReloadConfigRequest: make `models` the server's config now (not written to disk)."""
        self._models.HandleReloadConfigRequest(_reload_request(models), timeout=timeout)

    def wait_until_available(
        self, model: str, version: int | None = None, *, timeout: float = 60.0, interval: float = 0.2
    ) -> int:
        """Poll GetModelStatus until `version` (or any version) is AVAILABLE; returns it.

        Raises:
            TimeoutError: not AVAILABLE within `timeout` seconds (the message has the last status).
        """
        deadline = time.monotonic() + timeout
        last: object = None
        while True:
            try:
                statuses = self.status(model)
                found = _available(statuses, version)
                if found is not None:
                    return found
                last = statuses
            except grpc.RpcError as err:
                last = f"{err.code().name}: {err.details()}"
            if time.monotonic() >= deadline:
                raise TimeoutError(_not_available(model, version, timeout, last))
            time.sleep(interval)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> ModelClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncModelClient:
    """grpc.aio client for asyncio code (create it inside the running loop, e.g. a FastAPI lifespan).

    Args:
        target: `host:port` of the model server.
        timeout: default deadline per call, in seconds.
        max_request_bytes: the largest request sent; match the server's limit.
    """

    def __init__(
        self, target: str = "127.0.0.1:8500", *, timeout: float = 5.0, max_request_bytes: int = MAX_REQUEST_BYTES
    ) -> None:
        self.target = target
        self.timeout = timeout
        self._channel = grpc.aio.insecure_channel(target, options=channel_options(max_request_bytes))
        self._predict = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)

    async def predict(
        self,
        model: str,
        inputs: Mapping[str, object],
        *,
        version: int | None = None,
        version_label: str | None = None,
        signature_name: str = DEFAULT_SIGNATURE,
        output_filter: Iterable[str] = (),
        timeout: float | None = None,
    ) -> Prediction:
        """Async `ModelClient.predict`."""
        request = predict_request(
            model,
            inputs,
            version=version,
            version_label=version_label,
            signature_name=signature_name,
            output_filter=output_filter,
        )
        return prediction(await self._predict.Predict(request, timeout=timeout or self.timeout))

    async def status(
        self, model: str, *, version: int | None = None, version_label: str | None = None
    ) -> list[VersionStatus]:
        """Async `ModelClient.status`."""
        request = _status_request(model, version, version_label)
        return _statuses(await self._models.GetModelStatus(request, timeout=self.timeout))

    async def signature_defs(self, model: str, *, version: int | None = None, version_label: str | None = None) -> dict:
        """Async `ModelClient.signature_defs`."""
        request = _metadata_request(model, version, version_label)
        return _signature_defs(await self._predict.GetModelMetadata(request, timeout=self.timeout))

    async def reload_config(self, models: Iterable[mc.ModelEntry], timeout: float = 60.0) -> None:
        """Async `ModelClient.reload_config`."""
        await self._models.HandleReloadConfigRequest(_reload_request(models), timeout=timeout)

    async def wait_until_available(
        self, model: str, version: int | None = None, *, timeout: float = 60.0, interval: float = 0.2
    ) -> int:
        """Async `ModelClient.wait_until_available`."""
        deadline = time.monotonic() + timeout
        last: object = None
        while True:
            try:
                statuses = await self.status(model)
                found = _available(statuses, version)
                if found is not None:
                    return found
                last = statuses
            except grpc.RpcError as err:
                last = f"{err.code().name}: {err.details()}"
            if time.monotonic() >= deadline:
                raise TimeoutError(_not_available(model, version, timeout, last))
            await asyncio.sleep(interval)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncModelClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
