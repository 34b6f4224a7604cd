"""The model server's refusals: an error that carries the gRPC status code to answer with."""

from __future__ import annotations

import grpc
import tensorflow as tf

_CODE_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


class ServingError(Exception):
    """A request or config the server refuses; carries the gRPC status code to answer with."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def status_code(err: BaseException) -> grpc.StatusCode:
    """The status to answer `err` with: its own for a ServingError, TensorFlow's for an OpError."""
    if isinstance(err, ServingError):
        return err.code
    if isinstance(err, tf.errors.OpError):
        return _CODE_BY_NUMBER.get(err.error_code, grpc.StatusCode.UNKNOWN)
    if isinstance(err, OSError):  # tf.saved_model.load: "SavedModel file does not exist"
        return grpc.StatusCode.NOT_FOUND
    return grpc.StatusCode.UNKNOWN
