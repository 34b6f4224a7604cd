"""The TF Serving client's descriptor set (generated at build time) against the installed protos."""

from __future__ import annotations

import subprocess
import sys

from google.protobuf import descriptor_pb2

from serving import tfs_client
from tools.tfs_descriptors import OUTPUT, ROOTS, descriptor_set


def test_the_checked_in_descriptor_set_is_what_the_installed_protos_generate() -> None:
    # Differs after an upgrade of tensorflow-serving-api: run `make protos`.
    assert OUTPUT.read_bytes() == descriptor_set()


def test_the_set_holds_every_root_after_its_dependencies() -> None:
    files = descriptor_pb2.FileDescriptorSet.FromString(OUTPUT.read_bytes()).file
    seen: set[str] = set()
    for file in files:
        assert set(file.dependency) <= seen, file.name
        seen.add(file.name)
    assert {r.replace(".", "/").removesuffix("_pb2") + ".proto" for r in ROOTS} <= seen


def test_messages_round_trip_with_the_official_classes_and_no_tensorflow_import() -> None:
    from tensorflow_serving.apis import predict_pb2

    request = tfs_client.message("tensorflow.serving.PredictRequest")()
    request.model_spec.name = "retrieval"
    request.model_spec.version_label = "stable"
    request.inputs["user_id"].CopyFrom(tfs_client.tensor_proto([b"u1", b"u2"]))
    official = predict_pb2.PredictRequest.FromString(request.SerializeToString())
    assert official.model_spec.version_label == "stable"
    assert list(official.inputs["user_id"].string_val) == [b"u1", b"u2"]

    code = "import sys; from serving import tfs_client; tfs_client.pool(); print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "False"
