"""The TF Serving client: TF Serving's gRPC API without importing TensorFlow.

One client for everything that calls a model server, the real `tensorflow_model_server` and
`towerflow model-server` alike: `AsyncModelClient` (grpc.aio) for the gateway's event loop,
`ModelClient` (blocking) for the publish task, benchmarks and tests. Both speak
`tensorflow.serving.PredictionService` (Predict, GetModelMetadata) and `ModelService`
(GetModelStatus, HandleReloadConfigRequest) and return the same `Prediction`.

    client = ModelClient("127.0.0.1:8500")
    out = client.predict("retrieval", {"user_id": np.array([b"u1"], dtype=object)}, version_label="stable")
    out["item_ids"], out["scores"], out.version   # numpy arrays, and the version that answered

    client = AsyncModelClient("127.0.0.1:8500")    # inside the running loop (a FastAPI lifespan)
    out = await client.predict("retrieval", {"user_id": np.array([b"u1"], dtype=object)})

Errors are `grpc.RpcError`s carrying TF Serving's status codes (NOT_FOUND, INVALID_ARGUMENT, ...).

Why no TensorFlow: `tensorflow_serving.apis.*_pb2` import `tensorflow.core.framework.*_pb2`, and
importing any `tensorflow.*` module runs `tensorflow/__init__.py` (seconds and some 1,600 modules)
for a process that only needs a dozen message types. The official `.proto` descriptors come as one
`FileDescriptorSet` generated at build time (`serving/tfs_apis.binpb`, by `tools.tfs_descriptors`
from the installed `tensorflow-serving-api`); this module registers them in a private descriptor
pool and builds the message classes from it, so the wire format is exactly the official one and
the client needs neither package installed. A private pool (not protobuf's default) means a
process that also imports TensorFlow (tests, the model server) sees no clashes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

if TYPE_CHECKING:
    from towerflow.model_config import ModelEntry

DEFAULT_SIGNATURE = "serving_default"
# The model server's default request limit (serving.model_server.MAX_REQUEST_BYTES): a larger
# request fails here, RESOURCE_EXHAUSTED, instead of crossing the wire to be refused there.
MAX_REQUEST_BYTES = 64 * 1024 * 1024


def channel_options(max_request_bytes: int = MAX_REQUEST_BYTES) -> list[tuple[str, int]]:
    """Requests up to `max_request_bytes`; responses of any size (gRPC's 4 MB default is too
    small for a batch of top-1000 retrievals)."""
    return [("grpc.max_send_message_length", max_request_bytes), ("grpc.max_receive_message_length", -1)]


# ------------------------------------------------------------------------------------------------
# Messages, from a private descriptor pool

DESCRIPTORS = "tfs_apis.binpb"  # package data of `serving`, dependencies before dependants


@cache
def pool() -> descriptor_pool.DescriptorPool:
    """A private descriptor pool holding TF Serving's API protos and their dependencies."""
    files = descriptor_pb2.FileDescriptorSet.FromString(resources.files("serving").joinpath(DESCRIPTORS).read_bytes())
    private = descriptor_pool.DescriptorPool()
    for file in files.file:
        private.Add(file)
    return private


@cache
def message(full_name: str) -> Any:
    """The message class for a proto full name, e.g. `tensorflow.serving.PredictRequest`."""
    return message_factory.GetMessageClass(pool().FindMessageTypeByName(full_name))


@cache
def _state_names() -> dict[int, str]:
    """`ModelVersionStatus.State` number -> name (START, LOADING, AVAILABLE, UNLOADING, END)."""
    enum = pool().FindEnumTypeByName("tensorflow.serving.ModelVersionStatus.State")
    return {value.number: value.name for value in enum.values}


_CODE_NAME = {code.value[0]: code.name for code in grpc.StatusCode}


# ------------------------------------------------------------------------------------------------
# Tensors

# TensorFlow DataType enum numbers (tensorflow/core/framework/types.proto).
DT_FLOAT, DT_DOUBLE, DT_INT32, DT_UINT8, DT_INT16, DT_INT8, DT_STRING = 1, 2, 3, 4, 5, 6, 7
DT_INT64, DT_BOOL, DT_HALF = 9, 10, 19
NUMPY_OF_DT = {
    DT_FLOAT: np.float32,
    DT_DOUBLE: np.float64,
    DT_INT32: np.int32,
    DT_UINT8: np.uint8,
    DT_INT16: np.int16,
    DT_INT8: np.int8,
    DT_INT64: np.int64,
    DT_BOOL: np.bool_,
    DT_HALF: np.float16,
}
DT_OF_NUMPY = {np.dtype(v): k for k, v in NUMPY_OF_DT.items()}
_VAL_FIELD = {
    DT_FLOAT: "float_val",
    DT_DOUBLE: "double_val",
    DT_INT32: "int_val",
    DT_UINT8: "int_val",
    DT_INT16: "int_val",
    DT_INT8: "int_val",
    DT_INT64: "int64_val",
    DT_BOOL: "bool_val",
    DT_HALF: "half_val",
}


def tensor_proto(value: Any, dtype: int | None = None) -> Any:
    """A `tensorflow.TensorProto` for a numpy array (or nested list); text goes as UTF-8 bytes.

    Args:
        value: the array; object/str/bytes arrays become DT_STRING.
        dtype: a TF DataType number to cast to first (e.g. from a signature's input).

    Raises:
        TypeError: a numpy dtype TensorFlow has no DataType for here (e.g. uint32).
    """
    array = np.asarray(value)
    proto = message("tensorflow.TensorProto")()
    for n in array.shape:
        proto.tensor_shape.dim.add().size = n
    if dtype == DT_STRING or (dtype is None and array.dtype.kind in "USO"):
        proto.dtype = DT_STRING
        values = array.ravel().tolist()
        try:
            proto.string_val.extend(values)  # all bytes already: one C call
        except TypeError:
            proto.string_val.extend(v if isinstance(v, bytes) else str(v).encode() for v in values)
        return proto
    if dtype is not None:
        array = array.astype(NUMPY_OF_DT[dtype], copy=False)
    elif array.dtype not in DT_OF_NUMPY:
        raise TypeError(f"no TensorFlow dtype for numpy {array.dtype}")
    proto.dtype = dtype if dtype is not None else DT_OF_NUMPY[array.dtype]
    proto.tensor_content = np.ascontiguousarray(array).tobytes()
    return proto


def to_ndarray(proto: Any) -> np.ndarray:
    """Decode a TensorProto (as `tf.make_ndarray`): strings come back as bytes objects."""
    shape = tuple(d.size for d in proto.tensor_shape.dim)
    size = int(np.prod(shape)) if shape else 1
    if proto.dtype == DT_STRING:
        values = np.empty(len(proto.string_val), dtype=object)
        values[:] = list(proto.string_val)
    elif proto.dtype in NUMPY_OF_DT:
        np_type = NUMPY_OF_DT[proto.dtype]
        if proto.tensor_content:
            return np.frombuffer(proto.tensor_content, dtype=np_type).reshape(shape).copy()
        raw = getattr(proto, _VAL_FIELD[proto.dtype])
        if proto.dtype == DT_HALF:
            values = np.array(raw, dtype=np.uint16).view(np.float16)
        else:
            values = np.array(raw, dtype=np_type)
    else:
        raise TypeError(f"unsupported TensorProto dtype {proto.dtype}")
    if values.size == size:
        return values.reshape(shape)
    if values.size == 0:
        return np.zeros(shape, dtype=values.dtype if values.dtype != object else object)
    # TF's compact form: fewer values than elements means "repeat the last one".
    out = np.empty(size, dtype=values.dtype)
    out[: values.size] = values
    out[values.size :] = values[-1]
    return out.reshape(shape)


# ------------------------------------------------------------------------------------------------
# Requests and responses


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
class InputSpec:
    """One signature input: TF dtype number and shape (-1 for unknown dims)."""

    name: str
    dtype: int
    shape: tuple[int, ...]


@dataclass(frozen=True)
class VersionStatus:
    """One row of GetModelStatus: `state` is START/LOADING/AVAILABLE/UNLOADING/END; `error_code`
    is `OK` or the load error's code name."""

    version: int
    state: str
    error_code: str = "OK"
    error_message: str = ""


def _model_spec(spec: Any, model: str, version: int | None, version_label: str | None) -> None:
    if version is not None and version_label is not None:
        raise ValueError("give a version or a version_label, not both")
    spec.name = model
    if version is not None:
        spec.version.value = version
    elif version_label is not None:
        spec.version_label = version_label


def predict_request(
    model: str,
    inputs: Mapping[str, Any],
    *,
    version: int | None = None,
    version_label: str | None = None,
    signature_name: str = DEFAULT_SIGNATURE,
    dtypes: Mapping[str, int] | None = None,
    output_filter: Iterable[str] = (),
) -> Any:
    """A `tensorflow.serving.PredictRequest` (a version and a label are mutually exclusive);
    `dtypes` casts inputs to the signature's types."""
    request = message("tensorflow.serving.PredictRequest")()
    _model_spec(request.model_spec, model, version, version_label)
    request.model_spec.signature_name = signature_name
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tensor_proto(value, (dtypes or {}).get(name)))
    request.output_filter.extend(output_filter)
    return request


def prediction(response: Any) -> Prediction:
    """Decode a PredictResponse into numpy arrays (strings come back as bytes objects)."""
    outputs = {name: to_ndarray(proto) for name, proto in response.outputs.items()}
    spec = response.model_spec
    return Prediction(outputs, spec.name, spec.version.value, spec.signature_name)


def signature_inputs(signature_def: Any) -> dict[str, InputSpec]:
    """Input name -> InputSpec of one `SignatureDef`."""
    return {
        name: InputSpec(
            name,
            info.dtype,
            () if info.tensor_shape.unknown_rank else tuple(d.size for d in info.tensor_shape.dim),
        )
        for name, info in signature_def.inputs.items()
    }


def input_specs_of(signature_defs: Mapping[str, Any], signature_name: str = DEFAULT_SIGNATURE) -> dict[str, InputSpec]:
    """The input specs of `signature_name` in a signature-def map.

    Raises:
        KeyError: the model has no such signature (the message lists what it has).
    """
    if signature_name not in signature_defs:
        raise KeyError(f"model has no signature {signature_name!r}; it has {sorted(signature_defs)}")
    return signature_inputs(signature_defs[signature_name])


def names(values: Iterable[Any]) -> list[str]:
    """Decode model output ids (bytes) to str."""
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _status_request(model: str, version: int | None, version_label: str | None) -> Any:
    request = message("tensorflow.serving.GetModelStatusRequest")()
    _model_spec(request.model_spec, model, version, version_label)
    return request


def _statuses(response: Any) -> list[VersionStatus]:
    states = _state_names()
    return [
        VersionStatus(
            s.version,
            states.get(s.state, str(s.state)),
            _CODE_NAME.get(s.status.error_code, str(s.status.error_code)),
            s.status.error_message,
        )
        for s in response.model_version_status
    ]


def _metadata_request(model: str, version: int | None, version_label: str | None) -> Any:
    request = message("tensorflow.serving.GetModelMetadataRequest")(metadata_field=["signature_def"])
    _model_spec(request.model_spec, model, version, version_label)
    return request


def _signature_defs(response: Any) -> tuple[int, dict[str, Any]]:
    sig_map = message("tensorflow.serving.SignatureDefMap")()
    sig_map.ParseFromString(response.metadata["signature_def"].value)
    return response.model_spec.version.value, dict(sig_map.signature_def)


def _reload_request(models: Iterable[ModelEntry]) -> Any:
    from towerflow.model_config import to_proto

    request = message("tensorflow.serving.ReloadConfigRequest")()
    request.config.ParseFromString(to_proto(models).SerializeToString())  # official pool -> private pool
    return request


def _available(statuses: list[VersionStatus], version: int | None) -> int | None:
    for s in statuses:  # newest first
        if s.state == "AVAILABLE" and (version is None or s.version == version):
            return s.version
    return None


def _not_available(model: str, version: int | None, timeout: float, last: object) -> str:
    return f"{model} version {version or 'any'} not AVAILABLE after {timeout}s; last status: {last}"


#: method -> (request message, response message), TF Serving's two services.
_METHODS = {
    "/tensorflow.serving.PredictionService/Predict": (
        "tensorflow.serving.PredictRequest",
        "tensorflow.serving.PredictResponse",
    ),
    "/tensorflow.serving.PredictionService/GetModelMetadata": (
        "tensorflow.serving.GetModelMetadataRequest",
        "tensorflow.serving.GetModelMetadataResponse",
    ),
    "/tensorflow.serving.ModelService/GetModelStatus": (
        "tensorflow.serving.GetModelStatusRequest",
        "tensorflow.serving.GetModelStatusResponse",
    ),
    "/tensorflow.serving.ModelService/HandleReloadConfigRequest": (
        "tensorflow.serving.ReloadConfigRequest",
        "tensorflow.serving.ReloadConfigResponse",
    ),
}


def _stubs(channel: grpc.Channel | grpc.aio.Channel) -> dict[str, Any]:
    """A callable per method on `channel` (blocking or grpc.aio alike), keyed by method name."""
    return {
        method.rsplit("/", 1)[1]: channel.unary_unary(
            method,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=message(response).FromString,
        )
        for method, (_, response) in _METHODS.items()
    }


# ------------------------------------------------------------------------------------------------
# Clients


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
        self._call = _stubs(self._channel)

    def predict(
        self,
        model: str,
        inputs: Mapping[str, Any],
        *,
        version: int | None = None,
        version_label: str | None = None,
        signature_name: str = DEFAULT_SIGNATURE,
        dtypes: Mapping[str, int] | None = None,
        output_filter: Iterable[str] = (),
        timeout: float | None = None,
    ) -> Prediction:
        """Run a signature; returns output name -> array (and `.version`).

        Args:
            dtypes: input name -> TF DataType number to cast to (a signature's, `InputSpec.dtype`).
            output_filter: only these outputs (default: all).

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
            dtypes=dtypes,
            output_filter=output_filter,
        )
        return prediction(self._call["Predict"](request, timeout=timeout or self.timeout))

    def status(
        self,
        model: str,
        *,
        version: int | None = None,
        version_label: str | None = None,
        timeout: float | None = None,
    ) -> list[VersionStatus]:
        """GetModelStatus: every version the server knows, newest first (or just the one asked)."""
        request = _status_request(model, version, version_label)
        return _statuses(self._call["GetModelStatus"](request, timeout=timeout or self.timeout))

    def signature_defs(
        self,
        model: str,
        *,
        version: int | None = None,
        version_label: str | None = None,
        timeout: float | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """GetModelMetadata: (the version that answered, signature name -> `SignatureDef`)."""
        request = _metadata_request(model, version, version_label)
        return _signature_defs(self._call["GetModelMetadata"](request, timeout=timeout or self.timeout))

    def reload_config(self, models: Iterable[ModelEntry], timeout: float = 60.0) -> None:
        """HandleReloadConfigRequest: make `models` the server's config now (not written to disk)."""
        self._call["HandleReloadConfigRequest"](_reload_request(models), timeout=timeout)

    def wait_until_available(
        self,
        model: str,
        version: int | None = None,
        *,
        version_label: str | None = None,
        timeout: float = 60.0,
        interval: float = 0.2,
    ) -> int:
        """Poll GetModelStatus until `version` (or the labelled one, or any) is AVAILABLE; returns it.

        Raises:
            TimeoutError: not AVAILABLE within `timeout` seconds (the message has the last status).
        """
        deadline = time.monotonic() + timeout
        last: object = None
        while True:
            try:
                statuses = self.status(model, version_label=version_label)
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

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncModelClient:
    """`ModelClient` for asyncio code, over grpc.aio: create it inside the running event loop
    (e.g. a FastAPI lifespan).

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
        self._call = _stubs(self._channel)

    async def predict(
        self,
        model: str,
        inputs: Mapping[str, Any],
        *,
        version: int | None = None,
        version_label: str | None = None,
        signature_name: str = DEFAULT_SIGNATURE,
        dtypes: Mapping[str, int] | None = None,
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
            dtypes=dtypes,
            output_filter=output_filter,
        )
        return prediction(await self._call["Predict"](request, timeout=timeout or self.timeout))

    async def status(
        self,
        model: str,
        *,
        version: int | None = None,
        version_label: str | None = None,
        timeout: float | None = None,
    ) -> list[VersionStatus]:
        """Async `ModelClient.status`."""
        request = _status_request(model, version, version_label)
        return _statuses(await self._call["GetModelStatus"](request, timeout=timeout or self.timeout))

    async def signature_defs(
        self,
        model: str,
        *,
        version: int | None = None,
        version_label: str | None = None,
        timeout: float | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """Async `ModelClient.signature_defs`."""
        request = _metadata_request(model, version, version_label)
        return _signature_defs(await self._call["GetModelMetadata"](request, timeout=timeout or self.timeout))

    async def reload_config(self, models: Iterable[ModelEntry], timeout: float = 60.0) -> None:
        """Async `ModelClient.reload_config`."""
        await self._call["HandleReloadConfigRequest"](_reload_request(models), timeout=timeout)

    async def wait_until_available(
        self,
        model: str,
        version: int | None = None,
        *,
        version_label: str | None = None,
        timeout: float = 60.0,
        interval: float = 0.2,
    ) -> int:
        """Async `ModelClient.wait_until_available`."""
        deadline = time.monotonic() + timeout
        last: object = None
        while True:
            try:
                statuses = await self.status(model, version_label=version_label)
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

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
