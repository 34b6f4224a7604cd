"""TF Serving's gRPC API for the gateway, without importing TensorFlow.

`tensorflow_serving.apis.*_pb2` import `tensorflow.core.framework.*_pb2`, and importing any
`tensorflow.*` module runs `tensorflow/__init__.py`: about 12 s and 1,600 modules here, for a
process that only needs a dozen message types. This module reads the serialized `.proto`
descriptors out of the installed `tensorflow-serving-api` / `tensorflow` `_pb2` files (as text,
never importing them), registers them in a private descriptor pool and builds the message classes
from it, so the wire format is exactly the official one. A private pool (not protobuf's default)
means a process that also imports TensorFlow (tests, the model server) sees no clashes.

`AsyncModelClient` here mirrors `serving.model_client.AsyncModelClient` (predict, status,
signature_defs, wait_until_available, close) and returns the same `Prediction` shape.

    client = AsyncModelClient("127.0.0.1:8500")
    out = await client.predict("retrieval", {"user_id": np.array([b"u1"], dtype=object)})
"""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from google.protobuf import any_pb2, descriptor_pool, message_factory, wrappers_pb2

DEFAULT_SIGNATURE = "serving_default"
# The model server's default request limit (serving.model_server.MAX_REQUEST_BYTES): a larger
# request fails here, RESOURCE_EXHAUSTED, instead of crossing the wire to be refused there.
MAX_REQUEST_BYTES = 64 * 1024 * 1024


def channel_options(max_request_bytes: int = MAX_REQUEST_BYTES) -> list[tuple[str, int]]:
    """Requests up to `max_request_bytes`; responses of any size (gRPC's 4 MB default is too
    small for a batch of top-1000 retrievals)."""
    return [("grpc.max_send_message_length", max_request_bytes), ("grpc.max_receive_message_length", -1)]


#: The `_pb2` modules whose messages the gateway sends or reads (dependencies are followed).
_ROOTS = (
    "tensorflow_serving.apis.predict_pb2",
    "tensorflow_serving.apis.get_model_metadata_pb2",
    "tensorflow_serving.apis.get_model_status_pb2",
)
_WELL_KNOWN = {"google.protobuf.any_pb2": any_pb2, "google.protobuf.wrappers_pb2": wrappers_pb2}
_IMPORT = re.compile(r"^from ([\w.]+) import (\w+_pb2)", re.M)

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


def _module_file(module: str) -> Path:
    """The `.py` file of `module`, found without importing its package (no TF start-up)."""
    top, _, rest = module.partition(".")
    spec = importlib.util.find_spec(top)  # top-level find_spec does not run __init__
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"{top} is not installed (needed for TF Serving's protos)")
    return Path(next(iter(spec.submodule_search_locations))) / (rest.replace(".", "/") + ".py")


def _serialized_file(source: str, module: str) -> bytes:
    """The bytes a generated `_pb2` module passes to `AddSerializedFile(...)`."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "AddSerializedFile" and node.args:
            return ast.literal_eval(node.args[0])
    raise ImportError(f"{module}: no serialized descriptor found (unexpected protoc output)")


@cache
def pool() -> descriptor_pool.DescriptorPool:
    """A private descriptor pool holding TF Serving's API protos and their dependencies."""
    private = descriptor_pool.DescriptorPool()
    done: set[str] = set()

    def add(module: str) -> None:
        if module in done:
            return
        done.add(module)
        if module.startswith("google.protobuf."):
            private.AddSerializedFile(_WELL_KNOWN[module].DESCRIPTOR.serialized_pb)
            return
        source = _module_file(module).read_text()
        for package, name in _IMPORT.findall(source):
            add(f"{package}.{name}")  # dependencies first, as the pool requires
        private.AddSerializedFile(_serialized_file(source, module))

    for root in _ROOTS:
        add(root)
    return private


@cache
def message(full_name: str) -> type:
    """The message class for a proto full name, e.g. `tensorflow.serving.PredictRequest`."""
    return message_factory.GetMessageClass(pool().FindMessageTypeByName(full_name))


# ------------------------------------------------------------------------------------------------
# Tensors


def tensor_proto(value: Any, dtype: int | None = None) -> Any:
    """A `tensorflow.TensorProto` for a numpy array (or nested list); text goes as UTF-8 bytes.

    Args:
        value: the array; object/str/bytes arrays become DT_STRING.
        dtype: a TF DataType number to cast to first (e.g. from a signature's input).
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
    """Output name -> numpy array, plus which model version answered (for impression logs)."""

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
) -> Any:
    """A `tensorflow.serving.PredictRequest`; `dtypes` casts inputs to the signature's types."""
    request = message("tensorflow.serving.PredictRequest")()
    _model_spec(request.model_spec, model, version, version_label)
    request.model_spec.signature_name = signature_name
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tensor_proto(value, (dtypes or {}).get(name)))
    return request


def prediction(response: Any) -> Prediction:
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


def _unary(channel: grpc.aio.Channel, method: str, request: str, response: str) -> Any:
    return channel.unary_unary(
        method,
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=message(response).FromString,
    )


_STATE_NAME = {0: "UNKNOWN", 10: "START", 20: "LOADING", 30: "AVAILABLE", 40: "UNLOADING", 50: "END"}


class AsyncModelClient:
    """grpc.aio client for TF Serving's PredictionService and ModelService (no TensorFlow import).

    Create it inside the running event loop (e.g. a FastAPI lifespan).

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
        self._predict = _unary(
            self._channel,
            "/tensorflow.serving.PredictionService/Predict",
            "tensorflow.serving.PredictRequest",
            "tensorflow.serving.PredictResponse",
        )
        self._metadata = _unary(
            self._channel,
            "/tensorflow.serving.PredictionService/GetModelMetadata",
            "tensorflow.serving.GetModelMetadataRequest",
            "tensorflow.serving.GetModelMetadataResponse",
        )
        self._status = _unary(
            self._channel,
            "/tensorflow.serving.ModelService/GetModelStatus",
            "tensorflow.serving.GetModelStatusRequest",
            "tensorflow.serving.GetModelStatusResponse",
        )

    async def predict(
        self,
        model: str,
        inputs: Mapping[str, Any],
        *,
        version: int | None = None,
        version_label: str | None = None,
        signature_name: str = DEFAULT_SIGNATURE,
        dtypes: Mapping[str, int] | None = None,
        timeout: float | None = None,
    ) -> Prediction:
        """Run a signature; returns output name -> array (and `.version`).

        Raises:
            grpc.RpcError: NOT_FOUND, INVALID_ARGUMENT, DEADLINE_EXCEEDED, UNAVAILABLE, ...
        """
        request = predict_request(
            model,
            inputs,
            version=version,
            version_label=version_label,
            signature_name=signature_name,
            dtypes=dtypes,
        )
        return prediction(await self._predict(request, timeout=timeout or self.timeout))

    async def signature_defs(
        self,
        model: str,
        *,
        version: int | None = None,
        version_label: str | None = None,
        timeout: float | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """GetModelMetadata: (the version that answered, signature name -> `SignatureDef`)."""
        request = message("tensorflow.serving.GetModelMetadataRequest")(metadata_field=["signature_def"])
        _model_spec(request.model_spec, model, version, version_label)
        response = await self._metadata(request, timeout=timeout or self.timeout)
        sig_map = message("tensorflow.serving.SignatureDefMap")()
        sig_map.ParseFromString(response.metadata["signature_def"].value)
        return response.model_spec.version.value, dict(sig_map.signature_def)

    async def status(
        self,
        model: str,
        *,
        version: int | None = None,
        version_label: str | None = None,
        timeout: float | None = None,
    ) -> list[tuple[int, str]]:
        """GetModelStatus: (version, state name) per version the server knows."""
        request = message("tensorflow.serving.GetModelStatusRequest")()
        _model_spec(request.model_spec, model, version, version_label)
        response = await self._status(request, timeout=timeout or self.timeout)
        return [(s.version, _STATE_NAME.get(s.state, str(s.state))) for s in response.model_version_status]

    async def wait_until_available(self, model: str, *, version_label: str | None = None, timeout: float = 60.0) -> int:
        """Poll GetModelStatus until a version is AVAILABLE; returns it.

        Raises:
            TimeoutError: nothing AVAILABLE within `timeout` seconds.
        """
        deadline = time.monotonic() + timeout
        last: object = None
        while True:
            try:
                for number, state in await self.status(model, version_label=version_label):
                    if state == "AVAILABLE":
                        return number
            except grpc.RpcError as err:
                last = f"{err.code().name}: {err.details()}"
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{model} not AVAILABLE after {timeout}s; last: {last}")
            await asyncio.sleep(0.2)

    async def close(self) -> None:
        await self._channel.close()


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
