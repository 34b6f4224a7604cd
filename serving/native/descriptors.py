"""Write the protobuf descriptors of TF Serving's gRPC API (from the installed
`tensorflow-serving-api`) as a FileDescriptorSet, so `protoc --descriptor_set_in` can generate
C++ for towerflow-predict from exactly the API the Python side speaks. Prints the .proto names
to generate (the well-known google/protobuf ones come with the system protobuf).

    python -m serving.native.descriptors OUT.pb
"""

from __future__ import annotations

import sys
from pathlib import Path


def main() -> None:
    from google.protobuf import descriptor_pb2
    from tensorflow_serving.apis import model_service_pb2, prediction_service_pb2

    files: dict[str, descriptor_pb2.FileDescriptorProto] = {}

    def add(descriptor) -> None:
        if descriptor.name in files:
            return
        for dependency in descriptor.dependencies:
            add(dependency)
        proto = descriptor_pb2.FileDescriptorProto()
        descriptor.CopyToProto(proto)
        files[descriptor.name] = proto

    add(prediction_service_pb2.DESCRIPTOR)
    add(model_service_pb2.DESCRIPTOR)
    Path(sys.argv[1]).write_bytes(descriptor_pb2.FileDescriptorSet(file=list(files.values())).SerializeToString())
    print(" ".join(name for name in files if not name.startswith("google/protobuf/")))  # noqa: T201


if __name__ == "__main__":
    main()
