"""The gRPC services: `tensorflow.serving.PredictionService` and `ModelService` over a
ModelManager. Every failure becomes the gRPC status TF Serving would answer with."""

from __future__ import annotations

import logging

import grpc
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)

from serving.model_server.codec import MAX_REQUEST_BYTES, check_input_sizes
from serving.model_server.errors import ServingError, status_code
from serving.model_server.manager import ModelManager

log = logging.getLogger("towerflow.model_server")


def _abort(context: grpc.ServicerContext, err: BaseException) -> None:
    code = status_code(err)
    message = err.message if isinstance(err, ServingError) else str(err) or type(err).__name__
    if code in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL):
        log.exception("request failed")
    context.abort(code, message)


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """`tensorflow.serving.PredictionService` over a ModelManager.

    Args:
        manager: the models to answer from.
        max_values: the most values one Predict input may hold (see `check_input_sizes`).
    """

    def __init__(self, manager: ModelManager, max_values: int = MAX_REQUEST_BYTES) -> None:
        self.manager = manager
        self.max_values = max_values

    def Predict(self, request, context):  # noqa: N802 - gRPC method name
        try:
            check_input_sizes(request, self.max_values)
            return self.manager.resolve(request.model_spec).predict(request, request.model_spec.name)
        except Exception as err:  # noqa: BLE001 - every failure becomes a gRPC status
            _abort(context, err)

    def GetModelMetadata(self, request, context):  # noqa: N802
        try:
            if not request.metadata_field:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "GetModelMetadataRequest must specify at least one metadata_field",
                )
            for metadata_field in request.metadata_field:
                if metadata_field != "signature_def":
                    raise ServingError(
                        grpc.StatusCode.INVALID_ARGUMENT, f"Metadata field {metadata_field} is not supported"
                    )
            servable = self.manager.resolve(request.model_spec)
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = request.model_spec.name
            response.model_spec.version.value = servable.version
            sig_map = get_model_metadata_pb2.SignatureDefMap()
            for key, sig in servable.signature_defs.items():
                sig_map.signature_def[key].CopyFrom(sig)
            response.metadata["signature_def"].Pack(sig_map)
            return response
        except Exception as err:  # noqa: BLE001
            _abort(context, err)

    def _unimplemented(self, context, what: str):
        context.abort(
            grpc.StatusCode.UNIMPLEMENTED, f"{what} is not implemented by towerflow model-server; use Predict"
        )

    def Classify(self, request, context):  # noqa: N802
        self._unimplemented(context, "Classify")

    def Regress(self, request, context):  # noqa: N802
        self._unimplemented(context, "Regress")

    def MultiInference(self, request, context):  # noqa: N802
        self._unimplemented(context, "MultiInference")


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """`tensorflow.serving.ModelService` over a ModelManager."""

    def __init__(self, manager: ModelManager) -> None:
        self.manager = manager

    def GetModelStatus(self, request, context):  # noqa: N802
        try:
            if not request.HasField("model_spec"):
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
            response = get_model_status_pb2.GetModelStatusResponse()
            for version, vs in self.manager.version_states(request.model_spec):
                status = response.model_version_status.add(version=version, state=vs.state)
                status.status.error_code = vs.code.value[0]
                status.status.error_message = vs.message
            return response
        except Exception as err:  # noqa: BLE001
            _abort(context, err)

    def HandleReloadConfigRequest(self, request, context):  # noqa: N802
        response = model_management_pb2.ReloadConfigResponse()
        try:
            self.manager.reload_config(request.config)
        except Exception as err:  # noqa: BLE001
            # TF Serving fills response.status and returns the same error as the RPC status.
            _abort(context, err)
        return response
