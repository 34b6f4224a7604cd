"""Tensors in and out of the wire: a PredictRequest's TensorProtos checked against a signature and
decoded to tensors, output tensors encoded as TF Serving sends them, and the request size limits."""

from __future__ import annotations

import math
from dataclasses import dataclass

import grpc
import numpy as np
import tensorflow as tf

from serving.model_server.errors import ServingError

# gRPC's 4 MB default is too small for ranking 1,000 candidates with features for a batch of
# users; unbounded (TF Serving's choice) lets one client make the server buffer and decode
# gigabytes. Clients send no more than this either (serving.tfs_client).
MAX_REQUEST_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class InputSpec:
    """One signature input, with what decoding a TensorProto for it needs worked out once
    (TensorShape / DType methods cost microseconds each, eight inputs a request)."""

    spec: tf.TensorSpec
    enum: int
    numpy_dtype: np.dtype | None  # None: a string input
    dims: tuple[int | None, ...] | None  # None: unknown rank

    @classmethod
    def of(cls, spec: tf.TensorSpec) -> InputSpec:
        numpy_dtype = None if spec.dtype == tf.string else np.dtype(spec.dtype.as_numpy_dtype)
        dims = tuple(spec.shape.as_list()) if spec.shape.rank is not None else None
        return cls(spec, spec.dtype.as_datatype_enum, numpy_dtype, dims)

    def accepts(self, shape: tuple[int, ...]) -> bool:
        if self.dims is None:
            return True
        return len(shape) == len(self.dims) and all(d is None or d == n for d, n in zip(self.dims, shape, strict=True))


def to_tensor(alias: str, proto, spec: InputSpec) -> tf.Tensor:
    """The tensor a request input carries, once its dtype and shape fit `spec`.

    Raises:
        ServingError: INVALID_ARGUMENT for another dtype, a malformed TensorProto or a shape the
            signature does not accept.
    """
    if proto.dtype != spec.enum:
        got = tf.dtypes.as_dtype(proto.dtype).name if proto.dtype else "invalid"
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"input {alias}: expects {spec.spec.dtype.name} but {got} is provided",
        )
    shape = tuple(d.size for d in proto.tensor_shape.dim)
    try:
        if spec.numpy_dtype is not None and proto.tensor_content:  # numbers as raw bytes: no list
            array = np.frombuffer(proto.tensor_content, dtype=spec.numpy_dtype).reshape(shape)
        elif spec.numpy_dtype is None and len(proto.string_val) == math.prod(shape):
            array = np.empty(len(proto.string_val), dtype=object)
            array[:] = proto.string_val
            array = array.reshape(shape)
        else:  # values in the typed fields, or TF's compact "repeat the last value" form
            array = tf.make_ndarray(proto)
    except Exception:  # noqa: BLE001 - any malformed TensorProto is the client's error
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"tensor parsing error: {alias}") from None
    if not spec.accepts(array.shape):
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"input {alias}: shape {list(array.shape)} is not compatible with the signature's "
            f"{list(spec.dims) if spec.dims is not None else 'shape'}",
        )
    # tf.constant: a third of convert_to_tensor(dtype=)'s cost for the same tensor.
    return tf.constant(array, dtype=spec.spec.dtype)


def check_input_sizes(request, max_values: int) -> None:
    """Refuse a PredictRequest whose input shapes ask for more than `max_values` values, before
    anything is decoded: TF's compact form ("repeat the last value") lets a few bytes name a
    tensor of any size. A request that sends its values spends at least a byte on each, so with
    `max_values` the request size limit no such request is refused here.

    Raises:
        ServingError: INVALID_ARGUMENT for a negative dimension, RESOURCE_EXHAUSTED for a shape
            over the limit.
    """
    for alias, proto in request.inputs.items():
        sizes = [d.size for d in proto.tensor_shape.dim]
        if any(n < 0 for n in sizes):
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"input {alias}: negative dimension in {sizes}")
        values = math.prod(sizes)
        if values > max_values:
            raise ServingError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"input {alias}: shape {sizes} holds {values} values, more than one request may ({max_values}); "
                "split the batch",
            )


def fill_tensor_proto(proto, tensor: tf.Tensor) -> None:
    """Write an output tensor into a response TensorProto: numbers as raw bytes (as TF Serving
    sends them), strings through serialize_tensor (built in C++, 4x make_tensor_proto's speed)."""
    if tensor.dtype == tf.string:
        proto.ParseFromString(tf.io.serialize_tensor(tensor).numpy())
        return
    array = tensor.numpy()
    proto.dtype = tensor.dtype.as_datatype_enum
    for n in array.shape:
        proto.tensor_shape.dim.add().size = n
    proto.tensor_content = array.tobytes()
